import { readFileSync } from "fs";
import { join } from "path";
import { parse } from "yaml";
import { buildAuthProxyConfig, buildNodeConfig, isRfc1918Ipv4, teleportNodeLabels, TELEPORT_ASSIGNED_LABEL_PREFIX, TELEPORT_CA_PIN_PATH, TELEPORT_JOIN_TOKEN_PATH } from "../../infra/teleport/config";
import { documentKeyPaths, isDocumentedPath, TELEPORT_CONFIG_V3_FIELDS, TELEPORT_MIN_VERSION, TELEPORT_VERSION, undocumentedPaths } from "../../infra/teleport/config-v3-fields";
import { renderYaml } from "../../infra/teleport/yaml";
import { AUTH_ADDRESS, authConfig, authInput, MACHINES, nodeConfigs } from "./fixtures";

/** Every key named `name` anywhere in a document, with its path. */
function findKeys(doc: unknown, name: string, path = ""): string[] {
  if (Array.isArray(doc)) return doc.flatMap((item, i) => findKeys(item, name, `${path}[${i}]`));
  if (doc !== null && typeof doc === "object") {
    return Object.entries(doc).flatMap(([key, value]) => [
      ...(key === name ? [`${path}.${key}`] : []),
      ...findKeys(value, name, `${path}.${key}`),
    ]);
  }
  return [];
}

