/**
 * The fields Teleport documents, for the version the fleet installs, written down from
 * Teleport's configuration and resource references (teleport.yaml `version: v3`, role
 * `v7`, GitHub connector `v3`); the teleport.yaml fields the builders render were checked
 * against the config reference in Teleport's repository
 * (docs/pages/includes/config-reference/*.yaml). Every key path a builder renders must appear here, so a
 * typo or an invented field fails a test instead of failing a machine at boot (Teleport
 * refuses to start on an unknown key in teleport.yaml).
 *
 * Path syntax: keys joined with `.`; `[]` after a key means "an element of this list";
 * `*` stands for one free-form key (labels). A path names a leaf (a scalar, or an empty
 * map or list). Deprecated fields and static tokens (`auth_service.tokens`,
 * `teleport.auth_token`) are left out on purpose: the fleet must not render them.
 */

/** The Teleport release the fleet installs (Salt pins the package by this version and its sha256). */
export const TELEPORT_VERSION = "18.11.3";

/**
 * The oldest release the fleet may pin (issue 12.3, finding B). Up to the fix of
 * gravitational/teleport#66079 ("Prevent teleport built-in roles from accessing audit log and
 * sessions"; v18 backport #66085, opened 2026-04-23 and merged, merge date not in the stored
 * thread) the builtin `Node` role carried
 * `types.NewRule(types.KindSession, services.RO())` and `types.NewRule(types.KindEvent,
 * services.RW())` (lib/authz/permissions.go `definitionForBuiltinRole`), and
 * `ServerWithRoles.StreamSessionEvents` skipped RBAC for every built-in role
 * (`localServerAction`): root on any node could read every recording and the audit log.
 * 18.10.0 (released 2026-07-09) is the first v18 minor known to be released after the backport
 * was opened: a best-effort floor, dated from the pull requests and release dates, neither
 * read at a tag nor tried on a cluster (docs/upstream-conformance.md).
 */
export const TELEPORT_MIN_VERSION = "18.10.0";

export const TELEPORT_CONFIG_V3_FIELDS: readonly string[] = [
  "version",
  // teleport: settings shared by every service
  "teleport.nodename",
  "teleport.data_dir",
  "teleport.pid_file",
  "teleport.join_params.method",
  "teleport.join_params.token_name",
  "teleport.auth_server",
  "teleport.proxy_server",
  "teleport.ca_pin",
  "teleport.ca_pin[]",
  "teleport.advertise_ip",
  "teleport.diag_addr",
  "teleport.cache.enabled",
  "teleport.cache.type",
  "teleport.connection_limits.max_connections",
  "teleport.log.output",
  "teleport.log.severity",
  "teleport.log.format.output",
  "teleport.log.format.extra_fields[]",
  "teleport.storage.type",
  "teleport.storage.path",
  "teleport.storage.region",
  "teleport.storage.table_name",
  "teleport.storage.audit_events_uri",
  "teleport.storage.audit_events_uri[]",
  "teleport.storage.audit_sessions_uri",
  "teleport.storage.retention_period",
  "teleport.storage.sync",
  "teleport.storage.journal",
  "teleport.storage.continuous_backups",
  "teleport.storage.auto_scaling",
  "teleport.storage.billing_mode",
  "teleport.storage.use_fips_endpoint",
  "teleport.ciphers[]",
  "teleport.kex_algos[]",
  "teleport.mac_algos[]",
  // auth_service
  "auth_service.enabled",
  "auth_service.cluster_name",
  "auth_service.listen_addr",
  "auth_service.public_addr",
  "auth_service.public_addr[]",
  "auth_service.proxy_listener_mode",
  "auth_service.authentication.type",
  "auth_service.authentication.connector_name",
  "auth_service.authentication.local_auth",
  "auth_service.authentication.second_factor",
  "auth_service.authentication.second_factors[]",
  "auth_service.authentication.webauthn.rp_id",
  "auth_service.authentication.require_session_mfa",
  "auth_service.authentication.device_trust.mode",
  "auth_service.authentication.passwordless",
  "auth_service.authentication.headless",
  "auth_service.session_recording",
  "auth_service.proxy_checks_host_keys",
  "auth_service.disconnect_expired_cert",
  "auth_service.client_idle_timeout",
  "auth_service.keep_alive_interval",
  "auth_service.keep_alive_count_max",
  "auth_service.message_of_the_day",
  "auth_service.routing_strategy",
  "auth_service.tunnel_strategy.type",
  "auth_service.proxy_ping_interval",
  "auth_service.case_insensitive_routing",
  "auth_service.license_file",
  // proxy_service
  "proxy_service.enabled",
  "proxy_service.listen_addr",
  "proxy_service.web_listen_addr",
  "proxy_service.tunnel_listen_addr",
  "proxy_service.public_addr",
  "proxy_service.public_addr[]",
  "proxy_service.ssh_public_addr",
  "proxy_service.tunnel_public_addr",
  "proxy_service.peer_listen_addr",
  "proxy_service.proxy_protocol",
  "proxy_service.https_keypairs[].key_file",
  "proxy_service.https_keypairs[].cert_file",
  "proxy_service.https_keypairs_reload_interval",
  "proxy_service.acme.enabled",
  "proxy_service.acme.email",
  "proxy_service.acme.uri",
  "proxy_service.trust_x_forwarded_for",
  "proxy_service.ui.scrollback_lines",
  "proxy_service.ui.show_resources",
  // ssh_service
  "ssh_service.enabled",
  "ssh_service.listen_addr",
  "ssh_service.public_addr",
  "ssh_service.labels.*",
  "ssh_service.commands[].name",
  "ssh_service.commands[].command[]",
  "ssh_service.commands[].period",
  "ssh_service.permit_user_env",
  "ssh_service.disable_create_host_user",
  "ssh_service.enhanced_recording.enabled",
  "ssh_service.enhanced_recording.command_buffer_size",
  "ssh_service.enhanced_recording.disk_buffer_size",
  "ssh_service.enhanced_recording.network_buffer_size",
  "ssh_service.enhanced_recording.cgroup_path",
  "ssh_service.pam.enabled",
  "ssh_service.pam.service_name",
  "ssh_service.pam.use_pam_auth",
  "ssh_service.x11.enabled",
  "ssh_service.x11.display_offset",
  "ssh_service.x11.max_display",
  "ssh_service.ssh_file_copy",
];

