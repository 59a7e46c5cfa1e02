/**
 * The master's orchestration against its seams and upstream interfaces
 * (docs/upstream-conformance.md, fragment .conformance/orchestration-runner.md):
 * the Python tests of salt/_runners/ci_fleet.py + salt/pillar/minion.sls, and the values
 * the master config (infra/bootstrap/salt-config.ts) and the Salt tree must share.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import * as YAML from "yaml";
import { buildSaltMasterConfig, SALT_MASTER_ORCHESTRATION, SALT_PATHS } from "../../infra/bootstrap/salt-config";

const ROOT = path.resolve(__dirname, "..", "..");
const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
const runnerModule = fs.readFileSync(path.join(ROOT, "salt/_runners/ci_fleet.py"), "utf8");
const master = buildSaltMasterConfig({ masterMinionId: "prod-salt-master" });

/** A path on the master under the checkout's salt/ tree, as a path in this repository. */
function inRepo(masterPath: string): string {
  expect(masterPath.startsWith(SALT_PATHS.stateTree + "/")).toBe(true);
  return path.join(ROOT, "salt", masterPath.slice(SALT_PATHS.stateTree.length + 1));
}

function runnerFunctions(): Set<string> {
  const functions = new Set([...runnerModule.matchAll(/^def ([a-z][a-z0-9_]*)\(/gm)].map((m) => `ci_fleet.${m[1]}`));
  // ci_fleet_drain.py exposes only its `__load__` list (Salt's loader reads that first).
  const drain = fs.readFileSync(path.join(ROOT, "salt/_runners/ci_fleet_drain.py"), "utf8");
  for (const name of /^__load__ = \[([^\]]*)\]$/m.exec(drain)?.[1].match(/[a-z_]+/g) ?? []) functions.add(`ci_fleet_drain.${name}`);
  const converge = fs.readFileSync(path.join(ROOT, "salt/_runners/ci_fleet_converge.py"), "utf8");
  for (const name of /^__load__ = \[([^\]]*)\]$/m.exec(converge)?.[1].match(/[a-z_]+/g) ?? []) functions.add(`ci_fleet_converge.${name}`);
  return functions;
}

describe("orchestration runner (python: fake LocalClient/GitHub, real Jinja2 pillar render)", () => {
  test("test/orchestration/test_orchestration.py passes", () => {
    const run = spawnSync(python, [path.join(__dirname, "test_orchestration.py")], { encoding: "utf8" });
    if (run.status !== 0) throw new Error(`${run.stdout}\n${run.stderr}`);
  });

  test("test/orchestration/test_teleport_module.py passes (tokens revoked by their sha256)", () => {
    const run = spawnSync(python, [path.join(__dirname, "test_teleport_module.py")], { encoding: "utf8" });
    if (run.status !== 0) throw new Error(`${run.stdout}\n${run.stderr}`);
  });
});

describe("seams between the master config and the Salt tree", () => {
  test("the tag the runner unit sends is the tag the reactor listens to, and the reactor calls a runner function", () => {
    const defaults = YAML.parse(fs.readFileSync(path.join(ROOT, "salt/github_runner/parameters/defaults.yaml"), "utf8"));
    const sent: string = defaults.github_runner.unregistered_event;
    const unit = fs.readFileSync(path.join(ROOT, "salt/github_runner/service.sls"), "utf8");
    expect(unit).toMatch(/event\.send \{\{ github_runner\.unregistered_event \}\}/);
    const githubReactors = master.reactor.filter((r) => Object.keys(r).includes(sent));
    expect(githubReactors).toHaveLength(1);
    const [[tag, files]] = Object.entries(githubReactors[0]);
    expect(tag).toBe(sent);
    expect(files).toEqual([SALT_MASTER_ORCHESTRATION.githubRunnerReactor]);
    const reactor = fs.readFileSync(inRepo(files[0]), "utf8");
    // salt/utils/reactor.py: `runner.<fun>` with `args` as a list of one-key dicts -> kwarg.
    const called = [...reactor.matchAll(/^\s+runner\.(ci_fleet\.[a-z_]+):\s*$/gm)].map((m) => m[1]);
    expect(called).toEqual(["ci_fleet.register_github_runners"]);
    expect(runnerFunctions()).toContain(called[0]);
    expect(runnerModule).toMatch(/^def register_github_runners\(minion=None\):/m);
    expect(reactor).toMatch(/- args:\n\s+- minion: \{\{ data\['id'\] \| json \}\}/);
  });

  test("the master's schedule and the orchestration states name functions the runner module defines, loaded from runner_dirs", () => {
    expect(master.runner_dirs).toEqual([SALT_MASTER_ORCHESTRATION.runnerDir]);
    expect(fs.existsSync(path.join(inRepo(master.runner_dirs[0]), "ci_fleet.py"))).toBe(true);
    const functions = runnerFunctions();
    for (const job of Object.values(master.schedule)) expect(functions).toContain(job.function);
    for (const file of ["deregister.sls", "github_register.sls", "teleport_join.sls"]) {
      const sls = fs.readFileSync(path.join(ROOT, "salt/orch", file), "utf8");
      const names = [...sls.matchAll(/salt\.runner:\n\s+- name: (\S+)/g)].map((m) => m[1]);
      expect(names).toHaveLength(1);
      expect(functions).toContain(names[0]);
    }
  });

  test("tokens are written under a pillar root the pillar sync does not own, and the master caches no pillar", () => {
    const inlineDir = /^INLINE_PILLAR_DIR = "([^"]+)"$/m.exec(runnerModule)?.[1];
    expect(inlineDir).toBe(`${SALT_PATHS.generatedPillar}/inline`);
    expect(master.pillar_roots.base).toContain(SALT_PATHS.generatedPillar);
    const minionSls = fs.readFileSync(path.join(ROOT, "salt/pillar/minion.sls"), "utf8");
    expect(minionSls).toContain("{% include 'inline/' ~ opts.id ~ '/' ~ key ~ '.json' ignore missing %}");
    const keys = /^INLINE_KEYS = \(([^)]*)\)$/m.exec(runnerModule)?.[1].match(/"([a-z_]+)"/g)?.map((k) => k.slice(1, -1));
    expect(minionSls).toContain(`{%- for key in ${JSON.stringify(keys).replace(/"/g, "'").replace(/,/g, ", ")} %}`);
    // pillar_cache would serve a pillar compiled before the token file existed (and keep
    // tokens on the master's disk); pillar_opts would leak master config into pillar.
    expect(master).not.toHaveProperty("pillar_cache");
    expect(master.pillar_opts).toBe(false);
  });
});
