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
export const TELEPORT_AUTH_PORT = 3025;
export const TELEPORT_SSH_PORT = 3022;
/** Path inside the audit bucket that holds session recordings. */
export const SESSION_RECORDINGS_PREFIX = "records";

/**
 * Where the audit log goes.
 * - `aws`: events in a DynamoDB table (queried by the web UI and `tctl`; DynamoDB TTL
 *   enforces the retention), recordings in S3 (lifecycle enforces the retention). Used on
 *   both providers: on equinix-metal the Teleport machine reaches them with its Roles
 *   Anywhere credentials. Built by `TeleportAuditStorage` (./audit-storage.ts).
 * - `local`: files under the data directory. Lost with the machine's disk: allowed only
 *   on equinix-metal, for a stack without AWS credentials on the Teleport machine.
 */
export type TeleportAuditBackend =
  | { kind: "aws"; region: string; sessionsBucket: string; eventsTable: string; retentionDays: number }
  | { kind: "local"; eventsDir: string; sessionsDir: string };

export interface TeleportLabelsInput {
  stack: string;
  role: MachineRole;
  /** Runners only. */
  queue?: string;
}

/** The static labels every Teleport SSH service carries; roles select machines by them. */
export function teleportNodeLabels(input: TeleportLabelsInput): Record<string, string> {
  if ((input.role === "runner") !== (input.queue !== undefined)) {
    throw new Error(`teleport labels: a queue label is required on runners and only on runners (role ${input.role})`);
  }
  const labels: Record<string, string> = { role: input.role, stack: input.stack };
  if (input.queue !== undefined) labels.queue = input.queue;
  return sortedRecord(labels);
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
  labels: Record<string, string>;
}

export interface NodeConfigInput {
  /** Machine name, e.g. `<stack>-<queue>-<runner>`. */
  nodename: string;
  privateIpv4: string;
  /** The auth service's private address, `10.x.x.x:3025`. */
  authAddress: string;
  labels: Record<string, string>;
  /**
   * CA pins (`sha256:...`) of the cluster, when the join orchestration knows them: without
   * one a node trusts the auth server it first reaches on the private network.
   */
  caPins?: string[];
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
      type: "sqlite";
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
    session_recording: "node-sync";
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

export interface TeleportNodeConfig {
  version: "v3";
  teleport: {
    nodename: string;
    data_dir: string;
    join_params: { method: "token"; token_name: string };
    auth_server: string;
    ca_pin?: string[];
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
  }
  fail("teleport auth config", problems);

  return {
    version: "v3",
    teleport: {
      nodename: input.nodename,
      data_dir: TELEPORT_DATA_DIR,
      log: buildLog(),
      // Cluster state (CAs, users, roles) stays on the machine's disk (`dir`): a single
      // auth server; the audit log is what must outlive the machine.
      storage: { type: "sqlite", ...auditStorage(input.audit) },
    },
    auth_service: {
      enabled: true,
      cluster_name: input.clusterName,
      listen_addr: `${input.privateIpv4}:${TELEPORT_AUTH_PORT}`,
      proxy_listener_mode: "multiplex",
      // GitHub is the only way in: no local users, so no passwords to phish or reset.
      authentication: { type: "github", connector_name: GITHUB_CONNECTOR_NAME, local_auth: false },
      // Nodes stream recordings to the auth service as the session runs: nothing is
      // buffered on a runner's disk, where a job could read or delete it.
      session_recording: "node-sync",
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
  for (const pin of input.caPins ?? []) {
    if (!/^sha256:[0-9a-f]{64}$/.test(pin)) problems.push(`caPins: ${JSON.stringify(pin)} is not sha256:<64 hex digits>`);
  }
  fail(`teleport node config of ${input.nodename}`, problems);

  const teleport: TeleportNodeConfig["teleport"] = {
    nodename: input.nodename,
    data_dir: TELEPORT_DATA_DIR,
    // The token is a file path: the join orchestration writes a short-lived token there;
    // the config itself never carries one.
    join_params: { method: "token", token_name: TELEPORT_JOIN_TOKEN_PATH },
    // Exactly one of auth_server / proxy_server: the auth service over private IPv4.
    auth_server: input.authAddress,
    log: buildLog(),
  };
  if (input.caPins && input.caPins.length > 0) teleport.ca_pin = [...input.caPins].sort();
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

function buildSshService(privateIpv4: string, labels: Record<string, string>): TeleportSshService {
  return {
    enabled: true,
    // The proxy dials nodes over the private network; nothing listens publicly.
    listen_addr: `${privateIpv4}:${TELEPORT_SSH_PORT}`,
    labels: sortedRecord(labels),
    // Salt creates the logins; Teleport must never create host users on demand.
    disable_create_host_user: true,
    permit_user_env: false,
  };
}

function auditStorage(audit: TeleportAuditBackend): Omit<TeleportAuthProxyConfig["teleport"]["storage"], "type"> {
  if (audit.kind === "local") {
    return { audit_events_uri: [`file://${audit.eventsDir}`], audit_sessions_uri: `file://${audit.sessionsDir}` };
  }
  const region = encodeURIComponent(audit.region);
  return {
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
  if (rest.length > 0 || port !== String(TELEPORT_AUTH_PORT) || !isRfc1918Ipv4(host)) {
    return [`authAddress ${JSON.stringify(address)} must be <private IPv4>:${TELEPORT_AUTH_PORT}`];
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
    if (!/^[a-z0-9][a-z0-9_.\/-]*$/.test(key) || key === "*") problems.push(`label key ${JSON.stringify(key)} is not a plain label name`);
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(value)) problems.push(`label ${key}=${JSON.stringify(value)}: value is not a plain label value`);
  }
  for (const required of ["role", "stack"]) {
    if (!(required in labels)) problems.push(`labels: the ${JSON.stringify(required)} label is required`);
  }
  return problems;
}

function fail(what: string, problems: string[]): void {
  if (problems.length > 0) throw new Error(`${what}:\n  - ${problems.join("\n  - ")}`);
}
