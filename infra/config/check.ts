import {
  AuditArchiveSettings,
  AwsSite,
  BuildkiteSettings,
  CI_AGENTS,
  CiAgentKind,
  DeployTarget,
  DnsSettings,
  EquinixSite,
  FleetConfig,
  GithubSettings,
  IdentitySettings,
  JOB_ISOLATIONS,
  JobIsolation,
  JobVmSpec,
  MACHINE_PROVIDERS,
  PlanSpec,
  QueueSpec,
  RunnerSpec,
  SaltSettings,
  TeleportSettings,
  machineNames,
} from "./model";
import { DEFAULT_JOB_VM, slotPlan, slotProblems } from "./job-vm";
import { buildRoles, ROLE_FLEET_ADMIN } from "../teleport/roles";
import { RESERVED_QUEUE_NAMES } from "../identity/names";
import { OIDC_ISSUERS, ciIdentityIsBroad, ciIdentitySubjects, isPullRequestRef } from "../identity/ci-identity";
import { CiIdentity, DEPLOY_TRUSTS, DeployTrust } from "./model";
import { RESERVED_ENV_NAMES } from "../../hooks/buildkite/src/slugs";

/**
 * Pure checking of a stack's plain (non-secret) settings: every problem is collected,
 * with its config path and what was expected, so one run reports all of them.
 */

export interface ConfigProblem {
  /** Config path, e.g. `ci-fleet:queues.default.runners.r1.plan`. */
  path: string;
  message: string;
}

export class FleetConfigError extends Error {
  constructor(readonly problems: ConfigProblem[]) {
    super(
      `ci-fleet: invalid stack configuration (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n` +
        problems.map((p) => `  - ${p.path}: ${p.message}`).join("\n"),
    );
    this.name = "FleetConfigError";
  }
}

/** The plain settings after checking; secrets are read separately (config/load.ts). */
export type PlainFleetSettings = Omit<FleetConfig, "project" | "stack" | "secrets" | "missingSecrets">;

/** Plain config keys of the `ci-fleet` namespace. Secret keys live in SECRET_KEYS. */
export const PLAIN_KEYS = [
  "provider",
  "equinix",
  "aws",
  "plans",
  "saltMaster",
  "teleport",
  "identity",
  "github",
  "buildkite",
  "auditArchive",
  "queues",
  "deployTargets",
  "dns",
] as const;

export const SECRET_KEYS = [
  "teleportGithubClientId",
  "teleportGithubClientSecret",
  "githubAppPrivateKey",
  "saltRepositoryDeployKey",
  "queueSecrets",
] as const;
export type SecretKey = (typeof SECRET_KEYS)[number];

const RESERVED_RUNNER_NAMES = ["teleport"];

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const DNS_NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/;
const ACCOUNT_ID = /^\d{12}$/;
const AWS_REGION = /^[a-z]{2}(-gov)?-[a-z]+-\d$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const EQUINIX_PLAN = /^[a-z][a-z0-9]*\.[a-z0-9]+\.[a-z0-9]+$/;
const AWS_INSTANCE_TYPE = /^[a-z][a-z0-9-]*\.[a-z0-9-]+$/;
const AWS_METAL_TYPE = /^[a-z][a-z0-9-]*\.metal(-\d+xl)?$/;
const IAM_ROLE_NAME = /^[\w+=,.@-]{1,64}$/;
const POLICY_ARN = /^arn:aws(-[a-z]+)*:iam::(aws|\d{12}):policy\/[\w+=,.@/-]{1,512}$/;
/** EC2 resource ids: `ami-` and 8 (before 2016) or 17 lower-case hex digits. */
const AMI_ID = /^ami-([0-9a-f]{8}|[0-9a-f]{17})$/;
/**
 * AMI ids copied from tutorials and from AWS's documentation examples into stack files:
 * never checked for any region.
 */
const PLACEHOLDER_AMIS = ["ami-0c55b159cbfafe1f0", "ami-0abcdef1234567890", "ami-0123456789abcdef0", "ami-1234567890abcdef0", "ami-12345678", "ami-1a2b3c4d"];
/**
 * arm64 instance types: `g` among the attributes after the generation (AWS Graviton: c7g,
 * m6gd, c7gn, im4gn, x2gd, ...) and the first Graviton family, a1. The fleet's image is amd64.
 */
function isArm64InstanceType(type: string): boolean {
  const m = /^([a-z]+)(\d+)([a-z-]*)\./.exec(type);
  if (!m) return false;
  return m[3].includes("g") || `${m[1]}${m[2]}` === "a1";
}
const OS_SLUG = /^[a-z0-9][a-z0-9_.-]*$/;
const GIT_REF = /^(?!.*\.\.)(?!\/)[A-Za-z0-9._/-]{1,200}$/;
const LABEL = /^[A-Za-z0-9][A-Za-z0-9._:=/-]{0,99}$/;
const GITHUB_SLUG = /^[A-Za-z0-9]([A-Za-z0-9-]{0,98}[A-Za-z0-9])?$/;
const EMAIL = /^[^@\s]+@[^@\s]+\.[a-z]{2,}$/i;
const NUMERIC_ID = /^\d{1,20}$/;
const GITHUB_REPOSITORY = /^[A-Za-z0-9]([A-Za-z0-9-]{0,38})\/[A-Za-z0-9._-]{1,100}$/;
const BUILDKITE_SLUG = /^[a-z0-9][a-z0-9-]{0,99}$/;
const CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;

type Obj = Record<string, unknown>;

function describe(v: unknown): string {
  if (v === undefined) return "nothing";
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a map";
  if (typeof v === "string" && v.length > 60) return `${JSON.stringify(v.slice(0, 57))} (${v.length} characters)`;
  return JSON.stringify(v);
}

function parseCidr(v: string): { base: number; bits: number } | undefined {
  const m = CIDR.exec(v);
  if (!m) return undefined;
  const octets = m.slice(1, 5).map(Number);
  const bits = Number(m[5]);
  if (octets.some((o) => o > 255) || bits > 32) return undefined;
  const base = octets.reduce((a, o) => a * 256 + o, 0);
  if (base % 2 ** (32 - bits) !== 0) return undefined;
  return { base, bits };
}

function cidrWithin(inner: string, outer: string): boolean {
  const a = parseCidr(inner);
  const b = parseCidr(outer);
  if (!a || !b || a.bits < b.bits) return false;
  return Math.floor(a.base / 2 ** (32 - b.bits)) === Math.floor(b.base / 2 ** (32 - b.bits));
}

function cidrsOverlap(x: string, y: string): boolean {
  return cidrWithin(x, y) || cidrWithin(y, x);
}

/** Accumulates problems while reading a raw config tree. */
class Checker {
  readonly problems: ConfigProblem[] = [];

  constructor(private readonly ns: string) {}

  problem(path: string, message: string): void {
    this.problems.push({ path: `${this.ns}:${path}`, message });
  }

  /** A map whose keys are all known; reports unknown and missing required keys. */
  object(path: string, v: unknown, keys: { required: string[]; optional?: string[] }): Obj | undefined {
    if (typeof v !== "object" || v === null || Array.isArray(v)) {
      this.problem(path, `expected a map with keys ${keys.required.join(", ")}, got ${describe(v)}`);
      return undefined;
    }
    const o = v as Obj;
    const known = new Set([...keys.required, ...(keys.optional ?? [])]);
    for (const k of Object.keys(o)) {
      if (!known.has(k)) this.problem(`${path}.${k}`, `unknown key; expected one of ${[...known].join(", ")}`);
    }
    for (const k of keys.required) {
      if (o[k] === undefined) this.problem(`${path}.${k}`, "is required");
    }
    return o;
  }

