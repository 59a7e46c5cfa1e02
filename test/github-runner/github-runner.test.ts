/**
 * The GitHub Actions runner formula (salt/github_runner): its rendered states
 * (test_states.py, real Jinja2 through test/salt/render.py) and the root-run updater that
 * keeps the runner within GitHub's window, run for real against a local fake of GitHub
 * (test_updater.py). Both are python3 unittest files; this runs them.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";

const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");

describe.each(["test_states.py", "test_updater.py"])("test/github-runner/%s", (file) => {
  test("passes", () => {
    const run = spawnSync(python, [path.join(__dirname, file)], { encoding: "utf8", timeout: 240_000 });
    if (run.error) throw new Error(`cannot run ${python}: ${run.error.message}`);
    expect(run.stderr).toMatch(/Ran \d+ tests/);
    expect([run.status, run.stderr.split("\n").filter((l) => /FAIL|ERROR/.test(l))]).toEqual([0, []]);
  });
});
