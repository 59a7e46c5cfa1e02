import * as aws from "@pulumi/aws";
import { gzipSync } from "zlib";
import * as pulumi from "@pulumi/pulumi";
import { CiAgentKind, FleetConfig, MachineProviderName, MachineRole } from "../config/model";
import { ssmPaths } from "../identity/names";
import { buildAuthProxyConfig, buildNodeConfig, teleportNodeLabels, TeleportAuditBackend } from "../teleport/config";
import { renderYaml } from "../teleport/yaml";
import { METADATA_SERVICE_ADDRESSES, saltRepositoryKnownHosts, type RolesAnywhereCredentials } from "./cloud-config";
import { queueJobVm, slotPlan } from "../config/job-vm";
import { renderSaltMasterConfig, renderSaltMasterServiceDropIn, renderSaltRepositoryGitConfig } from "./salt-config";

/**
 * Pillar documents: one JSON document per minion, written to SSM by `pulumi up` and served
 * by the Salt master to that minion only, by its authenticated minion id. The shape is the
 * contract in docs/contracts.md; the Salt states under salt/ read exactly these keys.
 */

/**
 * Where a machine's Roles Anywhere sessions come from. No certificate or key: every machine
 * makes its own key and gets its certificate from the fleet (salt/_runners/ci_fleet_pki.py).
 */
export interface RolesAnywherePillar {
  trust_anchor_arn: string;
  profile_arn: string;
}

/** The Salt master only: the CA it signs the fleet's certificates with. */
export interface RolesAnywhereCaPillar {
  certificate_pem: string;
  /** Secret: the CA key, in no other machine's pillar or user-data. */
  private_key_pem: string;
  /** Lifetime of each certificate the master issues (identity.runnerCertificateHours). */
  certificate_hours: number;
}

export interface RunnerPillar {
  queue: string;
  agent: CiAgentKind;
  trusted: boolean;
  labels: string[];
  runner_group?: string;
  github_organization?: string;
  buildkite_organization?: string;
  /**
   * Buildkite runners: the queue's agent (registration) token. Secret. Only here, in the
   * runner's own pillar: never under the queue's SSM path, which the queue role (and so every
   * job) may read. Salt writes it root-only for the agent's unit (salt/buildkite/token.sls).
   */
  buildkite_agent_token?: string;
  /** Issue 15: `vm` (each job in a fresh VM on a slot) or `host`. */
  isolation: "vm" | "host";
  /** isolation vm only: read by salt/runner/job_vm.sls into /etc/ci-fleet/job-vm.json and the slot units. */
  job_vm?: JobVmPillar;
}

/** The job VMs of one runner host (docs/contracts.md; salt/runner/job_vm.sls). */
export interface JobVmPillar {
  /** Slot units `ci-job-slot@1..N` (config/job-vm.ts: from the plan's size or jobVm.slots). */
  slots: number;
  cpus: number;
  memory_mib: number;
  disk_gib: number;
  max_job_seconds: number;
  /**
   * Destinations no job VM may reach (the slot's nftables rules): the fleet's private networks
   * (aws vpcCidr; equinix-metal's private 10.0.0.0/8), the control plane's addresses, the host's
   * own, link-local (169.254.0.0/16: AWS's metadata and time services) and the provider's metadata.
   */
  blocked_cidrs: string[];
}

