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
import { drainTimeoutMinutes, RunnerDrainHooks } from "./drain-hook";
import { CloudConfig, renderCloudConfig, RolesAnywhereCredentials } from "../bootstrap/cloud-config";
import { minionCloudConfig, saltMasterCloudConfig } from "./user-data";
import { ControlPlaneDns, controlPlaneNames } from "./control-plane-dns";
import { SaltMasterPki } from "./salt-master-pki";

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
  /** The control plane's stable names and the records that follow its machines. */
  readonly dns: ControlPlaneDns;

  constructor(name: string, args: FleetArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ci-fleet:fleet:Fleet", name, {}, opts);
    const { config } = args;
    const { stack } = config;
    const child = { parent: this };

    this.identity = new FleetIdentity(`${name}-identity`, { config }, child);
    const identity = this.identity;
    // Pillar parameters and audit storage live beside the queue secrets: the identity account and region.
    const identityProvider = identity.provider;

    const { site, vpcId, dnsProvider } = this.createSite(name, config);
    // What user-data names instead of addresses: pure functions of config, never a machine's output.
    const names = controlPlaneNames(stack, config.dns.zone);
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

    // --- Salt master: its user-data carries what it needs before Salt runs (on equinix-metal
    // a short bootstrap certificate for its first pillar sync; the fleet issues every other).
    const masterCert = rolesAnywhere?.bootstrapCertificate;
    const masterCloudConfig = allOf<{
      masterPublicKeyPem: string;
      deployKey: string | undefined;
      roleArn: string;
      rolesAnywhere: RolesAnywhereCredentials | undefined;
    }>({
        masterPublicKeyPem: keys.master.publicKeyPem,
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
      }).apply((v) =>
        saltMasterCloudConfig({
          stack,
          provider: config.provider,
          hostname: masterId,
          masterPublicKeyPem: v.masterPublicKeyPem,
          ...(config.provider === "aws" ? { vpcCidr: config.aws!.vpcCidr } : {}),
          repository: { url: config.saltMaster.repository, ref: config.saltMaster.ref, ...(v.deployKey ? { deployKeyPem: v.deployKey } : {}) },
          aws: { region: config.identity.region, roleArn: v.roleArn, ssmPillarPrefix: `${ssmPaths.pillar(stack)}/`, ...(v.rolesAnywhere ? { rolesAnywhere: v.rolesAnywhere } : {}) },
        }),
      );
    // The master's key pairs reach it through SSM (not user-data), before its first boot reads them.
    const masterPki = new SaltMasterPki(`${name}-salt-master-pki`, {
      stack,
      kmsKeyArn: identity.kmsKeyArn,
      master: keys.master,
      minion: keys.minions[masterId],
    }, { parent: this, providers: { aws: identityProvider } });
    const masterRequest: MachineRequest = {
      hostname: masterId,
      role: "salt-master",
      instanceType: instanceType(config.saltMaster.plan),
      userData: render(masterCloudConfig),
      instanceProfileName: identity.instanceProfileNames?.saltMaster,
      dependsOn: [masterPki.parameter],
    };
    this.saltMaster = new SaltMaster(`${name}-salt-master`, { site, request: masterRequest }, child);
    this.record(masterRequest, config.saltMaster.plan, this.saltMaster.machine, masterCloudConfig);

    // A minion's user-data depends on its own keys, the master's public key and names from
    // config: no output of a control-plane machine, so replacing one touches no runner.
    const minionCloudConfigOf = (hostname: string, role: Exclude<MachineRole, "salt-master">) =>
      pulumi.secret(
        allOf<{ masterPublicKeyPem: string; keys: PlainKeyPair }>({ masterPublicKeyPem: keys.master.publicKeyPem, keys: plainPair(keys.minions[hostname]) }).apply((v) =>
          minionCloudConfig({ stack, provider: config.provider, hostname, role, masterName: names.saltMaster, masterPublicKeyPem: v.masterPublicKeyPem, minionKeys: v.keys }),
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
      ...(config.provider === "aws" ? { ec2JoinRegion: config.aws!.region } : {}),
    }, { parent: this, providers: { aws: identityProvider } });
    const authAddress = `${names.teleport}:${TELEPORT_AUTH_PORT}`;

    // --- Stable names: one record per control-plane machine, following its private IPv4.
    this.dns = new ControlPlaneDns(`${name}-dns`, {
      stack,
      provider: config.provider,
      zone: config.dns.zone,
      ...(vpcId ? { vpcId } : {}),
      saltMasterIpv4: this.saltMaster.machine.privateIpv4,
      teleportIpv4: this.teleport.machine.privateIpv4,
    }, { parent: this, providers: { aws: dnsProvider } });

    // --- Runners, queue by queue. Their drain hooks exist in every run, runners or not: Pulumi
    // runs a deleted machine's hooks by name, from the program of the run that deletes it.
    const drain = new RunnerDrainHooks({ stack, accountId: config.identity.accountId, region: config.identity.region, timeoutMinutes: drainTimeoutMinutes(process.env) });
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
          // Drained before it is deleted or replaced (replaced delete-before-create).
          lifecycle: drain.machineOptions(),
          // Ordering only: the names resolve at a runner's first boot.
          dependsOn: this.dns.records,
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
      const roleArn = m.role === "runner" ? identity.agentRoleArns[m.queue!] : m.role === "salt-master" ? identity.saltMasterRoleArn : identity.teleportRoleArn;
      const profileArn = rolesAnywhere?.profileArns[m.role === "runner" ? m.queue! : m.role];
      const parts = allOf<{
        roleArn: string;
        ownIp: string;
        teleportIp: string;
        publicKeyPem: string;
        roles: Pick<RolesAnywhereCredentials, "trustAnchorArn" | "profileArn"> | undefined;
        ca: { certificatePem: string; privateKeyPem: string } | undefined;
        githubKey: string | undefined;
        deployKey: string | undefined;
        buildkiteAgentToken: string | undefined;
        teleportResources: string | undefined;
        audit: TeleportAuditBackend | undefined;
      }>({
        roleArn,
        ownIp: m.machine.privateIpv4,
        teleportIp: this.teleport.machine.privateIpv4,
        publicKeyPem: keys.minions[m.hostname].publicKeyPem,
        roles: rolesAnywhere && profileArn
          ? allOf<Pick<RolesAnywhereCredentials, "trustAnchorArn" | "profileArn">>({ trustAnchorArn: rolesAnywhere.trustAnchorArn, profileArn })
          : undefined,
        // The CA key reaches the Salt master's pillar and no other machine's.
        ca: rolesAnywhere && m.role === "salt-master"
          ? allOf<{ certificatePem: string; privateKeyPem: string }>({ certificatePem: rolesAnywhere.ca.certificatePem, privateKeyPem: rolesAnywhere.ca.privateKeyPem })
          : undefined,
        githubKey: m.role === "salt-master" ? config.secrets.githubAppPrivateKey : undefined,
        deployKey: m.role === "salt-master" ? config.secrets.saltRepositoryDeployKey : undefined,
        // The queue's agent token goes to its runners' own pillar only (never an SSM path a job's role reads).
        buildkiteAgentToken: m.queue && config.queues[m.queue].agent === "buildkite" ? config.secrets.queueParameters[m.queue]?.["buildkite/agent-token"] : undefined,
        teleportResources: m.role === "teleport"
          ? teleportResourcesYaml({
              stack,
              queues: Object.keys(config.queues),
              publicAddr: config.teleport.publicAddr,
              organization: config.teleport.githubOrg,
              teamsToRoles: config.teleport.teamsToRoles,
              clientId: config.secrets.teleportGithubClientId,
              clientSecret: config.secrets.teleportGithubClientSecret,
              ...(config.provider === "aws"
                ? { ec2Join: { stack, accountId: config.identity.accountId, region: config.aws!.region } }
                : {}),
            })
          : undefined,
        audit: m.role === "teleport" ? auditStorage.auditBackend : undefined,
      });
      const doc = parts.apply((v) =>
        renderPillarDocument(
          buildMinionPillar({
            config,
            machine: { hostname: m.hostname, role: m.role, ...(m.queue ? { queue: m.queue } : {}), privateIpv4: v.ownIp },
            masterAddress: names.saltMaster,
            authAddress,
            teleportPrivateIpv4: v.teleportIp,
            minionPublicKeyPem: v.publicKeyPem,
            roleArn: v.roleArn,
            ...(v.roles ? { rolesAnywhere: v.roles } : {}),
            ...(v.ca && rolesAnywhere ? { rolesAnywhereCa: { ...v.ca, certificateHours: rolesAnywhere.certificateHours } } : {}),
            ...(v.githubKey ? { githubAppPrivateKey: v.githubKey } : {}),
            ...(v.deployKey ? { saltRepositoryDeployKey: v.deployKey } : {}),
            ...(v.buildkiteAgentToken ? { buildkiteAgentToken: v.buildkiteAgentToken } : {}),
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

    this.pillars = new MinionPillars(`${name}-pillars`, {
      stack,
      kmsKeyArn: identity.kmsKeyArn,
      documents,
      hooks: Object.fromEntries(this.machines.filter((m) => m.role === "runner").map((m) => [m.hostname, drain.documentHooks()])),
      runners: Object.fromEntries(this.machines.filter((m) => m.queue).map((m) => [m.hostname, { queue: m.queue!, trusted: config.queues[m.queue!].trusted, isolation: config.queues[m.queue!].isolation ?? "vm" }])),
    }, { parent: this, providers: { aws: identityProvider } });

    this.registerOutputs({
      machines: this.machines.map((m) => ({ hostname: m.hostname, role: m.role, queue: m.queue, privateIpv4: m.machine.privateIpv4 })),
      teleportPublicIpv4: this.teleport.machine.publicIpv4,
      controlPlaneNames: names,
      dnsNameServers: this.dns.nameServers,
    });
  }

  private record(request: MachineRequest, plan: string, machine: Machine, cloudConfig: pulumi.Output<CloudConfig>): void {
    const { hostname, role, queue, instanceType, userData } = request;
    this.machines.push({ hostname, role, ...(queue ? { queue } : {}), plan, instanceType, machine, cloudConfig: pulumi.secret(cloudConfig), userData });
  }

  /**
   * The machines' site, and where the control plane's zone lives: on aws beside the fleet VPC
   * (private zone, the machines' region), on equinix-metal in the identity account (public zone).
   */
  private createSite(name: string, config: FleetConfig): { site: MachineSite; vpcId?: pulumi.Output<string>; dnsProvider: aws.Provider } {
    if (config.provider === "equinix-metal") return { site: new EquinixMetalSite(config.stack, config.equinix!), dnsProvider: this.identity.provider };
    const site = config.aws!;
    const provider = new aws.Provider(`${name}-machines-region`, { region: site.region }, { parent: this });
    const network = new AwsNetwork(`${name}-network`, { stack: config.stack, site }, { parent: this, providers: { aws: provider } });
    return { site: new AwsSiteMachines(config.stack, site, network, provider), vpcId: network.vpcId, dnsProvider: provider };
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
