// The slot's outbox keeps no uncollected outcome or handoff log past an hour (test_outbox.py,
// python3 unittest: the real launcher imported as a module, no VM).
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";

const PYTHON = "/usr/bin/python3";

describe("test/job-vm/test_outbox.py", () => {
  test("passes", () => {
    if (!fs.existsSync(PYTHON)) throw new Error(`${PYTHON} not found: apt-get install python3`);
    const run = spawnSync(PYTHON, [path.join(__dirname, "test_outbox.py")], { encoding: "utf8", timeout: 60_000 });
    if (run.error) throw new Error(`cannot run ${PYTHON}: ${run.error.message}`);
    expect(run.stderr).toMatch(/Ran 4 tests/);
    expect([run.status, run.stderr.split("\n").filter((l) => /FAIL|ERROR|Error/.test(l))]).toEqual([0, []]);
  });
});
