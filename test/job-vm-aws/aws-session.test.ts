/**
 * Issue 15.4: the queue role's session reaches each job VM (docs/job-vm.md "The AWS session").
 *  - test_aws_session.py (python3 unittest, root): the real launcher's config check, seed and
 *    QEMU ports, its per-VM minting (cadence, backoff, nothing after destroy, events) on an
 *    injected clock with a fake minting command, the order in one_job (no input before the
 *    VM's first session); the helper's --stdout mode; the real guest agent's frame reader and writer into a
 *    temporary root; both ends together.
 *  - the seam, computed from both sides of the rendered Salt tree (production and
 *    production-aws): every vm runner's /etc/ci-fleet/job-vm.json aws.command is the command its
 *    ci-fleet-aws-session.service runs, without the timer's file; the real launcher turns it into
 *    the per-VM command (--stdout, --duration 900, on aws the minion, slot and VM as session name).
 * (The real-VM check, the VM's own session before the job and a refresh during it: test/job-vm.)
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import * as YAML from "yaml";
import { renderStack, StackRender } from "../support/salt-render";

const ROOT = path.resolve(__dirname, "../..");
const PYTHON = "/usr/bin/python3";
const JOB_VM = YAML.parse(fs.readFileSync(path.join(ROOT, "salt/runner/parameters/defaults.yaml"), "utf8")).runner.job_vm;
const SESSION_UNIT = "/etc/systemd/system/ci-fleet-aws-session.service";

describe("test/job-vm-aws/test_aws_session.py", () => {
  test("passes", () => {
    if (!fs.existsSync(PYTHON)) throw new Error(`${PYTHON} not found: apt-get install python3`);
    if (process.getuid?.() !== 0) throw new Error("test_aws_session.py must run as root (the guest's writer chowns)");
    const run = spawnSync(PYTHON, [path.join(__dirname, "test_aws_session.py")], { encoding: "utf8", timeout: 120_000 });
    if (run.error) throw new Error(`cannot run ${PYTHON}: ${run.error.message}`);
    expect(run.stderr).toMatch(/Ran \d+ tests/);
    expect([run.status, run.stderr.split("\n").filter((l) => /FAIL|ERROR/.test(l))]).toEqual([0, []]);
  });
});

type RunnerDoc = { isolation?: string };
type AwsCfg = { region: string; command: string[]; refreshSeconds?: number };
const LAUNCHER = path.join(ROOT, "salt/runner/files/ci-job-slot");
const TIMER_FILE_OPTIONS = ["--output", "--group", "--alarm-dir"];

/** The real launcher's per-VM command (aws_mint_argv) for slot `n`, VM `seq` of a rendered config. */
function mintArgv(configText: string, n: number, seq: number): string[] {
  const run = spawnSync(PYTHON, ["-c", [
    "import json, sys, tempfile",
    `sys.path.insert(0, ${JSON.stringify(path.join(ROOT, "test/support"))})`,
    "from load_script import load",
    `m = load("ci_job_slot_seam", ${JSON.stringify(LAUNCHER)})`,
    "f = tempfile.NamedTemporaryFile('w', suffix='.json'); f.write(sys.stdin.read()); f.flush()",
    "cfg = m.load_config(f.name)",
    `print(json.dumps(m.aws_mint_argv(cfg, m.Slot(cfg, ${n}), ${seq})))`,
  ].join("\n")], { input: configText, encoding: "utf8" });
  if (run.status !== 0) throw new Error(`the launcher refuses the rendered config: ${run.stderr}`);
  return JSON.parse(run.stdout) as string[];
}

/** Where the real launcher raises its per-slot alarm for a rendered config (aws.alarmDir or its default). */
function launcherAlarmDir(configText: string): string {
  const run = spawnSync(PYTHON, ["-c", [
    "import sys, tempfile",
    `sys.path.insert(0, ${JSON.stringify(path.join(ROOT, "test/support"))})`,
    "from load_script import load",
    `m = load("ci_job_slot_seam", ${JSON.stringify(LAUNCHER)})`,
    "f = tempfile.NamedTemporaryFile('w', suffix='.json'); f.write(sys.stdin.read()); f.flush()",
    "cfg = m.load_config(f.name)",
    "print(cfg['aws'].get('alarmDir', m.AWS_ALARM_DIR))",
  ].join("\n")], { input: configText, encoding: "utf8" });
  if (run.status !== 0) throw new Error(`the launcher refuses the rendered config: ${run.stderr}`);
  return run.stdout.trim();
}

