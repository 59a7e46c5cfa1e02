import * as pulumi from "@pulumi/pulumi";

/**
 * The checked, typed form of a stack's configuration. `loadFleetConfig` (config/load.ts)
 * is the only code that reads Pulumi config; everything else receives a FleetConfig.
 */

export type MachineProviderName = "equinix-metal" | "aws";
export const MACHINE_PROVIDERS: readonly MachineProviderName[] = ["equinix-metal", "aws"];

export type CiAgentKind = "github-actions" | "buildkite";
export const CI_AGENTS: readonly CiAgentKind[] = ["github-actions", "buildkite"];

/** A provider-neutral machine size: the instance type to use on each provider. */
export interface PlanSpec {
  "equinix-metal"?: string;
  aws?: string;
}

export interface EquinixSite {
  projectId: string;
  metro: string;
  /** OS slug, passed to Equinix as a plain string (the SDK enum stops at ubuntu_20_04). */
  os: string;
}

export interface AwsSite {
  region: string;
  vpcCidr: string;
  /** Keyed by availability zone; never a list, so adding a zone moves nothing. */
  subnets: Record<string, { privateCidr: string; publicCidr: string }>;
  /** Zone (a key of `subnets`) the machines are placed in. */
  defaultZone: string;
  /**
   * A maintainer-pinned AMI id for every machine. Unset (the default): Canonical's
   * published Ubuntu 24.04 for amd64 in `region`, resolved from its public SSM parameter
   * (machines/aws.ts). Either way a running machine is never replaced for a new image.
   */
  imageId?: string;
}

export interface ControlMachine {
  /** Key into `plans`. */
  plan: string;
}

export interface TeleportSettings extends ControlMachine {
  /** Cluster name: cannot change after the first start of the auth service. */
  clusterName: string;
  /** Public DNS name of the proxy (port 443, ACME certificate). */
  publicAddr: string;
  acmeEmail: string;
  /** GitHub organisation whose teams grant access. */
  githubOrg: string;
  /** GitHub team slug -> Teleport role names (roles defined by the program). Teams only, never users. */
  teamsToRoles: Record<string, string[]>;
  /** How long audit events and session recordings are kept (days). */
  auditRetentionDays: number;
}

/**
 * Who may assume a deploy role. `queue-role` (the default): only the queue's agent role, so
 * every job of every pipeline on the queue. `ci-identity`: only the CI platform's identity token
 * (OIDC) of the listed repositories/pipelines and branches (docs/deploy.md); the agent role not at all.
 */
export type DeployTrust = "queue-role" | "ci-identity";
export const DEPLOY_TRUSTS: readonly DeployTrust[] = ["queue-role", "ci-identity"];

/** A GitHub Actions job, as its OIDC token names it (`token.actions.githubusercontent.com`). */
export interface GithubCiIdentity {
  platform: "github-actions";
  /** `ORG/REPO`. */
  repository: string;
  /** Exactly one of `ref` (`refs/heads/main`, `refs/tags/v1`) and `environment` (`production`). */
  ref?: string;
  environment?: string;
  /** The reusable or top-level workflow, checked against `job_workflow_ref` (`ORG/REPO/.github/workflows/release.yml@refs/heads/main`). */
  workflow?: string;
  /** Immutable ids: with both, the new subject format (`repo:ORG@OWNER_ID/REPO@REPO_ID:...`) is trusted too, and both formats must carry these ids. */
  repositoryId?: string;
  ownerId?: string;
  /** A pattern (`*`, `?`) or pull requests admitted on purpose; the report flags it. */
  allowWildcard?: true;
  /** The repository also runs on other queues (whose jobs get the same token) on purpose; the report flags it. */
  allowOtherQueues?: true;
}

/** A Buildkite job (`agent.buildkite.com`); every Buildkite organisation shares the issuer. */
export interface BuildkiteCiIdentity {
  platform: "buildkite";
  organization: string;
  pipeline: string;
  branch: string;
  allowWildcard?: true;
  /** The pipeline also runs on other queues (whose jobs get the same token) on purpose; the report flags it. */
  allowOtherQueues?: true;
}

export type CiIdentity = GithubCiIdentity | BuildkiteCiIdentity;

export interface DeployTarget {
  accountId: string;
  roleName: string;
  managedPolicyArns: string[];
  permissionsBoundaryArn?: string;
  /** Absent: `queue-role`. */
  trust?: DeployTrust;
  /** `ci-identity` only: the jobs allowed (at least one). */
  identities?: CiIdentity[];
  /**
   * `ci-identity` only: an IAM OIDC provider that already exists in the target account (made by
   * someone else), trusted instead of one the stack creates and would delete on `pulumi destroy`.
   * Targets of one account and platform all name the same one or none.
   */
  oidcProviderArn?: string;
}

export interface RunnerSpec {
  /** Key into `plans`. */
  plan: string;
  /** OS override (Equinix slug); defaults to the site's OS. */
  os?: string;
}

/** Where a queue's jobs run (issue 15): `vm`, a fresh VM per job (the default); `host`, on the runner host itself. */
export type JobIsolation = "vm" | "host";
export const JOB_ISOLATIONS: readonly JobIsolation[] = ["vm", "host"];

