import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { pinnedTreeLine, pinnedTreeStatus } from "../../tools/preview/pinned-tree";

// The master clones the pinned commit and its first boot runs scripts from it: a checkout
// whose salt/ or cloud-init/ differs from that commit previews a fleet `pulumi up` would not give.
describe("the pinned Salt tree against this checkout", () => {
  let repo: string;
  const git = (...args: string[]) => {
    const run = spawnSync("git", ["-C", repo, ...args], { encoding: "utf8" });
    if (run.error) throw new Error(`git is needed (Debian package git): ${run.error.message}`);
    expect({ args, status: run.status, stderr: run.stderr }).toMatchObject({ status: 0 });
    return run.stdout.trim();
  };
  beforeEach(() => {
    repo = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-pinned-"));
    git("init", "-q");
    git("config", "user.email", "t@example.org");
    git("config", "user.name", "t");
    fs.mkdirSync(path.join(repo, "salt"));
    fs.mkdirSync(path.join(repo, "cloud-init"));
    fs.writeFileSync(path.join(repo, "salt", "top.sls"), "base: {}\n");
    fs.writeFileSync(path.join(repo, "cloud-init", "pins.yaml"), "salt: {}\n");
    git("add", "-A");
    git("commit", "-qm", "tree");
  });
  afterEach(() => fs.rmSync(repo, { recursive: true, force: true }));

  test("the pinned commit with this checkout's tree: same; a later commit that only re-pins: still same", () => {
    const pinned = git("rev-parse", "HEAD");
    fs.writeFileSync(path.join(repo, "Pulumi.production.yaml"), `ref: ${pinned}\n`);
    git("add", "-A");
    git("commit", "-qm", "pin");
    expect(pinnedTreeStatus(repo, pinned, false)).toEqual({ kind: "same", ref: pinned });
  });

  test("a changed, a new or an uncommitted file under salt/ or cloud-init/: differs, named", () => {
    const pinned = git("rev-parse", "HEAD");
    fs.writeFileSync(path.join(repo, "salt", "top.sls"), "base: {'*': [x]}\n");
    fs.writeFileSync(path.join(repo, "cloud-init", "new.sh"), "#!/bin/sh\n");
    const status = pinnedTreeStatus(repo, pinned, false);
    expect(status).toEqual({ kind: "differs", ref: pinned, files: ["cloud-init/new.sh", "salt/top.sls"] });
    expect(pinnedTreeLine(status)).toMatch(/^WARNING: .* differs from this checkout in 2 file\(s\) \(cloud-init\/new\.sh, salt\/top\.sls\)/);
  });

  test("a commit not in the clone, and a followed branch, are said as such", () => {
    const missing = "0123456789abcdef0123456789abcdef01234567";
    expect(pinnedTreeStatus(repo, missing, false)).toEqual({ kind: "not-in-clone", ref: missing });
    expect(pinnedTreeLine(pinnedTreeStatus(repo, missing, false))).toMatch(/^WARNING: .* not in this clone/);
    expect(pinnedTreeStatus(repo, "main", true)).toEqual({ kind: "branch", ref: "main" });
  });
});
