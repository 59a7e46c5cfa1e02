import * as pulumi from "@pulumi/pulumi";
import { parse, parseAllDocuments } from "yaml";
import { matchLabels, matchLabelValue, renderAccessMatrixMarkdown, roleSetAccess, teleportAccessMatrix } from "../../infra/teleport/access";
import { TELEPORT_GITHUB_V3_FIELDS, TELEPORT_PROVISION_TOKEN_V2_FIELDS, TELEPORT_ROLE_V7_FIELDS, undocumentedPaths } from "../../infra/teleport/config-v3-fields";
import { buildGithubConnector, type GithubConnectorInput } from "../../infra/teleport/github-connector";
import { buildEc2JoinToken, renderTeleportResources, teleportEc2JoinPolicy, teleportResourcesYaml, TELEPORT_EC2_IID_TTL } from "../../infra/teleport/resources";
import { buildRoles, FORBIDDEN_LOGINS, type LabelSelector, type TeleportRole } from "../../infra/teleport/roles";
import { renderYaml } from "../../infra/teleport/yaml";
import { FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, MACHINES, ORG, PUBLIC_ADDR, QUEUES, TEAMS_TO_ROLES } from "./fixtures";


/** Both SSH port forwarding modes refused (role option `ssh_port_forwarding`). */
const NO_PORT_FORWARDING = { local: { enabled: false }, remote: { enabled: false } };

const roles = buildRoles({ queues: QUEUES });
const roleNames = roles.map((role) => role.metadata.name);
const role = (name: string): TeleportRole => roles.find((r) => r.metadata.name === name)!;

function connectorInput(overrides: Partial<GithubConnectorInput> = {}): GithubConnectorInput {
  return {
    publicAddr: PUBLIC_ADDR,
    organization: ORG,
    clientId: FAKE_CLIENT_ID,
    clientSecret: FAKE_CLIENT_SECRET,
    teamsToRoles: TEAMS_TO_ROLES,
    knownRoles: roleNames,
    ...overrides,
  };
}

/** Replaces each secret with `[secret]`, and checks each appeared exactly where expected. */
function maskSecrets(text: string, secrets: Record<string, { value: string; occurrences: number }>): string {
  let masked = text;
  for (const [name, { value, occurrences }] of Object.entries(secrets)) {
    const parts = masked.split(value);
    if (parts.length - 1 !== occurrences) throw new Error(`secret ${name} appears ${parts.length - 1} times, expected ${occurrences}`);
    masked = parts.join("[secret]");
  }
  return masked;
}

const CONNECTOR_SECRETS = {
  clientId: { value: FAKE_CLIENT_ID, occurrences: 1 },
  clientSecret: { value: FAKE_CLIENT_SECRET, occurrences: 1 },
};

describe("label matcher (Teleport's semantics)", () => {
  test.each<[string, string, boolean]>([
    ["runner", "runner", true],
    ["runner", "runners", false],
    ["run*", "runner", true],
    ["*", "anything", true],
    ["*-master", "salt-master", true],
    ["*-master", "salt-master-2", false],
    ["^(default|infra)$", "infra", true],
    ["^(default|infra)$", "release", false],
    ["a.b", "axb", false],
  ])("value pattern %j against %j -> %s", (pattern, value, expected) => {
    expect(matchLabelValue(pattern, value)).toBe(expected);
  });

  const runner = { role: "runner", queue: "default", stack: "production" };
  test.each<[string, LabelSelector | undefined, Record<string, string>, boolean]>([
    ["wildcard selector matches everything", { "*": "*" }, runner, true],
    ["wildcard selector matches a machine with no labels", { "*": "*" }, {}, true],
    ["empty selector matches nothing", {}, runner, false],
    ["absent selector matches nothing", undefined, runner, false],
    ["single key", { role: "runner" }, runner, true],
    ["every key must match", { role: "runner", queue: "release" }, runner, false],
    ["any value of a key may match", { queue: ["release", "default"] }, runner, true],
    ["a missing label never matches", { zone: "*" }, runner, false],
    ["a value glob", { queue: "def*" }, runner, true],
    ["a value regex", { queue: "^(default|infra)$" }, runner, true],
  ])("%s", (_name, selector, labels, expected) => {
    expect(matchLabels(selector, labels)).toBe(expected);
  });

  test("a '*' key with anything but '*' is refused, as Teleport does", () => {
    expect(() => matchLabels({ "*": "runner" }, {})).toThrow(/only valid as/);
    expect(() => matchLabels({ "*": "*", role: "runner" }, {})).toThrow(/only valid as/);
  });
});

