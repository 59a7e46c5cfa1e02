/**
 * The fleet's access matrix, proven with a real IAM evaluator on the policies the
 * program actually registered: who can assume which role, who can read which SSM path.
 *
 * Uses @cloud-copilot/iam-simulate (AGPL-3.0-or-later): a devDependency for this dev
 * tool and the tests only. Nothing under infra/ may import this file.
 */
import * as path from "path";
import { runSimulation, runUnsafeSimulation, type Simulation } from "@cloud-copilot/iam-simulate";
import type { CapturedResource } from "./mock-runtime";
import { SALT_MASTER_OU, TELEPORT_OU, arns, fleetTag, kmsAliasName, roleNames, ssmPaths, ssmViaService } from "../../infra/identity/names";
import { OIDC_AUDIENCE, OIDC_ISSUERS, ciIdentityFlags, describeCiIdentity as describeIdentity } from "../../infra/identity/ci-identity";
import type { CiAgentKind } from "../../infra/config/model";
import { DeployTargetIntent, WebIdentityRow, proveCiIdentityTargets } from "./web-identity";
export { deployTargetsOf, type DeployTargetIntent, type WebIdentityRow } from "./web-identity";

export interface AccessMatrixContext {
  stack: string;
  accountId: string;
  region: string;
  queues: string[];
  /** Validate every request of the matrix (see MatrixEvaluator): for the test that both decide the same. */
  validateEveryRequest?: boolean;
  /**
   * What config intends for each deploy target (`deployTargetsOf(config.queues)`): its binding and,
   * for `ci-identity`, the identities whose tokens it must admit. Without it a deploy role's
   * binding is read from its `ci-fleet:deploy-trust` tag and a ci-identity role cannot be proved
   * (its check fails).
   */
  deployTargets?: DeployTargetIntent[];
}

export type Decision = "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied" | "Error";

/** `agent` roles are per queue; `salt-master` and `teleport` are the control machines. */
export type FleetRoleKind = "agent" | "salt-master" | "teleport";

export interface AssumeRow {
  /** The agent role's queue. */
  queue: string;
  agentRoleArn: string;
  targetRoleArn: string;
  /** `deploy` (tagged with its queue), `fleet` (another fleet role) or `other`. */
  targetKind: "deploy" | "fleet" | "other";
  /** Queue and target name the deploy role is tagged with. */
  targetQueue?: string;
  targetName?: string;
  /** Allowed iff the role is one of this queue's deploy roles. */
  expected: boolean;
  decision: Decision;
  ok: boolean;
}

export interface ReadRow {
  /** `agent:<queue>`, `salt-master` or `teleport`. */
  role: string;
  roleArn: string;
  /** The SSM prefix probed: `/ci-fleet/<stack>/<queue>/` or `/ci-fleet/<stack>/pillar/`. */
  path: string;
  expected: boolean;
  /** ssm:GetParameter on a parameter under the prefix. */
  getParameter: Decision;
  /** ssm:GetParametersByPath on the prefix itself. */
  getByPath: Decision;
  /** kms:Decrypt of that parameter, asked by SSM for the role (identity + key policy). */
  decrypt: Decision;
  ok: boolean;
}

export interface AccessCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface DeployBinding {
  queue: string;
  target: string;
  roleArn: string;
  trust: "queue-role" | "ci-identity";
  /** ci-identity: the identities, one line each (`describeCiIdentity`). */
  identities: string[];
  /** An identity admits a pattern or pull requests (`allowWildcard`). */
  wildcard: boolean;
  /** What the report flags (`ciIdentityFlags`), without repeats. */
  flags: string[];
  permissionsBoundary?: string;
}

export interface AccessMatrix {
  assume: AssumeRow[];
  read: ReadRow[];
  /** Every deploy role's binding. */
  bindings: DeployBinding[];
  /** ci-identity targets: the claims table, decided by iam-simulate and by evaluateWebIdentityTrust. */
  webIdentity: WebIdentityRow[];
  checks: AccessCheck[];
}

interface Statement {
  Sid?: string;
  Effect?: string;
  Principal?: unknown;
  NotPrincipal?: unknown;
  Action?: string | string[];
  NotAction?: string | string[];
  Resource?: string | string[];
  NotResource?: string | string[];
  Condition?: unknown;
}
interface Document {
  Version?: string;
  Statement: Statement[];
}

interface RoleInfo {
  name: string;
  arn: string;
  accountId: string;
  tags: Record<string, string>;
  trust?: Document;
  identityPolicies: { name: string; policy: Document }[];
  attachedPolicyArns: string[];
}

/**
 * iam-policy compares condition operators and keys case-insensitively with
 * `localeCompare(other, undefined, { sensitivity: "accent" })`, which builds an ICU collator
 * on every call: a third of the matrix's time went there, comparing the same few operator
 * names ("StringEquals", "...IfExists") over and over. The function is pure, so its results
 * are kept: the same answers, each computed once. (Patched on the module iam-simulate itself
 * loads, by its file; if a release moves it, nothing is patched and nothing changes.)
 */