/** Role resource, `version: v7` (SSH-related fields; other protocols are not used here). */
export const TELEPORT_ROLE_V7_FIELDS: readonly string[] = [
  "kind",
  "version",
  "metadata.name",
  "metadata.description",
  "metadata.labels.*",
  "spec.options.max_session_ttl",
  "spec.options.client_idle_timeout",
  "spec.options.disconnect_expired_cert",
  "spec.options.forward_agent",
  "spec.options.ssh_port_forwarding.local.enabled",
  "spec.options.ssh_port_forwarding.remote.enabled",
  "spec.options.permit_x11_forwarding",
  "spec.options.ssh_file_copy",
  "spec.options.create_host_user_mode",
  "spec.options.create_host_user_default_shell",
  "spec.options.cert_format",
  "spec.options.require_session_mfa",
  "spec.options.max_sessions",
  "spec.options.max_connections",
  "spec.options.lock",
  "spec.options.pin_source_ip",
  "spec.options.enhanced_recording[]",
  "spec.options.record_session.default",
  "spec.options.record_session.ssh",
  "spec.options.record_session.desktop",
  ...["allow", "deny"].flatMap((side) => [
    `spec.${side}.logins`,
    `spec.${side}.logins[]`,
    `spec.${side}.node_labels`,
    `spec.${side}.node_labels.*`,
    `spec.${side}.node_labels.*[]`,
    `spec.${side}.node_labels_expression`,
    `spec.${side}.host_groups[]`,
    `spec.${side}.host_sudoers[]`,
    `spec.${side}.rules`,
    `spec.${side}.rules[].resources[]`,
    `spec.${side}.rules[].verbs[]`,
    `spec.${side}.rules[].where`,
    `spec.${side}.request.roles[]`,
    `spec.${side}.review_requests.roles[]`,
  ]),
];

/** GitHub connector resource, `version: v3` (no `teams_to_logins`: deprecated, and it maps to logins, not roles). */
export const TELEPORT_GITHUB_V3_FIELDS: readonly string[] = [
  "kind",
  "version",
  "metadata.name",
  "spec.client_id",
  "spec.client_secret",
  "spec.display",
  "spec.redirect_url",
  "spec.endpoint_url",
  "spec.api_endpoint_url",
  "spec.teams_to_roles[].organization",
  "spec.teams_to_roles[].team",
  "spec.teams_to_roles[].roles[]",
];

/**
 * Provision token resource, `version: v2`, as the fleet renders it (`ec2` join): api/types
 * ProvisionTokenSpecV2 `roles`, `join_method`, `aws_iid_ttl`, `allow` (TokenRule
 * `aws_account`, `aws_regions`; `aws_arn` is refused for `ec2` by CheckAndSetDefaults).
 */
export const TELEPORT_PROVISION_TOKEN_V2_FIELDS: readonly string[] = [
  "kind",
  "version",
  "metadata.name",
  "metadata.description",
  "spec.roles[]",
  "spec.join_method",
  "spec.aws_iid_ttl",
  "spec.allow[].aws_account",
  "spec.allow[].aws_regions[]",
];

/** Every leaf key path of a document, in the syntax above (e.g. `ssh_service.labels.role`). */
export function documentKeyPaths(doc: unknown, prefix = ""): string[] {
  if (Array.isArray(doc)) {
    if (doc.length === 0) return [prefix];
    return [...new Set(doc.flatMap((item) => documentKeyPaths(item, `${prefix}[]`)))];
  }
  if (doc !== null && typeof doc === "object") {
    const entries = Object.entries(doc as Record<string, unknown>);
    if (entries.length === 0) return [prefix];
    return entries.flatMap(([key, value]) => documentKeyPaths(value, prefix === "" ? key : `${prefix}.${key}`));
  }
  return [prefix];
}

/** Whether `path` is one of `fields`, where a `*` segment of a field matches any one key. */
export function isDocumentedPath(path: string, fields: readonly string[]): boolean {
  const segments = splitPath(path);
  return fields.some((field) => {
    const pattern = splitPath(field);
    return pattern.length === segments.length && pattern.every((p, i) => p === segments[i] || (p.startsWith("*") && p.slice(1) === segments[i].replace(/^[^[]*/, "")));
  });
}

/** The key paths of `doc` that `fields` does not list. */
export function undocumentedPaths(doc: unknown, fields: readonly string[]): string[] {
  return documentKeyPaths(doc).filter((path) => !isDocumentedPath(path, fields));
}

function splitPath(path: string): string[] {
  return path.split(".");
}