  /** A map keyed by names (DNS labels unless told otherwise). */
  map(path: string, v: unknown, what: string, keyPattern = DNS_LABEL, keyDesc = "a DNS label (a-z, 0-9, '-', at most 63)"): Obj | undefined {
    if (typeof v !== "object" || v === null || Array.isArray(v)) {
      this.problem(path, `expected a map of ${what} keyed by name, got ${describe(v)}`);
      return undefined;
    }
    const o = v as Obj;
    for (const k of Object.keys(o)) {
      if (!keyPattern.test(k)) this.problem(`${path}.${k}`, `name must be ${keyDesc}`);
    }
    return o;
  }

  string(path: string, v: unknown, pattern: RegExp, expected: string): string | undefined {
    if (typeof v !== "string" || !pattern.test(v)) {
      if (v !== undefined) this.problem(path, `expected ${expected}, got ${describe(v)}`);
      return undefined;
    }
    return v;
  }

  oneOf<T extends string>(path: string, v: unknown, options: readonly T[]): T | undefined {
    if (typeof v !== "string" || !(options as readonly string[]).includes(v)) {
      if (v !== undefined) this.problem(path, `expected one of ${options.join(" | ")}, got ${describe(v)}`);
      return undefined;
    }
    return v as T;
  }

  boolean(path: string, v: unknown): boolean | undefined {
    if (typeof v !== "boolean") {
      if (v !== undefined) this.problem(path, `expected true or false, got ${describe(v)}`);
      return undefined;
    }
    return v;
  }

  integer(path: string, v: unknown, min: number, max: number): number | undefined {
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      if (v !== undefined) this.problem(path, `expected a whole number from ${min} to ${max}, got ${describe(v)}`);
      return undefined;
    }
    return v;
  }

  strings(path: string, v: unknown, pattern: RegExp, expected: string): string[] | undefined {
    if (!Array.isArray(v)) {
      if (v !== undefined) this.problem(path, `expected a list of ${expected}, got ${describe(v)}`);
      return undefined;
    }
    const out: string[] = [];
    v.forEach((x, i) => {
      const s = this.string(`${path}[${i}]`, x, pattern, expected);
      if (s !== undefined) out.push(s);
      else if (x === undefined) this.problem(`${path}[${i}]`, `expected ${expected}`);
    });
    const dup = out.filter((x, i) => out.indexOf(x) !== i);
    if (dup.length) this.problem(path, `duplicate entries: ${[...new Set(dup)].join(", ")}`);
    return out.length === v.length ? out : undefined;
  }
}

/** A commit id as git.latest compares it (salt/states/git.py lower-cases a hex `rev`): 40 lower-case hex digits. */
export const COMMIT_ID = /^[0-9a-f]{40}$/;

/**
 * `saltMaster.ref`: an exact commit unless `followBranch` is true, then a branch name. The Salt
 * tree runs as root on every machine, so following a branch hands the fleet to whoever can
 * push to it; the opt-in is flagged by the preview (report.md, `npm start`).
 */
function saltRef(c: Checker, v: unknown, followBranch: boolean): string | undefined {
  const path = "saltMaster.ref";
  const how = "the commit of this repository the Salt master serves, 40 lower-case hex digits (`git rev-parse <commit>`)";
  if (v === undefined) {
    c.problem(path, `is required: ${how}; a branch name needs saltMaster.followBranch: true`);
    return undefined;
  }
  if (typeof v !== "string") {
    c.problem(path, `expected ${followBranch ? "a branch name" : how}, got ${describe(v)}`);
    return undefined;
  }
  if (followBranch) {
    if (/^[0-9a-fA-F]{40}$/.test(v)) {
      c.problem(path, `${v} is a commit id, but saltMaster.followBranch is true: remove followBranch (a pinned commit needs no opt-in)`);
      return undefined;
    }
    if (!GIT_REF.test(v) || v.startsWith("refs/") || v === "HEAD" || v.endsWith("/") || v.endsWith(".lock")) {
      c.problem(path, `expected a branch name (as in refs/heads/<name>, without the refs/heads/ prefix), got ${describe(v)}`);
      return undefined;
    }
    return v;
  }
  if (/^[0-9A-F]{40}$/i.test(v) && !COMMIT_ID.test(v)) {
    c.problem(path, `expected the commit id in lower case (${v.toLowerCase()}), got ${describe(v)}`);
    return undefined;
  }
  if (!COMMIT_ID.test(v)) {
    c.problem(
      path,
      `${describe(v)} is not a commit id: the Salt tree runs as root on every machine, so it is pinned to ${how}; ` +
        "to follow a branch instead (any commit pushed to it then reaches the fleet), set saltMaster.followBranch: true, which the preview flags",
    );
    return undefined;
  }
  // A period of at most 16 (0000..., deadbeef..., 0123456789abcdef...) is a placeholder, not a commit.
  // (The repetition forces at least 13 of the 40 digits: no real commit id matches by chance.)
  if (/^(.{1,16})\1+.{0,15}$/.test(v)) {
    c.problem(path, `${v} is a placeholder (a repeating pattern), not a commit of this repository`);
    return undefined;
  }
  return v;
}

export interface CheckInput {
  stack: string;
  /** Plain config values of the namespace, keyed without the namespace; objects already parsed. */
  values: Record<string, unknown>;
  /** Secret keys (or `queueSecrets` leaf paths) that are present, set or placeholder. */
  secretsPresent: ReadonlySet<string>;
  /** Relative SSM paths under each queue given in `queueSecrets`. */
  queueSecretPaths: Record<string, string[]>;
}

export interface CheckResult {
  settings?: PlainFleetSettings;
  problems: ConfigProblem[];
  /** Secret keys the settings require (e.g. the GitHub App key when a github-actions queue exists). */
  requiredSecrets: string[];
}

const QUEUE_SECRET_PATH = /^(buildkite\/agent-token|[a-z0-9][a-z0-9._-]{0,127}\/(env\/[A-Za-z_][A-Za-z0-9_-]{0,127}|ssh\/key|allowed_pipelines|allowed_teams))$/;

