/**
 * Deploy roles bound to a CI identity token (OIDC) instead of the queue's agent role: the
 * issuers, the subjects each configured identity allows, and the trust policy. Pure builders,
 * shared by the component (identity.ts), config checking and the access matrix, so a subject is
 * spelled in one place. docs/deploy.md explains the setup on each platform.
 *
 * Upstream: GitHub's OIDC reference (`sub` = `repo:ORG/REPO:ref:REF`, `...:environment:ENV`,
 * `...:pull_request`; since 2026-07-15 new repositories get `repo:ORG@OWNER_ID/REPO@REPO_ID:...`);
 * Buildkite's OIDC docs (`sub` = `organization:ORG:pipeline:PIPE:ref:REF:commit:SHA:step:KEY`, one
 * issuer for every organisation); AWS: `<issuer>:aud` and `<issuer>:sub` are condition keys of every
 * OIDC provider (IAM User Guide, "Available keys for AWS web identity federation"), and the STS
 * service authorization reference lists `token.actions.githubusercontent.com:job_workflow_ref`,
 * `:repository_id`, `:repository_owner_id`, `:repository`, `:ref`, `:environment` and
 * `agent.buildkite.com:organization_slug`, `:pipeline_slug`, `:build_branch` for
 * sts:AssumeRoleWithWebIdentity (as the iam-data package's data/actions/sts.json encodes it). Rows in docs/upstream-conformance.md, section 13.
 */
import type { CiAgentKind, CiIdentity, GithubCiIdentity } from "../config/model";
import type { PolicyDocument, PolicyStatement } from "./policies";

/** The audience every token is requested for, and the OIDC providers' only client id. */
export const OIDC_AUDIENCE = "sts.amazonaws.com";

export interface OidcIssuer {
  /** The `iss` claim, and the IAM OIDC provider's URL. */
  url: string;
  /** The URL without `https://`: the prefix of the STS condition keys and of the provider's ARN. */
  host: string;
}

export const OIDC_ISSUERS: Record<CiAgentKind, OidcIssuer> = {
  "github-actions": { url: "https://token.actions.githubusercontent.com", host: "token.actions.githubusercontent.com" },
  buildkite: { url: "https://agent.buildkite.com", host: "agent.buildkite.com" },
};

/** `arn:aws:iam::<account>:oidc-provider/<host>`: IAM names a provider after its URL. */
export const oidcProviderArn = (accountId: string, platform: CiAgentKind) => `arn:aws:iam::${accountId}:oidc-provider/${OIDC_ISSUERS[platform].host}`;

export const hasWildcard = (value: string) => /[*?]/.test(value);

/** A GitHub `ref` that names pull requests (`refs/pull/...`, or GitHub's own `pull_request` subject). */
export const isPullRequestRef = (ref: string) => ref === "pull_request" || ref.startsWith("refs/pull/");

/** What follows `repo:ORG/REPO:` in a GitHub subject. */
function githubSubjectTail(identity: GithubCiIdentity): string {
  if (identity.environment !== undefined) return `environment:${identity.environment}`;
  const ref = identity.ref ?? "";
  // GitHub names every pull_request event's job `repo:ORG/REPO:pull_request`, whatever the ref.
  return isPullRequestRef(ref) ? "pull_request" : `ref:${ref}`;
}

/** `ORG/REPO/.github/workflows/x.yml@REF`: a path relative to the repository is completed. */
export function githubJobWorkflowRef(identity: GithubCiIdentity): string | undefined {
  if (identity.workflow === undefined) return undefined;
  return identity.workflow.startsWith(".github/") ? `${identity.repository}/${identity.workflow}` : identity.workflow;
}

/** The subjects an identity allows: GitHub's name format, and the immutable-id format when the ids are known. */
export function ciIdentitySubjects(identity: CiIdentity): string[] {
  if (identity.platform === "buildkite") {
    return [`organization:${identity.organization}:pipeline:${identity.pipeline}:ref:refs/heads/${identity.branch}:commit:*:step:*`];
  }
  const [owner, repo] = identity.repository.split("/");
  const tail = githubSubjectTail(identity);
  const subjects = [`repo:${owner}/${repo}:${tail}`];
  if (identity.repositoryId !== undefined && identity.ownerId !== undefined) subjects.push(`repo:${owner}@${identity.ownerId}/${repo}@${identity.repositoryId}:${tail}`);
  return subjects;
}

/** True when the identity admits more than one branch/environment, or pull requests: allowed only with `allowWildcard`. */
export function ciIdentityIsBroad(identity: CiIdentity): boolean {
  if (identity.platform === "buildkite") return hasWildcard(identity.branch) || hasWildcard(identity.pipeline);
  const value = identity.environment ?? identity.ref ?? "";
  return hasWildcard(value) || (identity.ref !== undefined && isPullRequestRef(identity.ref));
}

/**
 * What the report flags about an identity: what it admits beyond one job of one queue on one
 * branch, on purpose or by GitHub's design (docs/deploy.md, "What ci-identity does not protect against").
 */
