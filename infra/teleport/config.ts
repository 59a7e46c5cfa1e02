import type { MachineProviderName, MachineRole } from "../config/model";
import { sortedRecord } from "./yaml";

/**
 * Pure builders of teleport.yaml (config `version: v3`) for the Teleport machine
 * (auth + proxy + its own SSH service) and for every other machine (SSH service only).
 * They return plain objects; render them with `renderYaml` (./yaml.ts). Neither document
 * holds a secret: join tokens live in a file written by the join orchestration, and the
 * GitHub client secret lives in the connector resource (./github-connector.ts).
 */

export const TELEPORT_DATA_DIR = "/var/lib/teleport";
/** Written only by the join orchestration (a short-lived token); never a token in config. */
export const TELEPORT_JOIN_TOKEN_PATH = "/var/lib/teleport/join-token";
/**
 * The file of cluster CA pins every node config names in `ca_pin` (root 0600, one
 * `sha256:<hex>` per line). Teleport reads an absolute `ca_pin` entry as a file of pins
 * (lib/service/servicecfg/config.go `ApplyCAPins`, lib/utils `TryReadValueAsFile`); a missing
 * or empty file stops the agent from starting, so a node never joins unpinned. The pins are
 * known only once the auth service runs: the master computes them from the Teleport machine's
 * host CA (salt/_runners/ci_fleet.py `refresh_teleport_ca_pins`) and serves them through each
 * node's pillar (`ci_fleet_teleport_ca:pins`); salt/teleport/node.sls writes this file
 * (salt/teleport/parameters/defaults.yaml `ca_pin_file`, kept equal by test/teleport/ca-pin.test.ts).
 */
export const TELEPORT_CA_PIN_PATH = "/var/lib/teleport/ca-pin";
export const TELEPORT_AUTH_PORT = 3025;
export const TELEPORT_SSH_PORT = 3022;
/** Path inside the audit bucket that holds session recordings. */
export const SESSION_RECORDINGS_PREFIX = "records";

/**
 * Where the cluster state and the audit log go.
 * - `aws`: the cluster state (CAs and their keys, users, roles, tokens, nodes) in a DynamoDB
 *   table of its own (`stateTable`, PITR on), audit events in another DynamoDB table
 *   (queried by the web UI and `tctl`; DynamoDB TTL enforces the retention), recordings in
 *   S3 (lifecycle enforces the retention). Used on both providers: on equinix-metal the
 *   Teleport machine reaches them with its Roles Anywhere credentials. Built by
 *   `TeleportAuditStorage` (./audit-storage.ts). A replaced Teleport machine serves the same
 *   cluster from them.
 * - `local`: sqlite and files under the data directory. Lost with the machine's disk:
 *   refused on aws; kept only for an equinix-metal stack without AWS credentials on the
 *   Teleport machine (the fleet never renders it).
 */
export type TeleportAuditBackend =
  | { kind: "aws"; region: string; stateTable: string; sessionsBucket: string; eventsTable: string; retentionDays: number }
  | { kind: "local"; eventsDir: string; sessionsDir: string };

export interface TeleportLabelsInput {
  stack: string;
  role: MachineRole;
  /** Runners only. */
  queue?: string;
}

/**
 * Prefix Teleport gives the labels of a `server_info` resource named `si-<node name>`
 * (api/types/server_info.go `fixLabels`: `si-` -> `TeleportDynamicLabelPrefix`). Every label
 * a role's node_labels use carries it; no node config renders one (config.test.ts).
 */
export const TELEPORT_ASSIGNED_LABEL_PREFIX = "dynamic/";

/**
 * The labels the auth service gives a machine, as RBAC sees them (`dynamic/role`,
 * `dynamic/stack`, `dynamic/queue`). The master's orchestration writes them into the
 * `server_info` resource of the machine's node (`si-<host id>`) after the join, from this
 * machine's pillar (`ci_fleet:teleport:labels`, written by the program), never from
 * anything the machine says; roles select machines by these keys only.
 */
