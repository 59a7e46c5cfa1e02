/**
 * Proof of the `ci-identity` deploy roles (issue 16): for each target and a table of token
 * claims (the allowed job; another branch; a pull request; another repository or pipeline;
 * another organisation; GitHub's new subject format; a missing or wrong audience), is
 * sts:AssumeRoleWithWebIdentity allowed exactly when config intends it?
 *
 * Two evaluators decide every row and must agree:
 * - @cloud-copilot/iam-simulate 0.1.173. Its validated entry point (runSimulation) drops every
 *   context key its action data does not list for sts:AssumeRoleWithWebIdentity, and that data
 *   lists provider-specific keys (`token.actions.githubusercontent.com:job_workflow_ref`,
 *   `agent.buildkite.com:organization_slug`, ...) but not the generic `<issuer>:aud` and
 *   `<issuer>:sub` every OIDC provider has: with them dropped every trust is ImplicitlyDenied.
 *   So each request is validated with runSimulation (principal, policy, action; the keys it
 *   ignores must be exactly those two) and decided with runUnsafeSimulation, which keeps every
 *   key (Federated principals and StringEquals/StringLike are evaluated by its own engine).
 * - `evaluateWebIdentityTrust` below: a small evaluator of exactly what these trust policies use
 *   (Federated principal, the action, StringEquals / StringLike, Deny over Allow), anything else
 *   an error; held to AWS's documented semantics by test/deploy/web-identity.test.ts.
 *
 * AGPL note as in access-matrix.ts: a dev tool; nothing under infra/ imports this file.
 */
import { runSimulation, runUnsafeSimulation } from "@cloud-copilot/iam-simulate";
import type { CiAgentKind, CiIdentity, QueueSpec } from "../../infra/config/model";
import { OIDC_AUDIENCE, OIDC_ISSUERS, describeCiIdentity, githubJobWorkflowRef, isPullRequestRef, oidcProviderArn } from "../../infra/identity/ci-identity";

export type WebIdentityDecision = "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied" | "Error";

/** What config intends for one deploy target (the access matrix's context). */
export interface DeployTargetIntent {
  queue: string;
  name: string;
  accountId: string;
  roleName: string;
  trust: "queue-role" | "ci-identity";
  identities: CiIdentity[];
  /** An existing OIDC provider the target trusts (config `oidcProviderArn`), not one the stack registers. */
  oidcProviderArn?: string;
}

/** Every deploy target of a config, in a fixed order. */
export function deployTargetsOf(queues: Record<string, QueueSpec>): DeployTargetIntent[] {
  return Object.keys(queues)
    .sort()
    .flatMap((queue) =>
      Object.keys(queues[queue].deployTargets)
        .sort()
        .map((name) => {
          const t = queues[queue].deployTargets[name];
          return { queue, name, accountId: t.accountId, roleName: t.roleName, trust: t.trust ?? "queue-role", identities: t.identities ?? [], ...(t.oidcProviderArn ? { oidcProviderArn: t.oidcProviderArn } : {}) };
        }),
    );
}

export interface ClaimCase {
  /** `allowed job`, `another branch`, ... */
  label: string;
  /** Whose OIDC provider the token is presented through. */
  platform: CiAgentKind;
  /** Context keys as STS sets them from the token: `<issuer host>:<claim>`. */
  claims: Record<string, string>;
  expected: boolean;
}

interface Doc {
  Statement: { Effect?: string; Principal?: unknown; NotPrincipal?: unknown; Action?: unknown; NotAction?: unknown; Condition?: unknown }[];
}

const asArray = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/** IAM's StringLike: `*` any run of characters (`:` included), `?` one character, case-sensitive, whole value. */
export function iamGlob(pattern: string, value: string): boolean {
  const re = new RegExp(`^${pattern.split("").map((ch) => (ch === "*" ? "[\\s\\S]*" : ch === "?" ? "[\\s\\S]" : ch.replace(/[\\^$.|+()[\]{}]/g, "\\$&"))).join("")}$`);
  return re.test(value);
}

