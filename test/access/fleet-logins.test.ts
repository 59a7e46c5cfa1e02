import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { gunzipSync } from "zlib";
import { parseAllDocuments } from "yaml";
import { roleSetAccess } from "../../infra/teleport/access";
import type { TeleportRole } from "../../infra/teleport/roles";
import { pillarDocuments, previewStack, ROOT } from "../support/preview";

/**
 * The seam between Teleport and Salt, for the whole fleet: every login a Teleport role the
 * program renders allows on a machine (Teleport's label matching: the role's allow
 * node_labels, minus its deny) is a local user the machine's Salt highstate creates —
 * Teleport (17 and 18) starts a session only as an existing local user, and the roles turn host
 * user creation off. No other login user exists there, admins get logged sudo, operators none.
 */

const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
const VISUDO = ["/usr/sbin/visudo", "/usr/bin/visudo"].find((p) => fs.existsSync(p));

interface StateView {
  sls: string;
  functions: Array<{ function: string; args: Record<string, any> }>;
}
interface MinionView {
  labels: Record<string, string> | null;
  errors: string[];
  states: Record<string, StateView>;
}

const LOGIN_USERS = ["ci-admin", "ci-operator"];

function calls(minion: MinionView, fn: string): Array<{ id: string; args: Record<string, any> }> {
  return Object.entries(minion.states).flatMap(([id, s]) => s.functions.filter((f) => f.function === fn).map((f) => ({ id, args: f.args })));
}