/** The timer's argv without the options only the timer has (its file, the file's group, its alarm). */
function withoutFileOptions(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (TIMER_FILE_OPTIONS.includes(argv[i])) i++;
    else out.push(argv[i]);
  }
  return out;
}

describe.each(["production", "production-aws"])("the seam on %s: each VM's session is minted for it by the timer's own command, never the host's file", (stack) => {
  let r: StackRender;
  beforeAll(async () => {
    r = await renderStack(stack);
  }, 240_000);

  test("every vm runner's job-vm.json aws.command is its ci-fleet-aws-session.service's ExecStart without the timer's file; the launcher adds --stdout, 900 s and the VM's name", () => {
    const vmRunners = Object.keys(r.documents)
      .filter((id) => (r.documents[id].ci_fleet.runner as RunnerDoc | undefined)?.isolation === "vm")
      .sort();
    expect(vmRunners.length).toBeGreaterThan(0);
    for (const id of vmRunners) {
      const files = r.minions[id].files;
      expect({ id, config: JOB_VM.config in files, unit: SESSION_UNIT in files }).toEqual({ id, config: true, unit: true });
      const cfg = JSON.parse(files[JOB_VM.config]) as { aws?: AwsCfg };
      const execStart = (/^ExecStart=(.*)$/m.exec(files[SESSION_UNIT])?.[1] ?? "").split(/\s+/);
      const output = execStart[execStart.indexOf("--output") + 1];
      expect(output).toMatch(/^\//);
      expect({ id, region: cfg.aws?.region, command: cfg.aws?.command }).toEqual({ id, region: r.documents[id].ci_fleet.aws.region, command: withoutFileOptions(execStart) });
      // The host's session file is nowhere in the launcher's config: a VM never gets it.
      expect({ id, mentionsHostFile: files[JOB_VM.config].includes(output) }).toEqual({ id, mentionsHostFile: false });
      // Issue 15 review (2): a slot whose VMs cannot get a session raises the fleet's alarm in
      // the directory the host's timer writes aws-session.alarm to.
      expect({ id, alarmDir: launcherAlarmDir(files[JOB_VM.config]) }).toEqual({ id, alarmDir: execStart[execStart.indexOf("--alarm-dir") + 1] });
      const argv = mintArgv(files[JOB_VM.config], 2, 17);
      expect(argv.slice(-3)).toEqual(["--stdout", "--duration", "900"]);
      expect(argv.filter((a) => TIMER_FILE_OPTIONS.includes(a))).toEqual([]);
      const name = argv.includes("--session-name") ? argv[argv.indexOf("--session-name") + 1] : undefined;
      if (stack === "production-aws") {
        // CloudTrail shows the minion, slot and VM (RoleSessionName: 2-64 of [\w+=,.@-]).
        expect(name).toBe(`${id}.s2.v17`);
        expect(name).toMatch(/^[\w+=,.@-]{2,64}$/);
        expect(execStart[execStart.indexOf("--session-name") + 1]).toBe(id);
      } else {
        expect({ id, name }).toEqual({ id, name: undefined });
        expect(argv).toContain("roles-anywhere");
      }
    }
  });

  test("no aws key where no session is minted (host runners have no job-vm.json; machines without the unit none)", () => {
    for (const [id, m] of Object.entries(r.minions)) {
      if (!(JOB_VM.config in m.files)) continue;
      const cfg = JSON.parse(m.files[JOB_VM.config]) as { aws?: unknown };
      expect({ id, aws: "aws" in cfg }).toEqual({ id, aws: SESSION_UNIT in m.files });
    }
  });
});