const OPERATORS: Record<string, (pattern: string, value: string) => boolean> = {
  StringEquals: (p, v) => p === v,
  StringLike: iamGlob,
};

/**
 * sts:AssumeRoleWithWebIdentity against one trust policy, for a token presented through the
 * provider `providerArn` with `claims`. Within an operator every key must match (AND), any of a
 * key's values may (OR); a key the request lacks fails its condition; an explicit Deny wins.
 * Anything these trust policies do not use (other operators, NotPrincipal, NotAction, `...IfExists`,
 * `ForAnyValue:`) is an Error rather than a guess.
 */
export function evaluateWebIdentityTrust(policy: Doc, providerArn: string, claims: Record<string, string>): WebIdentityDecision {
  let allowed = false;
  for (const s of policy.Statement) {
    if (s.NotPrincipal !== undefined || s.NotAction !== undefined) return "Error";
    const principal = s.Principal as Record<string, unknown> | undefined;
    const federated = typeof principal === "object" && principal !== null ? asArray(principal.Federated as string | string[] | undefined) : [];
    if (!federated.includes(providerArn)) continue;
    const actions = asArray(s.Action as string | string[] | undefined);
    if (!actions.some((a) => a === "sts:AssumeRoleWithWebIdentity" || a === "sts:*" || a === "*")) continue;
    let matches = true;
    for (const [operator, keys] of Object.entries((s.Condition ?? {}) as Record<string, Record<string, string | string[]>>)) {
      const test = OPERATORS[operator];
      if (!test) return "Error";
      for (const [key, values] of Object.entries(keys)) {
        const value = claims[key];
        if (value === undefined || !asArray(values).some((pattern) => test(pattern, value))) matches = false;
      }
    }
    if (!matches) continue;
    if (s.Effect === "Deny") return "ExplicitlyDenied";
    if (s.Effect === "Allow") allowed = true;
  }
  return allowed ? "Allowed" : "ImplicitlyDenied";
}

/** A concrete value a configured pattern admits (`refs/heads/release-*` -> `refs/heads/release-x`). */
const instance = (pattern: string) => pattern.replace(/\*/g, "x").replace(/\?/g, "x");
/** Does the configured value (exact, or a pattern allowed with allowWildcard) admit `value`? */
const admits = (identity: CiIdentity, configured: string, value: string) => (identity.allowWildcard ? iamGlob(configured, value) : configured === value);

/** A token's aud and sub as STS would name them had another issuer signed it (the other claims have no key there). */
const crossIssuer = (claims: Record<string, string>, from: string, to: string) =>
  Object.fromEntries(["aud", "sub"].map((claim) => [`${to}:${claim}`, claims[`${from}:${claim}`]]));

const COMMIT = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
const OTHER_BRANCH = "zz-ci-fleet-not-allowed";

/**
 * Near misses of an allowed name, the values a loosened pattern would admit (issue 16 review):
 * a suffix, a `:`-separated suffix that mimics the next subject field, a prefix, a `/` suffix.
 */
export function nearMisses(name: string, nextField: string): { label: string; value: string }[] {
  return [
    { label: `${name}-x`, value: `${name}-x` },
    { label: `${name}:${nextField}:x`, value: `${name}:${nextField}:x` },
    { label: `x${name}`, value: `x${name}` },
    { label: `${name}/x`, value: `${name}/x` },
  ];
}

/** `refs/heads/main` -> [`refs/heads/`, `main`]. */
const splitRef = (ref: string): [string, string] => {
  const m = /^(refs\/(?:heads|tags)\/)(.*)$/.exec(ref);
  return m ? [m[1], m[2]] : ["", ref];
};