export function teleportNodeLabels(input: TeleportLabelsInput): Record<string, string> {
  if ((input.role === "runner") !== (input.queue !== undefined)) {
    throw new Error(`teleport labels: a queue label is required on runners and only on runners (role ${input.role})`);
  }
  const labels: Record<string, string> = { [`${TELEPORT_ASSIGNED_LABEL_PREFIX}role`]: input.role, [`${TELEPORT_ASSIGNED_LABEL_PREFIX}stack`]: input.stack };
  if (input.queue !== undefined) labels[`${TELEPORT_ASSIGNED_LABEL_PREFIX}queue`] = input.queue;
  return sortedRecord(labels);
}

/**
 * What a node's own teleport.yaml shows of its assigned labels: the same values without the
 * prefix, for `tsh ls` before the auth service's labels arrive. Display only: the node can
 * set any label it likes (lib/srv/regular/sshserver.go `getStaticLabels`: config labels
 * override the auth service's), so no role may select on these keys (access.test.ts).
 */
export function teleportDisplayLabels(assigned: Readonly<Record<string, string>>): Record<string, string> {
  const display: Record<string, string> = {};
  for (const [key, value] of Object.entries(assigned)) {
    if (!key.startsWith(TELEPORT_ASSIGNED_LABEL_PREFIX)) throw new Error(`teleport labels: ${JSON.stringify(key)} is not an assigned (${TELEPORT_ASSIGNED_LABEL_PREFIX}) label`);
    display[key.slice(TELEPORT_ASSIGNED_LABEL_PREFIX.length)] = value;
  }
  return sortedRecord(display);
}

/**
 * Name of the `ec2` provision token every machine of an aws stack joins with (./resources.ts
 * `buildEc2JoinToken`). Not a secret: the token admits only a node that presents an EC2
 * instance identity document signed by AWS, of a running instance of the stack's account and
 * region, and the auth service gives it the host id `<account>-<instance id>` from that
 * document, refusing any other (lib/join/ec2join `CheckEC2Request`: "requested host ID does not
 * match the Instance Identity Document"). `iam` was dropped for it (issue 12.3): on Teleport 18
 * the legacy RegisterUsingIAMMethod RPC still signs whatever host id the client asks for, so a
 * rooted runner could join under the Salt master's or the auth service's host id.
 */
export function teleportEc2TokenName(stack: string): string {
  if (!/^[a-z0-9][a-z0-9-]*$/.test(stack)) throw new Error(`teleport join: stack ${JSON.stringify(stack)} is not a plain name`);
  return `ci-fleet-${stack}-ec2`;
}

export interface AuthProxyConfigInput {
  provider: MachineProviderName;
  /** Machine name, `<stack>-teleport`. */
  nodename: string;
  /** The Teleport machine's private IPv4; the auth service listens only there. */
  privateIpv4: string;
  /** Cannot change after the auth service first starts. */
  clusterName: string;
  /** Public DNS name of the proxy, without scheme or port. */
  publicAddr: string;
  acmeEmail: string;
  audit: TeleportAuditBackend;
  /** The labels the auth service assigns this machine (`teleportNodeLabels`); rendered for display only. */
  labels: Record<string, string>;
}

export interface NodeConfigInput {
  /** aws: `ec2` join (AWS-attested, host id bound to the instance); equinix-metal: a short-lived single-machine token file. */
  provider: MachineProviderName;
  /** Machine name, e.g. `<stack>-<queue>-<runner>`. */
  nodename: string;
  privateIpv4: string;
  /** The auth service's private address, `10.x.x.x:3025`. */
  authAddress: string;
  /** The labels the auth service assigns this machine (`teleportNodeLabels`); rendered for display only. */
  labels: Record<string, string>;
}

// ---------------------------------------------------------------------------------------
// The documents. Types name exactly the fields we render; the field whitelist test checks
// them against Teleport's reference (./config-v3-fields.ts).

export interface TeleportLog {
  output: "stderr";
  severity: "INFO";
  format: { output: "json" };
}

