/**
 * Teleport role resources (`kind: role`, `version: v7`), the only source of truth for
 * who may log in where: `tctl create -f` applies them on the Teleport machine; nobody
 * edits roles in the web UI. Teleport 18 defaults new roles to v8 but still accepts v7; the
 * two differ only in `kubernetes_resources` (plural kinds, `api_group`), which these roles
 * do not use, so v7 keeps the SSH semantics unchanged.
 *
 * Logins are named users Salt creates, never `root`:
 * - `ci-admin` (fleet-admin): sudo is allowed, and every `sudo` is logged with the
 *   Teleport user's session, so "who became root when" stays answerable;
 * - `ci-operator` (runner-operator): reads logs and restarts the CI agent through a
 *   narrow sudoers rule; it is NOT the CI agent's user, so an operator never holds the
 *   job's credentials, and a job never holds the operator's.
 */

import { readFileSync } from "fs";
import * as path from "path";
import * as YAML from "yaml";
import { TELEPORT_ASSIGNED_LABEL_PREFIX } from "./config";

/**
 * Label keys the roles select on: only labels the auth service assigns (`dynamic/`, from the
 * `server_info` the master writes after a join), never a label from a node's own config.
 * Teleport 18 has no node label a node cannot also assert itself (docs/upstream-conformance.md
 * section 8): these are the labels the fleet controls, and the master locks any node whose
 * `dynamic/` labels differ from what it assigned (salt/_runners/ci_fleet.py).
 */
export const ROLE_LABEL = `${TELEPORT_ASSIGNED_LABEL_PREFIX}role`;
export const QUEUE_LABEL = `${TELEPORT_ASSIGNED_LABEL_PREFIX}queue`;
export const STACK_LABEL = `${TELEPORT_ASSIGNED_LABEL_PREFIX}stack`;

export const ROLE_FLEET_ADMIN = "fleet-admin";
export const ROLE_FLEET_AUDITOR = "fleet-auditor";
export const ROLE_RUNNER_OPERATOR = "runner-operator";
/** `runner-operator-<queue>`: the runners of one queue only. */
export function runnerOperatorRoleName(queue: string): string {
  return `${ROLE_RUNNER_OPERATOR}-${queue}`;
}

export const LOGIN_ADMIN = "ci-admin";
export const LOGIN_OPERATOR = "ci-operator";
/**
 * A user name from a Salt formula's defaults (salt/<formula>/parameters/defaults.yaml), the one
 * place each is written down: Salt creates the users from there, so the roles cannot drift from it.
 */
function saltFormulaUser(formula: string, keyPath: readonly string[]): string {
  const file = path.join(__dirname, "..", "..", "salt", formula, "parameters", "defaults.yaml");
  let node: unknown = YAML.parse(readFileSync(file, "utf8"));
  for (const key of [formula, ...keyPath]) node = node !== null && typeof node === "object" ? (node as Record<string, unknown>)[key] : undefined;
  if (typeof node !== "string" || !/^[a-z_][a-z0-9_-]{0,31}$/.test(node)) throw new Error(`salt/${formula}/parameters/defaults.yaml: ${[formula, ...keyPath].join(":")} is not a user name`);
  return node;
}

/** The user every CI job runs as on a runner (GitHub Actions runner and Buildkite jobs): `runner:user:name`. */
export const CI_JOB_USER = saltFormulaUser("runner", ["user", "name"]);
/** The Buildkite agent's own user (it holds the agent token): `buildkite:agent_user:name`. */
export const BUILDKITE_AGENT_USER = saltFormulaUser("buildkite", ["agent_user", "name"]);

/**
 * Users no Teleport role may log in as: root (admins use sudo), the user CI jobs run as and the
 * Buildkite agent's user (their sessions would hold job credentials or the agent token). Read from
 * the Salt formulas that create them, never a literal here.
 */
export const FORBIDDEN_LOGINS: readonly string[] = ["root", BUILDKITE_AGENT_USER, CI_JOB_USER];

/** Machine roles that form the control plane; operators are denied them outright. */
export const CONTROL_PLANE_ROLES: readonly string[] = ["salt-master", "teleport"];

/** A Teleport label selector: every key must match; any of a key's values may match. */
export type LabelSelector = Record<string, string | string[]>;

export interface RoleRule {
  resources: string[];
  verbs: string[];
}

export interface RoleConditions {
  logins?: string[];
  node_labels?: LabelSelector;
  rules?: RoleRule[];
}

export interface RoleOptions {
  max_session_ttl: string;
  client_idle_timeout: string;
  disconnect_expired_cert: boolean;
  forward_agent: boolean;
  /**
   * Local (`ssh -L`) and remote (`ssh -R`) forwarding, each on or off. Replaces the deprecated
   * `port_forwarding` (Teleport 18 RoleOptions: "Deprecated: Use SSHPortForwarding instead"):
   * an explicit deny here wins over any role's allow, where a legacy `port_forwarding: true` in
   * any one role would switch forwarding on for the whole role set.
   */
  ssh_port_forwarding: { local: { enabled: boolean }; remote: { enabled: boolean } };
  permit_x11_forwarding: boolean;
  ssh_file_copy: boolean;
  create_host_user_mode: "off";
  /** `strict`: a session whose recording fails is closed, never run unrecorded. */
  record_session: { default: "strict"; desktop: boolean };
}