function rememberCaseInsensitiveComparisons(): void {
  let utils: { caseInsensitiveEquals?: (a: string, b: string) => boolean; caseInsensitiveEndsWith?: (value: string, suffix: string) => boolean; __ciFleetMemo?: boolean };
  try {
    utils = require(path.join(path.dirname(require.resolve("@cloud-copilot/iam-policy")), "utils.js")) as typeof utils;
  } catch {
    return;
  }
  const compare = utils.caseInsensitiveEquals;
  if (typeof compare !== "function" || typeof utils.caseInsensitiveEndsWith !== "function" || utils.__ciFleetMemo) return;
  const known = new Map<string, Map<string, boolean>>();
  const equals = (first: string, second: string) => {
    let row = known.get(first);
    if (!row) known.set(first, (row = new Map()));
    let same = row.get(second);
    if (same === undefined) row.set(second, (same = compare(first, second)));
    return same;
  };
  utils.caseInsensitiveEquals = equals;
  // Its own definition, with the remembered comparison (inside the module it calls the original).
  utils.caseInsensitiveEndsWith = (value: string, suffix: string) => equals(value.slice(suffix.length * -1), suffix);
  utils.__ciFleetMemo = true;
}
rememberCaseInsensitiveComparisons();

const asArray = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);

/** Policies may be JSON strings or objects; a masked or unreadable one is a problem (fail closed). */
function parsePolicy(value: unknown, where: string, problems: string[]): Document | undefined {
  let parsed: unknown = value;
  if (typeof value === "string") {
    try {
      parsed = JSON.parse(value);
    } catch {
      problems.push(`${where}: not JSON (${value.length > 20 ? `${value.slice(0, 20)}...` : value})`);
      return undefined;
    }
  }
  if (typeof parsed !== "object" || parsed === null || !("Statement" in parsed)) {
    problems.push(`${where}: not a policy document`);
    return undefined;
  }
  const doc = parsed as { Version?: string; Statement: Statement | Statement[] };
  return { Version: doc.Version, Statement: asArray(doc.Statement) };
}

