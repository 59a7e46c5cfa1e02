/**
 * Issue 15, point 1 in practice: a GitHub job slot does not sit idle until the master's 5-minute
 * round. While its warm VM waits with an empty inbox, the launcher sends the event the host
 * runner unit sends (`salt-call --log-level=quiet event.send <tag>`); the master's reactor runs
 * register_github_runners for that minion. Python unit tests of the schedule (test_refill.py),
 * and the seam: the tag in the rendered job-vm.json is the one the master's rendered reactor
 * config maps to the reactor file, whose runner call registers the sender's runners.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as YAML from "yaml";
import { buildSaltMasterConfig, renderSaltMasterConfig, SALT_MASTER_ORCHESTRATION, SALT_PATHS } from "../../infra/bootstrap/salt-config";
import { renderStack, type StackRender } from "../support/salt-render";

const ROOT = path.resolve(__dirname, "..", "..");
const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
const JOB_VM_JSON = "/etc/ci-fleet/job-vm.json";

test("test/job-vm-refill/test_refill.py passes (the launcher's request schedule, fake clock, fake salt-call)", () => {
  const run = spawnSync(python, [path.join(__dirname, "test_refill.py")], { encoding: "utf8", timeout: 120_000 });
  if (run.status !== 0) throw new Error(`${run.stdout}\n${run.stderr}`);
  expect(run.stderr).toMatch(/Ran [1-9][0-9]* tests?[\s\S]*\nOK\n?$/);
});

describe("the tag a GitHub slot sends is the tag the master reacts to (production)", () => {
  let r: StackRender;
  const master = YAML.parse(renderSaltMasterConfig({ masterMinionId: "production-salt-master" })) as ReturnType<typeof buildSaltMasterConfig>;
  const repoPath = (onMaster: string) => path.join(ROOT, path.relative(SALT_PATHS.repositoryCheckout, onMaster));
  beforeAll(async () => {
    r = await renderStack("production");
  });

  const vmRunners = (agent: string) =>
    Object.keys(r.minions)
      .filter((id) => r.minions[id].files[JOB_VM_JSON] !== undefined && r.documents[id]?.ci_fleet.runner?.agent === agent)
      .sort();

  /** The reactor file as real Jinja2 renders it for an event from `id`. */
  function renderReactor(file: string, tag: string, data: Record<string, unknown>): unknown {
    const code = [
      "import json, sys, jinja2",
      "env = jinja2.Environment(loader=jinja2.FileSystemLoader(sys.argv[1]), undefined=jinja2.StrictUndefined)",
      "env.filters['json'] = lambda v: json.dumps(v, sort_keys=True)",
      "print(env.get_template(sys.argv[2]).render(tag=sys.argv[3], data=json.loads(sys.argv[4])))",
    ].join("\n");
    const rel = path.relative(path.join(ROOT, "salt"), repoPath(file));
    const out = spawnSync(python, ["-c", code, path.join(ROOT, "salt"), rel, tag, JSON.stringify(data)], { encoding: "utf8" });
    if (out.status !== 0) throw new Error(out.stderr);
    return YAML.parse(out.stdout);
  }

  test("every GitHub vm runner's job-vm.json names the reactor's tag; the reactor registers the sender's runners", () => {
    const github = vmRunners("github-actions");
    expect(github.length).toBeGreaterThan(0);
    for (const id of github) {
      const tag = JSON.parse(r.minions[id].files[JOB_VM_JSON]).requestInputEvent as string;
      const entries = master.reactor.filter((item) => tag in item);
      expect({ id, tag, entries }).toEqual({ id, tag, entries: [{ [tag]: [SALT_MASTER_ORCHESTRATION.githubRunnerReactor] }] });
      const rendered = renderReactor(entries[0][tag][0], tag, { id, cmd: "_minion_event", tag, data: {} });
      expect(rendered).toEqual({
        "orch-reactor-github-register": { "runner.ci_fleet.register_github_runners": [{ args: [{ minion: id }] }] },
      });
    }
    // The runner function takes that keyword and, for a vm host, registers its slots <minion>-s<N>.
    const runnerModule = fs.readFileSync(path.join(ROOT, "salt/_runners/ci_fleet.py"), "utf8");
    expect(runnerModule).toMatch(/^def register_github_runners\(minion=None\):/m);
    expect(runnerModule).toContain('return {"%s-s%d" % (minion_id, n): n for n in range(1, slots + 1)}');
  });

  test("Buildkite vm runners ask for nothing (their agent hands jobs in); the launcher accepts both configs", () => {
    const buildkite = vmRunners("buildkite");
    expect(buildkite.length).toBeGreaterThan(0);
    for (const id of buildkite) expect({ id, key: "requestInputEvent" in JSON.parse(r.minions[id].files[JOB_VM_JSON]) }).toEqual({ id, key: false });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "job-vm-refill-"));
    try {
      for (const id of [...vmRunners("github-actions").slice(0, 1), ...buildkite.slice(0, 1)]) {
        const file = path.join(dir, `${id}.json`);
        fs.writeFileSync(file, r.minions[id].files[JOB_VM_JSON]);
        const py = [
          "import importlib.machinery, importlib.util, json, sys",
          "loader = importlib.machinery.SourceFileLoader('ci_job_slot', sys.argv[1])",
          "spec = importlib.util.spec_from_loader('ci_job_slot', loader); m = importlib.util.module_from_spec(spec); loader.exec_module(m)",
          "cfg = m.load_config(sys.argv[2]); runner = m.Runner(cfg, m.Slot(cfg, 1))",
          "print(json.dumps(runner.requester.tag if runner.requester else None))",
        ].join("\n");
        const out = spawnSync(python, ["-c", py, path.join(ROOT, "salt/runner/files/ci-job-slot"), file], { encoding: "utf8" });
        expect({ id, stderr: out.stderr }).toEqual({ id, stderr: "" });
        const github = r.documents[id].ci_fleet.runner!.agent === "github-actions";
        expect({ id, tag: JSON.parse(out.stdout) }).toEqual({ id, tag: github ? SALT_MASTER_ORCHESTRATION.githubRunnerEvent : null });
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
