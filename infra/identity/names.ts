/**
 * Names and ARNs of the fleet's AWS identity, derived from config keys only.
 * Pure functions: the component, the pillar builder and the access matrix share them,
 * so a name is spelled in exactly one place.
 */

/** IAM role names are limited to 64 characters. */
export const IAM_ROLE_NAME_MAX = 64;

/**
 * Queue names the identity layer cannot accept. `salt`/`teleport` are reserved by
 * docs/contracts.md; `salt-master` would share the Salt master's certificate OU (and so
 * satisfy its role's trust), and `pillar` would make the queue's SSM prefix the pillar
 * prefix: either would let that queue's jobs read every minion's secrets.
 */
export const RESERVED_QUEUE_NAMES: readonly string[] = ["salt", "teleport", "salt-master", "pillar"];

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** IAM role names: letters, digits and `+=,.@_-`. */
const IAM_ROLE_NAME = /^[A-Za-z0-9+=,.@_-]{1,64}$/;
/** One SSM path segment (the service also allows `_` and `.`). */
const SSM_SEGMENT = /^[A-Za-z0-9_.-]+$/;

export const fleetTag = {
  stack: "ci-fleet:stack",
  role: "ci-fleet:role",
  queue: "ci-fleet:queue",
  deployTarget: "ci-fleet:deploy-target",
  /** Deploy roles: `queue-role` or `ci-identity` (who may assume it; config `deployTargets.<name>.trust`). */
  deployTrust: "ci-fleet:deploy-trust",
  /** OIDC providers: the platform whose tokens they accept (`github-actions` or `buildkite`). */
  ciPlatform: "ci-fleet:ci-platform",
} as const;

/** Value of the `ci-fleet:role` tag. */
export type IdentityTagRole = "agent" | "host" | "deploy" | "salt-master" | "teleport" | "fleet";

/** Organizational unit of the Roles Anywhere certificates of the two control machines. */
export const SALT_MASTER_OU = "salt-master";
export const TELEPORT_OU = "teleport";

export const roleNames = {
  agent: (stack: string, queue: string) => `ci-fleet-${stack}-agent-${queue}`,
  /** aws only: a runner's instance role, which can do nothing but assume its queue's agent role. */
  host: (stack: string, queue: string) => `ci-fleet-${stack}-host-${queue}`,
  saltMaster: (stack: string) => `ci-fleet-${stack}-salt-master`,
  teleport: (stack: string) => `ci-fleet-${stack}-teleport`,
};

/** `ci-fleet-<stack>-agent-<queue>`; throws when IAM would reject the name. */
export function agentRoleName(stack: string, queue: string): string {
  const name = roleNames.agent(stack, queue);
  const problem = roleNameProblem(name);
  if (problem) throw new Error(`agent role of queue "${queue}": ${problem}`);
  return name;
}

export function roleNameProblem(name: string): string | undefined {
  if (name.length > IAM_ROLE_NAME_MAX) {
    return `role name "${name}" is ${name.length} characters; IAM allows at most ${IAM_ROLE_NAME_MAX}`;
  }
  if (!IAM_ROLE_NAME.test(name)) return `role name "${name}" has characters IAM does not allow`;
  return undefined;
}

export const kmsAliasName = (stack: string) => `alias/ci-fleet-${stack}`;

export const ssmPaths = {
  /** `/ci-fleet/<stack>/<queue>` (no trailing slash: the GetParametersByPath path). */
  queue: (stack: string, queue: string) => `/ci-fleet/${stack}/${queue}`,
  pillar: (stack: string) => `/ci-fleet/${stack}/pillar`,
  queueParameter: (stack: string, queue: string, relative: string) => `/ci-fleet/${stack}/${queue}/${relative}`,
};

export const arns = {
  role: (accountId: string, name: string) => `arn:aws:iam::${accountId}:role/${name}`,
  accountRoot: (accountId: string) => `arn:aws:iam::${accountId}:root`,
  /** ARN of an SSM parameter or path; `path` starts with `/`. */
  ssmParameter: (region: string, accountId: string, path: string) =>
    `arn:aws:ssm:${region}:${accountId}:parameter${path}`,
};

export const ssmViaService = (region: string) => `ssm.${region}.amazonaws.com`;

/** Problems with one relative SSM parameter path (`global/env/NPM_TOKEN`). */
export function relativeParameterPathProblem(relative: string): string | undefined {
  const segments = relative.split("/");
  if (relative.startsWith("/") || relative.endsWith("/") || segments.some((s) => s === "")) {
    return `"${relative}" must be a relative path without empty segments`;
  }
  const bad = segments.find((s) => !SSM_SEGMENT.test(s) || s === "." || s === "..");
  if (bad !== undefined) return `"${relative}" has an invalid segment "${bad}"`;
  return undefined;
}

/** Problems with a queue name as the identity layer uses it (role name, OU, SSM path). */
export function queueNameProblems(stack: string, queue: string): string[] {
  const problems: string[] = [];
  if (!DNS_LABEL.test(queue)) problems.push(`queue "${queue}" is not a DNS label`);
  if (RESERVED_QUEUE_NAMES.includes(queue)) problems.push(`queue name "${queue}" is reserved`);
  const roleProblem = roleNameProblem(roleNames.agent(stack, queue));
  if (roleProblem) problems.push(`agent role of queue "${queue}": ${roleProblem}`);
  return problems;
}

/** `infra-prod` -> `InfraProd`: IAM statement ids allow only [A-Za-z0-9]. */
export function sidSuffix(name: string): string {
  return name
    .split(/[^A-Za-z0-9]+/)
    .filter((part) => part.length > 0)
    .map((part) => part[0].toUpperCase() + part.slice(1))
    .join("");
}