function roleArnOf(resource: CapturedResource, fallbackAccount: string): string {
  const arn = str(resource.outputs.arn);
  if (arn && /^arn:aws:iam::\d{12}:role\//.test(arn)) return arn;
  return arns.role(fallbackAccount, str(resource.outputs.name) ?? str(resource.inputs.name) ?? resource.name);
}

const accountOfArn = (arn: string) => arn.split(":")[4];
/** Calls come from a session of the role; trust statements name the role itself. */
const sessionOf = (roleArn: string) => {
  const [, , , , account, resource] = roleArn.split(":");
  return `arn:aws:sts::${account}:assumed-role/${resource.split("/").pop()}/access-matrix`;
};

function collectRoles(resources: CapturedResource[], ctx: AccessMatrixContext, problems: string[]): RoleInfo[] {
  const roles: RoleInfo[] = [];
  for (const r of resources.filter((x) => x.type === "aws:iam/role:Role")) {
    const arn = roleArnOf(r, ctx.accountId);
    const name = arn.split("/").pop() as string;
    const inline = asArray(r.inputs.inlinePolicies as { name?: string; policy?: unknown }[] | undefined);
    roles.push({
      name,
      arn,
      accountId: accountOfArn(arn),
      tags: (r.inputs.tags as Record<string, string> | undefined) ?? {},
      trust: parsePolicy(r.inputs.assumeRolePolicy, `trust of role ${name}`, problems),
      identityPolicies: inline.flatMap((p, i) => {
        const doc = parsePolicy(p.policy, `inline policy ${p.name ?? i} of role ${name}`, problems);
        return doc ? [{ name: `${name}/${p.name ?? i}`, policy: doc }] : [];
      }),
      attachedPolicyArns: [],
    });
  }
  const find = (ref: unknown) => roles.find((role) => role.name === ref || role.arn === ref);
  for (const r of resources.filter((x) => x.type === "aws:iam/rolePolicy:RolePolicy")) {
    const role = find(r.inputs.role);
    const doc = parsePolicy(r.inputs.policy, `role policy ${r.name}`, problems);
    if (!role) problems.push(`role policy ${r.name}: role ${String(r.inputs.role)} is not registered`);
    else if (doc) role.identityPolicies.push({ name: `${role.name}/${str(r.inputs.name) ?? r.name}`, policy: doc });
  }
  for (const r of resources.filter((x) => x.type === "aws:iam/rolePolicyAttachment:RolePolicyAttachment")) {
    find(r.inputs.role)?.attachedPolicyArns.push(String(r.inputs.policyArn));
  }
  return roles;
}

function statementsOf(resources: CapturedResource[]): { where: string; statement: Statement }[] {
  const found: { where: string; statement: Statement }[] = [];
  const add = (where: string, value: unknown) => {
    const doc = parsePolicy(value, where, []);
    doc?.Statement.forEach((statement) => found.push({ where: `${where}${statement.Sid ? ` (${statement.Sid})` : ""}`, statement }));
  };
  for (const r of resources) {
    for (const field of ["policy", "assumeRolePolicy"]) {
      if (r.inputs[field] !== undefined && /^aws:/.test(r.type)) add(`${r.type.split(":").pop()} ${r.name} ${field}`, r.inputs[field]);
    }
    for (const p of asArray(r.inputs.inlinePolicies as { policy?: unknown }[] | undefined)) add(`${r.name} inline`, p.policy);
  }
  return found;
}

const isStar = (v: unknown) => v === "*" || (Array.isArray(v) && v.includes("*"));
const principalIsWildcard = (p: unknown): boolean =>
  isStar(p) || (typeof p === "object" && p !== null && Object.values(p as Record<string, unknown>).some(isStar));

/** Runs the evaluator; a simulation error (a misspelled action, an invalid policy) is recorded. */
async function decide(simulation: Simulation, label: string, errors: string[]): Promise<Decision> {
  const result = await runSimulation(simulation, {});
  if (result.resultType === "error") {
    errors.push(`${label}: ${JSON.stringify(result.errors)}`);
    return "Error";
  }
  return result.overallResult;
}

/**
 * Decides the matrix's requests, which share their parts: each agent's policies meet every
 * role's trust, each role's policies every path. runSimulation validates a request (the
 * principal, each policy, the action, the resource against the action's resource types,
 * the context keys) and then evaluates it exactly as runUnsafeSimulation does; each of those
 * checks depends on one part of the request alone. So once a runSimulation has accepted a
 * request, its parts need no validating again: a request whose principal with its identity
 * policies, whose resource policy, and whose action on its resource were each part of an
 * accepted request is decided by runUnsafeSimulation, at about half the cost (finding the
 * action's resource types was a quarter of the matrix's time); any other request by
 * runSimulation, whose errors are recorded as before. Only requests without context values
 * and with a resource without wildcards take the shortcut: for those the two entry points
 * evaluate the very same request (with context values runSimulation first drops the keys
 * the action does not have; with a wildcard it evaluates several resources).
 */
class MatrixEvaluator {
  /** Identity policies (by object) -> principals accepted with them. */
  private readonly principals = new WeakMap<object, Set<string>>();
  private readonly resourcePolicies = new WeakSet<object>();
  /** `<action> <resource>` pairs accepted. */
  private readonly targets = new Set<string>();
  /** Requests decided each way, for tests. */
  readonly counts = { validated: 0, shortcut: 0 };
  private readonly wrapped = new WeakMap<object, object>();

  /**
   * A resource policy as runSimulation loads it (with its `name`, if any, as metadata):
   * runUnsafeSimulation loads a plain document without metadata, which its resource-policy
   * analysis cannot read, so it is handed the policy already validated (a validated policy
   * is what both entry points accept as is).
   */
  private loaded(policy: object): object {
    let out = this.wrapped.get(policy);
    if (!out) {
      out = { __validated: true, policyDocument: policy, metadata: { name: (policy as { name?: string }).name }, errors: [] };
      this.wrapped.set(policy, out);
    }
    return out;
  }

  constructor(
    private readonly errors: string[],
    private readonly validateEvery = false,
  ) {}

  async decide(sim: Simulation, label: string): Promise<Decision> {
    const target = `${sim.request.action} ${sim.request.resource.resource}`;
    const accepted =
      !this.validateEvery &&
      Object.keys(sim.request.contextVariables).length === 0 &&
      !sim.request.resource.resource.includes("*") &&
      typeof sim.request.principal === "string" &&
      this.principals.get(sim.identityPolicies)?.has(sim.request.principal) === true &&
      (sim.resourcePolicy === undefined || this.resourcePolicies.has(sim.resourcePolicy)) &&
      this.targets.has(target);
    if (accepted) {
      this.counts.shortcut++;
      return runUnsafeSimulation({ ...sim, ...(sim.resourcePolicy ? { resourcePolicy: this.loaded(sim.resourcePolicy) } : {}) }, {});
    }
    this.counts.validated++;
    const decision = await decide(sim, label, this.errors);
    if (decision !== "Error" && typeof sim.request.principal === "string") {
      const principals = this.principals.get(sim.identityPolicies) ?? new Set<string>();
      principals.add(sim.request.principal);
      this.principals.set(sim.identityPolicies, principals);
      if (sim.resourcePolicy !== undefined) this.resourcePolicies.add(sim.resourcePolicy);
      this.targets.add(target);
    }
    return decision;
  }
}

function simulation(principal: string, action: string, resource: string, identity: { name: string; policy: Document }[], resourcePolicy?: Document, context: Record<string, string> = {}): Simulation {
  return {
    request: { principal, action, resource: { resource, accountId: accountOfArn(resource) ?? accountOfArn(principal) }, contextVariables: context },
    identityPolicies: identity,
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    resourcePolicy,
  };
}

/**
 * kms:Decrypt with an encryption context. iam-simulate 0.1.173 drops
 * `kms:EncryptionContext:<key>` from the request (it only matches `/`-separated
 * variable keys), so the validated entry point would never satisfy those conditions:
 * the same request is validated with runSimulation first (policies, action), then
 * decided by runUnsafeSimulation, which keeps every context key.
 */
class KmsDecryptEvaluator {
  private readonly validated = new Map<string, boolean>();
  /** Per role: the key policy as it applies to that role's sessions (see keyPolicyFor). */
  private readonly policyFor = new Map<string, object>();
  constructor(
    private readonly key: { arn: string; policy: Document },
    private readonly errors: string[],
  ) {}

  async decide(roleArn: string, identity: { name: string; policy: Document }[], context: Record<string, string>): Promise<Decision> {
    const sim = simulation(sessionOf(roleArn), "kms:Decrypt", this.key.arn, identity, this.key.policy, context);
    if (!this.validated.has(roleArn)) {
      // Validated against the whole key policy, once per role.
      this.validated.set(roleArn, (await decide(sim, `kms:Decrypt by ${roleArn}`, this.errors)) !== "Error");
    }
    if (!this.validated.get(roleArn)) return "Error";
    let resourcePolicy = this.policyFor.get(roleArn);
    if (!resourcePolicy) {
      // A validated policy object carries the name runUnsafeSimulation needs for a resource policy.
      resourcePolicy = { __validated: true, policyDocument: keyPolicyFor(this.key.policy, roleArn), metadata: { name: "kms-key-policy" }, errors: [] };
      this.policyFor.set(roleArn, resourcePolicy);
    }
    return runUnsafeSimulation({ ...sim, resourcePolicy }, {});
  }
}

/**
 * The key policy without the Allow statements that cannot apply to a session of `roleArn`:
 * those whose only principals are other IAM roles. The key policy has one such statement per
 * reading role, so evaluating every (role, path) pair against the whole policy costs
 * queues³; against this view it costs queues². The decision is the same: the evaluator puts
 * a statement whose principal does not match in no allow and no deny list (iam-simulate
 * 0.1.173, analyzeResourcePolicy), and a role ARN matches a session only by account and
 * role name compared with localeCompare(base) (roleArnMatchesAssumedRoleSession), which is
 * the test here. Anything else (wildcards, accounts, services, NotPrincipal, Deny) is kept.
 */
export function keyPolicyFor(policy: Document, roleArn: string): Document {
  const [, , , , account, resource] = roleArn.split(":");
  const name = resource.split("/").pop() as string;
  const namesOnlyOtherRoles = (s: Statement): boolean => {
    if (s.Effect !== "Allow" || s.NotPrincipal !== undefined || typeof s.Principal !== "object" || s.Principal === null) return false;
    const principal = s.Principal as Record<string, unknown>;
    if (Object.keys(principal).length !== 1 || !("AWS" in principal)) return false;
    const values = asArray(principal.AWS as unknown);
    return values.length > 0 && values.every((v) => {
      const m = typeof v === "string" ? /^arn:aws:iam::(\d{12}):role\/([\w+=,.@/-]+)$/.exec(v) : null;
      if (!m) return false;
      const other = m[2].split("/").pop() as string;
      return m[1] !== account || other.localeCompare(name, "en", { sensitivity: "base" }) !== 0;
    });
  };
  return { ...policy, Statement: policy.Statement.filter((s) => !namesOnlyOtherRoles(s)) };
}

export async function computeAccessMatrix(resources: CapturedResource[], ctx: AccessMatrixContext): Promise<AccessMatrix> {
  const problems: string[] = [];
  const errors: string[] = [];
  const checks: AccessCheck[] = [];
  const check = (name: string, failures: string[], okDetail: string) =>
    checks.push({ name, ok: failures.length === 0, detail: failures.length === 0 ? okDetail : failures.join("; ") });

  const roles = collectRoles(resources, ctx, problems);
  const matrix = new MatrixEvaluator(errors, ctx.validateEveryRequest);
  const roleNamed = (name: string) => roles.find((r) => r.name === name && r.accountId === ctx.accountId);
  const queues = [...ctx.queues].sort();

  // The fleet's own roles, found by the names of docs/contracts.md.
  const missing: string[] = [];
  const fleetRoles: { kind: FleetRoleKind; label: string; queue?: string; role: RoleInfo; path?: string }[] = [];
  for (const queue of queues) {
    const role = roleNamed(roleNames.agent(ctx.stack, queue));
    if (role) fleetRoles.push({ kind: "agent", label: `agent:${queue}`, queue, role, path: ssmPaths.queue(ctx.stack, queue) });
    else missing.push(`agent role of queue ${queue}`);
  }
  const master = roleNamed(roleNames.saltMaster(ctx.stack));
  if (master) fleetRoles.push({ kind: "salt-master", label: SALT_MASTER_OU, role: master, path: ssmPaths.pillar(ctx.stack) });
  else missing.push("Salt master role");
  const teleport = roleNamed(roleNames.teleport(ctx.stack));
  if (teleport) fleetRoles.push({ kind: "teleport", label: TELEPORT_OU, role: teleport });
  else missing.push("Teleport role");

  // The fleet key: the one behind alias/ci-fleet-<stack>, else the only key registered.
  const keys = resources.filter((r) => r.type === "aws:kms/key:Key");
  const alias = resources.find((r) => r.type === "aws:kms/alias:Alias" && r.inputs.name === kmsAliasName(ctx.stack));
  const keyResource =
    keys.find((k) => alias && [k.outputs.keyId, k.outputs.id, k.outputs.arn].includes(alias.inputs.targetKeyId)) ??
    (keys.length === 1 ? keys[0] : undefined);
  const keyPolicy = keyResource ? parsePolicy(keyResource.inputs.policy, `key policy of ${keyResource.name}`, problems) : undefined;
  const keyArn = keyResource ? str(keyResource.outputs.arn) : undefined;
  if (!keyResource || !keyArn) missing.push(`KMS key behind ${kmsAliasName(ctx.stack)}`);
  check("fleet identity registered", missing, `${fleetRoles.length} fleet roles and the fleet key found`);
  check("every policy is readable", problems, "every trust, inline and key policy parsed");

  const fleetArns = new Set(fleetRoles.map((f) => f.role.arn));
  // Each deploy role's binding: config's intent when given, else the role's own tag.
  const intentByArn = new Map((ctx.deployTargets ?? []).map((t) => [arns.role(t.accountId, t.roleName), t]));
  const trustOfRole = (role: RoleInfo) => intentByArn.get(role.arn)?.trust ?? (role.tags[fleetTag.deployTrust] === "ci-identity" ? "ci-identity" : "queue-role");
  const agentArnOf = new Map(fleetRoles.filter((f) => f.queue).map((f) => [f.queue as string, f.role.arn]));

  // Who can assume what: every agent role against every other role.
  const assume: AssumeRow[] = [];
  for (const agent of fleetRoles.filter((f) => f.kind === "agent")) {
    for (const target of roles) {
      if (target.arn === agent.role.arn) continue;
      const isDeploy = target.tags[fleetTag.role] === "deploy";
      const targetQueue = isDeploy ? target.tags[fleetTag.queue] : undefined;
      // A ci-identity role admits CI identity tokens only, never the queue's agent role.
      const expected = isDeploy && targetQueue === agent.queue && trustOfRole(target) === "queue-role";
      const decision = target.trust
        ? await matrix.decide(simulation(sessionOf(agent.role.arn), "sts:AssumeRole", target.arn, agent.role.identityPolicies, target.trust), `sts:AssumeRole ${agent.label} -> ${target.arn}`)
        : "Error";
      assume.push({
        queue: agent.queue as string,
        agentRoleArn: agent.role.arn,
        targetRoleArn: target.arn,
        targetKind: isDeploy ? "deploy" : fleetArns.has(target.arn) ? "fleet" : "other",
        ...(targetQueue !== undefined ? { targetQueue } : {}),
        ...(isDeploy && target.tags[fleetTag.deployTarget] ? { targetName: target.tags[fleetTag.deployTarget] } : {}),
        expected,
        decision,
        ok: (decision === "Allowed") === expected && decision !== "Error",
      });
    }
  }
  check(
    "agent roles assume exactly their queue's deploy roles",
    assume.filter((r) => !r.ok).map((r) => `agent:${r.queue} -> ${r.targetRoleArn}: ${r.decision}, expected ${r.expected ? "Allowed" : "denied"}`),
    `${assume.length} (agent role, role) pairs evaluated`,
  );

  // Deploy role trust: the exact agent role ARN as the only principal, and nobody else gets in.
  const deployRoles = roles.filter((r) => r.tags[fleetTag.role] === "deploy");
  const trustFailures: string[] = [];
  const probeFailures: string[] = [];
  const anyRole = (name: string) => ({ name, policy: { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "sts:AssumeRole", Resource: "*" }] } });
  for (const deploy of deployRoles) {
    const queue = deploy.tags[fleetTag.queue];
    const expectedPrincipal = queue !== undefined ? agentArnOf.get(queue) : undefined;
    for (const s of trustOfRole(deploy) === "queue-role" ? (deploy.trust?.Statement ?? []) : []) {
      if (s.Effect !== "Allow") continue;
      const principal = s.Principal as { AWS?: unknown } | undefined;
      const keys = typeof principal === "object" && principal !== null ? Object.keys(principal) : [];
      const actions = asArray(s.Action);
      if (s.NotPrincipal || s.NotAction || keys.length !== 1 || principal?.AWS !== expectedPrincipal || expectedPrincipal === undefined) {
        trustFailures.push(`${deploy.arn} trusts ${JSON.stringify(s.Principal ?? s.NotPrincipal)}, expected exactly ${expectedPrincipal ?? `the agent role of queue ${queue}`}`);
      }
      if (actions.length === 0 || actions.some((a) => a !== "sts:AssumeRole" && a !== "sts:TagSession")) {
        trustFailures.push(`${deploy.arn} trust allows ${JSON.stringify(s.Action ?? s.NotAction)}`);
      }
    }
    // Probes: a role of the fleet account and a role of the target account, each allowed
    // sts:AssumeRole on everything by its own IAM, must still be refused by the trust.
    for (const probeAccount of [...new Set([ctx.accountId, deploy.accountId])]) {
      const probeArn = arns.role(probeAccount, "access-matrix-probe");
      const decision = deploy.trust
        ? await decide(simulation(sessionOf(probeArn), "sts:AssumeRole", deploy.arn, [anyRole("probe-assume-anything")], deploy.trust), `probe ${probeArn} -> ${deploy.arn}`, errors)
        : "Error";
      if (decision !== "ImplicitlyDenied" && decision !== "ExplicitlyDenied") probeFailures.push(`${probeArn} -> ${deploy.arn}: ${decision}`);
    }
  }
  const queueRoleCount = deployRoles.filter((r) => trustOfRole(r) === "queue-role").length;
  check("deploy roles trust only their queue's exact agent role ARN", trustFailures, `${queueRoleCount} queue-role deploy role trust policies checked`);

  // ci-identity deploy roles (issue 16): only their account's OIDC providers, only
  // sts:AssumeRoleWithWebIdentity, always the exact audience; then the claims table.
  const oidcProviders = resources.filter((r) => r.type === "aws:iam/openIdConnectProvider:OpenIdConnectProvider");
  // Providers that already exist in a target account (config oidcProviderArn): trusted, not registered.
  const existingProviders = [...new Set((ctx.deployTargets ?? []).flatMap((t) => (t.trust === "ci-identity" && t.oidcProviderArn ? [t.oidcProviderArn] : [])))];
  const providerArnOf = (accountId: string, platform: CiAgentKind) =>
    [...oidcProviders.map((p) => str(p.outputs.arn)), ...existingProviders].find((arn) => arn === `arn:aws:iam::${accountId}:oidc-provider/${OIDC_ISSUERS[platform].host}`);
  const ciRoles = deployRoles.filter((r) => trustOfRole(r) === "ci-identity");
  const ciFailures: string[] = [];
  for (const p of oidcProviders) {
    const platform = (Object.keys(OIDC_ISSUERS) as CiAgentKind[]).find((k) => OIDC_ISSUERS[k].url === p.inputs.url);
    const clients = asArray(p.inputs.clientIdLists as string[] | undefined);
    if (!platform) ciFailures.push(`OIDC provider ${p.name} has issuer ${String(p.inputs.url)}, not one of ${Object.values(OIDC_ISSUERS).map((i) => i.url).join(", ")}`);
    if (clients.length !== 1 || clients[0] !== OIDC_AUDIENCE) ciFailures.push(`OIDC provider ${p.name} admits client ids ${JSON.stringify(clients)}, expected exactly ["${OIDC_AUDIENCE}"]`);
  }
  const providerKeys = oidcProviders.map((p) => str(p.outputs.arn));
  const duplicates = providerKeys.filter((k, i) => providerKeys.indexOf(k) !== i);
  if (duplicates.length) ciFailures.push(`more than one OIDC provider for ${[...new Set(duplicates)].join(", ")}`);
  for (const arn of existingProviders) if (providerKeys.includes(arn)) ciFailures.push(`OIDC provider ${arn} is configured as existing (oidcProviderArn) and registered by the stack too`);
  providerKeys.push(...existingProviders);
  for (const role of ciRoles) {
    for (const s of role.trust?.Statement ?? []) {
      if (s.Effect !== "Allow") continue;
      const principal = s.Principal as Record<string, unknown> | undefined;
      const keys = typeof principal === "object" && principal !== null ? Object.keys(principal) : [];
      const federated = asArray(principal?.Federated as string | string[] | undefined);
      const host = federated.length === 1 ? /^arn:aws:iam::(\d{12}):oidc-provider\/(.+)$/.exec(federated[0]) : null;
      if (s.NotPrincipal || s.NotAction || keys.length !== 1 || !host || host[1] !== role.accountId || !providerKeys.includes(federated[0])) {
        ciFailures.push(`${role.arn} trusts ${JSON.stringify(s.Principal ?? s.NotPrincipal)}, expected one OIDC provider the program registered in account ${role.accountId}`);
        continue;
      }
      if (JSON.stringify(asArray(s.Action)) !== JSON.stringify(["sts:AssumeRoleWithWebIdentity"])) ciFailures.push(`${role.arn} trust allows ${JSON.stringify(s.Action ?? s.NotAction)}, expected only sts:AssumeRoleWithWebIdentity`);
      const condition = (s.Condition ?? {}) as Record<string, Record<string, unknown>>;
      if (condition.StringEquals?.[`${host[2]}:aud`] !== OIDC_AUDIENCE) ciFailures.push(`${role.arn} does not require StringEquals ${host[2]}:aud = ${OIDC_AUDIENCE}`);
      const sub = condition.StringEquals?.[`${host[2]}:sub`] ?? condition.StringLike?.[`${host[2]}:sub`];
      if (sub === undefined) ciFailures.push(`${role.arn} does not check ${host[2]}:sub`);
    }
    if (ctx.deployTargets && !intentByArn.has(role.arn)) ciFailures.push(`${role.arn} is tagged ci-identity but no deploy target of config names it`);
  }
  for (const target of (ctx.deployTargets ?? []).filter((t) => t.trust === "ci-identity")) {
    const tag = roles.find((r) => r.arn === arns.role(target.accountId, target.roleName))?.tags[fleetTag.deployTrust];
    if (tag !== "ci-identity") ciFailures.push(`${target.queue}/${target.name}: the role's ${fleetTag.deployTrust} tag is ${tag ?? "missing"}, config says ci-identity`);
  }
  if (!ctx.deployTargets && ciRoles.length > 0) ciFailures.push(`${ciRoles.length} ci-identity deploy roles, but no deploy target config was given to prove them against`);
  check("ci-identity deploy roles trust only their account's OIDC providers, with the exact audience", ciFailures, `${ciRoles.length} ci-identity deploy roles, ${oidcProviders.length} OIDC providers checked${existingProviders.length ? `, ${existingProviders.length} existing ones trusted by config` : ""}`);
  const proof = await proveCiIdentityTargets(ctx.deployTargets ?? [], (arn) => roles.find((r) => r.arn === arn)?.trust, providerArnOf, errors);
  check(
    "ci-identity deploy roles admit exactly the intended CI identity tokens",
    proof.failures,
    `${proof.rows.length} (target, token claims) pairs evaluated by the IAM simulator and by the web-identity evaluator, which agree`,
  );
  const bindings: DeployBinding[] = deployRoles
    .map((role) => {
      const intent = intentByArn.get(role.arn);
      const resource = resources.find((r) => r.type === "aws:iam/role:Role" && str(r.outputs.arn) === role.arn);
      const boundary = str(resource?.inputs.permissionsBoundary);
      return {
        queue: role.tags[fleetTag.queue] ?? "?",
        target: role.tags[fleetTag.deployTarget] ?? "?",
        roleArn: role.arn,
        trust: trustOfRole(role),
        identities: (intent?.identities ?? []).map(describeIdentity),
        wildcard: (intent?.identities ?? []).some((i) => i.allowWildcard === true),
        flags: [...new Set((intent?.identities ?? []).flatMap(ciIdentityFlags))],
        ...(boundary ? { permissionsBoundary: boundary } : {}),
      };
    })
    .sort((a, b) => `${a.queue}/${a.target}/${a.roleArn}`.localeCompare(`${b.queue}/${b.target}/${b.roleArn}`));
  check("no other principal can assume a deploy role", probeFailures, `${deployRoles.length} deploy roles probed from the fleet and target accounts`);

  // Who can read which path: every fleet role against every queue prefix and the pillar prefix.
  const read: ReadRow[] = [];
  const kms = keyResource && keyArn && keyPolicy ? new KmsDecryptEvaluator({ arn: keyArn, policy: keyPolicy }, errors) : undefined;
  const probedPaths = [...queues.map((q) => ssmPaths.queue(ctx.stack, q)), ssmPaths.pillar(ctx.stack)];
  const viaSsm = ssmViaService(ctx.region);
  for (const f of fleetRoles) {
    const principal = sessionOf(f.role.arn);
    for (const path of probedPaths) {
      const parameterArn = arns.ssmParameter(ctx.region, ctx.accountId, `${path}/access-matrix/probe`);
      const pathArn = arns.ssmParameter(ctx.region, ctx.accountId, path);
      const getParameter = await matrix.decide(simulation(principal, "ssm:GetParameter", parameterArn, f.role.identityPolicies), `ssm:GetParameter ${f.label} ${path}`);
      const getByPath = await matrix.decide(simulation(principal, "ssm:GetParametersByPath", pathArn, f.role.identityPolicies), `ssm:GetParametersByPath ${f.label} ${path}`);
      const decrypt = kms
        ? await kms.decide(f.role.arn, f.role.identityPolicies, { "kms:ViaService": viaSsm, "kms:EncryptionContext:PARAMETER_ARN": parameterArn })
        : "Error";
      const expected = f.path === path;
      const allowed = (d: Decision) => d === "Allowed";
      read.push({
        role: f.label,
        roleArn: f.role.arn,
        path: `${path}/`,
        expected,
        getParameter,
        getByPath,
        decrypt,
        ok: [getParameter, getByPath, decrypt].every((d) => d !== "Error" && allowed(d) === expected),
      });
    }
  }
  check(
    "each role reads only its own SSM prefix",
    read.filter((r) => !r.ok).map((r) => `${r.role} on ${r.path}: GetParameter ${r.getParameter}, GetParametersByPath ${r.getByPath}, Decrypt ${r.decrypt}, expected ${r.expected ? "Allowed" : "denied"}`),
    `${read.length} (role, path) pairs evaluated`,
  );

  // kms:Decrypt outside SSM (a stolen ciphertext sent to KMS directly) is denied.
  const directFailures: string[] = [];
  if (kms) {
    for (const f of fleetRoles.filter((x) => x.path)) {
      const parameterArn = arns.ssmParameter(ctx.region, ctx.accountId, `${f.path}/access-matrix/probe`);
      const contexts: Record<string, string>[] = [
        { "kms:ViaService": `ec2.${ctx.region}.amazonaws.com`, "kms:EncryptionContext:PARAMETER_ARN": parameterArn },
        { "kms:EncryptionContext:PARAMETER_ARN": parameterArn },
      ];
      for (const context of contexts) {
        const d = await kms.decide(f.role.arn, f.role.identityPolicies, context);
        if (d !== "ImplicitlyDenied" && d !== "ExplicitlyDenied") directFailures.push(`${f.label} with ${context["kms:ViaService"] ?? "no kms:ViaService"}: ${d}`);
      }
    }
  } else directFailures.push("no fleet key to evaluate");
  check("kms:Decrypt is denied unless kms:ViaService is SSM", directFailures, "every reading role refused outside SSM");

  // Structural: no wildcard principal, no Action "*" on Resource "*", no Not* in an Allow.
  const wildcardFailures = statementsOf(resources).flatMap(({ where, statement: s }) => {
    const found: string[] = [];
    // A Deny for everyone (e.g. "deny any request without TLS") is the one safe use of "*".
    if (s.Effect !== "Deny" && (principalIsWildcard(s.Principal) || principalIsWildcard(s.NotPrincipal))) found.push(`${where}: Principal "*"`);
    if (isStar(s.Action) && (isStar(s.Resource) || s.Resource === undefined)) found.push(`${where}: Action "*" on Resource "*"`);
    if (s.Effect === "Allow" && (s.NotAction || s.NotResource || s.NotPrincipal)) found.push(`${where}: Allow with NotAction/NotResource/NotPrincipal`);
    return found;
  });
  check("no wildcard principal and no Action \"*\" on Resource \"*\"", wildcardFailures, "every statement names its principal and actions");

  // Attached managed policies are not evaluated here, so a fleet role has none (fail closed).
  check(
    "fleet roles have only inline policies the matrix evaluated",
    fleetRoles.flatMap((f) => f.role.attachedPolicyArns.map((arn) => `${f.role.name} has ${arn} attached`)),
    "no managed policy attached to a fleet role",
  );
  // A misspelled action in a policy matches nothing and would pass silently as a deny:
  // every non-wildcard action written anywhere must be one the evaluator knows.
  const writtenActions = new Set(statementsOf(resources).flatMap(({ statement: s }) => [...asArray(s.Action), ...asArray(s.NotAction)]));
  for (const action of [...writtenActions].filter((a) => !a.includes("*")).sort()) {
    await decide(simulation(sessionOf(arns.role(ctx.accountId, "access-matrix-probe")), action, "*", []), `action ${action} written in a policy`, errors);
  }
  check("the evaluator accepted every request", [...new Set(errors)], `no simulation error; all ${writtenActions.size} actions written in policies are known`);
  return { assume, read, bindings, webIdentity: proof.rows, checks };
}