export interface MinionPillar {
  ci_fleet: {
    stack: string;
    minion_id: string;
    role: MachineRole;
    provider: MachineProviderName;
    salt: { master_address: string; repository: string; ref: string; minion_public_key_pem: string };
    /** `ssm_prefix`: the path this minion's role may read (runners: their queue; the master: pillar). */
    aws: { region: string; role_arn: string; ssm_prefix?: string; roles_anywhere?: RolesAnywherePillar };
    /**
     * `auth_address`: the auth service by its stable name (`<stack>-teleport.<zone>:3025`);
     * `proxy_private_ipv4`: the Teleport machine's current address, for the firewall rule that
     * lets only its proxy reach a node's SSH service (pillar follows a replacement; user-data does not).
     */
    teleport: { auth_address: string; proxy_private_ipv4: string; node_config?: string; labels: Record<string, string> };
    runner?: RunnerPillar;
  };
  ci_fleet_master?: {
    /** The whole /etc/salt/master.d/ci-fleet.conf, the same text cloud-init writes (salt-config.ts). */
    master_config: string;
    /** /etc/systemd/system/salt-master.service.d/ci-fleet.conf, the same text cloud-init writes (salt-config.ts). */
    master_service_drop_in: string;
    github_app?: { app_id: string; installation_id: string; private_key_pem: string };
    salt_repository_deploy_key?: string;
    /** With the deploy key: the host keys trusted for the repository (cloud-init/pins.yaml). */
    salt_repository_known_hosts?: string;
    /** With the deploy key: /etc/gitconfig (core.sshCommand), the same text cloud-init writes. */
    salt_repository_git_config?: string;
    /** equinix-metal: the fleet's Roles Anywhere CA (aws_credentials.roles_anywhere, ci_fleet_pki). */
    roles_anywhere_ca?: RolesAnywhereCaPillar;
    /**
     * Only with `saltMaster.followBranch`: the branch git.latest checks out and follows (its
     * `branch` argument). Absent: `ci_fleet:salt:ref` is a pinned commit, checked out detached.
     */
    salt_repository_branch?: string;
  };
  ci_fleet_teleport?: {
    auth_config: string;
    /** Roles and GitHub connector for `tctl create -f` (secret), gzip + base64: the YAML alone outgrows an SSM parameter. */
    resources_gzip_base64: string;
    audit?: { bucket: string; events_table: string; region: string };
  };
}

/** Everything one minion's pillar is made of, resolved (secrets as plain strings: call inside an apply). */
export interface MinionPillarInput {
  config: Pick<FleetConfig, "stack" | "provider" | "saltMaster" | "identity" | "teleport" | "github" | "buildkite" | "queues"> & Partial<Pick<FleetConfig, "aws" | "equinix" | "plans">>;
  machine: { hostname: string; role: MachineRole; queue?: string; privateIpv4: string };
  /** The master's stable DNS name. */
  masterAddress: string;
  /** The Teleport auth service by its stable name, `<stack>-teleport.<zone>:3025`. */
  authAddress: string;
  /** The Teleport machine's private IPv4 (nftables needs an address). */
  teleportPrivateIpv4: string;
  minionPublicKeyPem: string;
  /** The AWS role the machine wears: its queue's agent role, the master's or Teleport's. */
  roleArn: string;
  /** equinix-metal: its Roles Anywhere trust anchor and profile (the fleet issues its certificate). */
  rolesAnywhere?: Pick<RolesAnywhereCredentials, "trustAnchorArn" | "profileArn">;
  /** equinix-metal, Salt master only: the CA (its key is secret). */
  rolesAnywhereCa?: { certificatePem: string; privateKeyPem: string; certificateHours: number };
  /** Salt master only. */
  githubAppPrivateKey?: string;
  saltRepositoryDeployKey?: string;
  /** Buildkite runners only: their queue's agent token (`queueSecrets.<queue>.buildkite.agent-token`). */
  buildkiteAgentToken?: string;
  /** Teleport machine only: roles + connector (YAML stream) and where the audit log goes. */
  teleport?: { resourcesYaml: string; audit: TeleportAuditBackend };
}

