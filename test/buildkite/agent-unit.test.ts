import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { buildkiteMinions, directives, parseUnit, renderStack, unitEnvironment, type StackRender } from "./support";

/**
 * buildkite-agent.service as systemd reads it. `systemd-analyze verify` (Debian's systemd,
 * the same parser as Ubuntu 24.04's 255) checks every directive; the paths the unit runs
 * are pointed at stubs so the check runs without installing anything.
 */

const UNIT = "/etc/systemd/system/buildkite-agent.service";

function verify(unitText: string): { status: number | null; stderr: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-bk-unit-"));
  try {
    for (const stub of ["ci-agent-reset", "buildkite-agent-start"]) {
      fs.writeFileSync(path.join(dir, stub), "#!/bin/sh\n", { mode: 0o755 });
    }
    fs.writeFileSync(path.join(dir, "ci-netboot-selftest.service"), "[Service]\nType=oneshot\nExecStart=/bin/true\n");
    // ci-fleet's scripts in /usr/local/sbin (the start script execs Buildkite's /usr/bin/buildkite-agent).
    const text = unitText.replaceAll("/usr/local/sbin/", `${dir}/`);
    fs.writeFileSync(path.join(dir, "buildkite-agent.service"), text);
    const run = spawnSync("systemd-analyze", ["verify", "--man=no", path.join(dir, "buildkite-agent.service")], {
      encoding: "utf8",
      env: { ...process.env, SYSTEMD_UNIT_PATH: `${dir}:` },
    });
    if (run.error) throw new Error(`cannot run systemd-analyze (Debian package systemd): ${run.error.message}`);
    return { status: run.status, stderr: run.stderr.replaceAll(dir, "<stubs>") };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe("buildkite-agent.service on the production runners", () => {
  let render: StackRender;
  beforeAll(async () => {
    render = await renderStack("production");
  });

  test("systemd-analyze verify accepts every directive, without warnings", () => {
    for (const id of buildkiteMinions(render)) {
      expect({ id, ...verify(render.minions[id].files[UNIT]) }).toEqual({ id, status: 0, stderr: "" });
    }
  });

  test("the verifier really reports an unknown directive (the check above can fail)", () => {
    const id = buildkiteMinions(render)[0];
    const broken = render.minions[id].files[UNIT].replace("KillMode=control-group", "KillMode=control-group\nNoNewPrivilege=yes");
    expect(verify(broken).stderr).toContain("Unknown key 'NoNewPrivilege'");
  });

  test("the token reaches the agent only as a systemd credential loaded (as root) from a root-only file; nothing runs before the agent but the root reset", () => {
    // systemd.exec(5) LoadCredential=ID:PATH: the service manager reads PATH and passes a copy
    // "only accessible to the user associated with the unit ... (as well as the superuser)"
    // at $CREDENTIALS_DIRECTORY/ID; a file that cannot be read fails the start.
    for (const id of buildkiteMinions(render)) {
      const unit = parseUnit(render.minions[id].files[UNIT]);
      expect({ id, credentials: directives(unit, "Service", "LoadCredential"), envFiles: directives(unit, "Service", "EnvironmentFile") }).toEqual({
        id,
        credentials: ["agent-token:/etc/ci-fleet/buildkite-agent/agent-token"],
        envFiles: [],
      });
      // The reset (as root) is the only command before the agent: no token script, nothing as the agent's user.
      expect({ id, pre: directives(unit, "Service", "ExecStartPre") }).toEqual({ id, pre: ["+/usr/local/sbin/ci-agent-reset"] });
      expect(unitEnvironment(unit).get("BUILDKITE_AGENT_CONFIG")).toBe("/etc/buildkite-agent/buildkite-agent.cfg");
      // The start script execs the binary Buildkite's deb installs (buildkite/agent@v3.123.1
      // scripts/build-debian-package.sh: "./$BUILD_BINARY_PATH=/usr/bin/buildkite-agent"), as the package's unit runs it.
      expect(directives(unit, "Service", "ExecStart")).toEqual(["/usr/local/sbin/buildkite-agent-start"]);
      expect(render.minions[id].files["/usr/local/sbin/buildkite-agent-start"]).toMatch(/\nexec \/usr\/bin\/buildkite-agent start\n$/);
      // The token is in no Environment= (systemctl show prints those to every user) and no command line.
      expect({ id, inUnit: /BUILDKITE_AGENT_TOKEN=|--token/.test(render.minions[id].files[UNIT]) }).toEqual({ id, inUnit: false });
    }
  });

  test("every job and hook finds the root-owned AWS config through AWS_CONFIG_FILE; the reset also runs after each job", () => {
    // The agent passes its environment to the job process and so to the hooks (agent/job_runner.go
    // processEnv := append(os.Environ(), ...)); sudo -E keeps it (test/buildkite/agent-token.test.ts).
    // botocore (AWS_CONFIG_FILE, configprovider.py) and the JS SDK v3 (getConfigFilepath) read it.
    for (const id of buildkiteMinions(render)) {
      const unit = parseUnit(render.minions[id].files[UNIT]);
      const configPath = unitEnvironment(unit).get("AWS_CONFIG_FILE");
      expect({ id, configPath }).toEqual({ id, configPath: "/etc/ci-fleet/ci-agent/aws-config" });
      // botocore reads the shared credentials file before credential_process: not one in $HOME.
      const credentials = unitEnvironment(unit).get("AWS_SHARED_CREDENTIALS_FILE");
      expect({ id, credentials }).toEqual({ id, credentials: "/etc/ci-fleet/ci-agent/aws-credentials-none" });
      expect(Object.keys(render.minions[id].files)).not.toContain(credentials);
      // Salt writes exactly that file, and nothing under the CI user's home.
      expect({ id, written: typeof render.minions[id].files[configPath!] }).toEqual({ id, written: "string" });
      expect(Object.keys(render.minions[id].files).filter((p) => p.startsWith("/var/lib/ci-agent/"))).toEqual([]);
      expect(directives(unit, "Service", "ExecStopPost")).toEqual(["-+/usr/local/sbin/ci-agent-reset"]);
    }
  });
});

describe("a changed unit or config never cancels a running job", () => {
  let render: StackRender;
  beforeAll(async () => {
    render = await renderStack("production");
  });

  test("Salt reloads systemd and asks only the agent's main process to stop gracefully (SIGTERM: finish the job, then exit)", () => {
    // docs/agent/lifecycle: SIGTERM makes the agent disconnect after completing its job; SIGQUIT
    // cancels it. A restart (watch) would have systemd signal every process of the job.
    for (const id of buildkiteMinions(render)) {
      const states = render.minions[id].states;
      const running = states["buildkite-service-agent-service-running"];
      expect({ id, watch: running.args.watch }).toEqual({ id, watch: undefined });
      const roll = states["buildkite-service-agent-graceful-restart-cmd-run"];
      expect(roll.function).toBe("cmd.run");
      // A new unit, cfg or token (rotated in the pillar) reaches the agent at its next job boundary.
      expect(roll.args.onchanges).toEqual([
        { file: "buildkite-service-unit-file-managed" },
        { file: "buildkite-config-agent-cfg-file-managed" },
        { file: "buildkite-service-start-script-file-managed" },
        { file: "buildkite-token-file-managed" },
      ]);
      const command = String(roll.args.name);
      expect(roll.args.require).toEqual([{ cmd: "buildkite-service-unit-reload-cmd-run" }]);
      expect(states["buildkite-service-unit-reload-cmd-run"].args.name).toBe("systemctl daemon-reload");
      expect(command).toContain("systemctl show --property=MainPID --value buildkite-agent.service");
      expect(command).toMatch(/kill -TERM "\$pid"/);
      expect(command).not.toMatch(/systemctl (re)?start|systemctl restart|SIGQUIT|-QUIT/);
      // systemd then starts it again through the reset, with the new unit and config.
      expect(directives(parseUnit(render.minions[id].files[UNIT]), "Service", "Restart")).toEqual(["always"]);
    }
  });
});

