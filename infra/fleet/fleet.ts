import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { FleetConfig, MachineRole, machineNames } from "../config/model";
import { FleetIdentity } from "../identity/identity";
import { ssmPaths } from "../identity/names";
import { AwsNetwork, AwsSiteMachines } from "../machines/aws";
import { EquinixMetalSite } from "../machines/equinix-metal";
import { Machine, MachineRequest, MachineSite } from "../machines/site";
import { buildMinionPillar, MinionPillars, renderPillarDocument } from "../bootstrap/pillar";
import { TeleportAuditBackend, TELEPORT_AUTH_PORT } from "../teleport/config";
import { teleportResourcesYaml } from "../teleport/resources";
import { TeleportAuditStorage } from "../teleport/audit-storage";
import { CiEventArchive } from "../audit/event-archive";
import { RunnerQueue, SaltMaster, TeleportNode } from "./machine-components";
import { SaltKeyPair, SaltKeys } from "./salt-keys";
import { CloudConfig, EC2_USER_DATA_LIMIT_BYTES, gzipUserData, renderCloudConfig, RolesAnywhereCredentials } from "../bootstrap/cloud-config";
import { minionCloudConfig, saltMasterCloudConfig } from "./user-data";

/** An RSA-2048 modulus is 256 random bytes: no compression makes a pre-seeded key smaller. */
const MIN_GZIP_BYTES_PER_KEY = 256;

/** What the preview and the stack outputs show of each machine. */
export interface FleetMachine {
  hostname: string;
  role: MachineRole;
  queue?: string;
  /** The config's plan key and the provider's instance type it resolved to. */
  plan: string;
  instanceType: string;
  machine: Machine;
  /** The cloud-config as a typed value, and rendered (both Pulumi secrets). */
  cloudConfig: pulumi.Output<CloudConfig>;
  userData: pulumi.Output<string>;
}

export interface FleetArgs {
  config: FleetConfig;
}

/**
 * The whole fleet: AWS identity, one Salt master, one Teleport machine, the runners of each
 * queue, and one pillar document per minion. Names come from config keys only.
 */
export class Fleet extends pulumi.ComponentResource {
  readonly identity: FleetIdentity;
  readonly saltMaster: SaltMaster;
  readonly teleport: TeleportNode;
  readonly queues: Record<string, RunnerQueue> = {};
  readonly machines: FleetMachine[] = [];
  readonly pillars: MinionPillars;
  readonly ciEventArchive?: CiEventArchive;