/**
 * The table of token claims for one identity of a target, with what config intends for each.
 * Tokens carry the claims the platform sets together (a job on branch X has X in its subject and in
 * its branch claim); rows marked "(subject only)" / "(<claim> only)" change one of them and keep the
 * allowed job's other claims, so each condition must refuse on its own and a loosened subject or
 * claim pattern fails the proof even while the other still holds.
 */
export function claimCases(identity: CiIdentity): ClaimCase[] {
  const host = OIDC_ISSUERS[identity.platform].host;
  const k = (claim: string) => `${host}:${claim}`;
  const cases: ClaimCase[] = [];
  const add = (label: string, claims: Record<string, string>, expected: boolean, platform: CiAgentKind = identity.platform) => cases.push({ label, platform, claims, expected });
  if (identity.platform === "github-actions") {
    const [owner, repo] = identity.repository.split("/");
    const ids = { repo: identity.repositoryId ?? "100000001", owner: identity.ownerId ?? "200000001" };
    const configuredRef = identity.ref ?? "";
    const pr = identity.environment === undefined && isPullRequestRef(configuredRef);
    /** What a job is: its ref, or its environment (then its ref is main), or a pull request. */
    interface Job {
      ref?: string;
      environment?: string;
      pullRequest?: boolean;
    }
    const allowedJob: Job =
      identity.environment !== undefined
        ? { environment: instance(identity.environment), ref: "refs/heads/main" }
        : pr
          ? { pullRequest: true, ref: configuredRef.startsWith("refs/pull/") ? instance(configuredRef) : "refs/pull/1/merge" }
          : { ref: instance(configuredRef) };
    const tailOf = (job: Job) => (job.environment !== undefined ? `environment:${job.environment}` : job.pullRequest ? "pull_request" : `ref:${job.ref}`);
    const tail = tailOf(allowedJob);
    const workflow = githubJobWorkflowRef(identity) ?? `${identity.repository}/.github/workflows/deploy.yml@refs/heads/main`;
    const named = (t: string, r = `${owner}/${repo}`) => `repo:${r}:${t}`;
    const token = (sub: string, extra: Record<string, string> = {}, job: Job = allowedJob) => {
      const claims: Record<string, string> = {
        [k("aud")]: OIDC_AUDIENCE,
        [k("sub")]: sub,
        [k("repository")]: identity.repository,
        [k("ref")]: job.ref ?? "refs/heads/main",
        ...(job.environment !== undefined ? { [k("environment")]: job.environment } : {}),
        [k("job_workflow_ref")]: instance(workflow),
        [k("repository_id")]: ids.repo,
        [k("repository_owner_id")]: ids.owner,
      };
      return { ...claims, ...extra };
    };
    /** A job of the allowed repository as `job` (subject and claims agree). */
    const jobToken = (job: Job) => token(named(tailOf(job)), {}, job);
    const immutable = (t: string, o = ids.owner, r = ids.repo) => `repo:${owner}@${o}/${repo}@${r}:${t}`;
    const withIds = identity.repositoryId !== undefined;
    add("allowed job", token(named(tail)), true);
    add(`new subject format (repo:ORG@OWNER_ID/REPO@REPO_ID)${withIds ? "" : ", ids not configured"}`, token(immutable(tail)), withIds);
    if (withIds) {
      add("new subject format, other ids (a recycled name)", token(immutable(tail, "299999999", "199999999"), { [k("repository_id")]: "199999999", [k("repository_owner_id")]: "299999999" }), false);
      add("old subject format, other ids (a recycled name)", token(named(tail), { [k("repository_id")]: "199999999", [k("repository_owner_id")]: "299999999" }), false);
    }
    if (identity.environment !== undefined) {
      const env = identity.environment;
      const envAdmits = (value: string) => admits(identity, env, value);
      add("another environment", jobToken({ environment: OTHER_BRANCH, ref: "refs/heads/main" }), envAdmits(OTHER_BRANCH));
      for (const near of nearMisses(allowedJob.environment as string, "ref")) {
        const job = { environment: near.value, ref: "refs/heads/main" };
        add(`environment ${near.label}`, jobToken(job), envAdmits(near.value));
        add(`environment ${near.label} (subject only)`, token(named(tailOf(job))), envAdmits(near.value));
        add(`environment ${near.label} (environment claim only)`, token(named(tail), { [k("environment")]: near.value }), envAdmits(near.value));
      }
      add("a branch, no environment", jobToken({ ref: "refs/heads/main" }), false);
    } else if (!pr) {
      const refAdmits = (value: string) => admits(identity, configuredRef, value);
      add("another branch", jobToken({ ref: `refs/heads/${OTHER_BRANCH}` }), refAdmits(`refs/heads/${OTHER_BRANCH}`));
      const [prefix, name] = splitRef(allowedJob.ref as string);
      const refs = nearMisses(name, "ref").map((n) => ({ label: `${prefix}${n.label}`, value: `${prefix}${n.value}` }));
      // The same name as a tag (or as a branch, when a tag is configured).
      const other = prefix === "refs/tags/" ? "refs/heads/" : "refs/tags/";
      refs.push({ label: `${other}${name} (the same name as a ${other === "refs/tags/" ? "tag" : "branch"})`, value: `${other}${name}` });
      for (const near of refs) {
        const job = { ref: near.value };
        add(`ref ${near.label}`, jobToken(job), refAdmits(near.value));
        add(`ref ${near.label} (subject only)`, token(named(tailOf(job))), refAdmits(near.value));
        add(`ref ${near.label} (ref claim only)`, token(named(tail), { [k("ref")]: near.value }), refAdmits(near.value));
      }
    }
    add("a pull request", jobToken({ pullRequest: true, ref: "refs/pull/1/merge" }), pr);
    add("another repository", token(named(tail, `${owner}/${repo}-fork`), { [k("repository")]: `${owner}/${repo}-fork`, [k("repository_id")]: "100000777" }), false);
    add("another repository (repository claim only)", token(named(tail), { [k("repository")]: `${owner}/${repo}-fork` }), false);
    add("another organisation", token(named(tail, `${owner}-evil/${repo}`), { [k("repository")]: `${owner}-evil/${repo}`, [k("repository_owner_id")]: "200000777" }), false);
    if (identity.workflow !== undefined) add("another workflow file", token(named(tail), { [k("job_workflow_ref")]: `${identity.repository}/.github/workflows/other.yml@refs/heads/main` }), false);
    const noAud = token(named(tail));
    delete noAud[k("aud")];
    add("missing aud", noAud, false);
    add("GitHub's default aud (the owner's URL)", token(named(tail), { [k("aud")]: `https://github.com/${owner}` }), false);
    add("the allowed job's aud and sub through the Buildkite provider", crossIssuer(token(named(tail)), host, OIDC_ISSUERS.buildkite.host), false, "buildkite");
  } else {
    const branch = instance(identity.branch);
    const { organization: org, pipeline } = identity;
    const subject = (o: string, p: string, ref: string, step = "deploy", commit = COMMIT) => `organization:${o}:pipeline:${p}:ref:${ref}:commit:${commit}:step:${step}`;
    const token = (o: string, p: string, br: string, step = "deploy", extra: Record<string, string> = {}) => ({
      [k("aud")]: OIDC_AUDIENCE,
      [k("sub")]: subject(o, p, `refs/heads/${br}`, step),
      [k("organization_slug")]: o,
      [k("pipeline_slug")]: p,
      [k("build_branch")]: br,
      ...extra,
    });
    const branchAdmits = (value: string) => admits(identity, identity.branch, value);
    const pipelineAdmits = (value: string) => admits(identity, pipeline, value);
    add("allowed job", token(org, pipeline, branch), true);
    add("allowed job, another step and commit", token(org, pipeline, branch, "publish-docs", { [k("sub")]: subject(org, pipeline, `refs/heads/${branch}`, "publish-docs", "0000000000000000000000000000000000000001") }), true);
    add("another branch", token(org, pipeline, OTHER_BRANCH), branchAdmits(OTHER_BRANCH));
    add("another branch, step key naming the allowed ref", token(org, pipeline, OTHER_BRANCH, `x:ref:refs/heads/${branch}`), branchAdmits(OTHER_BRANCH));
    add("a pull request from a fork (branch contributor:main)", token(org, pipeline, "contributor:main"), branchAdmits("contributor:main"));
    for (const near of nearMisses(branch, "commit")) {
      add(`branch ${near.label}`, token(org, pipeline, near.value), branchAdmits(near.value));
      // The subject's `commit:*` spans `:`, so it cannot refuse `BRANCH:commit:x` on its own: build_branch does.
      if (!near.value.startsWith(`${branch}:commit:`)) add(`branch ${near.label} (subject only)`, token(org, pipeline, branch, "deploy", { [k("sub")]: subject(org, pipeline, `refs/heads/${near.value}`) }), branchAdmits(near.value));
      add(`branch ${near.label} (build_branch claim only)`, token(org, pipeline, branch, "deploy", { [k("build_branch")]: near.value }), branchAdmits(near.value));
    }
    // A tag build: Buildkite names the tag as the build's branch, and its ref is refs/tags/NAME.
    add(`a tag named ${branch}`, token(org, pipeline, branch, "deploy", { [k("sub")]: subject(org, pipeline, `refs/tags/${branch}`) }), false);
    const trickPipeline = `${pipeline}:ref:refs/heads/${branch}`;
    add(`pipeline ${trickPipeline}`, token(org, trickPipeline, branch), pipelineAdmits(trickPipeline));
    add(`pipeline ${trickPipeline} (subject only)`, token(org, pipeline, branch, "deploy", { [k("sub")]: subject(org, trickPipeline, `refs/heads/${branch}`) }), pipelineAdmits(trickPipeline));
    add(`pipeline ${pipeline}-x (pipeline_slug claim only)`, token(org, pipeline, branch, "deploy", { [k("pipeline_slug")]: `${pipeline}-x` }), pipelineAdmits(`${pipeline}-x`));
    add("another pipeline", token(org, `${pipeline}-other`, branch), false);
    add("another organisation, same pipeline and branch", token(`${org}-evil`, pipeline, branch), false);
    const noAud = token(org, pipeline, branch);
    delete noAud[k("aud")];
    add("missing aud", noAud, false);
    add("Buildkite's default aud (the organisation's URL)", token(org, pipeline, branch, "deploy", { [k("aud")]: `https://buildkite.com/${org}` }), false);
    add("the allowed job's aud and sub through the GitHub provider", crossIssuer(token(org, pipeline, branch), host, OIDC_ISSUERS["github-actions"].host), false, "github-actions");
  }
  return cases;
}