describe("role set evaluation", () => {
  test.each<[string, string[], string, { allowed: boolean; logins: string[] }]>([
    ["admin reaches the Salt master", ["fleet-admin"], "production-salt-master", { allowed: true, logins: ["ci-admin"] }],
    ["admin reaches a runner", ["fleet-admin"], "production-default-r1", { allowed: true, logins: ["ci-admin"] }],
    ["operator reaches any runner", ["runner-operator"], "production-release-r1", { allowed: true, logins: ["ci-operator"] }],
    ["operator never reaches the Salt master", ["runner-operator"], "production-salt-master", { allowed: false, logins: [] }],
    ["operator never reaches the Teleport machine", ["runner-operator"], "production-teleport", { allowed: false, logins: [] }],
    ["queue operator stays in its queue", ["runner-operator-default"], "production-release-r1", { allowed: false, logins: [] }],
    ["queue operator reaches its queue", ["runner-operator-default"], "production-default-r2", { allowed: true, logins: ["ci-operator"] }],
    ["auditor reaches no machine", ["fleet-auditor"], "production-default-r1", { allowed: false, logins: [] }],
    // Teleport applies a deny from any role: an admin who also holds an operator role loses the control plane.
    ["an operator role's deny wins over admin", ["fleet-admin", "runner-operator"], "production-salt-master", { allowed: false, logins: [] }],
    ["admin + operator on a runner: both logins", ["fleet-admin", "runner-operator"], "production-default-r1", { allowed: true, logins: ["ci-admin", "ci-operator"] }],
  ])("%s", (_name, names, machine, expected) => {
    expect(roleSetAccess(names.map(role), MACHINES[machine])).toEqual(expected);
  });

  test("a denied login is removed even where another role allows it", () => {
    const allowsRoot: TeleportRole = { ...role("fleet-admin"), metadata: { name: "x", description: "" } };
    allowsRoot.spec = { ...allowsRoot.spec, allow: { ...allowsRoot.spec.allow, logins: ["root", "ci-admin"] } };
    expect(roleSetAccess([allowsRoot, role("fleet-auditor")], MACHINES["production-default-r1"]).logins).toEqual(["ci-admin"]);
  });
});

describe("roles", () => {
  test("the program defines admin, auditor, operator and one operator role per queue", () => {
    expect(roleNames).toEqual(["fleet-admin", "fleet-auditor", "runner-operator", "runner-operator-default", "runner-operator-release"]);
    expect(roles.every((r) => r.kind === "role" && r.version === "v7")).toBe(true);
  });

  test("operator roles deny the control plane outright and never log in as root or a CI agent", () => {
    for (const name of roleNames.filter((n) => n.startsWith("runner-operator"))) {
      const { allow, deny, options } = role(name).spec;
      expect(deny.node_labels).toEqual({ "dynamic/role": ["salt-master", "teleport"] });
      expect(allow.logins).toEqual(["ci-operator"]);
      expect(allow.node_labels?.["dynamic/role"]).toBe("runner");
      expect(allow.rules).toBeUndefined();
      expect(deny.logins).toEqual(expect.arrayContaining(["root", "buildkite-agent", "ci-agent"]));
      expect(options).toMatchObject({ forward_agent: false, ssh_port_forwarding: NO_PORT_FORWARDING, ssh_file_copy: false, record_session: { default: "strict" } });
    }
  });

  test("no role allows a forbidden login; every role records strictly and forwards nothing", () => {
    for (const r of roles) {
      expect((r.spec.allow.logins ?? []).filter((login) => FORBIDDEN_LOGINS.includes(login))).toEqual([]);
      expect(r.spec.options).toMatchObject({ forward_agent: false, ssh_port_forwarding: NO_PORT_FORWARDING, permit_x11_forwarding: false, record_session: { default: "strict" } });
    }
  });

  test("port forwarding is refused with ssh_port_forwarding (local and remote), never the deprecated port_forwarding", () => {
    // Teleport 18 (api/types RoleOptions): `port_forwarding` is "Deprecated: Use SSHPortForwarding
    // instead", and lib/services RoleSet.SSHPortForwardMode lets a legacy `port_forwarding: true` in
    // any role switch forwarding on for the whole set, whereas an explicit ssh_port_forwarding deny wins.
    for (const r of roles) {
      expect(r.spec.options).not.toHaveProperty("port_forwarding");
      expect(r.spec.options.ssh_port_forwarding).toEqual({ local: { enabled: false }, remote: { enabled: false } });
    }
    expect(TELEPORT_ROLE_V7_FIELDS).not.toContain("spec.options.port_forwarding");
    expect(TELEPORT_ROLE_V7_FIELDS).toEqual(expect.arrayContaining(["spec.options.ssh_port_forwarding.local.enabled", "spec.options.ssh_port_forwarding.remote.enabled"]));
  });

  test("admins and auditors read sessions and events, read-only", () => {
    for (const name of ["fleet-admin", "fleet-auditor"]) {
      const rules = role(name).spec.allow.rules ?? [];
      expect(rules).toContainEqual({ resources: ["event", "session"], verbs: ["list", "read"] });
      expect(rules.flatMap((rule) => rule.verbs).every((verb) => verb === "list" || verb === "read")).toBe(true);
    }
  });

  test("an invalid queue name is refused", () => {
    expect(() => buildRoles({ queues: ["Default"] })).toThrow(/queue name/);
  });

  test.each(roles.map((r) => [r.metadata.name, r] as const))("role %s uses only documented fields", (_name, r) => {
    expect(undocumentedPaths(parse(renderYaml(r)), TELEPORT_ROLE_V7_FIELDS)).toEqual([]);
  });
});

