/**
 * The master's drain runner (salt/_runners/ci_fleet_drain.py): its Python tests (fake Salt
 * harness of test/orchestration, fake GitHub and SSM), and the values it must share with the
 * hook, the master config and ci_fleet.py.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as YAML from "yaml";
import { BLOCKED_PUBLISH_FUNCTIONS, buildSaltMasterConfig, SALT_MASTER_ORCHESTRATION } from "../../infra/bootstrap/salt-config";
import { drainRequestPath } from "../../infra/identity/policies";
import { controlPlaneNames } from "../../infra/fleet/control-plane-dns";
import { DRAIN_ANSWER_GRACE_SECONDS, DRAIN_POLL_SECONDS } from "../../infra/fleet/drain-hook";
import { buildkiteMinions, renderStack, type StackRender } from "../buildkite/support";

const ROOT = path.resolve(__dirname, "..", "..");
const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
const drainModule = fs.readFileSync(path.join(ROOT, "salt/_runners/ci_fleet_drain.py"), "utf8");
const ciFleetModule = fs.readFileSync(path.join(ROOT, "salt/_runners/ci_fleet.py"), "utf8");
const constant = (text: string, name: string) => new RegExp(`^${name} = (.+)$`, "m").exec(text)?.[1];

test("test/drain/test_drain_runner.py passes", () => {
  const run = spawnSync(python, [path.join(__dirname, "test_drain_runner.py")], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`${run.stdout}\n${run.stderr}`);
});

test("the runner answers where the hook asks, and ci_fleet.py reads the markers where the runner writes them", () => {
  expect(constant(drainModule, "REQUEST_PATH")).toBe(JSON.stringify(drainRequestPath("%s")));
  expect(constant(ciFleetModule, "DRAIN_DIR")).toBe(constant(drainModule, "DRAIN_DIR"));
  expect(ciFleetModule).toMatch(/if \(only and minion_id != only\) or os\.path\.exists\(os\.path\.join\(DRAIN_DIR, minion_id\)\):\n\s+continue/);
});

test("the master runs a drain pass every minute, one at a time, through a function the module exposes", () => {
  const master = buildSaltMasterConfig({ masterMinionId: "prod-salt-master" });
  expect(master.schedule["ci-fleet-drain"]).toEqual({ function: "ci_fleet_drain.run", minutes: 1, maxrunning: 1 });
  expect(SALT_MASTER_ORCHESTRATION.drainFunction).toBe("ci_fleet_drain.run");
  expect(constant(drainModule, "__load__")).toBe('["run", "cancel"]');
  expect(master.runner_dirs).toEqual([SALT_MASTER_ORCHESTRATION.runnerDir]);
});

test("timings agree: the master's `timed out` reaches the hook before it gives up, and a silent minion gets several passes", () => {
  const passSeconds = SALT_MASTER_ORCHESTRATION.drainMinutes * 60;
  // A pass every minute, a Salt timeout of 30 s for a silent minion: the answer is written within two passes.
  expect(DRAIN_ANSWER_GRACE_SECONDS).toBeGreaterThanOrEqual(2 * passSeconds + DRAIN_POLL_SECONDS);
  expect(Number(constant(drainModule, "UNREACHABLE_GRACE_SECONDS"))).toBeGreaterThanOrEqual(3 * passSeconds);
});

test("every function the runner publishes is allowed by the master's publisher_acl_blacklist", () => {
  const published = [...new Set([...drainModule.matchAll(/self\.local\(minion_id, "([a-z_.]+)"/g)].map((m) => m[1]))].sort();
  expect(published).toEqual(["file.mkdir", "file.remove", "file.write", "grains.get", "ps.kill_pid", "service.show", "service.start", "service.status", "service.systemctl_reload"]);
  const blocked = BLOCKED_PUBLISH_FUNCTIONS.map((p) => new RegExp(`^${p.replace(/\./g, "\\.").replace(/\*/g, ".*")}$`));
  for (const fun of published) expect([fun, blocked.some((b) => b.test(fun))]).toEqual([fun, false]);
});

test("the Buildkite unit the runner drains is the formula's, and it restarts after every exit (why the drop-in is needed)", () => {
  const defaults = YAML.parse(fs.readFileSync(path.join(ROOT, "salt/buildkite/parameters/defaults.yaml"), "utf8"));
  expect(defaults.buildkite.unit).toBe("buildkite-agent.service");
  expect(drainModule).toContain('buildkite_unit=ci_fleet._formula_defaults("buildkite")["unit"]');
  const unit = fs.readFileSync(path.join(ROOT, "salt/buildkite/service.sls"), "utf8");
  expect(unit).toMatch(/^\s+Restart=always$/m);
  const cfg = fs.readFileSync(path.join(ROOT, "salt/buildkite/files/buildkite-agent.cfg.jinja"), "utf8");
  expect(cfg).toMatch(/^disconnect-after-job=true$/m);
});

/** The drain drop-in as the runner writes it: path and lines from the module itself. */
function drainDropIn(unit: string): { path: string; text: string } {
  const code = [
    "import importlib.util, json, sys",
    "spec = importlib.util.spec_from_file_location('d', sys.argv[1]); m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)",
    "print(json.dumps({'path': m.DRAIN_DROPIN % sys.argv[2], 'text': ''.join(l + '\\n' for l in m.drain_dropin_lines(sys.argv[2]))}))",
  ].join("\n");
  const run = spawnSync(python, ["-c", code, path.join(ROOT, "salt/_runners/ci_fleet_drain.py"), unit], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(run.stderr);
  return JSON.parse(run.stdout);
}

describe("the Buildkite drain on the rendered production runners", () => {
  const UNIT_FILE = "/etc/systemd/system/buildkite-agent.service";
  let render: StackRender;
  beforeAll(async () => {
    render = await renderStack("production");
  });

  test("the unit file is in /etc/systemd/system (a /run mask would be shadowed), so the drain is a /run drop-in", () => {
    const dropIn = drainDropIn("buildkite-agent.service");
    expect(dropIn.path).toBe("/run/systemd/system/buildkite-agent.service.d/zz-ci-fleet-drain.conf");
    for (const id of buildkiteMinions(render)) {
      expect({ id, unitInEtc: UNIT_FILE in render.minions[id].files }).toEqual({ id, unitInEtc: true });
    }
    expect(dropIn.text).toMatch(/^\[Service\]\nRestart=no$/m);
    expect(dropIn.text).toContain(`[Unit]\nConditionPathExists=!${dropIn.path}\n`);
  });

  test("the highstate's service.running does not start the agent while the drop-in exists", () => {
    const dropIn = drainDropIn("buildkite-agent.service");
    for (const id of buildkiteMinions(render)) {
      const running = render.minions[id].states["buildkite-service-agent-service-running"];
      expect({ id, fn: running.function, unless: running.args.unless }).toEqual({ id, fn: "service.running", unless: `test -e ${dropIn.path}` });
    }
  });

  test("systemd-analyze verify accepts the unit with the drain drop-in, and reports a broken one", () => {
    const id = buildkiteMinions(render)[0];
    const dropIn = drainDropIn("buildkite-agent.service");
    const verify = (dropInText: string) => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-drain-"));
      try {
        for (const stub of ["ci-agent-reset", "buildkite-agent-start"]) fs.writeFileSync(path.join(dir, stub), "#!/bin/sh\n", { mode: 0o755 });
        fs.writeFileSync(path.join(dir, "ci-netboot-selftest.service"), "[Service]\nType=oneshot\nExecStart=/bin/true\n");
        fs.writeFileSync(path.join(dir, "buildkite-agent.service"), render.minions[id].files[UNIT_FILE].replaceAll("/usr/local/sbin/", `${dir}/`));
        fs.mkdirSync(path.join(dir, "buildkite-agent.service.d"));
        fs.writeFileSync(path.join(dir, "buildkite-agent.service.d", path.basename(dropIn.path)), dropInText);
        const run = spawnSync("systemd-analyze", ["verify", "--man=no", path.join(dir, "buildkite-agent.service")], {
          encoding: "utf8",
          env: { ...process.env, SYSTEMD_UNIT_PATH: `${dir}:` },
        });
        if (run.error) throw new Error(`cannot run systemd-analyze: ${run.error.message}`);
        return { status: run.status, stderr: run.stderr.replaceAll(dir, "<stubs>") };
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    };
    expect(verify(dropIn.text)).toEqual({ status: 0, stderr: "" });
    expect(verify(dropIn.text.replace("Restart=no", "Restart=never")).stderr).toContain("zz-ci-fleet-drain.conf:5: Failed to parse service restart specifier");
  });
});

test("a master finds the control-plane name it compares with its own addresses as the program names it", () => {
  // ci_fleet_drain.control_plane_name reads the zone from the master's pillar (the auth service's
  // stable name, `ci_fleet:teleport:auth_address`): it must give the name minions follow.
  for (const [stack, zone] of [["production", "ci.example.org"], ["production-aws", "fleet.internal"]]) {
    const names = controlPlaneNames(stack, zone);
    const code = [
      "import importlib.util, sys",
      "spec = importlib.util.spec_from_file_location('d', sys.argv[1]); d = importlib.util.module_from_spec(spec); spec.loader.exec_module(d)",
      "print(d.control_plane_name(sys.argv[2], sys.argv[3]))",
    ].join("\n");
    const r = spawnSync(python, ["-c", code, path.join(ROOT, "salt/_runners/ci_fleet_drain.py"), stack, `${names.teleport}:3025`], { encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toBe(names.saltMaster);
  }
});
