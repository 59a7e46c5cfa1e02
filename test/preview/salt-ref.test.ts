import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { buildPreview, printedSummary } from "../../tools/preview/main";
import { overlayFile, pillarDocuments, previewStack, ROOT, stackConfig } from "../support/preview";

/**
 * The Salt tree the master serves is pinned to an exact commit: the rendered repository state
 * (salt/salt_master/repository.sls, real Jinja2 through test/salt/render.py, with the pillar
 * documents the program writes) checks out that commit, detached, on both stacks; a branch is
 * followed only with saltMaster.followBranch, which the report and `npm start` flag.
 */

const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");

interface RenderedState {
  sls: string;
  function: string;
  args: Record<string, unknown>;
}

type Rendered = { states: Record<string, RenderedState>; problems: string[]; fixtureProblems: string[] };
const rendered = new Map<string, Promise<Rendered>>();

/** The master's rendered states for a stack (and an optional overlay), keyed by state id; rendered once per input. */
function masterStates(stack: string, overlay?: Record<string, unknown>): Promise<Rendered> {
  const key = JSON.stringify([stack, overlay ?? null]);
  if (!rendered.has(key)) rendered.set(key, renderMaster(stack, overlay));
  return rendered.get(key)!;
}

async function renderMaster(stack: string, overlay?: Record<string, unknown>): Promise<Rendered> {
  const run = await previewStack(stack, overlay);
  const documents: Record<string, unknown> = pillarDocuments(run);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-salt-ref-"));
  const file = path.join(dir, "documents.json");
  fs.writeFileSync(file, JSON.stringify(documents), { mode: 0o600 });
  try {
    const proc = spawnSync(python, [path.join(ROOT, "test/salt/render.py"), "--salt-root", path.join(ROOT, "salt"), "--contracts", path.join(ROOT, "docs/contracts.md"), "--documents", file], {
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    });
    if (proc.error) throw new Error(`cannot run ${python}: ${proc.error.message}`);
    const result = JSON.parse(proc.stdout) as { fatal?: string; fixture_problems: string[]; minions: Record<string, { problems: string[]; states: Record<string, RenderedState> }> };
    if (result.fatal) throw new Error(result.fatal);
    const master = result.minions[`${stack}-salt-master`];
    return { states: master.states, problems: master.problems, fixtureProblems: result.fixture_problems };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const repositoryStates = (states: Record<string, RenderedState>) => Object.fromEntries(Object.entries(states).filter(([, st]) => st.sls === "salt_master.repository"));
const requires = (st: RenderedState) => ((st.args.require as Record<string, string>[] | undefined) ?? []).map((r) => Object.entries(r).map(([k, v]) => `${k}: ${v}`)[0]);
const GUARD = "salt_master-repository-rev-unambiguous-cmd-run";
const CHECKOUT = "salt_master-repository-checkout-git-latest";

describe.each(["production", "production-aws"])("stack %s: the master checks out the pinned commit", (stack) => {
  const ref = (stackConfig(stack)["ci-fleet:saltMaster"] as { ref: string }).ref;

  test("git.latest takes the 40-hex commit as rev, without branch or depth, after the guard", async () => {
    expect(ref).toMatch(/^[0-9a-f]{40}$/);
    const { states, problems } = await masterStates(stack);
    expect(problems.filter((p) => p.includes("salt_master"))).toEqual([]);
    const repo = repositoryStates(states);
    const checkout = repo[CHECKOUT];
    expect(checkout.function).toBe("git.latest");
    // salt/states/git.py latest(): a hex rev that names no remote branch or tag is a SHA1;
    // `branch` unset keeps HEAD detached at it; `depth` fails unless rev is a branch.
    expect(checkout.args).toMatchObject({ name: "https://github.com/example-metal/ci-fleet.git", target: "/srv/ci-fleet/repo", rev: ref, fetch_tags: true, force_reset: true, force_fetch: true, user: "root" });
    expect(checkout.args).not.toHaveProperty("branch");
    expect(checkout.args).not.toHaveProperty("depth");
    expect(checkout.args).not.toHaveProperty("identity");
    // A remote branch or tag named like the commit would win over the commit: refused first.
    const guard = repo[GUARD];
    expect(guard.function).toBe("cmd.run");
    expect(requires(checkout)).toContain(`cmd: ${GUARD}`);
    expect(guard.args.env).toEqual([{ CI_FLEET_SALT_REPOSITORY: "https://github.com/example-metal/ci-fleet.git" }, { CI_FLEET_SALT_REV: ref }]);
    expect(Object.values(repo).map((st) => st.function)).not.toContain("test.fail_without_changes");
  }, 60_000);
});

describe("the followBranch opt-in", () => {
  const base = stackConfig("production")["ci-fleet:saltMaster"] as Record<string, unknown>;
  const optIn = { "ci-fleet:saltMaster": { ...base, ref: "main", followBranch: true } };

  test("renders the branch: rev and branch both, no guard; the pillar key is in the contract", async () => {
    const { states, problems, fixtureProblems } = await masterStates("production", optIn);
    expect(problems.filter((p) => p.includes("salt_master"))).toEqual([]);
    // The pillar key the opt-in adds is declared in docs/contracts.md.
    expect(fixtureProblems.filter((p) => p.includes("salt_repository_branch"))).toEqual([]);
    const repo = repositoryStates(states);
    expect(repo[CHECKOUT].args).toMatchObject({ rev: "main", branch: "main", force_reset: true });
    expect(repo).not.toHaveProperty(GUARD);
    expect(requires(repo[CHECKOUT])).not.toContain(`cmd: ${GUARD}`);
  }, 60_000);

  test("report.md and `npm start` flag it; a pinned stack says which commit it serves", async () => {
    const flagged = await buildPreview(ROOT, "production", overlayFile(optIn));
    const warning = 'WARNING: the Salt tree follows branch "main" (saltMaster.followBranch: true): any commit pushed to it runs as root on every machine within minutes.';
    expect(flagged.files["report.md"].split("\n").slice(0, 8).join("\n")).toContain(`> **${warning}`);
    expect(printedSummary(flagged, "out/production").split("\n")[1]).toContain(warning);

    const pinned = await buildPreview(ROOT, "production");
    expect(pinned.files["report.md"]).not.toContain("WARNING: the Salt tree follows");
    expect(pinned.files["report.md"]).toContain(`The Salt master serves commit \`${(base as { ref: string }).ref}\``);
    expect(printedSummary(pinned, "out/production")).not.toContain("WARNING");

    // Lines printed after the summary (the pinned-tree line) are scanned too: a secret in one
    // is masked and fails the leak check.
    const secret = [...pinned.run.secretValues].find((v) => v.length >= 16)!;
    const printed = printedSummary(pinned, "out/production", [`  pinned Salt tree: ${secret}`]);
    expect(printed).not.toContain(secret);
    expect(pinned.checks.find((k) => k.name === "no secret value in any written file")).toMatchObject({ ok: false, detail: expect.stringContaining("the printed summary") });
  }, 120_000);
});

describe("the guard runs real git: a remote ref named like the pinned commit is refused", () => {
  const git = (cwd: string, ...args: string[]) => {
    const r = spawnSync("git", args, { cwd, encoding: "utf8", env: { ...process.env, GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1", GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@example.org", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@example.org" } });
    if (r.status !== 0) throw new Error(`git ${args.join(" ")}: ${r.stderr}`);
    return r.stdout.trim();
  };

  test("the rendered onlyif, with the rendered env, against a repository with and without such a ref", async () => {
    const { states } = await masterStates("production");
    const guard = repositoryStates(states)[GUARD];
    const onlyif = String(guard.args.onlyif);
    const name = String(guard.args.name);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-guard-"));
    try {
      const work = path.join(dir, "work");
      fs.mkdirSync(work);
      git(work, "init", "-q", "-b", "main");
      fs.writeFileSync(path.join(work, "f"), "1\n");
      git(work, "add", "f");
      git(work, "commit", "-q", "-m", "one");
      const pinned = git(work, "rev-parse", "HEAD");
      fs.writeFileSync(path.join(work, "f"), "2\n");
      git(work, "commit", "-q", "-am", "two");
      const remote = path.join(dir, "remote.git");
      git(dir, "clone", "-q", "--bare", work, remote);
      // Salt runs onlyif with the state's env (salt/states/cmd.py run(): cmd_kwargs["env"]).
      const env = { ...process.env, GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1", CI_FLEET_SALT_REPOSITORY: remote, CI_FLEET_SALT_REV: pinned };
      const sh = (cmd: string) => spawnSync("/bin/sh", ["-c", cmd], { env, encoding: "utf8" });
      // No ref of that name: onlyif is false, the guard does not run, git.latest goes ahead.
      expect(sh(onlyif).status).toBe(2);
      // A branch named like the commit, pointing elsewhere: onlyif is true and the guard fails.
      git(remote, "update-ref", `refs/heads/${pinned}`, "main");
      expect(sh(onlyif).status).toBe(0);
      const failed = sh(name);
      expect(failed.status).toBe(1);
      expect(failed.stderr).toContain("named like the pinned commit");
      git(remote, "update-ref", "-d", `refs/heads/${pinned}`);
      expect(sh(onlyif).status).toBe(2);
      // A tag named like it: refused too.
      git(remote, "tag", pinned, "main");
      expect(sh(onlyif).status).toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