export interface TeleportRole {
  kind: "role";
  version: "v7";
  metadata: { name: string; description: string };
  spec: { options: RoleOptions; allow: RoleConditions; deny: RoleConditions };
}

export interface RolesInput {
  /** Queue names from config; each gets its own `runner-operator-<queue>` role. */
  queues: readonly string[];
  /**
   * The stack: when given, every role that reaches machines also requires `dynamic/stack: <stack>`
   * (a label the master assigns), so a node of another stack joined to this cluster, or a node
   * the master never labelled, is reached by no role. teleportResourcesYaml always gives it.
   */
  stack?: string;
}

const AUDIT_READ_RULES: RoleRule[] = [
  // Recordings and the audit log, read-only: `tsh recordings ls`, `tsh play`, the Audit Log page.
  { resources: ["event", "session"], verbs: ["list", "read"] },
  // Who is connected right now (`tsh sessions ls`).
  { resources: ["session_tracker"], verbs: ["list", "read"] },
];

function options(overrides: Pick<RoleOptions, "max_session_ttl" | "ssh_file_copy">): RoleOptions {
  return {
    max_session_ttl: overrides.max_session_ttl,
    client_idle_timeout: "30m",
    disconnect_expired_cert: true,
    // An engineer's agent forwarded to a runner could be used by a job on that runner.
    forward_agent: false,
    ssh_port_forwarding: { local: { enabled: false }, remote: { enabled: false } },
    permit_x11_forwarding: false,
    ssh_file_copy: overrides.ssh_file_copy,
    create_host_user_mode: "off",
    record_session: { default: "strict", desktop: true },
  };
}

function operatorRole(name: string, description: string, nodeLabels: LabelSelector): TeleportRole {
  return {
    kind: "role",
    version: "v7",
    metadata: { name, description },
    spec: {
      options: options({ max_session_ttl: "4h", ssh_file_copy: false }),
      allow: { logins: [LOGIN_OPERATOR], node_labels: nodeLabels },
      // Belt and braces: even if an allow rule were widened by mistake, the control plane
      // stays out of reach. Teleport applies a deny from ANY of a user's roles.
      deny: { logins: [...FORBIDDEN_LOGINS], node_labels: { [ROLE_LABEL]: [...CONTROL_PLANE_ROLES] } },
    },
  };
}

export function buildRoles(input: RolesInput): TeleportRole[] {
  const queues = [...new Set(input.queues)].sort();
  for (const queue of queues) {
    if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(queue)) throw new Error(`teleport roles: queue name ${JSON.stringify(queue)} is not a DNS label`);
  }
  const { stack } = input;
  if (stack !== undefined && !/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(stack)) throw new Error(`teleport roles: stack name ${JSON.stringify(stack)} is not a DNS label`);
  // This stack's machines only: `dynamic/stack` is assigned by the master, never by a node.
  const scoped = (labels: LabelSelector): LabelSelector => (stack === undefined ? labels : { ...labels, [STACK_LABEL]: stack });
  const admin: TeleportRole = {
    kind: "role",
    version: "v7",
    metadata: { name: ROLE_FLEET_ADMIN, description: "Every machine of the fleet as ci-admin (sudo), and read access to the audit log and recordings." },
    spec: {
      options: options({ max_session_ttl: "8h", ssh_file_copy: true }),
      allow: { logins: [LOGIN_ADMIN], node_labels: stack === undefined ? { "*": "*" } : { [STACK_LABEL]: stack }, rules: AUDIT_READ_RULES },
      deny: { logins: [...FORBIDDEN_LOGINS] },
    },
  };
  const auditor: TeleportRole = {
    kind: "role",
    version: "v7",
    metadata: { name: ROLE_FLEET_AUDITOR, description: "Read the audit log and session recordings; no machine access." },
    spec: {
      options: options({ max_session_ttl: "8h", ssh_file_copy: false }),
      allow: { rules: AUDIT_READ_RULES },
      deny: { logins: [...FORBIDDEN_LOGINS] },
    },
  };
  return [
    admin,
    auditor,
    operatorRole(ROLE_RUNNER_OPERATOR, "Every runner, as ci-operator; never the Salt master or the Teleport machine.", scoped({ [ROLE_LABEL]: "runner" })),
    ...queues.map((queue) =>
      operatorRole(runnerOperatorRoleName(queue), `The runners of queue ${queue}, as ci-operator; never the Salt master or the Teleport machine.`, scoped({
        [QUEUE_LABEL]: queue,
        [ROLE_LABEL]: "runner",
      })),
    ),
  ];
}