/** `visudo -c -f` on a rendered sudoers drop-in: the validator sudo itself uses. */
function visudoCheck(contents: string): { status: number | null; output: string } {
  if (!VISUDO) throw new Error("visudo not found: apt-get install sudo (the test validates sudoers with the real visudo)");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-sudoers-"));
  const file = path.join(dir, "drop-in");
  fs.writeFileSync(file, contents, { mode: 0o440 });
  try {
    const proc = spawnSync(VISUDO, ["-c", "-f", file], { encoding: "utf8" });
    return { status: proc.status, output: `${proc.stdout}${proc.stderr}` };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe.each(["production", "production-aws"])("Teleport logins on every machine of %s", (stack) => {
  let minions: Record<string, MinionView>;
  let roles: TeleportRole[];
  let machines: string[];

  beforeAll(async () => {
    const run = await previewStack(stack);
    machines = run.machines.map((m) => m.hostname).sort();
    const documents: Record<string, any> = pillarDocuments(run);
    // The roles exactly as `tctl create -f` receives them on the Teleport machine.
    const teleportDoc = documents[`${stack}-teleport`];
    const stream = gunzipSync(new Uint8Array(Buffer.from(teleportDoc.ci_fleet_teleport.resources_gzip_base64, "base64"))).toString("utf8");
    roles = parseAllDocuments(stream)
      .map((d) => d.toJSON())
      .filter((d) => d.kind === "role");

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-access-"));
    const file = path.join(dir, "documents.json");
    fs.writeFileSync(file, JSON.stringify(documents), { mode: 0o600 });
    try {
      const proc = spawnSync(python, [path.join(__dirname, "highstate.py"), "--salt-root", path.join(ROOT, "salt"), "--documents", file], {
        encoding: "utf8",
        maxBuffer: 64 * 1024 * 1024,
      });
      if (proc.error) throw new Error(`cannot run ${python}: ${proc.error.message}`);
      if (proc.status !== 0) throw new Error(`highstate.py exited ${proc.status}:\n${proc.stderr}`);
      minions = JSON.parse(proc.stdout);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the program renders roles with logins, and Teleport never creates host users", () => {
    expect(roles.length).toBeGreaterThanOrEqual(4);
    for (const role of roles) expect({ role: role.metadata.name, mode: role.spec.options.create_host_user_mode }).toEqual({ role: role.metadata.name, mode: "off" });
    expect(Object.keys(minions).sort()).toEqual(machines);
  });

  test("every login a role allows on a machine is a locked local user with a home and a login shell; no other login user exists", () => {
    for (const machine of machines) {
      const minion = minions[machine];
      expect({ machine, errors: minion.errors }).toEqual({ machine, errors: [] });
      const labels = minion.labels ?? {};
      const expected = new Set<string>();
      for (const role of roles) roleSetAccess([role], labels).logins.forEach((login) => expected.add(login));

      const present = calls(minion, "user.present").filter((c) => LOGIN_USERS.includes(c.args.name ?? c.id));
      const absent = calls(minion, "user.absent").map((c) => c.args.name);
      expect({ machine, users: present.map((c) => c.args.name).sort() }).toEqual({ machine, users: [...expected].sort() });
      // A login no role allows here is removed, so a machine that changes role drops it.
      expect({ machine, absent: absent.filter((n) => LOGIN_USERS.includes(n)).sort() }).toEqual({
        machine,
        absent: LOGIN_USERS.filter((n) => !expected.has(n)).sort(),
      });
      for (const { args } of present) {
        expect({ machine, user: args.name, shell: args.shell, home: args.home, createhome: args.createhome, password: args.password, system: args.system ?? false }).toEqual({
          machine,
          user: args.name,
          shell: "/bin/bash",
          home: `/home/${args.name}`,
          createhome: true,
          // `!` in /etc/shadow: no password can ever be used; Teleport certificates are the only way in.
          password: "!",
          system: false,
        });
      }
    }
  });

  test("sudo: ci-admin everywhere it logs in, passwordless (its password is locked) and logged; ci-operator nowhere", () => {
    for (const machine of machines) {
      const minion = minions[machine];
      // The Buildkite agent's drop to the CI user for each job (one command, as ci-agent only) is
      // the buildkite formula's, checked in test/buildkite/agent-token.test.ts.
      const sudoers = calls(minion, "file.managed").filter((c) => String(c.args.name).startsWith("/etc/sudoers") && c.args.name !== "/etc/sudoers.d/ci-fleet-buildkite-agent");
      const hasAdmin = calls(minion, "user.present").some((c) => c.args.name === "ci-admin");
      expect({ machine, hasAdmin }).toEqual({ machine, hasAdmin: true });
      expect({ machine, files: sudoers.map((c) => c.args.name) }).toEqual({ machine, files: ["/etc/sudoers.d/ci-fleet-access"] });
      const [dropIn] = sudoers;
      // Salt puts the file in place only if sudo's own validator accepts it.
      expect(dropIn.args.check_cmd).toBe("/usr/sbin/visudo -c -f");
      expect([dropIn.args.mode, dropIn.args.user, dropIn.args.group]).toEqual(["0440", "root", "root"]);
      const contents: string = dropIn.args.contents;
      expect(visudoCheck(contents)).toEqual({ status: 0, output: expect.stringContaining("parsed OK") });
      const rules = contents.split("\n").filter((l) => l.trim() !== "" && !l.trim().startsWith("#"));
      expect(rules).toEqual([
        "Defaults:ci-admin log_allowed, log_denied, log_output, syslog=authpriv",
        "ci-admin ALL=(ALL:ALL) NOPASSWD: ALL",
      ]);
      expect(contents).not.toMatch(/ci-operator/);
    }
  });

  test("the real visudo rejects a broken drop-in (the check_cmd is not a formality)", () => {
    expect(visudoCheck("ci-admin ALL=(ALL:ALL) NOPASSWD ALL\n").status).not.toBe(0);
  });

  test("ci-operator reads the journal through its group, not sudo", () => {
    for (const machine of machines) {
      const operator = calls(minions[machine], "user.present").find((c) => c.args.name === "ci-operator");
      if (machine.endsWith("-salt-master") || machine.endsWith("-teleport")) {
        expect({ machine, operator }).toEqual({ machine, operator: undefined });
      } else {
        expect({ machine, groups: operator?.args.groups }).toEqual({ machine, groups: ["systemd-journal"] });
      }
    }
  });
});