/** `queues.<q>.jobVm`: the job VM's size (defaults: config/job-vm.ts DEFAULT_JOB_VM); only with isolation vm. */
function checkJobVm(c: Checker, q: string, v: unknown, isolation: JobIsolation | undefined): JobVmSpec | undefined {
  const path = `queues.${q}.jobVm`;
  if (isolation === "host") {
    if (v !== undefined) c.problem(path, "applies only to isolation: vm (this queue runs its jobs on the host)");
    return undefined;
  }
  if (v === undefined) return { ...DEFAULT_JOB_VM };
  const o = c.object(path, v, { required: [], optional: ["cpus", "memoryGiB", "diskGiB", "maxJobMinutes", "slots"] });
  if (!o) return undefined;
  const cpus = o.cpus === undefined ? DEFAULT_JOB_VM.cpus : c.integer(`${path}.cpus`, o.cpus, 1, 256);
  const memoryGiB = o.memoryGiB === undefined ? DEFAULT_JOB_VM.memoryGiB : c.integer(`${path}.memoryGiB`, o.memoryGiB, 1, 4096);
  const diskGiB = o.diskGiB === undefined ? DEFAULT_JOB_VM.diskGiB : c.integer(`${path}.diskGiB`, o.diskGiB, 10, 16384);
  const maxJobMinutes = o.maxJobMinutes === undefined ? DEFAULT_JOB_VM.maxJobMinutes : c.integer(`${path}.maxJobMinutes`, o.maxJobMinutes, 5, 4320);
  const slots = o.slots === undefined ? undefined : c.integer(`${path}.slots`, o.slots, 1, 256);
  if (o.slots !== undefined && slots === undefined && o.slots === 0) c.problem(`${path}.slots`, "zero slots run no job: remove the runners, or the key (slots are then derived from the plan)");
  if (cpus === undefined || memoryGiB === undefined || diskGiB === undefined || maxJobMinutes === undefined || (o.slots !== undefined && slots === undefined)) return undefined;
  return { cpus, memoryGiB, diskGiB, maxJobMinutes, ...(slots !== undefined ? { slots } : {}) };
}