const CELL: Record<Decision, string> = { Allowed: "allow", ImplicitlyDenied: "-", ExplicitlyDenied: "deny", Error: "ERROR" };
const cell = (d: Decision, ok: boolean) => (ok ? CELL[d] : `**${CELL[d]} (unexpected)**`);
const escapeCell = (s: string) => s.replace(/\|/g, "\\|");

/** Two tables (who can assume which deploy role; who can read which path) and the checks. */
export function renderAccessMatrixMarkdown(result: AccessMatrix): string {
  const lines: string[] = [];
  // Rows by cell, first row first (as find() would pick): the tables look each cell up once.
  const assumeRow = new Map<string, AssumeRow>();
  const firstAssume = new Map<string, AssumeRow>();
  for (const r of result.assume) {
    if (!assumeRow.has(`${r.queue}\u0000${r.targetRoleArn}`)) assumeRow.set(`${r.queue}\u0000${r.targetRoleArn}`, r);
    if (!firstAssume.has(r.targetRoleArn)) firstAssume.set(r.targetRoleArn, r);
  }
  const readRow = new Map<string, ReadRow>();
  for (const r of result.read) if (!readRow.has(`${r.role}\u0000${r.path}`)) readRow.set(`${r.role}\u0000${r.path}`, r);
  const deployLabel = (arn: string) => {
    const row = firstAssume.get(arn);
    return `${row?.targetQueue ?? "?"}/${row?.targetName ?? "?"} (${accountOfArn(arn)})`;
  };
  const deployArns = [...new Set(result.assume.filter((r) => r.targetKind === "deploy").map((r) => r.targetRoleArn))].sort((a, b) =>
    deployLabel(a).localeCompare(deployLabel(b)),
  );
  const agents = [...new Set(result.assume.map((r) => r.queue))].sort();
  lines.push("## Who can assume which deploy role", "");
  if (deployArns.length === 0) lines.push("No deploy roles.", "");
  else {
    lines.push(`| agent role \\ deploy role | ${deployArns.map((a) => escapeCell(deployLabel(a))).join(" | ")} |`);
    lines.push(`|---|${deployArns.map(() => "---").join("|")}|`);
    for (const queue of agents) {
      const cells = deployArns.map((arn) => {
        const row = assumeRow.get(`${queue}\u0000${arn}`);
        return row ? cell(row.decision, row.ok) : "";
      });
      lines.push(`| ${queue} | ${cells.join(" | ")} |`);
    }
    const others = result.assume.filter((r) => r.targetKind !== "deploy");
    lines.push("", `Other roles: ${others.filter((r) => r.decision === "Allowed").length} of ${others.length} (agent, role) pairs allowed.`, "");
  }
  lines.push("## Who can read which SSM path", "", "Each cell: GetParameter / GetParametersByPath / kms:Decrypt via SSM.", "");
  const paths = [...new Set(result.read.map((r) => r.path))];
  const readers = [...new Set(result.read.map((r) => r.role))];
  lines.push(`| role \\ path | ${paths.map((p) => `\`${p}\``).join(" | ")} |`);
  lines.push(`|---|${paths.map(() => "---").join("|")}|`);
  for (const role of readers) {
    const cells = paths.map((path) => {
      const row = readRow.get(`${role}\u0000${path}`);
      if (!row) return "";
      const text = [row.getParameter, row.getByPath, row.decrypt].map((d) => CELL[d]).join(" / ");
      return row.ok ? text : `**${text} (unexpected)**`;
    });
    lines.push(`| ${role} | ${cells.join(" | ")} |`);
  }
  lines.push("", "## Deploy role bindings", "");
  if (result.bindings.length === 0) lines.push("No deploy roles.");
  else {
    lines.push(
      "`queue-role`: any job on the queue (its agent role). `ci-identity`: only the CI platform's signed token (OIDC) of the identities listed; the queue's agent role cannot assume it (docs/deploy.md).",
      "",
      "| deploy target | role | binding | identities | permissions boundary |",
      "|---|---|---|---|---|",
    );
    for (const b of result.bindings) {
      const who = b.trust === "ci-identity" ? b.identities.map(escapeCell).join("<br>") + b.flags.map((f) => ` **(${escapeCell(f)})**`).join("") : "the queue's agent role";
      lines.push(`| ${b.queue}/${b.target} | \`${b.roleArn}\` | ${b.trust} | ${who} | ${b.permissionsBoundary ? `\`${b.permissionsBoundary}\`` : "**none**"} |`);
    }
  }
  const ciTargets = [...new Set(result.webIdentity.map((r) => `${r.queue}/${r.target}`))];
  for (const t of ciTargets) {
    const rows = result.webIdentity.filter((r) => `${r.queue}/${r.target}` === t);
    lines.push("", `### ${t}: sts:AssumeRoleWithWebIdentity by token claims`, "", "Decided by the IAM simulator and by the web-identity evaluator (they must agree).", "");
    lines.push("| identity | token | sub | aud | decision | expected |", "|---|---|---|---|---|---|");
    for (const r of rows) {
      const sub = Object.entries(r.claims).find(([k]) => k.endsWith(":sub"))?.[1] ?? "";
      const aud = Object.entries(r.claims).find(([k]) => k.endsWith(":aud"))?.[1] ?? "(none)";
      const decision = r.ok ? CELL[r.simulator] : `**${CELL[r.simulator]} / ${CELL[r.own]} (unexpected)**`;
      lines.push(`| ${escapeCell(r.identity)}${r.wildcard ? " **(allowWildcard)**" : ""} | ${escapeCell(r.label)} | \`${escapeCell(sub)}\` | \`${escapeCell(aud)}\` | ${decision} | ${r.expected ? "allow" : "-"} |`);
    }
  }
  lines.push("", "## Checks", "", "| check | result | detail |", "|---|---|---|");
  for (const c of result.checks) lines.push(`| ${escapeCell(c.name)} | ${c.ok ? "ok" : "**FAILED**"} | ${escapeCell(c.detail)} |`);
  return `${lines.join("\n")}\n`;
}

/** True when every check passed: the preview fails otherwise. */
export function accessMatrixPassed(result: AccessMatrix): boolean {
  return result.checks.every((c) => c.ok);
}

/** The evaluator's parts, for the blast radius (tools/preview/blast-radius.ts). */
export { collectRoles, decide, simulation, sessionOf, KmsDecryptEvaluator };
export type { RoleInfo, Document as PolicyDocumentShape };