  constructor(name: string, args: FleetArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ci-fleet:fleet:Fleet", name, {}, opts);
    const { config } = args;
    const { stack } = config;
    const child = { parent: this };

    this.identity = new FleetIdentity(`${name}-identity`, { config }, child);
    const identity = this.identity;
    // Pillar parameters and audit storage live beside the queue secrets: the identity account and region.
    const identityProvider = identity.provider;

    const site = this.createSite(name, config);
    const masterId = machineNames.saltMaster(stack);
    const teleportId = machineNames.teleport(stack);
    const runnerIds = Object.entries(config.queues).flatMap(([queue, spec]) => Object.keys(spec.runners).map((runner) => machineNames.runner(stack, queue, runner)));
    const minionIds = [masterId, teleportId, ...runnerIds];
    const keys = new SaltKeys(`${name}-salt-keys`, { minionIds }, child);

    const instanceType = (plan: string) => {
      const type = config.plans[plan][config.provider];
      if (!type) throw new Error(`plan ${plan} has no ${config.provider} type`); // config/check.ts rejects this first
      return type;
    };
    const rolesAnywhere = identity.rolesAnywhere;
    const certificateFor = (minionId: string) => rolesAnywhere?.certificates[minionId];

    // --- Salt master: its user-data carries what it needs before Salt runs.
    const masterCert = certificateFor(masterId);
    const masterCloudConfig = allOf<{
      masterKeys: PlainKeyPair;
      ownKeys: PlainKeyPair;
      accepted: { id: string; publicKeyPem: string }[];
      deployKey: string | undefined;
      roleArn: string;
      rolesAnywhere: RolesAnywhereCredentials | undefined;
    }>({
        masterKeys: plainPair(keys.master),
        ownKeys: plainPair(keys.minions[masterId]),
        accepted: pulumi.all(minionIds.map((id) => keys.minions[id].publicKeyPem.apply((publicKeyPem) => ({ id, publicKeyPem })))),
        deployKey: config.secrets.saltRepositoryDeployKey,
        roleArn: identity.saltMasterRoleArn,
        rolesAnywhere: masterCert && rolesAnywhere
          ? allOf<RolesAnywhereCredentials>({
              trustAnchorArn: rolesAnywhere.trustAnchorArn,
              profileArn: rolesAnywhere.profileArns["salt-master"],
              certificatePem: masterCert.certificatePem,
              privateKeyPem: masterCert.privateKeyPem,
            })
          : undefined,
      }).apply((v) => {
        const build = (accepted: { id: string; publicKeyPem: string }[]) => saltMasterCloudConfig({
          stack,
          provider: config.provider,
          hostname: masterId,
          masterKeys: v.masterKeys,
          ownKeys: v.ownKeys,
          acceptedMinions: accepted,
          ...(config.provider === "aws" ? { vpcCidr: config.aws!.vpcCidr } : {}),
          repository: { url: config.saltMaster.repository, ref: config.saltMaster.ref, ...(v.deployKey ? { deployKeyPem: v.deployKey } : {}) },
          aws: { region: config.identity.region, roleArn: v.roleArn, ssmPillarPrefix: `${ssmPaths.pillar(stack)}/`, ...(v.rolesAnywhere ? { rolesAnywhere: v.rolesAnywhere } : {}) },
        });
        // Too many machines to list within EC2's limit: pre-seed the control plane here; the
        // first pillar sync accepts every minion from SSM before salt-master starts. A key's
        // modulus is random, so no key takes less than its 256 bytes even gzip'd: past that
        // count, trying is pointless.
        const controlPlane = () => build(v.accepted.filter((m) => m.id === masterId || m.id === teleportId));
        if (v.accepted.length * MIN_GZIP_BYTES_PER_KEY > EC2_USER_DATA_LIMIT_BYTES) return controlPlane();
        const everyKey = build(v.accepted);
        return gzipUserData(renderCloudConfig(everyKey)).length <= EC2_USER_DATA_LIMIT_BYTES ? everyKey : controlPlane();
      });
    const masterRequest: MachineRequest = {
      hostname: masterId,
      role: "salt-master",
      instanceType: instanceType(config.saltMaster.plan),
      userData: render(masterCloudConfig),
      instanceProfileName: identity.instanceProfileNames?.saltMaster,
    };
    this.saltMaster = new SaltMaster(`${name}-salt-master`, { site, request: masterRequest }, child);
    this.record(masterRequest, config.saltMaster.plan, this.saltMaster.machine, masterCloudConfig);
    const masterAddress = this.saltMaster.machine.privateIpv4;

    const minionCloudConfigOf = (hostname: string, role: Exclude<MachineRole, "salt-master">) =>
      pulumi.secret(
        allOf<{ masterAddress: string; masterPublicKeyPem: string; keys: PlainKeyPair }>({ masterAddress, masterPublicKeyPem: keys.master.publicKeyPem, keys: plainPair(keys.minions[hostname]) }).apply((v) =>
          minionCloudConfig({ stack, provider: config.provider, hostname, role, masterAddress: v.masterAddress, masterPublicKeyPem: v.masterPublicKeyPem, minionKeys: v.keys }),
        ),
      );

    // --- Teleport: the only door; its audit log and recordings outlive the machine.
    const teleportCloudConfig = minionCloudConfigOf(teleportId, "teleport");
    const teleportRequest: MachineRequest = {
      hostname: teleportId,
      role: "teleport",
      instanceType: instanceType(config.teleport.plan),
      userData: render(teleportCloudConfig),
      instanceProfileName: identity.instanceProfileNames?.teleport,
    };
    this.teleport = new TeleportNode(`${name}-teleport`, { site, request: teleportRequest }, child);
    this.record(teleportRequest, config.teleport.plan, this.teleport.machine, teleportCloudConfig);
    const auditStorage = new TeleportAuditStorage(`${name}-teleport-audit`, {
      stack,
      accountId: config.identity.accountId,
      region: config.identity.region,
      kmsKeyArn: identity.kmsKeyArn,
      teleportRoleName: identity.teleportRoleName,
      retentionDays: config.teleport.auditRetentionDays,
    }, { parent: this, providers: { aws: identityProvider } });
    const authAddress = this.teleport.machine.privateIpv4.apply((ip) => `${ip}:${TELEPORT_AUTH_PORT}`);

    // --- Runners, queue by queue.
    for (const [queue, spec] of Object.entries(config.queues)) {
      const requests: Record<string, MachineRequest> = {};
      const cloudConfigs: Record<string, pulumi.Output<CloudConfig>> = {};
      for (const [runner, runnerSpec] of Object.entries(spec.runners)) {
        const hostname = machineNames.runner(stack, queue, runner);
        cloudConfigs[runner] = minionCloudConfigOf(hostname, "runner");
        requests[runner] = {
          hostname,
          role: "runner",
          queue,
          instanceType: instanceType(runnerSpec.plan),
          ...(runnerSpec.os ? { os: runnerSpec.os } : {}),
          userData: render(cloudConfigs[runner]),
          instanceProfileName: identity.instanceProfileNames?.queues[queue],
        };
      }
      const queueComponent = new RunnerQueue(`${name}-${queue}`, { site, runners: requests }, child);
      this.queues[queue] = queueComponent;
      for (const [runner, machine] of Object.entries(queueComponent.runners)) {
        this.record(requests[runner], spec.runners[runner].plan, machine, cloudConfigs[runner]);
      }
    }

    // --- Pillar: one document per minion, by minion id.
    const documents: Record<string, pulumi.Output<string>> = {};
    for (const m of this.machines) {
      const cert = certificateFor(m.hostname);
      const roleArn = m.role === "runner" ? identity.agentRoleArns[m.queue!] : m.role === "salt-master" ? identity.saltMasterRoleArn : identity.teleportRoleArn;
      const profileArn = rolesAnywhere?.profileArns[m.role === "runner" ? m.queue! : m.role];
      const parts = allOf<{
        roleArn: string;
        ownIp: string;
        masterAddress: string;
        authAddress: string;
        publicKeyPem: string;
        roles: RolesAnywhereCredentials | undefined;
        githubKey: string | undefined;
        deployKey: string | undefined;
        teleportResources: string | undefined;
        audit: TeleportAuditBackend | undefined;
      }>({
        roleArn,
        ownIp: m.machine.privateIpv4,
        masterAddress,
        authAddress,
        publicKeyPem: keys.minions[m.hostname].publicKeyPem,
        roles: cert && rolesAnywhere && profileArn
          ? allOf<RolesAnywhereCredentials>({ trustAnchorArn: rolesAnywhere.trustAnchorArn, profileArn, certificatePem: cert.certificatePem, privateKeyPem: cert.privateKeyPem })
          : undefined,
        githubKey: m.role === "salt-master" ? config.secrets.githubAppPrivateKey : undefined,
        deployKey: m.role === "salt-master" ? config.secrets.saltRepositoryDeployKey : undefined,
        teleportResources: m.role === "teleport"
          ? teleportResourcesYaml({
              queues: Object.keys(config.queues),
              publicAddr: config.teleport.publicAddr,
              organization: config.teleport.githubOrg,
              teamsToRoles: config.teleport.teamsToRoles,
              clientId: config.secrets.teleportGithubClientId,
              clientSecret: config.secrets.teleportGithubClientSecret,
            })
          : undefined,
        audit: m.role === "teleport" ? auditStorage.auditBackend : undefined,
      });
      const doc = parts.apply((v) =>
        renderPillarDocument(
          buildMinionPillar({
            config,
            machine: { hostname: m.hostname, role: m.role, ...(m.queue ? { queue: m.queue } : {}), privateIpv4: v.ownIp },
            masterAddress: v.masterAddress,
            authAddress: v.authAddress,
            minionPublicKeyPem: v.publicKeyPem,
            roleArn: v.roleArn,
            ...(v.roles ? { rolesAnywhere: v.roles } : {}),
            ...(v.githubKey ? { githubAppPrivateKey: v.githubKey } : {}),
            ...(v.deployKey ? { saltRepositoryDeployKey: v.deployKey } : {}),
            ...(v.audit && v.teleportResources !== undefined ? { teleport: { resourcesYaml: v.teleportResources, audit: v.audit } } : {}),
          }),
        ),
      );
      documents[m.hostname] = pulumi.secret(doc);
    }
    // --- Buildkite's events, archived for auditors (optional per stack).
    const archive = config.auditArchive;
    if (archive.enabled && archive.partnerEventSource && archive.auditorPrincipalArns) {
      this.ciEventArchive = new CiEventArchive(`${name}-ci-events`, {
        stack,
        accountId: config.identity.accountId,
        region: config.identity.region,
        partnerEventSource: archive.partnerEventSource,
        kmsKeyArn: identity.kmsKeyArn,
        auditorPrincipalArns: archive.auditorPrincipalArns,
        ...(archive.retentionDays ? { retentionDays: archive.retentionDays } : {}),
      }, { parent: this, providers: { aws: identityProvider } });
    }

    this.pillars = new MinionPillars(`${name}-pillars`, { stack, kmsKeyArn: identity.kmsKeyArn, documents }, { parent: this, providers: { aws: identityProvider } });

    this.registerOutputs({
      machines: this.machines.map((m) => ({ hostname: m.hostname, role: m.role, queue: m.queue, privateIpv4: m.machine.privateIpv4 })),
      teleportPublicIpv4: this.teleport.machine.publicIpv4,
    });
  }