export interface WebIdentityRow {
  queue: string;
  target: string;
  roleArn: string;
  identity: string;
  /** The identity admits a pattern or pull requests (`allowWildcard`): flagged in the report. */
  wildcard: boolean;
  label: string;
  claims: Record<string, string>;
  expected: boolean;
  /** iam-simulate (validated, then decided with every context key). */
  simulator: WebIdentityDecision;
  /** evaluateWebIdentityTrust. */
  own: WebIdentityDecision;
  ok: boolean;
}

const GENERIC_KEYS = (platform: CiAgentKind) => [`${OIDC_ISSUERS[platform].host}:aud`, `${OIDC_ISSUERS[platform].host}:sub`];

/** One request through iam-simulate: validated with runSimulation, decided with runUnsafeSimulation. */
export async function simulateWebIdentity(trust: Doc, roleArn: string, providerArn: string, claims: Record<string, string>, platform: CiAgentKind, errors: string[]): Promise<WebIdentityDecision> {
  const accountId = roleArn.split(":")[4];
  const simulation = {
    request: { principal: providerArn, action: "sts:AssumeRoleWithWebIdentity", resource: { resource: roleArn, accountId }, contextVariables: claims },
    identityPolicies: [],
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    resourcePolicy: trust,
  };
  const validated = await runSimulation(simulation, {});
  if (validated.resultType === "error") {
    errors.push(`sts:AssumeRoleWithWebIdentity on ${roleArn}: ${JSON.stringify(validated.errors)}`);
    return "Error";
  }
  // Only the generic OIDC keys may be dropped; any other dropped key would go unevaluated.
  // iam-simulate 0.1.173: a single (non-wildcard) request reports them under `result.ignoredContextKeys`.
  const reported = (validated as { result?: { ignoredContextKeys?: string[] } }).result?.ignoredContextKeys;
  if (validated.resultType !== "single" || !Array.isArray(reported)) {
    errors.push(`sts:AssumeRoleWithWebIdentity on ${roleArn}: iam-simulate did not report which context keys it ignored`);
    return "Error";
  }
  const ignored = reported.filter((key) => !GENERIC_KEYS(platform).includes(key) && !GENERIC_KEYS(platform === "buildkite" ? "github-actions" : "buildkite").includes(key));
  if (ignored.length > 0) {
    errors.push(`iam-simulate ignores context keys ${ignored.join(", ")} for sts:AssumeRoleWithWebIdentity`);
    return "Error";
  }
  const result = await runUnsafeSimulation({ ...simulation, resourcePolicy: { __validated: true, policyDocument: trust, metadata: { name: "trust" }, errors: [] } as never }, {});
  return result as WebIdentityDecision;
}