/** Checks every plain setting; pure, so it is table- and property-tested. */
export function checkFleetSettings(input: CheckInput, ns = "ci-fleet"): CheckResult {
  const c = new Checker(ns);
  const v = input.values;
  const stack = input.stack;

  if (!DNS_LABEL.test(stack)) c.problem("(stack)", `stack name ${describe(stack)} must be a DNS label: it prefixes every machine name`);
  for (const k of Object.keys(v)) {
    if (!(PLAIN_KEYS as readonly string[]).includes(k) && !(SECRET_KEYS as readonly string[]).includes(k)) {
      c.problem(k, `unknown key; expected one of ${[...PLAIN_KEYS, ...SECRET_KEYS].join(", ")}`);
    }
  }
  for (const k of ["provider", "plans", "saltMaster", "teleport", "identity", "queues", "dns"]) {
    if (v[k] === undefined) c.problem(k, "is required");
  }

  const provider = c.oneOf("provider", v.provider, MACHINE_PROVIDERS);

  // --- sites: both may be present; only the selected one is required.
  let equinix: EquinixSite | undefined;
  if (v.equinix !== undefined || provider === "equinix-metal") {
    if (v.equinix === undefined) c.problem("equinix", "is required when provider is equinix-metal");
    else {
      const o = c.object("equinix", v.equinix, { required: ["projectId", "metro"], optional: ["os"] });
      if (o) {
        const projectId = c.string("equinix.projectId", o.projectId, UUID, "an Equinix project UUID");
        const metro = c.string("equinix.metro", o.metro, /^[a-z]{2}$/, "a two-letter metro code such as da or sv");
        const os = o.os === undefined ? "ubuntu_24_04" : c.string("equinix.os", o.os, OS_SLUG, "an OS slug such as ubuntu_24_04");
        if (projectId && metro && os) equinix = { projectId, metro, os };
      }
    }
  }

  let aws: AwsSite | undefined;
  if (v.aws !== undefined || provider === "aws") {
    if (v.aws === undefined) c.problem("aws", "is required when provider is aws");
    else {
      const o = c.object("aws", v.aws, { required: ["region", "vpcCidr", "subnets", "defaultZone"], optional: ["imageId"] });
      if (o) {
        const region = c.string("aws.region", o.region, AWS_REGION, "an AWS region such as us-east-2");
        const vpcCidr = c.string("aws.vpcCidr", o.vpcCidr, CIDR, "an IPv4 CIDR such as 10.40.0.0/16");
        if (vpcCidr && !parseCidr(vpcCidr)) c.problem("aws.vpcCidr", `expected a valid network address, got ${describe(vpcCidr)}`);
        // No imageId: Canonical's published Ubuntu 24.04 for amd64 (machines/aws.ts).
        let imageId: string | undefined;
        if (typeof o.imageId === "string" && PLACEHOLDER_AMIS.includes(o.imageId)) {
          c.problem("aws.imageId", `${o.imageId} is a placeholder copied from tutorials or AWS's examples, not an image checked for this region; remove aws.imageId to use Canonical's published Ubuntu 24.04 image, or pin an AMI id you have checked`);
        } else if (o.imageId !== undefined) {
          imageId = c.string("aws.imageId", o.imageId, AMI_ID, "an AMI id (ami- and 8 or 17 lower-case hex digits)");
        }
        const subnetsRaw = c.map("aws.subnets", o.subnets, "subnets", /^[a-z]{2}(-gov)?-[a-z]+-\d[a-z]$/, "an availability zone such as us-east-2a");
        const subnets: AwsSite["subnets"] = {};
        const allCidrs: [string, string][] = [];
        for (const [az, s] of Object.entries(subnetsRaw ?? {})) {
          const so = c.object(`aws.subnets.${az}`, s, { required: ["privateCidr", "publicCidr"] });
          if (!so) continue;
          const privateCidr = c.string(`aws.subnets.${az}.privateCidr`, so.privateCidr, CIDR, "an IPv4 CIDR");
          const publicCidr = c.string(`aws.subnets.${az}.publicCidr`, so.publicCidr, CIDR, "an IPv4 CIDR");
          for (const [kind, cidr] of [["privateCidr", privateCidr], ["publicCidr", publicCidr]] as const) {
            if (!cidr) continue;
            if (vpcCidr && !cidrWithin(cidr, vpcCidr)) c.problem(`aws.subnets.${az}.${kind}`, `${cidr} is not inside aws.vpcCidr ${vpcCidr}`);
            for (const [otherPath, other] of allCidrs) {
              if (cidrsOverlap(cidr, other)) c.problem(`aws.subnets.${az}.${kind}`, `${cidr} overlaps ${other} (${otherPath})`);
            }
            allCidrs.push([`aws.subnets.${az}.${kind}`, cidr]);
          }
          if (region && !az.startsWith(region)) c.problem(`aws.subnets.${az}`, `zone is not in aws.region ${region}`);
          if (privateCidr && publicCidr) subnets[az] = { privateCidr, publicCidr };
        }
        if (subnetsRaw && Object.keys(subnetsRaw).length === 0) c.problem("aws.subnets", "expected at least one availability zone");
        const defaultZone = typeof o.defaultZone === "string" ? o.defaultZone : undefined;
        if (o.defaultZone !== undefined && (!defaultZone || !subnetsRaw || !(defaultZone in subnetsRaw))) {
          c.problem("aws.defaultZone", `expected one of the zones in aws.subnets (${Object.keys(subnetsRaw ?? {}).join(", ")}), got ${describe(o.defaultZone)}`);
        }
        if (region && vpcCidr && (o.imageId === undefined || imageId) && defaultZone && Object.keys(subnets).length) {
          aws = { region, vpcCidr, subnets, defaultZone, ...(imageId ? { imageId } : {}) };
        }
      }
    }
  }

  // --- plans: provider-neutral sizes, one instance type per provider.
  const plans: Record<string, PlanSpec> = {};
  const plansRaw = c.map("plans", v.plans, "plans");
  for (const [name, p] of Object.entries(plansRaw ?? {})) {
    const o = c.object(`plans.${name}`, p, { required: [], optional: ["equinix-metal", "aws"] });
    if (!o) continue;
    const spec: PlanSpec = {};
    if (o["equinix-metal"] !== undefined) spec["equinix-metal"] = c.string(`plans.${name}.equinix-metal`, o["equinix-metal"], EQUINIX_PLAN, "an Equinix Metal plan such as c3.small.x86");
    if (o.aws !== undefined) spec.aws = c.string(`plans.${name}.aws`, o.aws, AWS_INSTANCE_TYPE, "an EC2 instance type such as c5.metal");
    if (provider && o[provider] === undefined) c.problem(`plans.${name}.${provider}`, `is required: provider is ${provider}`);
    plans[name] = spec;
  }

  const planRef = (path: string, v: unknown, runner: boolean): string | undefined => {
    if (typeof v !== "string" || !plansRaw || !(v in plansRaw)) {
      c.problem(path, `expected one of the plans (${Object.keys(plansRaw ?? {}).join(", ") || "none defined"}), got ${describe(v)}`);
      return undefined;
    }
    const type = plans[v]?.aws;
    if (runner && provider === "aws" && type && !AWS_METAL_TYPE.test(type)) {
      c.problem(path, `plan ${v} is ${type} on aws; runners need a bare-metal type (*.metal) for /dev/kvm`);
    }
    if (provider === "aws" && type && isArm64InstanceType(type)) {
      c.problem(path, `plan ${v} is ${type} on aws, an arm64 (Graviton) type; the fleet's image is Ubuntu 24.04 for amd64`);
    }
    return v;
  };

  // --- control plane
  let saltMaster: SaltSettings | undefined;
  const so = v.saltMaster === undefined ? undefined : c.object("saltMaster", v.saltMaster, { required: ["plan", "repository"], optional: ["ref", "followBranch"] });
  if (so) {
    const plan = planRef("saltMaster.plan", so.plan, false);
    const repository = c.string("saltMaster.repository", so.repository, /^(https:\/\/|git@|ssh:\/\/)[^\s]+$/, "a git URL (https://, ssh:// or git@host:path)");
    const followBranch = so.followBranch === undefined ? false : c.boolean("saltMaster.followBranch", so.followBranch);
    const ref = saltRef(c, so.ref, followBranch === true);
    if (plan && repository && ref && followBranch !== undefined) saltMaster = { plan, repository, ref, ...(followBranch ? { followBranch: true as const } : {}) };
  }

  let teleport: TeleportSettings | undefined;
  const to = v.teleport === undefined ? undefined : c.object("teleport", v.teleport, {
    required: ["plan", "clusterName", "publicAddr", "acmeEmail", "githubOrg", "teamsToRoles"],
    optional: ["auditRetentionDays"],
  });
  if (to) {
    const plan = planRef("teleport.plan", to.plan, false);
    const clusterName = c.string("teleport.clusterName", to.clusterName, DNS_NAME, "a DNS name (it cannot change later)");
    const publicAddr = c.string("teleport.publicAddr", to.publicAddr, DNS_NAME, "the proxy's public DNS name");
    const acmeEmail = c.string("teleport.acmeEmail", to.acmeEmail, EMAIL, "an email address for ACME");
    const githubOrg = c.string("teleport.githubOrg", to.githubOrg, GITHUB_SLUG, "a GitHub organisation name");
    const auditRetentionDays = to.auditRetentionDays === undefined ? 365 : c.integer("teleport.auditRetentionDays", to.auditRetentionDays, 30, 3650);
    // The roles the program defines for these queues; `teamsToRoles` may name only these.
    const queueNames = Object.keys((v.queues as Obj | undefined) ?? {}).filter((q) => DNS_LABEL.test(q));
    const roleNames = buildRoles({ queues: queueNames }).map((r) => r.metadata.name);
    const teamsRaw = c.map("teleport.teamsToRoles", to.teamsToRoles, "GitHub team slugs", /^[a-z0-9][a-z0-9_-]{0,99}$/, "a GitHub team slug (never a user)");
    const teamsToRoles: Record<string, string[]> = {};
    for (const [team, roles] of Object.entries(teamsRaw ?? {})) {
      const list = c.strings(`teleport.teamsToRoles.${team}`, roles, /^.+$/, "Teleport role names");
      for (const r of list ?? []) {
        if (!roleNames.includes(r)) c.problem(`teleport.teamsToRoles.${team}`, `unknown Teleport role ${describe(r)}; expected ${roleNames.join(" | ")}`);
      }
      if (list && list.length === 0) c.problem(`teleport.teamsToRoles.${team}`, "expected at least one role");
      if (list) teamsToRoles[team] = list;
    }
    if (teamsRaw && !Object.values(teamsToRoles).some((r) => r.includes(ROLE_FLEET_ADMIN))) {
      c.problem("teleport.teamsToRoles", `expected at least one team with the ${ROLE_FLEET_ADMIN} role (or nobody can administer the fleet)`);
    }
    if (plan && clusterName && publicAddr && acmeEmail && githubOrg && auditRetentionDays !== undefined && teamsRaw) {
      teleport = { plan, clusterName, publicAddr, acmeEmail, githubOrg, teamsToRoles, auditRetentionDays };
    }
  }

  // --- stable names of the control plane (infra/fleet/control-plane-dns.ts)
  let dns: DnsSettings | undefined;
  const dno = v.dns === undefined ? undefined : c.object("dns", v.dns, { required: ["zone"] });
  if (dno) {
    const zone = c.string("dns.zone", dno.zone, DNS_NAME, "a DNS name such as fleet.ci.example.org (the zone the program manages)");
    if (zone) {
      // The longest record name: `<stack>-salt-master.<zone>`; a label holds at most 63 characters.
      const label = `${stack}-salt-master`;
      if (label.length > 63) c.problem("dns.zone", `record label ${label} is ${label.length} characters; DNS allows at most 63`);
      if (label.length + 1 + zone.length > 253) c.problem("dns.zone", `record name ${label}.${zone} is longer than 253 characters`);
      // Inside a zone the program manages, a name nobody put in it does not resolve: on aws the
      // private zone hides the public record inside the VPC, on equinix-metal the delegation does.
      const publicAddr = (v.teleport as Obj | undefined)?.publicAddr;
      if (typeof publicAddr === "string" && (publicAddr === zone || publicAddr.endsWith(`.${zone}`))) {
        c.problem("dns.zone", `teleport.publicAddr ${publicAddr} is inside the zone ${zone}, which holds only the control plane's private records; pick a zone that does not contain it`);
      }
      dns = { zone };
    }
  }

  let identity: IdentitySettings | undefined;
  const io = v.identity === undefined ? undefined : c.object("identity", v.identity, { required: ["accountId", "region", "bootstrapRoleName"], optional: ["runnerCertificateHours"] });
  if (io) {
    const accountId = c.string("identity.accountId", io.accountId, ACCOUNT_ID, "a 12-digit AWS account id");
    const region = c.string("identity.region", io.region, AWS_REGION, "an AWS region such as us-east-2");
    const bootstrapRoleName = c.string("identity.bootstrapRoleName", io.bootstrapRoleName, IAM_ROLE_NAME, "an IAM role name (at most 64 characters of [A-Za-z0-9+=,.@_-])");
    const runnerCertificateHours = io.runnerCertificateHours === undefined ? 168 : c.integer("identity.runnerCertificateHours", io.runnerCertificateHours, 24, 720);
    if (accountId && region && bootstrapRoleName && runnerCertificateHours !== undefined) identity = { accountId, region, bootstrapRoleName, runnerCertificateHours };
  }

  let github: GithubSettings | undefined;
  if (v.github !== undefined) {
    const o = c.object("github", v.github, { required: ["organization", "appId", "installationId"] });
    if (o) {
      const organization = c.string("github.organization", o.organization, GITHUB_SLUG, "a GitHub organisation name");
      const appId = c.string("github.appId", typeof o.appId === "number" ? String(o.appId) : o.appId, NUMERIC_ID, "the GitHub App's numeric id");
      const installationId = c.string("github.installationId", typeof o.installationId === "number" ? String(o.installationId) : o.installationId, NUMERIC_ID, "the App installation's numeric id");
      if (organization && appId && installationId) github = { organization, appId, installationId };
    }
  }

  let buildkite: BuildkiteSettings | undefined;
  if (v.buildkite !== undefined) {
    const o = c.object("buildkite", v.buildkite, { required: ["organization"] });
    const organization = o && c.string("buildkite.organization", o.organization, /^[a-z0-9][a-z0-9-]{0,99}$/, "a Buildkite organisation slug");
    if (organization) buildkite = { organization };
  }

  let auditArchive: AuditArchiveSettings = { enabled: false };
  if (v.auditArchive !== undefined) {
    const o = c.object("auditArchive", v.auditArchive, { required: ["enabled"], optional: ["partnerEventSource", "auditorPrincipalArns", "retentionDays"] });
    if (o) {
      const enabled = c.boolean("auditArchive.enabled", o.enabled);
      const partnerEventSource =
        o.partnerEventSource === undefined ? undefined : c.string("auditArchive.partnerEventSource", o.partnerEventSource, /^aws\.partner\/buildkite\.com(\/[A-Za-z0-9._-]+)+$/, "a Buildkite partner event source (aws.partner/buildkite.com/<org>/<id>)");
      const auditorPrincipalArns =
        o.auditorPrincipalArns === undefined ? undefined : c.strings("auditArchive.auditorPrincipalArns", o.auditorPrincipalArns, /^arn:aws(-[a-z]+)*:iam::\d{12}:(role|user)\/[\w+=,.@/-]{1,512}$/, "named IAM role or user ARNs (never an account root)");
      const retentionDays = o.retentionDays === undefined ? undefined : c.integer("auditArchive.retentionDays", o.retentionDays, 30, 3650);
      if (enabled) {
        if (o.partnerEventSource === undefined) c.problem("auditArchive.partnerEventSource", "is required when auditArchive.enabled is true");
        if (o.auditorPrincipalArns === undefined || (Array.isArray(o.auditorPrincipalArns) && o.auditorPrincipalArns.length === 0)) {
          c.problem("auditArchive.auditorPrincipalArns", "is required when auditArchive.enabled is true: who may read the archive");
        }
        if (!Object.values((v.queues as Obj | undefined) ?? {}).some((q) => (q as Obj | undefined)?.agent === "buildkite")) {
          c.problem("auditArchive.enabled", "archives Buildkite's events, but no queue uses the buildkite agent");
        }
      }
      auditArchive = { enabled: enabled ?? false, ...(partnerEventSource ? { partnerEventSource } : {}), ...(auditorPrincipalArns ? { auditorPrincipalArns } : {}), ...(retentionDays ? { retentionDays } : {}) };
    }
  }

  // --- queues and runners
  const queues: Record<string, QueueSpec> = {};
  const queuesRaw = c.map("queues", v.queues, "queues");
  if (queuesRaw && Object.keys(queuesRaw).length === 0) c.problem("queues", "expected at least one queue");
  const runnerOwner = new Map<string, string>();
  for (const [q, qv] of Object.entries(queuesRaw ?? {})) {
    if (RESERVED_QUEUE_NAMES.includes(q)) c.problem(`queues.${q}`, `queue name ${q} is reserved (it would collide with the control plane's machine names)`);
    const o = c.object(`queues.${q}`, qv, { required: ["agent", "trusted", "runners"], optional: ["labels", "runnerGroup", "isolation", "jobVm", "repositories", "pipelines"] });
    if (!o) continue;
    const agent = c.oneOf<CiAgentKind>(`queues.${q}.agent`, o.agent, CI_AGENTS);
    const trusted = c.boolean(`queues.${q}.trusted`, o.trusted);
    const labels = o.labels === undefined ? [] : c.strings(`queues.${q}.labels`, o.labels, LABEL, "labels (letters, digits, . _ : = / -)");
    const runnerGroup = o.runnerGroup === undefined ? undefined : c.string(`queues.${q}.runnerGroup`, o.runnerGroup, /^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$/, "a GitHub runner group name");
    if (runnerGroup !== undefined && agent === "buildkite") c.problem(`queues.${q}.runnerGroup`, "applies only to github-actions queues");
    // Issue 16: what runs on the queue, so a ci-identity deploy target can name only jobs of its queue.
    const repositories = o.repositories === undefined ? undefined : c.strings(`queues.${q}.repositories`, o.repositories, GITHUB_REPOSITORY, "GitHub repositories as ORG/REPO");
    const pipelines = o.pipelines === undefined ? undefined : c.strings(`queues.${q}.pipelines`, o.pipelines, BUILDKITE_SLUG, "Buildkite pipeline slugs");
    if (o.repositories !== undefined && agent === "buildkite") c.problem(`queues.${q}.repositories`, "applies only to github-actions queues (a buildkite queue lists pipelines)");
    if (o.pipelines !== undefined && agent === "github-actions") c.problem(`queues.${q}.pipelines`, "applies only to buildkite queues (a github-actions queue lists repositories)");
    const runnersRaw = c.map(`queues.${q}.runners`, o.runners, "runners");
    if (runnersRaw && Object.keys(runnersRaw).length === 0) c.problem(`queues.${q}.runners`, "expected at least one runner (a queue with no runners runs nothing)");
    const runners: Record<string, RunnerSpec> = {};
    for (const [r, rv] of Object.entries(runnersRaw ?? {})) {
      const path = `queues.${q}.runners.${r}`;
      if (RESERVED_RUNNER_NAMES.includes(r)) c.problem(path, `runner name ${r} is reserved`);
      const previous = runnerOwner.get(r);
      if (previous) c.problem(path, `runner name ${r} is already used in queue ${previous}; runner names must be unique across queues`);
      else runnerOwner.set(r, q);
      const machine = machineNames.runner(stack, q, r);
      if (machine.length > 63) c.problem(path, `machine name ${machine} is ${machine.length} characters; hostnames allow at most 63`);
      const ro = c.object(path, rv, { required: ["plan"], optional: ["os"] });
      if (!ro) continue;
      const plan = planRef(`${path}.plan`, ro.plan, true);
      const os = ro.os === undefined ? undefined : c.string(`${path}.os`, ro.os, OS_SLUG, "an OS slug such as ubuntu_24_04");
      if (plan) runners[r] = os ? { plan, os } : { plan };
    }
    const roleName = `ci-fleet-${stack}-agent-${q}`;
    if (roleName.length > 64) c.problem(`queues.${q}`, `agent role name ${roleName} is ${roleName.length} characters; IAM allows at most 64`);
    // Issue 15: each job in a fresh VM (default), sized by jobVm; slots per host from the plan (config/job-vm.ts).
    const isolation = o.isolation === undefined ? "vm" : c.oneOf<JobIsolation>(`queues.${q}.isolation`, o.isolation, JOB_ISOLATIONS);
    const jobVm = checkJobVm(c, q, o.jobVm, isolation);
    if (isolation === "vm" && jobVm && provider) {
      for (const [r, spec] of Object.entries(runners)) {
        const planPath = `queues.${q}.runners.${r}.plan`;
        // A plan already refused (unknown, not metal, arm64) says so once.
        if (c.problems.some((p) => p.path === `${ns}:${planPath}`)) continue;
        for (const message of slotProblems(provider, spec.plan, plans[spec.plan]?.[provider], jobVm)) c.problem(planPath, message);
      }
    }
    if (agent && trusted !== undefined && labels && runnersRaw && isolation && (isolation === "host" || jobVm)) {
      queues[q] = { agent, trusted, isolation, ...(isolation === "vm" && jobVm ? { jobVm } : {}), labels, ...(runnerGroup ? { runnerGroup } : {}), runners, deployTargets: {} };
    }
    if (queues[q] && repositories) queues[q].repositories = repositories;
    if (queues[q] && pipelines) queues[q].pipelines = pipelines;
  }
  // Machine names (<stack>-<queue>-<runner>) and the GitHub runner names a job slot registers
  // (<machine>-s<N>) share one namespace: queue `q` runner `a-s1`, queue `q-a` runner `s1` and
  // slot 1 of queue `q` runner `a` are all `<stack>-q-a-s1` (one JIT config would go to two
  // owners, and the minion ids would clash).
  const owners = new Map<string, string>();
  for (const [q, queue] of Object.entries(queues)) {
    for (const [r, spec] of Object.entries(queue.runners)) {
      const machine = `${stack}-${q}-${r}`;
      const names = [machine];
      if (queue.agent === "github-actions" && queue.isolation === "vm" && queue.jobVm && provider) {
        const slots = slotPlan(provider, plans[spec.plan]?.[provider], queue.jobVm).slots;
        for (let n = 1; n <= slots; n++) names.push(`${machine}-s${n}`);
      }
      for (const name of names) {
        const what = name === machine ? `queues.${q}.runners.${r}` : `queues.${q}.runners.${r} (job slot ${name.slice(machine.length + 2)})`;
        const other = owners.get(name);
        if (other) c.problem(`queues.${q}.runners.${r}`, `its name ${name} is also ${other}'s: rename one of the runners (machine names and GitHub runner names must be unique)`);
        else owners.set(name, what);
      }
    }
  }

  const agents = new Set(Object.values(queuesRaw ?? {}).map((q) => (q as Obj | undefined)?.agent));
  if (agents.has("github-actions") && v.github === undefined) c.problem("github", "is required: a queue uses the github-actions agent");
  if (agents.has("buildkite") && v.buildkite === undefined) c.problem("buildkite", "is required: a queue uses the buildkite agent");

  // --- deploy targets: top level, each naming its queue.
  const targetsRaw = v.deployTargets === undefined ? {} : c.map("deployTargets", v.deployTargets, "deploy targets");
  const roleInAccount = new Map<string, string>();
  const providerChoice = new Map<string, { target: string; arn: string }>();
  for (const [t, tv] of Object.entries(targetsRaw ?? {})) {
    const path = `deployTargets.${t}`;
    const o = c.object(path, tv, { required: ["queue", "accountId", "roleName"], optional: ["managedPolicyArns", "permissionsBoundaryArn", "trust", "identities", "oidcProviderArn"] });
    if (!o) continue;
    const queue = typeof o.queue === "string" && queuesRaw && o.queue in queuesRaw ? o.queue : undefined;
    if (!queue && o.queue !== undefined) c.problem(`${path}.queue`, `expected one of the queues (${Object.keys(queuesRaw ?? {}).join(", ")}), got ${describe(o.queue)}`);
    // A runner is as trusted as the least trusted job it runs: an untrusted queue deploys nothing.
    if (queue && queues[queue] && !queues[queue].trusted) {
      c.problem(`${path}.queue`, `queue "${queue}" runs untrusted code (trusted: false); a deploy target needs a trusted queue, or every pull request could deploy`);
    }
    const accountId = c.string(`${path}.accountId`, o.accountId, ACCOUNT_ID, "a 12-digit AWS account id");
    const roleName = c.string(`${path}.roleName`, o.roleName, IAM_ROLE_NAME, "an IAM role name (at most 64 characters of [A-Za-z0-9+=,.@_-])");
    const managedPolicyArns = o.managedPolicyArns === undefined ? [] : c.strings(`${path}.managedPolicyArns`, o.managedPolicyArns, POLICY_ARN, "IAM managed policy ARNs (arn:aws:iam::aws:policy/... or arn:aws:iam::<account>:policy/...)");
    const permissionsBoundaryArn = o.permissionsBoundaryArn === undefined ? undefined : c.string(`${path}.permissionsBoundaryArn`, o.permissionsBoundaryArn, POLICY_ARN, "an IAM managed policy ARN");
    if (accountId && roleName) {
      const key = `${accountId}/${roleName}`;
      const other = roleInAccount.get(key);
      if (other) c.problem(path, `role ${roleName} in account ${accountId} is already deploy target ${other}`);
      roleInAccount.set(key, t);
    }
    // Issue 16: who may assume the role (docs/deploy.md).
    const trust = o.trust === undefined ? "queue-role" : c.oneOf<DeployTrust>(`${path}.trust`, o.trust, DEPLOY_TRUSTS);
    let identities: CiIdentity[] | undefined;
    if (trust === "ci-identity") {
      const org = { github: str((v.github as Obj | undefined)?.organization), buildkite: str((v.buildkite as Obj | undefined)?.organization) };
      identities = checkCiIdentities(c, path, o.identities, queue, queue ? (queuesRaw?.[queue] as Obj | undefined) : undefined, org, (queuesRaw ?? {}) as Record<string, Obj | undefined>);
    } else if (o.identities !== undefined) {
      c.problem(`${path}.identities`, "applies only with trust: ci-identity (a queue-role target trusts its queue's agent role, whatever the job)");
    }
    // An OIDC provider that already exists in the account: reused, never created nor deleted by the stack.
    let oidcProviderArn: string | undefined;
    if (o.oidcProviderArn !== undefined) {
      const agent = queue ? str((queuesRaw?.[queue] as Obj | undefined)?.agent) : undefined;
      const host = agent === "github-actions" || agent === "buildkite" ? OIDC_ISSUERS[agent].host : undefined;
      oidcProviderArn = c.string(`${path}.oidcProviderArn`, o.oidcProviderArn, /^arn:aws:iam::\d{12}:oidc-provider\/[a-z0-9.-]+$/, "an IAM OIDC provider ARN (arn:aws:iam::<account>:oidc-provider/<issuer host>)");
      if (trust !== "ci-identity") c.problem(`${path}.oidcProviderArn`, "applies only with trust: ci-identity");
      else if (oidcProviderArn && accountId && host && oidcProviderArn !== `arn:aws:iam::${accountId}:oidc-provider/${host}`) {
        c.problem(`${path}.oidcProviderArn`, `expected arn:aws:iam::${accountId}:oidc-provider/${host} (the ${agent} issuer's provider in the target's account), got ${oidcProviderArn}`);
        oidcProviderArn = undefined;
      }
      if (oidcProviderArn === undefined) oidcProviderArn = "";
    }
    if (trust === "ci-identity" && accountId && queue) {
      const agent = str((queuesRaw?.[queue] as Obj | undefined)?.agent) ?? "";
      const key = `${accountId}/${agent}`;
      const seen = providerChoice.get(key);
      const mine = oidcProviderArn ?? "(created by the stack)";
      if (seen && seen.arn !== mine) c.problem(`${path}.oidcProviderArn`, `deploy target ${seen.target} in account ${accountId} uses ${seen.arn}; one account has one ${agent} OIDC provider, so its ci-identity targets must agree`);
      else if (!seen) providerChoice.set(key, { target: t, arn: mine });
    }
    if (queue && accountId && roleName && managedPolicyArns && queues[queue] && trust && (trust === "queue-role" || identities)) {
      const target: DeployTarget = {
        accountId,
        roleName,
        managedPolicyArns,
        ...(permissionsBoundaryArn ? { permissionsBoundaryArn } : {}),
        ...(trust === "ci-identity" ? { trust, identities } : {}),
        ...(trust === "ci-identity" && oidcProviderArn ? { oidcProviderArn } : {}),
      };
      queues[queue].deployTargets[t] = target;
    }
  }

  // --- secrets: presence only (values are never read here).
  const requiredSecrets = ["teleportGithubClientId", "teleportGithubClientSecret"];
  if (agents.has("github-actions")) requiredSecrets.push("githubAppPrivateKey");
  for (const [q, qv] of Object.entries(queuesRaw ?? {})) {
    if ((qv as Obj | undefined)?.agent === "buildkite") requiredSecrets.push(`queueSecrets.${q}.buildkite.agent-token`);
  }
  if (typeof (v.saltMaster as Obj | undefined)?.repository === "string" && String((v.saltMaster as Obj).repository).match(/^(git@|ssh:\/\/)/)) {
    requiredSecrets.push("saltRepositoryDeployKey");
  }
  if (typeof (v.saltMaster as Obj | undefined)?.repository === "string" && String((v.saltMaster as Obj).repository).startsWith("https://") && input.secretsPresent.has("saltRepositoryDeployKey")) {
    c.problem("saltRepositoryDeployKey", `is set, but saltMaster.repository is an https URL, which never uses it: remove it (pulumi config rm ${ns}:saltRepositoryDeployKey) or use the repository's ssh URL`);
  }
  for (const [q, paths] of Object.entries(input.queueSecretPaths)) {
    if (!queuesRaw || !(q in queuesRaw)) c.problem(`queueSecrets.${q}`, `expected one of the queues (${Object.keys(queuesRaw ?? {}).join(", ")})`);
    // The job hooks turn `<level>/env/<name>` into a variable (docs/job-secrets.md): refuse here what they would refuse.
    const envNames = new Map<string, string>();
    for (const p of paths) {
      const env = /^([^/]+)\/env\/([^/]+)$/.exec(p);
      if (!env || !QUEUE_SECRET_PATH.test(p)) continue;
      const name = env[2].toUpperCase().replace(/-/g, "_");
      const path = `queueSecrets.${q}.${env[1]}.env.${env[2]}`;
      const reserved = RESERVED_ENV_NAMES.find((rule) => (rule.endsWith("*") ? name.startsWith(rule.slice(0, -1)) : name === rule));
      if (reserved) c.problem(path, `would set ${name}, which the job hooks refuse (reserved: ${reserved}); pick another name`);
      const other = envNames.get(`${env[1]}/${name}`);
      if (other) c.problem(path, `sets ${name}, as queueSecrets.${q}.${env[1]}.env.${other} does; keep one`);
      else envNames.set(`${env[1]}/${name}`, env[2]);
    }
    // Job secrets reach a job through the agent's job-secrets hooks, on a host or in a job VM alike
    // (the golden image carries them; docs/job-secrets.md, docs/job-vm.md "What a job VM gets").
    for (const p of paths) {
      if (!QUEUE_SECRET_PATH.test(p)) {
        c.problem(`queueSecrets.${q}.${p.split("/").join(".")}`, "expected buildkite.agent-token or <global|repo-slug|pipeline-slug>.{env.<NAME>, ssh.key, allowed_pipelines, allowed_teams}");
      } else if (p === "buildkite/agent-token" && (queuesRaw?.[q] as Obj | undefined)?.agent !== "buildkite") {
        c.problem(`queueSecrets.${q}.buildkite.agent-token`, "applies only to buildkite queues");
      }
    }
  }

  const problems = c.problems;
  if (problems.length || !provider || !saltMaster || !teleport || !identity || !dns) return { problems, requiredSecrets };
  return {
    problems,
    requiredSecrets,
    settings: { provider, equinix, aws, plans, saltMaster, teleport, dns, identity, github, buildkite, auditArchive, queues },
  };
}