  private record(request: MachineRequest, plan: string, machine: Machine, cloudConfig: pulumi.Output<CloudConfig>): void {
    const { hostname, role, queue, instanceType, userData } = request;
    this.machines.push({ hostname, role, ...(queue ? { queue } : {}), plan, instanceType, machine, cloudConfig: pulumi.secret(cloudConfig), userData });
  }

  private createSite(name: string, config: FleetConfig): MachineSite {
    if (config.provider === "equinix-metal") return new EquinixMetalSite(config.stack, config.equinix!);
    const site = config.aws!;
    const provider = new aws.Provider(`${name}-machines-region`, { region: site.region }, { parent: this });
    const network = new AwsNetwork(`${name}-network`, { stack: config.stack, site }, { parent: this, providers: { aws: provider } });
    return new AwsSiteMachines(config.stack, site, network, provider);
  }
}

/** User-data is always a secret: it carries the minion's private key. */
function render(cloudConfig: pulumi.Output<CloudConfig>): pulumi.Output<string> {
  return pulumi.secret(cloudConfig.apply(renderCloudConfig));
}

interface PlainKeyPair {
  publicKeyPem: string;
  privateKeyPem: string;
}

function plainPair(pair: SaltKeyPair): pulumi.Output<PlainKeyPair> {
  return allOf<PlainKeyPair>({ publicKeyPem: pair.publicKeyPem, privateKeyPem: pair.privateKeyPem });
}

/** `pulumi.all` over a record, keeping each field's type (its own typing widens them). */
function allOf<T extends object>(parts: { [K in keyof T]: pulumi.Input<T[K]> | undefined }): pulumi.Output<T> {
  return pulumi.all(parts as Record<string, pulumi.Input<unknown>>) as unknown as pulumi.Output<T>;
}