/** The VM each job gets (`queues.<q>.jobVm`), and how many run side by side on one host. */
export interface JobVmSpec {
  cpus: number;
  memoryGiB: number;
  diskGiB: number;
  /** The guest is killed after this long (the slot then starts a fresh VM). */
  maxJobMinutes: number;
  /** Slots per host; unset: derived from the plan's size (infra/config/job-vm.ts). */
  slots?: number;
}

export interface QueueSpec {
  agent: CiAgentKind;
  /**
   * `vm`: each job in a fresh VM on a slot; `host`: on the host (trusted queues only, policy pack).
   * The config check always sets it (default `vm`); unset reads as `vm` (config/job-vm.ts queueJobVm).
   */
  isolation?: JobIsolation;
  /** With isolation `vm` only. */
  jobVm?: JobVmSpec;
  /** Trusted queues run only main-branch pipelines; untrusted ones run pull requests. */
  trusted: boolean;
  labels: string[];
  /** GitHub Actions runner group (github-actions queues only). */
  runnerGroup?: string;
  /** Keyed by runner name (a DNS label); the machine is `<stack>-<queue>-<runner>`. */
  runners: Record<string, RunnerSpec>;
  /** Keyed by a target name; each becomes a role in the target account. */
  deployTargets: Record<string, DeployTarget>;
  /** github-actions queues: the repositories (`ORG/REPO`) whose workflows run here (what `ci-identity` targets may name). */
  repositories?: string[];
  /** buildkite queues: the pipeline slugs whose jobs run here. */
  pipelines?: string[];
}

export interface IdentitySettings {
  /** Account and region that hold the fleet's KMS key, SSM parameters and agent roles. */
  accountId: string;
  region: string;
  /** Role in each deploy-target account that `pulumi up` assumes to create deploy roles. */
  bootstrapRoleName: string;
  /** Validity of the per-runner Roles Anywhere certificates (equinix-metal), hours. */
  runnerCertificateHours: number;
}

export interface SaltSettings extends ControlMachine {
  /** Git repository holding this project's `salt/` tree, and the ref the master serves. */
  repository: string;
  /** The exact commit (40 lower-case hex digits) the master serves; a branch name only with `followBranch`. */
  ref: string;
  /**
   * Opt-in: `ref` is a branch the master follows, so any commit pushed to it reaches every
   * machine as root. Absent (the default): `ref` is a pinned commit. The preview flags it.
   */
  followBranch?: true;
}

/**
 * Stable names of the control plane. The program manages one Route53 hosted zone named `zone`
 * with an A record per control-plane machine (`<stack>-salt-master.<zone>`,
 * `<stack>-teleport.<zone>`) that follows the machine's private IPv4 when it is replaced;
 * user-data names the records, never an address. On aws the zone is private, attached to the
 * fleet VPC; on equinix-metal (no VPC-private DNS) it is public and its parent delegates it.
 */
export interface DnsSettings {
  /** A DNS name such as `fleet.ci.example-metal.org`. */
  zone: string;
}

export interface GithubSettings {
  /** Organisation the GitHub Actions runners register to. */
  organization: string;
  /** GitHub App that mints runner registration tokens (its private key is a secret). */
  appId: string;
  installationId: string;
}

export interface BuildkiteSettings {
  organization: string;
}

export interface AuditArchiveSettings {
  enabled: boolean;
  /** Buildkite's EventBridge partner event source name, e.g. aws.partner/buildkite.com/<org>/<uuid>. */
  partnerEventSource?: string;
  /** Named IAM roles/users that may assume the archive's auditor role (never an account root). */
  auditorPrincipalArns?: string[];
  /** Days an archived event is kept. */
  retentionDays?: number;
}

/** A secret read from config: always a Pulumi secret Output. */
export type SecretString = pulumi.Output<string>;

export interface FleetSecrets {
  /** GitHub OAuth app of the Teleport GitHub connector. */
  teleportGithubClientId: SecretString;
  teleportGithubClientSecret: SecretString;
  /** Only when a github-actions queue exists. */
  githubAppPrivateKey?: SecretString;
  /** Read-only deploy key for a private `salt.repository` (optional). */
  saltRepositoryDeployKey?: SecretString;
  /**
   * Per queue: SSM parameters relative to `/ci-fleet/<stack>/<queue>/`,
   * e.g. `buildkite/agent-token`, `global/env/NPM_TOKEN`, `my-pipeline/ssh/key`.
   */
  queueParameters: Record<string, Record<string, SecretString>>;
}

export interface FleetConfig {
  project: "ci-fleet";
  stack: string;
  provider: MachineProviderName;
  equinix?: EquinixSite;
  aws?: AwsSite;
  plans: Record<string, PlanSpec>;
  saltMaster: SaltSettings;
  teleport: TeleportSettings;
  dns: DnsSettings;
  identity: IdentitySettings;
  github?: GithubSettings;
  buildkite?: BuildkiteSettings;
  auditArchive: AuditArchiveSettings;
  queues: Record<string, QueueSpec>;
  secrets: FleetSecrets;
  /** Secret config keys that were unset or undecryptable in the offline preview. */
  missingSecrets: string[];
}

/** Machine role, used in names, tags, Salt targeting and Teleport labels. */
export type MachineRole = "salt-master" | "teleport" | "runner";

/** Names derived from config keys, never from list positions. */
export const machineNames = {
  saltMaster: (stack: string) => `${stack}-salt-master`,
  teleport: (stack: string) => `${stack}-teleport`,
  runner: (stack: string, queue: string, runner: string) => `${stack}-${queue}-${runner}`,
};