/** Every ci-identity target's claims table, decided by both evaluators over the registered trust policies. */
export async function proveCiIdentityTargets(
  targets: DeployTargetIntent[],
  trustOf: (roleArn: string) => Doc | undefined,
  providerArnOf: (accountId: string, platform: CiAgentKind) => string | undefined,
  errors: string[],
): Promise<{ rows: WebIdentityRow[]; failures: string[] }> {
  const rows: WebIdentityRow[] = [];
  const failures: string[] = [];
  for (const target of targets.filter((t) => t.trust === "ci-identity")) {
    const roleArn = `arn:aws:iam::${target.accountId}:role/${target.roleName}`;
    const trust = trustOf(roleArn);
    if (!trust) {
      failures.push(`${target.queue}/${target.name}: no registered role ${roleArn}`);
      continue;
    }
    for (const identity of target.identities) {
      for (const c of claimCases(identity)) {
        // A case another identity of the same target allows on purpose is allowed.
        const expected = c.expected || target.identities.some((other) => other !== identity && claimCases(other).some((o) => o.expected && o.platform === c.platform && JSON.stringify(o.claims) === JSON.stringify(c.claims)));
        const providerArn = providerArnOf(target.accountId, c.platform) ?? oidcProviderArn(target.accountId, c.platform);
        const simulator = await simulateWebIdentity(trust, roleArn, providerArn, c.claims, c.platform, errors);
        const own = evaluateWebIdentityTrust(trust, providerArn, c.claims);
        const ok = simulator !== "Error" && own !== "Error" && simulator === own && (simulator === "Allowed") === expected;
        rows.push({ queue: target.queue, target: target.name, roleArn, identity: describeCiIdentity(identity), wildcard: identity.allowWildcard === true, label: c.label, claims: c.claims, expected, simulator, own, ok });
        if (!ok) failures.push(`${target.queue}/${target.name} ${describeCiIdentity(identity)}, ${c.label}: simulator ${simulator}, own evaluator ${own}, expected ${expected ? "Allowed" : "denied"}`);
      }
    }
  }
  return { rows, failures };
}
