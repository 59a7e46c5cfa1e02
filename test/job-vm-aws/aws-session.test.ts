/**
 * Issue 15.4: the queue role's session reaches each job VM (docs/job-vm.md "The AWS session").
 *  - test_aws_session.py (python3 unittest, root): the real launcher's config check, seed and
 *    QEMU ports, its frame sending and change detection on a socketpair, the order in one_job
 *    (session before the job input); the real guest agent's frame reader and writer into a
 *    temporary root; both ends together.
 *  - the seam, computed from both sides of the rendered Salt tree (production and
 *    production-aws): every vm runner's /etc/ci-fleet/job-vm.json hands its VMs the very file
 *    its ci-fleet-aws-session.service writes (`--output`), in the pillar's region.
 * (The real-VM check, a session frame before the job and another after a change: test/job-vm.)
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

describe.each(["production", "production-aws"])("the seam on %s: the session the host keeps is the one its VMs get", (stack) => {
  let r: StackRender;
  beforeAll(async () => {
    r = await renderStack(stack);
  }, 240_000);

  test("every vm runner's job-vm.json names the session file its ci-fleet-aws-session.service writes, and the pillar's region", () => {
    const vmRunners = Object.keys(r.documents)
      .filter((id) => (r.documents[id].ci_fleet.runner as RunnerDoc | undefined)?.isolation === "vm")
      .sort();
    expect(vmRunners.length).toBeGreaterThan(0);
    for (const id of vmRunners) {
      const files = r.minions[id].files;
      expect({ id, config: JOB_VM.config in files, unit: SESSION_UNIT in files }).toEqual({ id, config: true, unit: true });
      const cfg = JSON.parse(files[JOB_VM.config]) as { aws?: { sessionFile: string; region: string } };
      const execStart = /^ExecStart=(.*)$/m.exec(files[SESSION_UNIT])?.[1] ?? "";
      const output = /(?:^|\s)--output\s+(\S+)/.exec(execStart)?.[1];
      expect(output).toMatch(/^\//);
      expect({ id, aws: cfg.aws }).toEqual({ id, aws: { sessionFile: output, region: r.documents[id].ci_fleet.aws.region } });
      expect(cfg.aws!.region).toMatch(/^[a-z]{2}(-[a-z]+)+-\d+$/);
    }
  });

  test("no aws key where no session is written (host runners have no job-vm.json; machines without the unit none)", () => {
    for (const [id, m] of Object.entries(r.minions)) {
      if (!(JOB_VM.config in m.files)) continue;
      const cfg = JSON.parse(m.files[JOB_VM.config]) as { aws?: unknown };
      expect({ id, aws: "aws" in cfg }).toEqual({ id, aws: SESSION_UNIT in m.files });
    }
  });
});
