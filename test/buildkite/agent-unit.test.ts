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
    for (const stub of ["ci-agent-reset", "buildkite-agent-token", "buildkite-agent"]) {
      fs.writeFileSync(path.join(dir, stub), "#!/bin/sh\n", { mode: 0o755 });
    }
    fs.writeFileSync(path.join(dir, "ci-netboot-selftest.service"), "[Service]\nType=oneshot\nExecStart=/bin/true\n");
    // ci-fleet's scripts in /usr/local/sbin; the agent from Buildkite's deb (/usr/bin/buildkite-agent).
    const text = unitText.replaceAll("/usr/local/sbin/", `${dir}/`).replaceAll("/usr/bin/buildkite-agent", `${dir}/buildkite-agent`);
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

  test("the token reaches the agent: ExecStartPre writes, as the agent's user, the file EnvironmentFile= reads", () => {
    // systemd.exec(5): EnvironmentFile= is read "after all processes from a previous unit state
    // terminated. This means you can generate these files in one unit state, and read it with
    // this option in the next" -- ExecStartPre (start-pre) writes, ExecStart (start) reads.
    for (const id of buildkiteMinions(render)) {
      const unit = parseUnit(render.minions[id].files[UNIT]);
      const envFiles = directives(unit, "Service", "EnvironmentFile");
      expect(envFiles).toEqual(["-/run/buildkite-agent/agent.env"]);
      const pre = directives(unit, "Service", "ExecStartPre");
      const token = pre.find((c) => c.includes("buildkite-agent-token"))!;
      // No "+": it runs as User= with the queue's AWS credentials, writing into the RuntimeDirectory.
      expect(token.startsWith("/usr/local/sbin/buildkite-agent-token ")).toBe(true);
      const args = token.split(/\s+/);
      const doc = render.documents[id].ci_fleet;
      expect(args[args.indexOf("--output") + 1]).toBe("/run/buildkite-agent/agent.env");
      expect(args[args.indexOf("--parameter") + 1]).toBe(`/ci-fleet/production/${doc.runner!.queue}/buildkite/agent-token`);
      expect(args[args.indexOf("--region") + 1]).toBe(unitEnvironment(unit).get("AWS_REGION"));
      // The reset (as root) runs before the token is fetched, and the agent reads its config from the file Salt writes.
      expect(pre[0]).toBe("+/usr/local/sbin/ci-agent-reset");
      expect(unitEnvironment(unit).get("BUILDKITE_AGENT_CONFIG")).toBe("/etc/buildkite-agent/buildkite-agent.cfg");
      // The binary Buildkite's deb installs (buildkite/agent@v3.123.1 scripts/build-debian-package.sh:
      // "./$BUILD_BINARY_PATH=/usr/bin/buildkite-agent"), as the package's own unit runs it.
      expect(directives(unit, "Service", "ExecStart")).toEqual(["/usr/bin/buildkite-agent start"]);
    }
  });

  test("the agent, its token script and every hook find the root-owned AWS config through AWS_CONFIG_FILE; the reset also runs after each job", () => {
    // Environment= applies to every Exec* line (token script included); the agent passes its
    // environment to hooks and jobs (agent/job_runner.go processEnv := append(os.Environ(), ...)).
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
      expect(roll.args.onchanges).toEqual([{ file: "buildkite-service-unit-file-managed" }, { file: "buildkite-config-agent-cfg-file-managed" }]);
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