describe("GitHub connector", () => {
  const connector = buildGithubConnector(connectorInput());

  test("maps GitHub teams (never users) of the organisation to roles", () => {
    expect(connector.kind).toBe("github");
    expect(connector.version).toBe("v3");
    expect(connector.spec.redirect_url).toBe("https://teleport.example.org/v1/webapi/github/callback");
    expect(connector.spec.teams_to_roles).toEqual([
      { organization: ORG, team: "ci-admins", roles: ["fleet-admin"] },
      { organization: ORG, team: "ci-operators", roles: ["runner-operator-default"] },
      { organization: ORG, team: "release-managers", roles: ["fleet-auditor", "runner-operator-release"] },
      { organization: ORG, team: "security", roles: ["fleet-auditor"] },
    ]);
    for (const mapping of connector.spec.teams_to_roles) expect(Object.keys(mapping).sort()).toEqual(["organization", "roles", "team"]);
    expect(Object.keys(connector.spec).sort()).toEqual(["client_id", "client_secret", "display", "redirect_url", "teams_to_roles"]);
  });

  test("uses only documented fields", () => {
    expect(undocumentedPaths(parse(renderYaml(connector)), TELEPORT_GITHUB_V3_FIELDS)).toEqual([]);
  });

  test.each<[string, Partial<GithubConnectorInput>, RegExp]>([
    ["an unknown role", { teamsToRoles: { "ci-admins": ["admin"] } }, /team ci-admins maps to unknown role "admin"/],
    ["a team with no role", { teamsToRoles: { "ci-admins": [] } }, /maps to no role/],
    ["no team at all", { teamsToRoles: {} }, /teamsToRoles is empty/],
    ["a user instead of a team", { teamsToRoles: { "@octocat": ["fleet-admin"] } }, /is not a team slug/],
    ["an org/team pair instead of a slug", { teamsToRoles: { "example-org/ci-admins": ["fleet-admin"] } }, /is not a team slug/],
    ["an empty client secret", { clientSecret: "" }, /clientSecret is empty/],
  ])("rejects %s", (_name, overrides, message) => {
    expect(() => buildGithubConnector(connectorInput(overrides))).toThrow(message);
  });

  test("rendered connector (secrets masked)", () => {
    expect(maskSecrets(renderYaml(connector), CONNECTOR_SECRETS)).toMatchSnapshot();
  });
});