export interface TeleportAuthProxyConfig {
  version: "v3";
  teleport: {
    nodename: string;
    data_dir: string;
    log: TeleportLog;
    storage: {
      type: "dynamodb" | "sqlite";
      /** dynamodb: lib/backend/dynamo Config `region`, `table_name`. */
      region?: string;
      table_name?: string;
      audit_events_uri: string[];
      audit_sessions_uri: string;
      retention_period?: string;
    };
  };
  auth_service: {
    enabled: true;
    cluster_name: string;
    listen_addr: string;
    proxy_listener_mode: "multiplex";
    authentication: { type: "github"; connector_name: string; local_auth: false };
    session_recording: "proxy-sync";
    proxy_checks_host_keys: true;
    disconnect_expired_cert: true;
  };
  proxy_service: {
    enabled: true;
    web_listen_addr: string;
    public_addr: string;
    acme: { enabled: true; email: string };
  };
  ssh_service: TeleportSshService;
}

export interface TeleportSshService {
  enabled: true;
  listen_addr: string;
  labels: Record<string, string>;
  disable_create_host_user: true;
  permit_user_env: false;
}

/**
 * `ec2`: token_name is the provision token's name (not secret). `token`: token_name is a
 * file path (Teleport reads the token from it when it starts with `/`).
 */
export type TeleportJoinParams = { method: "ec2"; token_name: string } | { method: "token"; token_name: string };

export interface TeleportNodeConfig {
  version: "v3";
  teleport: {
    nodename: string;
    data_dir: string;
    join_params: TeleportJoinParams;
    auth_server: string;
    /** One absolute path: the pin file (TELEPORT_CA_PIN_PATH). */
    ca_pin: [string];
    log: TeleportLog;
  };
  auth_service: { enabled: false };
  proxy_service: { enabled: false };
  ssh_service: TeleportSshService;
}

/** Name of the GitHub connector resource; the auth config makes it the default. */
export const GITHUB_CONNECTOR_NAME = "github";

export function buildAuthProxyConfig(input: AuthProxyConfigInput): TeleportAuthProxyConfig {
  const problems = [
    ...checkNodename(input.nodename),
    ...checkPrivateIpv4("privateIpv4", input.privateIpv4),
    ...checkDnsName("publicAddr", input.publicAddr),
    ...checkClusterName(input.clusterName),
    ...checkLabels(input.labels),
  ];
  if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(input.acmeEmail)) problems.push(`acmeEmail ${JSON.stringify(input.acmeEmail)} is not an e-mail address`);
  if (input.audit.kind === "local" && input.provider === "aws") {
    problems.push("audit: the aws provider keeps the audit log in S3 and DynamoDB, never on the machine's disk");
  }
  if (input.audit.kind === "aws") {
    if (!Number.isInteger(input.audit.retentionDays) || input.audit.retentionDays < 1) {
      problems.push(`audit.retentionDays must be a positive whole number of days, got ${input.audit.retentionDays}`);
    }
    if (!input.audit.stateTable || input.audit.stateTable === input.audit.eventsTable) {
      problems.push("audit.stateTable: the cluster state needs its own DynamoDB table, separate from the audit events table");
    }
  }
  fail("teleport auth config", problems);

  return {
    version: "v3",
    teleport: {
      nodename: input.nodename,
      data_dir: TELEPORT_DATA_DIR,
      log: buildLog(),
      // Cluster state (CAs and their keys, users, roles, tokens, nodes) and the audit log
      // outlive the machine: a replacement with this config serves the same cluster.
      storage: clusterStorage(input.audit),
    },
    auth_service: {
      enabled: true,
      cluster_name: input.clusterName,
      listen_addr: `${input.privateIpv4}:${TELEPORT_AUTH_PORT}`,
      proxy_listener_mode: "multiplex",
      // GitHub is the only way in: no local users, so no passwords to phish or reset.
      authentication: { type: "github", connector_name: GITHUB_CONNECTOR_NAME, local_auth: false },
      // The proxy records every session and streams it to the auth service as it runs: a
      // node never holds, writes or uploads a recording, so root on a runner cannot alter
      // or drop its own sessions' recordings. With proxy recording the proxy terminates SSH
      // and dials the node itself; it then checks the node's host certificate against the
      // cluster's host CA (proxy_checks_host_keys), so a machine without the node's
      // certificate cannot stand in for it.
      session_recording: "proxy-sync",
      proxy_checks_host_keys: true,
      disconnect_expired_cert: true,
    },
    proxy_service: {
      enabled: true,
      web_listen_addr: "0.0.0.0:443",
      public_addr: `${input.publicAddr}:443`,
      acme: { enabled: true, email: input.acmeEmail },
    },
    ssh_service: buildSshService(input.privateIpv4, input.labels),
  };
}

