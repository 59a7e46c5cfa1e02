import { parseAllDocuments } from "yaml";
import * as pulumi from "@pulumi/pulumi";
import { roleSetAccess } from "../../infra/teleport/access";
import { teleportNodeLabels } from "../../infra/teleport/config";
import { teleportResourcesYaml } from "../../infra/teleport/resources";
import { buildRoles, CI_JOB_USER, FORBIDDEN_LOGINS, type TeleportRole } from "../../infra/teleport/roles";
import { renderStack, type StackRender } from "../support/salt-render";
import { FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, ORG, PUBLIC_ADDR, QUEUES, TEAMS_TO_ROLES } from "./fixtures";

/**
 * Issue 12: a Teleport role must never grant the login that CI jobs (or a CI agent) run as on a
 * runner: a session as that user holds the job's credentials. The users are read from what the
 * Salt tree really renders for each production stack (the CI agents' units and the Buildkite
 * job's sudo rule), not from a list kept beside the roles.
 */

const UNIT_DIR = "/etc/systemd/system/";
const SUDOERS = "/etc/sudoers.d/ci-fleet-buildkite-agent";

/** Every user a CI agent or a CI job runs as on the stack's runners, with where it was seen. */
function agentAndJobUsers(render: StackRender): Map<string, string> {
  const users = new Map<string, string>();
  for (const [id, minion] of Object.entries(render.minions)) {
    if (!minion.top_sls.some((sls) => sls === "github_runner" || sls === "buildkite")) continue;
    for (const [file, text] of Object.entries(minion.files)) {
      if (file === `${UNIT_DIR}actions-runner.service` || file === `${UNIT_DIR}buildkite-agent.service`) {
        for (const m of text.matchAll(/^User=(\S+)$/gm)) users.set(m[1], `${id} ${file}`);
      }
    }
    const sudoers = minion.files[SUDOERS] ?? Object.values(minion.states).find((s) => s.function === "file.managed" && s.args.name === SUDOERS)?.args.contents;
    if (typeof sudoers === "string") {
      for (const m of sudoers.matchAll(/^\S+ ALL = \((\S+) : \S+\)/gm)) users.set(m[1], `${id} ${SUDOERS}`);
    }
  }
  return users;
}

describe.each(["production", "production-aws"])("stack %s: the users CI agents and jobs run as", (stack) => {
  let render: StackRender;
  beforeAll(async () => {
    render = await renderStack(stack);
  }, 240_000);

  test("are found in the rendered runners (GitHub runner unit, Buildkite agent unit, Buildkite job sudo rule)", () => {
    const users = agentAndJobUsers(render);
    expect([...users.keys()].sort()).toEqual(expect.arrayContaining([CI_JOB_USER]));
    expect(users.size).toBeGreaterThanOrEqual(2);
  });

  test("every one of them is a forbidden login, and no role of the stack allows it", () => {
    const users = agentAndJobUsers(render);
    const roles = buildRoles({ queues: Object.keys(render.documents).length ? [...new Set(Object.values(render.documents).map((d) => d.ci_fleet.runner?.queue).filter((q): q is string => !!q))] : [], stack });
    for (const [user, where] of users) {
      expect({ user, where, forbidden: FORBIDDEN_LOGINS.includes(user) }).toEqual({ user, where, forbidden: true });
      for (const r of roles) expect({ role: r.metadata.name, allows: (r.spec.allow.logins ?? []).includes(user) }).toEqual({ role: r.metadata.name, allows: false });
    }
    expect(FORBIDDEN_LOGINS).toContain("root");
  });
});

describe("roles reach only this stack's machines (dynamic/stack, assigned by the master)", () => {
  const roles = buildRoles({ queues: QUEUES, stack: "production" });

  test("the admin role selects dynamic/stack, not every node", () => {
    const admin = roles.find((r) => r.metadata.name === "fleet-admin")!;
    expect(admin.spec.allow.node_labels).toEqual({ "dynamic/stack": "production" });
    for (const r of roles.filter((x) => x.spec.allow.node_labels)) {
      expect({ role: r.metadata.name, stack: r.spec.allow.node_labels?.["dynamic/stack"] }).toEqual({ role: r.metadata.name, stack: "production" });
    }
  });

  test.each<[string, Record<string, string>, boolean]>([
    ["this stack's runner", teleportNodeLabels({ stack: "production", role: "runner", queue: "default" }), true],
    ["this stack's Salt master", teleportNodeLabels({ stack: "production", role: "salt-master" }), true],
    ["another stack's runner joined to this cluster", teleportNodeLabels({ stack: "staging", role: "runner", queue: "default" }), false],
    ["a node the master never labelled (an impostor, or not yet assigned)", { role: "salt-master", stack: "production" }, false],
    ["a node with no labels", {}, false],
  ])("admin on %s -> %s", (_name, labels, allowed) => {
    expect(roleSetAccess(roles.filter((r) => r.metadata.name === "fleet-admin"), labels).allowed).toBe(allowed);
  });

  test("the resources Teleport receives carry the scoped roles", async () => {
    const output = teleportResourcesYaml({ stack: "production", queues: QUEUES, publicAddr: PUBLIC_ADDR, organization: ORG, teamsToRoles: TEAMS_TO_ROLES, clientId: pulumi.output(FAKE_CLIENT_ID), clientSecret: pulumi.output(FAKE_CLIENT_SECRET) });
    const text = await new Promise<string>((resolve) => output.apply(resolve));
    const admin = parseAllDocuments(text).map((d) => d.toJS() as TeleportRole).find((d) => d.kind === "role" && d.metadata.name === "fleet-admin")!;
    expect(admin.spec.allow.node_labels).toEqual({ "dynamic/stack": "production" });
  });

  test("a stack name that is not a DNS label is refused", () => {
    expect(() => buildRoles({ queues: QUEUES, stack: "Prod*" })).toThrow(/stack name/);
  });
});