export function ciIdentityFlags(identity: CiIdentity): string[] {
  const flags: string[] = [];
  if (identity.allowWildcard) flags.push("allowWildcard: admits a pattern or pull requests");
  if (identity.allowOtherQueues) flags.push(`allowOtherQueues: the ${identity.platform === "github-actions" ? "repository" : "pipeline"} also runs on other queues, whose jobs get the same token`);
  if (identity.platform === "github-actions" && identity.ref?.startsWith("refs/heads/") && identity.workflow === undefined) {
    flags.push("ref without workflow: pull_request_target, workflow_run and issue_comment workflows run on the default branch with its ref; prefer environment (with deployment-branch protection) or workflow");
  }
  return flags;
}

/** One line for the report: `github-actions example-org/app ref refs/heads/main (workflow ...)`. */
export function describeCiIdentity(identity: CiIdentity): string {
  if (identity.platform === "buildkite") return `buildkite ${identity.organization}/${identity.pipeline} branch ${identity.branch}`;
  const what = identity.environment !== undefined ? `environment ${identity.environment}` : `ref ${identity.ref}`;
  const workflow = githubJobWorkflowRef(identity);
  return `github-actions ${identity.repository} ${what}${workflow ? ` workflow ${workflow}` : ""}${identity.repositoryId ? ` (ids ${identity.ownerId}/${identity.repositoryId})` : ""}`;
}

const sortKey = (identity: CiIdentity) => `${identity.platform} ${ciIdentitySubjects(identity).join(" ")} ${identity.platform === "github-actions" ? (identity.workflow ?? "") : ""}`;

export interface CiIdentityTrustArgs {
  /** The target account: its OIDC providers are the principals. */
  accountId: string;
  identities: CiIdentity[];
  /** Per platform, the provider's ARN as registered (defaults to the ARN IAM gives it). */
  providerArns?: Partial<Record<CiAgentKind, string>>;
}

/**
 * Trust of a `ci-identity` deploy role: sts:AssumeRoleWithWebIdentity from the platform's OIDC
 * provider, with the exact audience and subjects (StringLike only where a subject has a wildcard:
 * Buildkite's commit and step, or a pattern allowed with `allowWildcard`), plus what STS checks
 * beside the subject, each on its own: GitHub's `repository`, `ref` or `environment`,
 * `job_workflow_ref` and immutable ids; Buildkite's organisation, pipeline and branch.
 * One statement per identity, in a fixed order; no agent role, no sts:AssumeRole, no TagSession.
 */
export function ciIdentityTrustPolicy(args: CiIdentityTrustArgs): PolicyDocument {
  if (args.identities.length === 0) throw new Error("a ci-identity deploy role needs at least one identity");
  const sorted = [...args.identities].sort((a, b) => (sortKey(a) < sortKey(b) ? -1 : sortKey(a) > sortKey(b) ? 1 : 0));
  const counters: Record<string, number> = {};
  const statements: PolicyStatement[] = sorted.map((identity) => {
    const issuer = OIDC_ISSUERS[identity.platform];
    const key = (claim: string) => `${issuer.host}:${claim}`;
    const subjects = ciIdentitySubjects(identity);
    const equals: Record<string, string | string[]> = { [key("aud")]: OIDC_AUDIENCE };
    const like: Record<string, string | string[]> = {};
    const one = (values: string[]) => (values.length === 1 ? values[0] : values);
    if (subjects.some(hasWildcard)) like[key("sub")] = one(subjects);
    else equals[key("sub")] = one(subjects);
    // A claim checked on its own, exactly (or as the pattern allowWildcard admits): `*` in a
    // subject spans `:`, so the subject alone cannot pin a branch or pipeline (issue 16 review).
    const exact = (claim: string, value: string) => ((identity.allowWildcard && hasWildcard(value) ? like : equals)[key(claim)] = value);
    if (identity.platform === "github-actions") {
      exact("repository", identity.repository);
      if (identity.environment !== undefined) exact("environment", identity.environment);
      else if (identity.ref !== undefined && identity.ref !== "pull_request") exact("ref", identity.ref);
      const workflow = githubJobWorkflowRef(identity);
      if (workflow !== undefined) (hasWildcard(workflow) ? like : equals)[key("job_workflow_ref")] = workflow;
      if (identity.repositoryId !== undefined && identity.ownerId !== undefined) {
        // Both subject formats must belong to this repository: a recycled name has other ids.
        equals[key("repository_id")] = identity.repositoryId;
        equals[key("repository_owner_id")] = identity.ownerId;
      }
    } else {
      // Every Buildkite organisation shares the issuer: the organisation is in the subject's
      // prefix and, where STS reads it from the token, checked on its own as well.
      equals[key("organization_slug")] = identity.organization;
      // Branch and pipeline are checked as claims too: a branch may contain `:` (`main:commit:x`),
      // which the subject's `commit:*` would otherwise admit.
      exact("pipeline_slug", identity.pipeline);
      exact("build_branch", identity.branch);
    }
    const prefix = identity.platform === "github-actions" ? "GithubActions" : "Buildkite";
    counters[prefix] = (counters[prefix] ?? 0) + 1;
    return {
      Sid: `${prefix}Job${counters[prefix]}`,
      Effect: "Allow",
      Principal: { Federated: args.providerArns?.[identity.platform] ?? oidcProviderArn(args.accountId, identity.platform) },
      Action: "sts:AssumeRoleWithWebIdentity",
      Condition: { StringEquals: equals, ...(Object.keys(like).length > 0 ? { StringLike: like } : {}) },
    };
  });
  return { Version: "2012-10-17", Statement: statements };
}
