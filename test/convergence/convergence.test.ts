/**
 * Issue 13: a machine converges whatever its first boot did. The master highstates every accepted
 * minion it has no completed highstate on record for since its last start (on the minion's start
 * event, and every minute), and joins/labels its Teleport agent once that highstate has answered.
 * These tests hold the wiring (the master's config, the reactor as real Jinja2 renders it) and run
 * the runner's own tests (test/convergence/test_converge.py).
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import * as YAML from "yaml";
import { buildSaltMasterConfig, renderSaltMasterConfig, SALT_MASTER_ORCHESTRATION, SALT_PATHS } from "../../infra/bootstrap/salt-config";

const ROOT = path.resolve(__dirname, "..", "..");
const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
const repoPath = (onMaster: string) => path.join(ROOT, path.relative(SALT_PATHS.repositoryCheckout, onMaster));
const runnerModule = () => fs.readFileSync(path.join(ROOT, "salt/_runners/ci_fleet_converge.py"), "utf8");

test("test/convergence/test_converge.py passes", () => {
  const run = spawnSync(python, [path.join(__dirname, "test_converge.py")], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`${run.stdout}\n${run.stderr}`);
});

describe("the master's config drives convergence (the one builder cloud-init and Salt write)", () => {
  const config = YAML.parse(renderSaltMasterConfig({ masterMinionId: "production-salt-master" })) as ReturnType<typeof buildSaltMasterConfig>;

  test("a schedule runs ci_fleet_converge.run every minute, never two at once", () => {
    expect(config.schedule["ci-fleet-converge"]).toEqual({ function: "ci_fleet_converge.run", minutes: 1, maxrunning: 1 });
    expect(runnerModule()).toMatch(/^def run\(\):/m);
  });

  test("the reactor maps every minion's start event to minion_start.sls, which exists in the tree", () => {
    const entry = config.reactor.find((item) => "salt/minion/*/start" in item);
    expect(entry).toEqual({ "salt/minion/*/start": [SALT_MASTER_ORCHESTRATION.minionStartReactor] });
    expect(fs.existsSync(repoPath(SALT_MASTER_ORCHESTRATION.minionStartReactor))).toBe(true);
    // Every reactor file the master maps is in the tree (one list item, one tag: Salt's reactor format).
    for (const item of config.reactor) {
      expect(Object.keys(item)).toHaveLength(1);
      for (const file of Object.values(item)[0]) expect(fs.existsSync(repoPath(file))).toBe(true);
    }
    // The runner dir is where the module lives.
    expect(fs.existsSync(path.join(repoPath(SALT_MASTER_ORCHESTRATION.runnerDir), "ci_fleet_converge.py"))).toBe(true);
  });

  test("labels follow a highstate through the existing reconcile (no label logic of its own)", () => {
    expect(runnerModule()).toContain('__salt__["ci_fleet.reconcile"]()');
    expect(fs.readFileSync(path.join(ROOT, "salt/_runners/ci_fleet.py"), "utf8")).toMatch(/^def reconcile\(\):/m);
    expect(config.schedule["ci-fleet-reconcile"]).toBeDefined(); // the backstop stays
  });
});

describe("the start reactor, rendered by real Jinja2", () => {
  function render(tag: string, data: Record<string, unknown>): unknown {
    const code = [
      "import json, sys, jinja2",
      "env = jinja2.Environment(loader=jinja2.FileSystemLoader(sys.argv[1]), undefined=jinja2.StrictUndefined)",
      "env.filters['json'] = lambda v: json.dumps(v, sort_keys=True)",
      "print(env.get_template('orch/reactor/minion_start.sls').render(tag=sys.argv[2], data=json.loads(sys.argv[3])))",
    ].join("\n");
    const r = spawnSync(python, ["-c", code, path.join(ROOT, "salt"), tag, JSON.stringify(data)], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(r.stderr);
    return YAML.parse(r.stdout);
  }

  test("passes the tag and the id to the runner, which checks them", () => {
    expect(render("salt/minion/production-default-r1/start", { id: "production-default-r1", cmd: "_minion_event" })).toEqual({
      "orch-reactor-minion-start": {
        "runner.ci_fleet_converge.minion_start": [{ args: [{ tag: "salt/minion/production-default-r1/start" }, { minion: "production-default-r1" }] }],
      },
    });
    expect(runnerModule()).toMatch(/^def minion_start\(tag="", minion=""\):/m);
  });

  test("a hostile id stays one string (no YAML injection), and a missing one is empty", () => {
    const hostile = 'x"\n  runner.ci_fleet.reconcile: []\n#';
    const out = render(`salt/minion/${hostile}/start`, { id: hostile }) as Record<string, Record<string, unknown>>;
    expect(Object.keys(out)).toEqual(["orch-reactor-minion-start"]);
    expect(out["orch-reactor-minion-start"]).toEqual({ "runner.ci_fleet_converge.minion_start": [{ args: [{ tag: `salt/minion/${hostile}/start` }, { minion: hostile }] }] });
    expect(render("salt/minion/a/start", {})).toEqual({ "orch-reactor-minion-start": { "runner.ci_fleet_converge.minion_start": [{ args: [{ tag: "salt/minion/a/start" }, { minion: "" }] }] } });
  });
});