describe("teleport.yaml of the Teleport machine (auth + proxy)", () => {
  test("auth listens on the machine's private IPv4 only, never on all interfaces", () => {
    const rendered = renderYaml(authConfig());
    const config = parse(rendered);
    const [host, port] = config.auth_service.listen_addr.split(":");
    expect(isRfc1918Ipv4(host)).toBe(true);
    expect(port).toBe("3025");
    expect(config.ssh_service.listen_addr).toBe("10.0.0.6:3022");
    // Only the proxy's web listener (ACME, web UI, tsh) is public.
    const wildcardListeners = rendered.split("\n").filter((line) => line.includes("0.0.0.0"));
    expect(wildcardListeners).toEqual(["  web_listen_addr: 0.0.0.0:443"]);
  });

  test.each(["0.0.0.0", "203.0.113.7", "100.64.0.1", "172.32.0.1", "10.0.0.256", "010.0.0.1", "teleport.internal"])(
    "a non-RFC 1918 auth address (%s) is rejected",
    (privateIpv4) => {
      expect(() => authConfig({ privateIpv4 })).toThrow(/privateIpv4 .* is not a private \(RFC 1918\) IPv4 address/);
    },
  );

  test("GitHub is the only authentication, with no local users; the proxy records, checking node host keys", () => {
    const config = authConfig();
    expect(config.auth_service.authentication).toEqual({ type: "github", connector_name: "github", local_auth: false });
    // proxy-sync: the proxy records and streams to the auth service; a node never holds a recording.
    expect(config.auth_service.session_recording).toBe("proxy-sync");
    expect(config.auth_service.proxy_checks_host_keys).toBe(true);
    expect(config.auth_service.proxy_listener_mode).toBe("multiplex");
    expect(config.auth_service.cluster_name).toBe("ci.example.org");
    expect(config.proxy_service).toEqual({
      enabled: true,
      web_listen_addr: "0.0.0.0:443",
      public_addr: "teleport.example.org:443",
      acme: { enabled: true, email: "ops@example.org" },
    });
  });

  test("cluster state in its own DynamoDB table, events in DynamoDB, recordings in S3, retention in days", () => {
    expect(authConfig().teleport.storage).toEqual({
      type: "dynamodb",
      region: "us-east-1",
      table_name: "ci-fleet-production-teleport-state",
      audit_events_uri: ["dynamodb://ci-fleet-production-teleport-events?region=us-east-1"],
      audit_sessions_uri: "s3://ci-fleet-production-teleport-audit-123456789012/records?region=us-east-1",
      retention_period: "365d",
    });
  });

  test("the local audit backend is refused on aws and accepted on equinix-metal", () => {
    const audit = { kind: "local", eventsDir: "/var/lib/teleport/audit/events", sessionsDir: "/var/lib/teleport/audit/sessions" } as const;
    expect(() => authConfig({ provider: "aws", audit })).toThrow(/never on the machine's disk/);
    expect(authConfig({ provider: "equinix-metal", audit }).teleport.storage).toEqual({
      type: "sqlite",
      audit_events_uri: ["file:///var/lib/teleport/audit/events"],
      audit_sessions_uri: "file:///var/lib/teleport/audit/sessions",
    });
  });

  test("every problem in the input is reported at once", () => {
    expect(() =>
      buildAuthProxyConfig(authInput({ privateIpv4: "0.0.0.0", publicAddr: "https://teleport.example.org", acmeEmail: "nobody", clusterName: "Bad Name" })),
    ).toThrow(
      expect.objectContaining({
        message: expect.stringMatching(/privateIpv4[\s\S]*publicAddr[\s\S]*clusterName[\s\S]*acmeEmail/),
      }),
    );
  });

  test("a non-positive or fractional retention is rejected", () => {
    const audit = authInput().audit;
    if (audit.kind !== "aws") throw new Error("fixture: expected the aws audit backend");
    for (const retentionDays of [0, -1, 1.5]) {
      expect(() => authConfig({ audit: { ...audit, retentionDays } })).toThrow(/retentionDays/);
    }
  });

  test("the cluster state never shares the audit events table", () => {
    const audit = authInput().audit;
    if (audit.kind !== "aws") throw new Error("fixture: expected the aws audit backend");
    expect(() => authConfig({ audit: { ...audit, stateTable: audit.eventsTable } })).toThrow(/own DynamoDB table/);
    expect(() => authConfig({ audit: { ...audit, stateTable: "" } })).toThrow(/own DynamoDB table/);
  });
});

describe("teleport.yaml of every other machine (SSH service only)", () => {
  test("exactly one of auth_server / proxy_server, pointing at the auth's private address", () => {
    for (const config of nodeConfigs()) {
      const teleport = parse(renderYaml(config)).teleport;
      const targets = ["auth_server", "auth_servers", "proxy_server"].filter((key) => key in teleport);
      expect(targets).toEqual(["auth_server"]);
      expect(teleport.auth_server).toBe(AUTH_ADDRESS);
    }
  });

  test("equinix-metal: joins with a token read from a file, never a token in the config", () => {
    for (const config of nodeConfigs("equinix-metal")) {
      expect(config.teleport.join_params).toEqual({ method: "token", token_name: TELEPORT_JOIN_TOKEN_PATH });
      expect(TELEPORT_JOIN_TOKEN_PATH.startsWith("/")).toBe(true);
    }
  });

  test("aws: joins with the stack's ec2 token (the auth service names the node after its instance)", () => {
    const byName = Object.fromEntries(nodeConfigs("aws").map((c) => [c.teleport.nodename, c.teleport.join_params]));
    expect(byName).toEqual({
      "production-salt-master": { method: "ec2", token_name: "ci-fleet-production-ec2" },
      "production-default-r1": { method: "ec2", token_name: "ci-fleet-production-ec2" },
      "production-default-r2": { method: "ec2", token_name: "ci-fleet-production-ec2" },
      "production-release-r1": { method: "ec2", token_name: "ci-fleet-production-ec2" },
    });
  });

  test("runs only the SSH service; its own labels are display copies, never a label roles select on", () => {
    const runner = nodeConfigs().find((config) => config.teleport.nodename === "production-release-r1")!;
    expect(runner.auth_service).toEqual({ enabled: false });
    expect(runner.proxy_service).toEqual({ enabled: false });
    expect(runner.ssh_service.labels).toEqual({ queue: "release", role: "runner", stack: "production" });
    expect(Object.keys(runner.ssh_service.labels).filter((k) => k.startsWith(TELEPORT_ASSIGNED_LABEL_PREFIX))).toEqual([]);
  });

  test("a label that is not an assigned one is refused as input", () => {
    expect(() =>
      buildNodeConfig({ provider: "aws", nodename: "production-default-r1", privateIpv4: "10.0.1.10", authAddress: AUTH_ADDRESS, labels: { role: "runner", stack: "production" } }),
    ).toThrow(/not an assigned label/);
  });

  test.each([
    ["0.0.0.0:3025", "a wildcard address"],
    ["203.0.113.7:3025", "a public address"],
    ["10.0.0.6:443", "the proxy port"],
    ["10.0.0.6", "no port"],
    ["teleport:3025", "a single-label name"],
    ["-teleport.example.org:3025", "a label starting with a dash"],
  ])("an auth address of %s (%s) is rejected", (authAddress) => {
    expect(() => buildNodeConfig({ provider: "equinix-metal", nodename: "production-default-r1", privateIpv4: "10.0.1.10", authAddress, labels: MACHINES["production-default-r1"] })).toThrow(
      /authAddress .* must be <DNS name or private IPv4>:3025/,
    );
  });

  test("the auth service by its stable DNS name (it follows a replaced Teleport machine) is accepted", () => {
    const config = buildNodeConfig({ provider: "equinix-metal", nodename: "production-default-r1", privateIpv4: "10.0.1.10", authAddress: "production-teleport.fleet.ci.example.org:3025", labels: MACHINES["production-default-r1"] });
    expect(config.teleport.auth_server).toBe("production-teleport.fleet.ci.example.org:3025");
  });

  test.each(["equinix-metal", "aws"] as const)("a %s node config always pins the cluster CA through the pin file, never trust on first use", (provider) => {
    const labels = MACHINES["production-default-r1"];
    const config = buildNodeConfig({ provider, nodename: "production-default-r1", privateIpv4: "10.0.1.10", authAddress: AUTH_ADDRESS, labels });
    expect(config.teleport.ca_pin).toEqual([TELEPORT_CA_PIN_PATH]);
    expect(TELEPORT_CA_PIN_PATH.startsWith("/")).toBe(true);
  });

  test("labels: a queue label on runners and only on runners", () => {
    expect(teleportNodeLabels({ stack: "staging", role: "runner", queue: "infra" })).toEqual({ "dynamic/queue": "infra", "dynamic/role": "runner", "dynamic/stack": "staging" });
    expect(() => teleportNodeLabels({ stack: "staging", role: "runner" })).toThrow(/queue label/);
    expect(() => teleportNodeLabels({ stack: "staging", role: "salt-master", queue: "infra" })).toThrow(/queue label/);
  });
});

describe("every rendered teleport.yaml uses only fields Teleport documents", () => {
  const named: Array<readonly [string, object]> = [
    ["auth + proxy, audit in AWS", authConfig()],
    ["auth + proxy, audit on local disk", authConfig({ provider: "equinix-metal", audit: { kind: "local", eventsDir: "/a", sessionsDir: "/b" } })],
    ...nodeConfigs("equinix-metal").map((config) => [`${config.teleport.nodename} (equinix-metal)`, config] as const),
    ...nodeConfigs("aws").map((config) => [`${config.teleport.nodename} (aws)`, config] as const),
  ];
  const documents = named.map(([, doc]) => doc);

  test(`pinned to a Teleport 18 release (${TELEPORT_VERSION})`, () => {
    // 17 is out of support (2026); 18 is the newest major with a stable release.
    expect(TELEPORT_VERSION).toMatch(/^18\.\d+\.\d+$/);
  });

  test(`no older than ${TELEPORT_MIN_VERSION}: built-in roles (a node's certificate) read no session recording and no audit event`, () => {
    // issue 12.3 finding B. Before gravitational/teleport#66079 (v18 backport #66085, opened
    // 2026-04-23, merged) the builtin Node role had `KindSession: RO` and `KindEvent: RW`
    // (lib/authz/permissions.go definitionForBuiltinRole) and StreamSessionEvents skipped RBAC
    // for any built-in role, so root on any node read every recording. 18.10.0 (2026-07-09) is
    // the first v18 minor known to be released after it (a best-effort floor, see the constant).
    const parts = (v: string) => v.split(".").map(Number);
    const [pin, floor] = [parts(TELEPORT_VERSION), parts(TELEPORT_MIN_VERSION)];
    const cmp = pin.map((n, i) => n - floor[i]).find((d) => d !== 0) ?? 0;
    expect({ pinned: TELEPORT_VERSION, atLeast: TELEPORT_MIN_VERSION, ok: cmp >= 0 }).toEqual({ pinned: TELEPORT_VERSION, atLeast: TELEPORT_MIN_VERSION, ok: true });
    expect(TELEPORT_MIN_VERSION).toMatch(/^18\.\d+\.\d+$/);
  });

  test("Salt installs that release from the apt channel of its major version", () => {
    const defaults = parse(readFileSync(join(__dirname, "../../salt/teleport/parameters/defaults.yaml"), "utf8")).teleport;
    expect(String(defaults.version)).toBe(TELEPORT_VERSION);
    expect(defaults.repo.channel).toBe(`stable/v${TELEPORT_VERSION.split(".")[0]}`);
    // Teleport's APT/YUM signing key, as published on goteleport.com/docs/reference/public-certificates.
    expect(defaults.repo.key_fingerprint).toBe("0C5E8BA5658E320D1B031179C87ED53A6282C411");
  });

  test.each(named)("%s", (_name, doc) => {
    const reparsed = parse(renderYaml(doc));
    expect(undocumentedPaths(reparsed, TELEPORT_CONFIG_V3_FIELDS)).toEqual([]);
  });

  test("no static tokens anywhere: neither auth_service.tokens nor teleport.auth_token", () => {
    for (const doc of documents) {
      expect(findKeys(doc, "tokens")).toEqual([]);
      expect(findKeys(doc, "auth_token")).toEqual([]);
    }
    // ...and the whitelist itself would refuse them.
    expect(isDocumentedPath("auth_service.tokens[]", TELEPORT_CONFIG_V3_FIELDS)).toBe(false);
    expect(isDocumentedPath("teleport.auth_token", TELEPORT_CONFIG_V3_FIELDS)).toBe(false);
  });

  test.each([
    [{ ssh_service: { enabled: true, lables: { role: "runner" } } }, ["ssh_service.lables.role"]],
    [{ auth_service: { session_recordings: "node-sync" } }, ["auth_service.session_recordings"]],
    [{ teleport: { storage: { audit_events_uri: ["file:///x"], audit_session_uri: "s3://b" } } }, ["teleport.storage.audit_session_uri"]],
    [{ ssh_service: { labels: { role: ["runner"] } } }, ["ssh_service.labels.role[]"]],
    [{ ssh_service: { labels: { role: "runner" }, enabled: true } }, []],
  ])("the check catches a typo or an invented field: %j", (doc, expected) => {
    expect(undocumentedPaths(doc, TELEPORT_CONFIG_V3_FIELDS)).toEqual(expected);
  });

  // lib/config/fileconf.go (AuthenticationConfig, Global, ConnectionLimits): the YAML keys are
  // `passwordless` and `headless`; `ca_signature_algo` is "ignored but kept for config backwards
  // compat" and `connection_limits.max_users` is "Deprecated: MaxUsers has no effect".
  test.each([
    ["auth_service.authentication.passwordless", true],
    ["auth_service.authentication.headless", true],
    ["auth_service.authentication.allow_passwordless", false],
    ["auth_service.authentication.allow_headless", false],
    ["teleport.ca_signature_algo", false],
    ["teleport.connection_limits.max_users", false],
  ])("the whitelist matches Teleport's YAML tags: %s listed = %s", (path, listed) => {
    expect(isDocumentedPath(path, TELEPORT_CONFIG_V3_FIELDS)).toBe(listed);
  });

  test("key paths name leaves, list elements and empty maps", () => {
    expect(documentKeyPaths({ a: { b: 1, c: [] }, d: [{ e: "x" }, { e: "y", f: {} }] })).toEqual(["a.b", "a.c", "d[].e", "d[].f"]);
  });
});

describe("rendered text (snapshots)", () => {
  test("auth + proxy", () => {
    expect(renderYaml(authConfig())).toMatchSnapshot();
  });

  test("a runner", () => {
    expect(renderYaml(nodeConfigs().find((c) => c.teleport.nodename === "production-default-r1"))).toMatchSnapshot();
  });

  test("a runner on aws", () => {
    expect(renderYaml(nodeConfigs("aws").find((c) => c.teleport.nodename === "production-default-r1"))).toMatchSnapshot();
  });

  test("same input, same bytes", () => {
    expect(renderYaml(authConfig())).toBe(renderYaml(authConfig()));
  });
});