export function buildNodeConfig(input: NodeConfigInput): TeleportNodeConfig {
  const problems = [
    ...checkNodename(input.nodename),
    ...checkPrivateIpv4("privateIpv4", input.privateIpv4),
    ...checkAuthAddress(input.authAddress),
    ...checkLabels(input.labels),
  ];
  if (input.provider !== "aws" && input.provider !== "equinix-metal") problems.push(`provider ${JSON.stringify(input.provider)} is not aws or equinix-metal`);
  fail(`teleport node config of ${input.nodename}`, problems);

  const teleport: TeleportNodeConfig["teleport"] = {
    nodename: input.nodename,
    data_dir: TELEPORT_DATA_DIR,
    join_params: joinParams(input.provider, input.labels),
    // Exactly one of auth_server / proxy_server: the auth service over private IPv4.
    auth_server: input.authAddress,
    // Always pinned, never trust on first use: the file of the cluster's CA pins, which only
    // the master fills (TELEPORT_CA_PIN_PATH). Without it the agent does not start.
    ca_pin: [TELEPORT_CA_PIN_PATH],
    log: buildLog(),
  };
  return {
    version: "v3",
    teleport,
    auth_service: { enabled: false },
    proxy_service: { enabled: false },
    ssh_service: buildSshService(input.privateIpv4, input.labels),
  };
}

function buildLog(): TeleportLog {
  // JSON to the journal: one parseable line per event, no local log files to rotate.
  return { output: "stderr", severity: "INFO", format: { output: "json" } };
}

/**
 * aws: the `ec2` method, AWS-attested: the node sends its instance identity document (signed
 * by AWS) and the auth service checks it, checks that the instance runs (ec2:DescribeInstances)
 * and names the node `<account>-<instance id>` itself, so no node can take another's host id;
 * nothing secret is delivered to the machine. equinix-metal: the token is a file path the
 * master's join orchestration fills, for one join, through this machine's own pillar (a
 * 15-minute token, revoked as soon as the join is seen, never minted twice for a machine
 * whose host id the master recorded); the config never carries a token.
 */
function joinParams(provider: MachineProviderName, labels: Record<string, string>): TeleportJoinParams {
  if (provider === "aws") return { method: "ec2", token_name: teleportEc2TokenName(labels[`${TELEPORT_ASSIGNED_LABEL_PREFIX}stack`]) };
  return { method: "token", token_name: TELEPORT_JOIN_TOKEN_PATH };
}

function buildSshService(privateIpv4: string, labels: Record<string, string>): TeleportSshService {
  return {
    enabled: true,
    // The proxy dials nodes over the private network; nothing listens publicly.
    listen_addr: `${privateIpv4}:${TELEPORT_SSH_PORT}`,
    // Display copies only: roles select on the auth service's `dynamic/` labels.
    labels: teleportDisplayLabels(labels),
    // Salt creates the logins; Teleport must never create host users on demand.
    disable_create_host_user: true,
    permit_user_env: false,
  };
}