describe("resources stream for tctl create -f", () => {
  test("roles first, then the connector, then the ec2 join token; the secrets appear once each", () => {
    const tokens = [buildEc2JoinToken({ stack: "production", accountId: "123456789012", region: "us-east-2" })];
    const text = renderTeleportResources(roles, buildGithubConnector(connectorInput()), tokens);
    const docs = parseAllDocuments(text).map((doc) => doc.toJSON());
    expect(docs.map((doc) => `${doc.kind}/${doc.metadata.name}`)).toEqual([
      ...roleNames.map((n) => `role/${n}`),
      "github/github",
      "token/ci-fleet-production-ec2",
    ]);
    expect(maskSecrets(text, CONNECTOR_SECRETS)).toMatchSnapshot();
  });

  test("the ec2 token admits EC2 instances of the stack's account and region only, each under its own host id", () => {
    // issue 12.3: `iam` (and `token`) let the client choose its host id on Teleport 18's legacy
    // join RPCs; `ec2` makes it <account>-<instance id> from the AWS-signed document.
    const token = buildEc2JoinToken({ stack: "production", accountId: "123456789012", region: "us-east-2" });
    expect(token.spec).toEqual({
      roles: ["Node"],
      join_method: "ec2",
      aws_iid_ttl: TELEPORT_EC2_IID_TTL,
      allow: [{ aws_account: "123456789012", aws_regions: ["us-east-2"] }],
    });
    expect(TELEPORT_EC2_IID_TTL).toMatch(/^\d+[hm]$/);
    expect(undocumentedPaths(parse(renderYaml(token)), TELEPORT_PROVISION_TOKEN_V2_FIELDS)).toEqual([]);
    expect(() => buildEc2JoinToken({ stack: "production", accountId: "1234", region: "us-east-2" })).toThrow(/12 digits/);
    expect(() => buildEc2JoinToken({ stack: "production", accountId: "123456789012", region: "*" })).toThrow(/region/);
    expect(JSON.stringify(token)).not.toMatch(/aws_arn|aws_role/);
  });

  test("the auth service may ask ec2:DescribeInstances in the machines' region, and nothing else", () => {
    expect(teleportEc2JoinPolicy("us-east-2")).toEqual({
      Version: "2012-10-17",
      Statement: [{ Sid: "Ec2JoinInstanceIsRunning", Effect: "Allow", Action: "ec2:DescribeInstances", Resource: "*", Condition: { StringEquals: { "aws:RequestedRegion": "us-east-2" } } }],
    });
  });

  test("the Pulumi output is a secret, and an unknown role fails before any secret is read", async () => {
    const args = { stack: "production", queues: QUEUES, publicAddr: PUBLIC_ADDR, organization: ORG, teamsToRoles: TEAMS_TO_ROLES };
    const output = teleportResourcesYaml({ ...args, clientId: pulumi.output(FAKE_CLIENT_ID), clientSecret: pulumi.output(FAKE_CLIENT_SECRET) });
    expect(await pulumi.isSecret(output)).toBe(true);
    const text = await new Promise<string>((resolve) => output.apply(resolve));
    expect(text).toBe(renderTeleportResources(buildRoles({ queues: QUEUES, stack: "production" }), buildGithubConnector(connectorInput())));

    let secretRead = false;
    const watched = pulumi.output(FAKE_CLIENT_SECRET).apply((s) => ((secretRead = true), s));
    expect(() => teleportResourcesYaml({ ...args, teamsToRoles: { admins: ["root"] }, clientId: FAKE_CLIENT_ID, clientSecret: watched })).toThrow(/unknown role/);
    expect(secretRead).toBe(false);
  });
});

describe("access matrix (from the same role objects)", () => {
  const rows = teleportAccessMatrix({ roles, teamsToRoles: TEAMS_TO_ROLES, machines: MACHINES });

  test("which GitHub team reaches which machines with which login", () => {
    expect(rows).toEqual([
      {
        team: "ci-admins",
        roles: ["fleet-admin"],
        machines: ["production-default-r1", "production-default-r2", "production-release-r1", "production-salt-master", "production-teleport"],
        logins: ["ci-admin"],
      },
      { team: "ci-operators", roles: ["runner-operator-default"], machines: ["production-default-r1", "production-default-r2"], logins: ["ci-operator"] },
      { team: "release-managers", roles: ["fleet-auditor", "runner-operator-release"], machines: ["production-release-r1"], logins: ["ci-operator"] },
      { team: "security", roles: ["fleet-auditor"], machines: [], logins: [] },
    ]);
  });

  test("an unknown role in the team map is an error, not a silent 'no access'", () => {
    expect(() => teleportAccessMatrix({ roles, teamsToRoles: { x: ["nope"] }, machines: MACHINES })).toThrow(/unknown role "nope"/);
  });

  test("markdown table for report.md", () => {
    expect(renderAccessMatrixMarkdown(rows)).toMatchSnapshot();
  });
});
