/**
 * Issue 15, Buildkite jobs in VMs (1): the job's log reaches Buildkite, and a cancelled job stops
 * its VM (docs/job-vm.md "The job log", "Cancelling a job").
 *  - test_job_vm_logs.py (python3 unittest, root): the real launcher and guest agent on
 *    socketpairs with a fake QEMU and the real `ci-job-slot handoff` as a child process: the
 *    guest's output reaches the handoff's stdout in order, the 64 MiB cap, SIGTERM to the
 *    handoff -> cancel request -> the VM ended -> exit 143, bounded report bookkeeping, an input
 *    withdrawn after the slot opened it.
 *  - the seam: production's rendered ci-job-handoff (a Buildkite vm runner of the release queue)
 *    passes SIGTERM on to its `ci-job-slot handoff` child and exits with its code. sudo forwards
 *    the agent's cancel signal to ci-job-handoff only (the agent's user cannot signal root).
 * Root and python3 are required: the tests fail without them, never skip.
 */
import { spawn, spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as YAML from "yaml";
import { renderStack, StackRender } from "../support/salt-render";

const ROOT = path.resolve(__dirname, "../..");
const PYTHON = "/usr/bin/python3";
const JOB_VM = YAML.parse(fs.readFileSync(path.join(ROOT, "salt/runner/parameters/defaults.yaml"), "utf8")).runner.job_vm;

function requireTools() {
  if (!fs.existsSync(PYTHON)) throw new Error(`${PYTHON} not found: apt-get install python3`);
  if (process.getuid?.() !== 0) throw new Error("these tests must run as root (ci-job-slot handoff and the rendered handoff refuse anything else)");
}

describe("test/job-vm-logs/test_job_vm_logs.py", () => {
  test("passes", () => {
    requireTools();
    const run = spawnSync(PYTHON, [path.join(__dirname, "test_job_vm_logs.py")], { encoding: "utf8", timeout: 180_000 });
    if (run.error) throw new Error(`cannot run ${PYTHON}: ${run.error.message}`);
    expect(run.stderr).toMatch(/Ran \d+ tests/);
    expect([run.status, run.stderr.split("\n").filter((l) => /FAIL|ERROR/.test(l))]).toEqual([0, []]);
  }, 200_000);
});

describe("the seam: production's rendered ci-job-handoff passes the agent's cancel signal on", () => {
  let r: StackRender;
  let dir: string;
  beforeAll(async () => {
    requireTools();
    r = await renderStack("production");
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "cjs-logs-"));
  }, 240_000);
  afterAll(() => dir && fs.rmSync(dir, { recursive: true, force: true }));

  test("SIGTERM to ci-job-handoff reaches its `ci-job-slot handoff` child, whose exit code and output it passes on", async () => {
    type RunnerDoc = { queue?: string; agent?: string; isolation?: string };
    const ids = Object.keys(r.documents)
      .filter((id) => {
        const d = r.documents[id].ci_fleet.runner as RunnerDoc | undefined;
        return d?.agent === "buildkite" && d?.isolation === "vm" && d?.queue === "release";
      })
      .sort();
    expect(ids.length).toBeGreaterThan(0);
    const id = ids.find((i) => i.endsWith("release-1")) ?? ids[0];
    const rendered = r.minions[id].files[JOB_VM.handoff];
    expect(rendered).toBeDefined();

    // A fake `ci-job-slot`: says it started, prints a line (the job log's path), and on SIGTERM
    // records it and exits 143 as the real handoff does after a cancel.
    const started = path.join(dir, "started");
    const got = path.join(dir, "got-signal");
    const fake = path.join(dir, "fake-ci-job-slot");
    fs.writeFileSync(
      fake,
      [
        `#!${PYTHON}`,
        "import signal, sys, time",
        `def on_term(signum, _f):`,
        `    open(${JSON.stringify(got)}, "w").write(signal.Signals(signum).name)`,
        "    sys.exit(143)",
        "signal.signal(signal.SIGTERM, on_term)",
        "sys.stdin.buffer.read()",
        'sys.stdout.write("log line from the VM\\n"); sys.stdout.flush()',
        `open(${JSON.stringify(started)}, "w").close()`,
        "time.sleep(30)",
        "sys.exit(0)",
      ].join("\n") + "\n",
      { mode: 0o700 },
    );
    let script = rendered;
    for (const [from, to] of [
      [`"${JOB_VM.launcher}"`, JSON.stringify(fake)],
      [`LOCKS = "${JOB_VM.run_dir}-handoff"`, `LOCKS = ${JSON.stringify(path.join(dir, "locks"))}`],
    ]) {
      expect({ from, count: script.split(from).length - 1 }).toEqual({ from, count: 1 });
      script = script.replace(from, to);
    }
    // If the handoff checks the job's env file owner (the agent's user), the test's file is root's.
    script = script.replace(/^AGENT_USER = ".*"$/m, 'AGENT_USER = "root"');
    const handoff = path.join(dir, "ci-job-handoff");
    fs.writeFileSync(handoff, script, { mode: 0o700 });
    const envFile = path.join(dir, "job-env.json");
    fs.writeFileSync(envFile, JSON.stringify({ BUILDKITE_JOB_ID: "0190f1b2-1111-4222-8333-444455556666", BUILDKITE_COMMAND: "make test" }), { mode: 0o600 });
    const env: NodeJS.ProcessEnv = {
      PATH: "/usr/bin:/bin", CI: "true", BUILDKITE: "true",
      BUILDKITE_JOB_ID: "0190f1b2-1111-4222-8333-444455556666",
      BUILDKITE_AGENT_ACCESS_TOKEN: `bkaj_${crypto.randomBytes(12).toString("hex")}`,
      BUILDKITE_ENV_JSON_FILE: envFile,
    };

    const child = spawn(PYTHON, [handoff], { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
    const deadline = Date.now() + 20_000;
    while (!fs.existsSync(started) && Date.now() < deadline && child.exitCode === null) await new Promise((res) => setTimeout(res, 20));
    expect({ started: fs.existsSync(started), stderr }).toEqual({ started: true, stderr: "" });
    // What sudo does with the agent's cancel (exec_nopty.c signal_cb_nopty): kill(cmnd_pid, SIGTERM), to the handoff only.
    process.kill(child.pid!, "SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    const end = await exited;
    clearTimeout(timer);
    expect({ end, stderr }).toEqual({ end: { code: 143, signal: null }, stderr: "" });
    expect(fs.existsSync(got) ? fs.readFileSync(got, "utf8") : "no signal reached the child").toBe("SIGTERM");
    expect(stdout).toBe("log line from the VM\n");
  }, 60_000);
});