const str = (x: unknown): string | undefined => (typeof x === "string" ? x : undefined);
/** A ref or branch: no `$`, `{`, `}` (IAM policy variables), `*`/`?` only as patterns (then with allowWildcard). */
const GITHUB_REF = /^(refs\/(heads|tags|pull)\/[A-Za-z0-9._\/*?+-]{1,200}|pull_request)$/;
const GITHUB_ENVIRONMENT = /^[A-Za-z0-9._*?-]{1,255}$/;
const GITHUB_WORKFLOW = /^([A-Za-z0-9][A-Za-z0-9-]{0,38}\/[A-Za-z0-9._-]{1,100}\/)?\.github\/workflows\/[A-Za-z0-9._-]+\.ya?ml@refs\/(heads|tags)\/[A-Za-z0-9._\/+-]{1,200}$/;
const BUILDKITE_BRANCH = /^(?!refs\/)[A-Za-z0-9._\/*?+-]{1,200}$/;

/**
 * `deployTargets.<name>.identities` of a `ci-identity` target: each a job of a repository (GitHub)
 * or pipeline (Buildkite) that its queue lists, of its queue's agent type, on one branch or
 * environment; a pattern or pull requests only with `allowWildcard: true`.
 */
function checkCiIdentities(
  c: Checker,
  targetPath: string,
  raw: unknown,
  queue: string | undefined,
  queueRaw: Obj | undefined,
  org: { github?: string; buildkite?: string },
  allQueues: Record<string, Obj | undefined>,
): CiIdentity[] | undefined {
  const path = `${targetPath}.identities`;
  if (!Array.isArray(raw) || raw.length === 0) {
    c.problem(path, `trust ci-identity needs a list of at least one identity ({repository, ref | environment} on a github-actions queue, {pipeline, branch} on a buildkite queue), got ${describe(raw)}`);
    return undefined;
  }
  const agent = str(queueRaw?.agent);
  const listedOn = (q: Obj | undefined, key: "repositories" | "pipelines") => (Array.isArray(q?.[key]) ? (q?.[key] as unknown[]).filter((x): x is string => typeof x === "string") : []);
  const listed = (key: "repositories" | "pipelines") => listedOn(queueRaw, key);
  /** The other queues that also run `name`'s jobs: their jobs get a token with the same claims. */
  const alsoOn = (key: "repositories" | "pipelines", name: string) =>
    Object.keys(allQueues)
      .sort()
      .filter((q) => q !== queue && listedOn(allQueues[q], key).includes(name))
      .map((q) => `${q}${allQueues[q]?.trusted === true ? "" : " (untrusted)"}`);
  const out: CiIdentity[] = [];
  let failed = false;
  raw.forEach((item, i) => {
    const at = `${path}[${i}]`;
    const shape = typeof item === "object" && item !== null && !Array.isArray(item) ? ("repository" in item ? "github-actions" : "pipeline" in item ? "buildkite" : undefined) : undefined;
    const platform = shape ?? (agent === "github-actions" || agent === "buildkite" ? agent : undefined);
    if (platform === undefined) {
      c.problem(at, `expected {repository, ref | environment} (GitHub) or {pipeline, branch} (Buildkite), got ${describe(item)}`);
      failed = true;
      return;
    }
    if (agent !== undefined && queue !== undefined && platform !== agent) {
      c.problem(at, `is a ${platform === "github-actions" ? "GitHub repository" : "Buildkite pipeline"}, but queue "${queue}" runs the ${agent} agent: a target's identities must be jobs of its own queue`);
      failed = true;
      return;
    }
    let identity: CiIdentity | undefined;
    if (platform === "github-actions") {
      const o = c.object(at, item, { required: ["repository"], optional: ["ref", "environment", "workflow", "repositoryId", "ownerId", "allowWildcard", "allowOtherQueues"] });
      if (!o) return void (failed = true);
      const repository = c.string(`${at}.repository`, o.repository, GITHUB_REPOSITORY, "ORG/REPO");
      if (repository && org.github && repository.split("/")[0] !== org.github) c.problem(`${at}.repository`, `${repository} is not in github.organization ${org.github}, whose runners are the only ones this fleet registers`);
      if (repository && queue && !listed("repositories").includes(repository)) c.problem(`${at}.repository`, `${repository} is not in queues.${queue}.repositories (${listed("repositories").join(", ") || "none listed"}): list the repositories whose workflows run on the queue`);
      if ((o.ref === undefined) === (o.environment === undefined)) c.problem(at, "expected exactly one of ref (refs/heads/main) and environment (production)");
      const ref = o.ref === undefined ? undefined : c.string(`${at}.ref`, o.ref, GITHUB_REF, "a full ref such as refs/heads/main or refs/tags/v1.2.3");
      const environment = o.environment === undefined ? undefined : c.string(`${at}.environment`, o.environment, GITHUB_ENVIRONMENT, "a GitHub environment name");
      const workflow = o.workflow === undefined ? undefined : c.string(`${at}.workflow`, o.workflow, GITHUB_WORKFLOW, "a workflow file and ref such as .github/workflows/release.yml@refs/heads/main (checked against job_workflow_ref)");
      const asId = (x: unknown) => (typeof x === "number" && Number.isInteger(x) ? String(x) : x);
      const repositoryId = o.repositoryId === undefined ? undefined : c.string(`${at}.repositoryId`, asId(o.repositoryId), NUMERIC_ID, "the repository's numeric id");
      const ownerId = o.ownerId === undefined ? undefined : c.string(`${at}.ownerId`, asId(o.ownerId), NUMERIC_ID, "the owner's numeric id");
      if ((o.repositoryId === undefined) !== (o.ownerId === undefined)) c.problem(at, "repositoryId and ownerId go together (the new subject format carries both)");
      const allowWildcard = o.allowWildcard === undefined ? undefined : c.boolean(`${at}.allowWildcard`, o.allowWildcard);
      if (repository && (ref || environment) && !(ref && environment)) {
        identity = { platform, repository, ...(ref ? { ref } : { environment }), ...(workflow ? { workflow } : {}), ...(repositoryId && ownerId ? { repositoryId, ownerId } : {}), ...(allowWildcard ? { allowWildcard: true as const } : {}) };
      }
    } else {
      const o = c.object(at, item, { required: ["pipeline", "branch"], optional: ["organization", "allowWildcard", "allowOtherQueues"] });
      if (!o) return void (failed = true);
      const organization = o.organization === undefined ? org.buildkite : c.string(`${at}.organization`, o.organization, BUILDKITE_SLUG, "a Buildkite organisation slug");
      if (organization && org.buildkite && organization !== org.buildkite) c.problem(`${at}.organization`, `${organization} is not buildkite.organization ${org.buildkite}, the only organisation whose jobs run on this fleet (every organisation shares Buildkite's issuer)`);
      const pipeline = c.string(`${at}.pipeline`, o.pipeline, BUILDKITE_SLUG, "a Buildkite pipeline slug");
      if (pipeline && queue && !listed("pipelines").includes(pipeline)) c.problem(`${at}.pipeline`, `${pipeline} is not in queues.${queue}.pipelines (${listed("pipelines").join(", ") || "none listed"}): list the pipelines whose jobs run on the queue`);
      const branch = c.string(`${at}.branch`, o.branch, BUILDKITE_BRANCH, "a branch name such as main (without refs/heads/)");
      const allowWildcard = o.allowWildcard === undefined ? undefined : c.boolean(`${at}.allowWildcard`, o.allowWildcard);
      if (organization && pipeline && branch) identity = { platform, organization, pipeline, branch, ...(allowWildcard ? { allowWildcard: true as const } : {}) };
    }
    if (!identity) return void (failed = true);
    // A token says which repository/pipeline and branch, never which runner: the same job on
    // another queue's runners (an untrusted one, rooted by a pull request) mints the same claims.
    const [listKey, listedName] = identity.platform === "github-actions" ? (["repositories", identity.repository] as const) : (["pipelines", identity.pipeline] as const);
    const shared = alsoOn(listKey, listedName);
    const allowOtherQueues = (item as Obj).allowOtherQueues === undefined ? undefined : c.boolean(`${at}.allowOtherQueues`, (item as Obj).allowOtherQueues);
    if (shared.length > 0 && allowOtherQueues !== true) {
      c.problem(at, `${listedName} is also listed on queue ${shared.join(", ")}: a job there gets a token with the same claims as this target's, so those runners could deploy; run it on this queue only, or mark it allowOtherQueues: true (the report flags it)`);
      return void (failed = true);
    }
    if (shared.length === 0 && allowOtherQueues === true) {
      c.problem(`${at}.allowOtherQueues`, `is set, but ${listedName} runs on no other queue: remove it`);
      return void (failed = true);
    }
    if (allowOtherQueues === true) identity = { ...identity, allowOtherQueues: true };
    const broad = ciIdentityIsBroad(identity);
    if (broad && !identity.allowWildcard) {
      const what = identity.platform === "github-actions" && identity.ref !== undefined && isPullRequestRef(identity.ref) ? "pull requests (anyone who opens one)" : "any branch or environment the pattern matches (anyone who can push one)";
      c.problem(at, `${ciIdentitySubjects(identity)[0]} admits ${what}; name one branch or environment, or mark it allowWildcard: true (the report flags it)`);
      return void (failed = true);
    }
    if (!broad && identity.allowWildcard) {
      c.problem(`${at}.allowWildcard`, "is set, but nothing here is a pattern or pull requests: remove it");
      return void (failed = true);
    }
    if (out.some((other) => ciIdentitySubjects(other).join() === ciIdentitySubjects(identity as CiIdentity).join())) c.problem(at, "is listed twice");
    out.push(identity);
  });
  return failed || out.length !== raw.length ? undefined : out;
}