function clusterStorage(audit: TeleportAuditBackend): TeleportAuthProxyConfig["teleport"]["storage"] {
  if (audit.kind === "local") {
    return { type: "sqlite", audit_events_uri: [`file://${audit.eventsDir}`], audit_sessions_uri: `file://${audit.sessionsDir}` };
  }
  const region = encodeURIComponent(audit.region);
  return {
    // lib/backend/dynamo: the table exists (Pulumi made it with streams, TTL on `Expires`
    // and PITR), so Teleport only describes it; `continuous_backups`/`auto_scaling` stay
    // unset, or Teleport would call UpdateContinuousBackups / Application Auto Scaling.
    type: "dynamodb",
    region: audit.region,
    table_name: audit.stateTable,
    audit_events_uri: [`dynamodb://${audit.eventsTable}?region=${region}`],
    audit_sessions_uri: `s3://${audit.sessionsBucket}/${SESSION_RECORDINGS_PREFIX}?region=${region}`,
    // Teleport stamps each DynamoDB event with this expiry and the table's TTL deletes it
    // (only the DynamoDB events backend reads `retention_period`).
    retention_period: `${audit.retentionDays}d`,
  };
}

// ---------------------------------------------------------------------------------------
// Checks. Each returns the problems it finds; `fail` reports them all at once.

/** RFC 1918 private IPv4: the only addresses Teleport's auth and SSH services listen on. */
export function isRfc1918Ipv4(address: string): boolean {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(address);
  if (!match) return false;
  const octets = match.slice(1).map(Number);
  if (octets.some((o, i) => o > 255 || String(o) !== match[i + 1])) return false;
  const [a, b] = octets;
  return a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168);
}

function checkPrivateIpv4(field: string, address: string): string[] {
  return isRfc1918Ipv4(address) ? [] : [`${field} ${JSON.stringify(address)} is not a private (RFC 1918) IPv4 address`];
}

function checkAuthAddress(address: string): string[] {
  const [host, port, ...rest] = address.split(":");
  // A stable DNS name (infra/fleet/control-plane-dns.ts) survives the Teleport machine's replacement;
  // Teleport dials the name again on every reconnect and checks the server by the cluster's CA.
  const isName = checkDnsName("authAddress", host ?? "").length === 0 && !/^[\d.]+$/.test(host ?? "");
  if (rest.length > 0 || port !== String(TELEPORT_AUTH_PORT) || !(isRfc1918Ipv4(host) || isName)) {
    return [`authAddress ${JSON.stringify(address)} must be <DNS name or private IPv4>:${TELEPORT_AUTH_PORT}`];
  }
  return [];
}

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

function checkNodename(nodename: string): string[] {
  return DNS_LABEL.test(nodename) ? [] : [`nodename ${JSON.stringify(nodename)} is not a DNS label`];
}

function checkDnsName(field: string, name: string): string[] {
  const labels = name.split(".");
  if (name.length > 253 || labels.length < 2 || !labels.every((l) => DNS_LABEL.test(l))) {
    return [`${field} ${JSON.stringify(name)} must be a DNS name without scheme or port`];
  }
  return [];
}

function checkClusterName(name: string): string[] {
  return /^[a-z0-9][a-z0-9.-]{0,252}$/.test(name) ? [] : [`clusterName ${JSON.stringify(name)} must be lower-case letters, digits, dots and dashes`];
}

function checkLabels(labels: Record<string, string>): string[] {
  const problems: string[] = [];
  for (const [key, value] of Object.entries(labels)) {
    if (!key.startsWith(TELEPORT_ASSIGNED_LABEL_PREFIX) || !/^[a-z0-9][a-z0-9_.-]*$/.test(key.slice(TELEPORT_ASSIGNED_LABEL_PREFIX.length))) {
      problems.push(`label key ${JSON.stringify(key)} is not an assigned label (${TELEPORT_ASSIGNED_LABEL_PREFIX}<name>)`);
    }
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(value)) problems.push(`label ${key}=${JSON.stringify(value)}: value is not a plain label value`);
  }
  for (const required of ["role", "stack"]) {
    if (!(`${TELEPORT_ASSIGNED_LABEL_PREFIX}${required}` in labels)) problems.push(`labels: the ${JSON.stringify(TELEPORT_ASSIGNED_LABEL_PREFIX + required)} label is required`);
  }
  return problems;
}

function fail(what: string, problems: string[]): void {
  if (problems.length > 0) throw new Error(`${what}:\n  - ${problems.join("\n  - ")}`);
}