/** A minion's pillar document (docs/contracts.md). Pure: same input, same document. */
export function buildMinionPillar(input: MinionPillarInput): MinionPillar {
  const { config, machine } = input;
  const { stack } = config;
  const labels = teleportNodeLabels({ stack, role: machine.role, ...(machine.queue ? { queue: machine.queue } : {}) });
  const queue = machine.queue ? config.queues[machine.queue] : undefined;
  // The path the machine's role may read: its queue's secrets, or (the master) every pillar.
  const ssmPrefix = machine.queue ? `${ssmPaths.queue(stack, machine.queue)}/` : machine.role === "salt-master" ? `${ssmPaths.pillar(stack)}/` : undefined;
  const ra = input.rolesAnywhere;
  const pillar: MinionPillar = {
    ci_fleet: {
      stack,
      minion_id: machine.hostname,
      role: machine.role,
      provider: config.provider,
      salt: {
        // The master is a minion of itself.
        master_address: machine.role === "salt-master" ? "127.0.0.1" : input.masterAddress,
        repository: config.saltMaster.repository,
        ref: config.saltMaster.ref,
        minion_public_key_pem: input.minionPublicKeyPem,
      },
      aws: {
        region: config.identity.region,
        role_arn: input.roleArn,
        ...(ssmPrefix ? { ssm_prefix: ssmPrefix } : {}),
        ...(ra ? { roles_anywhere: { trust_anchor_arn: ra.trustAnchorArn, profile_arn: ra.profileArn } } : {}),
      },
      teleport: {
        auth_address: input.authAddress,
        proxy_private_ipv4: input.teleportPrivateIpv4,
        ...(machine.role === "teleport"
          ? {}
          : { node_config: renderYaml(buildNodeConfig({ provider: config.provider, nodename: machine.hostname, privateIpv4: machine.privateIpv4, authAddress: input.authAddress, labels })) }),
        labels,
      },
      ...(queue
        ? {
            runner: {
              queue: machine.queue!,
              agent: queue.agent,
              trusted: queue.trusted,
              labels: queue.labels,
              ...(queue.runnerGroup ? { runner_group: queue.runnerGroup } : {}),
              ...(queue.agent === "github-actions" && config.github ? { github_organization: config.github.organization } : {}),
              ...(queue.agent === "buildkite" && config.buildkite ? { buildkite_organization: config.buildkite.organization } : {}),
              ...(queue.agent === "buildkite" && input.buildkiteAgentToken ? { buildkite_agent_token: input.buildkiteAgentToken } : {}),
              ...runnerJobVmPillar(input),
            },
          }
        : {}),
    },
  };
  if (machine.role === "salt-master") {
    pillar.ci_fleet_master = {
      master_config: renderSaltMasterConfig({ masterMinionId: machine.hostname }),
      master_service_drop_in: renderSaltMasterServiceDropIn(),
      ...(input.githubAppPrivateKey && config.github
        ? { github_app: { app_id: config.github.appId, installation_id: config.github.installationId, private_key_pem: input.githubAppPrivateKey } }
        : {}),
      ...(input.saltRepositoryDeployKey ? saltRepositoryPillar(input.saltRepositoryDeployKey) : {}),
      ...(input.rolesAnywhereCa
        ? {
            roles_anywhere_ca: {
              certificate_pem: input.rolesAnywhereCa.certificatePem,
              private_key_pem: input.rolesAnywhereCa.privateKeyPem,
              certificate_hours: input.rolesAnywhereCa.certificateHours,
            },
          }
        : {}),
      ...(config.saltMaster.followBranch ? { salt_repository_branch: config.saltMaster.ref } : {}),
    };
  }
  if (machine.role === "teleport" && input.teleport) {
    const { audit, resourcesYaml } = input.teleport;
    pillar.ci_fleet_teleport = {
      auth_config: renderYaml(
        buildAuthProxyConfig({
          provider: config.provider,
          nodename: machine.hostname,
          privateIpv4: machine.privateIpv4,
          clusterName: config.teleport.clusterName,
          publicAddr: config.teleport.publicAddr,
          acmeEmail: config.teleport.acmeEmail,
          audit,
          labels,
        }),
      ),
      resources_gzip_base64: gzipBase64(resourcesYaml),
      ...(audit.kind === "aws" ? { audit: { bucket: audit.sessionsBucket, events_table: audit.eventsTable, region: audit.region } } : {}),
    };
  }
  return pillar;
}

/** Equinix Metal gives each server's private IPv4 from 10.0.0.0/8 (per facility blocks, routed within a metro and project). */
export const EQUINIX_PRIVATE_CIDRS = ["10.0.0.0/8"] as const;
/** Link-local: AWS's instance metadata (169.254.169.254) and time service (169.254.169.123). */
export const LINK_LOCAL_CIDR = "169.254.0.0/16";

/** Where no job VM may connect to: private networks of the fleet, control plane, host, metadata (sorted, unique). */
export function jobVmBlockedCidrs(input: Pick<MinionPillarInput, "config" | "teleportPrivateIpv4" | "machine">): string[] {
  const { config } = input;
  const out = new Set<string>([LINK_LOCAL_CIDR, `${input.teleportPrivateIpv4}/32`, `${input.machine.privateIpv4}/32`]);
  for (const address of METADATA_SERVICE_ADDRESSES[config.provider]) if (/^\d+\.\d+\.\d+\.\d+$/.test(address)) out.add(`${address}/32`);
  if (config.aws) out.add(config.aws.vpcCidr);
  if (config.provider === "equinix-metal" || config.equinix) EQUINIX_PRIVATE_CIDRS.forEach((c) => out.add(c));
  const key = (cidr: string) => cidr.split(/[./]/).map((n) => n.padStart(3, "0")).join(".");
  return [...out].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

/** A runner's isolation and, with `vm`, its slots and VM size (config/job-vm.ts). */
function runnerJobVmPillar(input: MinionPillarInput): Pick<RunnerPillar, "isolation" | "job_vm"> {
  const { config, machine } = input;
  const queue = config.queues[machine.queue!];
  const { isolation, jobVm } = queueJobVm(queue);
  if (isolation === "host" || !jobVm) return { isolation: "host" };
  const runnerName = machine.hostname.slice(`${config.stack}-${machine.queue}-`.length);
  const plan = queue.runners[runnerName]?.plan;
  const { slots } = slotPlan(config.provider, plan ? config.plans?.[plan]?.[config.provider] : undefined, jobVm);
  return {
    isolation,
    job_vm: {
      slots,
      cpus: jobVm.cpus,
      memory_mib: jobVm.memoryGiB * 1024,
      disk_gib: jobVm.diskGiB,
      max_job_seconds: jobVm.maxJobMinutes * 60,
      blocked_cidrs: jobVmBlockedCidrs(input),
    },
  };
}

/** The master's pillar for a private Salt repository: the deploy key and what cloud-init writes with it. */
export function saltRepositoryPillar(deployKey: string): {
  salt_repository_deploy_key: string;
  salt_repository_known_hosts: string;
  salt_repository_git_config: string;
} {
  return {
    salt_repository_deploy_key: deployKey,
    salt_repository_known_hosts: saltRepositoryKnownHosts(),
    salt_repository_git_config: renderSaltRepositoryGitConfig(),
  };
}

/** SSM's limit for a parameter (advanced tier); Intelligent-Tiering picks the tier. */
export const PILLAR_MAX_BYTES = 8192;

/** Text for a `*_gzip_base64` pillar field (gzip's header carries no timestamp here, so output is stable). */
export function gzipBase64(text: string): string {
  return gzipSync(new TextEncoder().encode(text), { level: 9 }).toString("base64");
}

/** Stable, compact JSON (keys in insertion order, which the builders fix). */
export function renderPillarDocument(doc: MinionPillar): string {
  const text = JSON.stringify(doc);
  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes > PILLAR_MAX_BYTES) {
    throw new Error(`pillar document of ${doc.ci_fleet.minion_id} is ${bytes} bytes; SSM parameters hold at most ${PILLAR_MAX_BYTES}`);
  }
  return text;
}

export function pillarParameterName(stack: string, minionId: string): string {
  return `/ci-fleet/${stack}/pillar/${minionId}`;
}

export interface MinionPillarsArgs {
  stack: string;
  kmsKeyArn: pulumi.Input<string>;
  /** Minion id -> rendered pillar document (a Pulumi secret). */
  documents: Record<string, pulumi.Output<string>>;
  /** Minion id -> resource hooks of its document (runners: drained before it goes, infra/fleet/drain-hook.ts). */
  hooks?: Record<string, pulumi.ResourceHookBinding>;
  /** Runners: their queue's trust and isolation as tags, which the policy pack reads (policy/job-isolation.ts). */
  runners?: Record<string, { queue: string; trusted: boolean; isolation: "vm" | "host" }>;
}

/** One SecureString parameter per minion under `/ci-fleet/<stack>/pillar/`, encrypted with the fleet key. */
export class MinionPillars extends pulumi.ComponentResource {
  readonly parameterNames: Record<string, string> = {};

  constructor(name: string, args: MinionPillarsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ci-fleet:bootstrap:MinionPillars", name, {}, opts);
    for (const minionId of Object.keys(args.documents).sort()) {
      const parameterName = pillarParameterName(args.stack, minionId);
      new aws.ssm.Parameter(
        `${name}-${minionId}`,
        {
          name: parameterName,
          type: "SecureString",
          keyId: args.kmsKeyArn,
          tier: "Intelligent-Tiering",
          value: pulumi.secret(args.documents[minionId]),
          description: `Salt pillar of minion ${minionId} (served by the master to this minion id only)`,
          tags: {
            "ci-fleet:stack": args.stack,
            "ci-fleet:role": "pillar",
            "ci-fleet:minion": minionId,
            ...(args.runners?.[minionId]
              ? { "ci-fleet:queue": args.runners[minionId].queue, "ci-fleet:trusted": String(args.runners[minionId].trusted), "ci-fleet:isolation": args.runners[minionId].isolation }
              : {}),
          },
        },
        { parent: this, ...(args.hooks?.[minionId] ? { hooks: args.hooks[minionId] } : {}) },
      );
      this.parameterNames[minionId] = parameterName;
    }
    this.registerOutputs({ parameterNames: this.parameterNames });
  }
}
