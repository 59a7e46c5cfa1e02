import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { AuditResult } from "../../tools/audit/run";
import { HttpFetch, RunProcess } from "../../tools/audit/sources";
import {
  audit,
  CLI_FIXTURE,
  CLOUD_FIXTURE,
  cloudFixtureCiphertexts,
  GIT_CIPHERTEXTS,
  makeProductionRepo,
  runnerWith,
  StackRepo,
} from "./helpers";

// End to end through runAudit: recorded history + a real git repository of the stack file.

const CLI_FROM = path.relative(path.join(__dirname, "..", ".."), CLI_FIXTURE);
const CLOUD_FROM = path.relative(path.join(__dirname, "..", ".."), CLOUD_FIXTURE);
const TOKEN = "pul-0123456789abcdef0123456789abcdef01234567";
const PLANTED = "PLANTED-plaintext-client-secret-4f1e9b";

let repo: StackRepo;
const outputs: AuditResult[] = [];

beforeAll(() => {
  repo = makeProductionRepo();
});
afterAll(() => repo.cleanup());

async function run(argv: string[], overrides: Parameters<typeof audit>[1] = {}): Promise<AuditResult> {
  const result = await audit(argv, { cwd: repo.dir, ...overrides });
  outputs.push(result);
  return result;
}

function lines(text: string): string[] {
  return text.replace(/\n$/, "").split("\n");
}

const short = (i: number) => repo.commits[i].slice(0, 7);

function expectedCloudTimeline(): string[] {
  return [
    "Stack ci-fleet/production: 10 operations, newest first; times in UTC",
    `Source: ${CLOUD_FROM} (Pulumi Cloud API shape)`,
    "",
    "TIME                 VERSION  KIND     RESULT     BY            MESSAGE",
    "2025-03-11 09:00:00  v9       destroy  succeeded  cdiaz         Targeted destroy of the retired r2 runner",
    "    resources  4 deleted",
    "    run by     Pulumi user cdiaz (Carol Diaz); git author Carol Diaz <carol@example.org>; commit e5f6071 (main); repo example-org/ci-fleet on github.com; via cli",
    "2025-03-10 13:00:00  v8       update   succeeded  ci-fleet-bot  Add the release queue",
    "    resources  9 created, 1 updated, 1 deleted, 45 same",
    "    run by     Pulumi user ci-fleet-bot; git author Bob Smith <bob@example.org>; committer GitHub <noreply@github.com>; commit e5f6071 (main); repo example-org/ci-fleet on github.com; CI GitHub Actions build 912 push https://github.com/example-org/ci-fleet/actions/runs/7912; via cli",
    "    config     changed ci-fleet:queues; secret set ci-fleet:queueSecrets; secret removed ci-fleet:legacyRunnerToken",
    `    secrets    removed ci-fleet:legacyRunnerToken (commit ${short(4)} by Bob Smith)`,
    `    secrets    added ci-fleet:queueSecrets.default["buildkite/agent-token"], ci-fleet:queueSecrets.release["deploy/ssh/key"], ci-fleet:queueSecrets.release["global/env/NPM_TOKEN"] (commit ${short(4)} by Bob Smith)`,
    "2025-03-04 08:30:00  v7       update   succeeded  dlee          Rotate the Teleport GitHub client secret",
    "    resources  2 updated, 44 same",
    "    run by     Pulumi user dlee (Dave Lee); git author Dave Lee <dave@example.org>; commit d4e5f60 (main); repo example-org/ci-fleet on github.com; via auto.local (Pulumi Automation API)",
    "    config     secret set ci-fleet:teleportGithubClientSecret",
    `    secrets    rotated ci-fleet:teleportGithubClientSecret (commit ${short(3)} by Dave Lee)`,
    "2025-02-20 15:40:00  v6       import   succeeded  cdiaz         Import the existing audit archive bucket",
    "    resources  1 imported, 45 same",
    "    run by     Pulumi user cdiaz (Carol Diaz); git author Carol Diaz <carol@example.org>; commit c3d4e5f (main); repo example-org/ci-fleet on github.com; via cli",
    "    config     added ci-fleet:auditArchive",
    "2025-02-11 09:05:00  v5       update   succeeded  alice-ng      Retry: move the control plane to m6i.xlarge",
    "    resources  1 replaced, 44 same",
    "    run by     Pulumi user alice-ng (Alice Ng); git author Alice Ng <alice@example.org>; commit b2c3d4e (main); repo example-org/ci-fleet on github.com; via cli",
    "2025-02-10 11:30:00  v4       update   failed     alice-ng      Move the control plane to m6i.xlarge",
    "    resources  1 updated, 20 same",
    "    run by     Pulumi user alice-ng (Alice Ng); git author Alice Ng <alice@example.org>; commit a1b2c3d (main, uncommitted changes); repo example-org/ci-fleet on github.com; via cli",
    "    config     changed ci-fleet:plans",
    "2025-02-03 08:15:00  v3       refresh  succeeded  cdiaz",
    "    resources  1 updated, 44 same",
    "    run by     Pulumi user cdiaz (Carol Diaz); git author Carol Diaz <carol@example.org>; commit 9f8e7d6 (main); repo example-org/ci-fleet on github.com; via cli",
    "2025-01-21 14:02:10  v2       update   succeeded  ci-fleet-bot  Add runner r3 to the default queue (#58)",
    "    resources  3 created, 2 updated, 40 same",
    "    run by     Pulumi user ci-fleet-bot; git author Bob Smith <bob@example.org>; committer GitHub <noreply@github.com>; commit 9f8e7d6 (main); repo example-org/ci-fleet on github.com; CI GitHub Actions build 760 push https://github.com/example-org/ci-fleet/actions/runs/7760; via cli",
    "    config     changed ci-fleet:queues",
    "2025-01-20 09:00:00  -        preview  succeeded  ci-fleet-bot  Add runner r3 to the default queue (#58)",
    "    resources  3 created, 2 updated, 40 same",
    "    run by     Pulumi user ci-fleet-bot; git author Bob Smith <bob@example.org>; committer GitHub <noreply@github.com>; commit 8e7d6c5 (refs/pull/58/merge); repo example-org/ci-fleet on github.com; CI GitHub Actions build 731 pull_request PR #58 https://github.com/example-org/ci-fleet/actions/runs/7731; via cli",
    "    config     changed ci-fleet:queues",
    "2025-01-06 10:00:00  v1       update   succeeded  alice-ng      Bring up the production fleet",
    "    resources  42 created",
    "    run by     Pulumi user alice-ng (Alice Ng); git author Alice Ng <alice@example.org>; commit 4c1f0e2 (main); repo example-org/ci-fleet on github.com; via cli",
    "    config     first recorded config: 10 keys (4 secret)",
    `    secrets    added ci-fleet:githubAppPrivateKey, ci-fleet:legacyRunnerToken, ci-fleet:teleportGithubClientId, ci-fleet:teleportGithubClientSecret (commit ${short(0)} by Alice Ng)`,
    "",
    "Secret changes in the git history of Pulumi.production.yaml, newest first (key names only):",
    "TIME                 CHANGE        KEY                                                     BY                            COMMIT   APPLIED BY",
    `2025-03-12 08:00:00  rotated       ci-fleet:queueSecrets.release["global/env/NPM_TOKEN"]   Erin Park <erin@example.org>  ${short(6)}  no update since`,
    `2025-03-11 12:00:00  re-encrypted  all 6 secrets (secrets provider changed)                Alice Ng <alice@example.org>  ${short(5)}  no update since`,
    `2025-03-09 17:45:00  removed       ci-fleet:legacyRunnerToken                              Bob Smith <bob@example.org>   ${short(4)}  update v8 succeeded (by time)`,
    `2025-03-09 17:45:00  added         ci-fleet:queueSecrets.default["buildkite/agent-token"]  Bob Smith <bob@example.org>   ${short(4)}  update v8 succeeded (by time)`,
    `2025-03-09 17:45:00  added         ci-fleet:queueSecrets.release["deploy/ssh/key"]         Bob Smith <bob@example.org>   ${short(4)}  update v8 succeeded (by time)`,
    `2025-03-09 17:45:00  added         ci-fleet:queueSecrets.release["global/env/NPM_TOKEN"]   Bob Smith <bob@example.org>   ${short(4)}  update v8 succeeded (by time)`,
    `2025-03-03 16:20:00  rotated       ci-fleet:teleportGithubClientSecret                     Dave Lee <dave@example.org>   ${short(3)}  update v7 succeeded (by time)`,
    `2025-01-05 09:00:00  added         ci-fleet:githubAppPrivateKey                            Alice Ng <alice@example.org>  ${short(0)}  update v1 succeeded (by time)`,
    `2025-01-05 09:00:00  added         ci-fleet:legacyRunnerToken                              Alice Ng <alice@example.org>  ${short(0)}  update v1 succeeded (by time)`,
    `2025-01-05 09:00:00  added         ci-fleet:teleportGithubClientId                         Alice Ng <alice@example.org>  ${short(0)}  update v1 succeeded (by time)`,
    `2025-01-05 09:00:00  added         ci-fleet:teleportGithubClientSecret                     Alice Ng <alice@example.org>  ${short(0)}  update v1 succeeded (by time)`,
  ];
}

/** The operation rows (first line of each operation) of a human timeline. */
function rows(stdout: string): string[] {
  return lines(stdout).filter((l) => /^\d{4}-\d{2}-\d{2} /.test(l) && !/ (added|removed|rotated|re-encrypted) /.test(l));
}
function rowVersions(stdout: string): string[] {
  return rows(stdout).map((l) => l.split(/\s+/)[2]);
}
function secretRows(stdout: string): string[] {
  const all = lines(stdout);
  const start = all.findIndex((l) => l.startsWith("Secret changes in the git history"));
  return start < 0 ? [] : all.slice(start + 1).filter((l) => !l.startsWith("TIME "));
}

describe("human timeline", () => {
  test("Pulumi Cloud response: every operation, who, resources, config keys and secret changes", async () => {
    const r = await run(["--stack", "production", "--from", CLOUD_FROM]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(lines(r.stdout)).toEqual(expectedCloudTimeline());
  });

  test("pulumi stack history --json: same timeline, git identity instead of Pulumi user, secrets only by presence", async () => {
    const r = await run(["--stack", "production", "--from", CLI_FROM]);
    expect(r.code).toBe(0);
    const got = lines(r.stdout);
    expect(got[1]).toBe(`Source: ${CLI_FROM} (pulumi stack history --json shape)`);
    expect(rows(r.stdout)).toEqual([
      "2025-03-11 09:00:00  v9       destroy  succeeded  Carol Diaz  Targeted destroy of the retired r2 runner",
      "2025-03-10 13:00:00  v8       update   succeeded  Bob Smith   Add the release queue",
      "2025-03-04 08:30:00  v7       update   succeeded  Dave Lee    Rotate the Teleport GitHub client secret",
      "2025-02-20 15:40:00  v6       import   succeeded  Carol Diaz  Import the existing audit archive bucket",
      "2025-02-11 09:05:00  v5       update   succeeded  Alice Ng    Retry: move the control plane to m6i.xlarge",
      "2025-02-10 11:30:00  v4       update   failed     Alice Ng    Move the control plane to m6i.xlarge",
      "2025-02-03 08:15:00  v3       refresh  succeeded  Carol Diaz",
      "2025-01-21 14:02:10  v2       update   succeeded  Bob Smith   Add runner r3 to the default queue (#58)",
      "2025-01-20 09:00:00  -        preview  succeeded  Bob Smith   Add runner r3 to the default queue (#58)",
      "2025-01-06 10:00:00  v1       update   succeeded  Alice Ng    Bring up the production fleet",
    ]);
    // The CLI gives no value for a secret, so v7's rotation is seen only in git, not in config.
    const v7 = got.slice(got.findIndex((l) => l.includes(" v7 ")), got.findIndex((l) => l.includes(" v6 ")));
    expect(v7.slice(1)).toEqual([
      "    resources  2 updated, 44 same",
      "    run by     git author Dave Lee <dave@example.org>; commit d4e5f60 (main); repo example-org/ci-fleet on github.com; via auto.local (Pulumi Automation API)",
      `    secrets    rotated ci-fleet:teleportGithubClientSecret (commit ${short(3)} by Dave Lee)`,
    ]);
    expect(secretRows(r.stdout)).toEqual(expectedCloudTimeline().slice(-11));
  });

  test("two runs give identical output", async () => {
    const a = await run(["--stack", "production", "--from", CLOUD_FROM, "--json"]);
    const b = await run(["--stack", "production", "--from", CLOUD_FROM, "--json"]);
    expect(a.stdout).toBe(b.stdout);
  });
});

describe("filters", () => {
  test("--since DATE keeps operations and secret changes from that day on", async () => {
    const r = await run(["--stack", "production", "--from", CLOUD_FROM, "--since", "2025-03-04"]);
    expect(lines(r.stdout)[0]).toBe(
      "Stack ci-fleet/production: 3 of 10 operations (since 2025-03-04T00:00:00Z), newest first; times in UTC",
    );
    expect(rowVersions(r.stdout)).toEqual(["v9", "v8", "v7"]);
    expect(secretRows(r.stdout).map((l) => l.split(/\s{2,}/)[1])).toEqual(["rotated", "re-encrypted", "removed", "added", "added", "added"]);
  });

  test("--since 30d counts back from now", async () => {
    const r = await run(["--stack", "production", "--from", CLOUD_FROM, "--since", "30d"]);
    // now is 2025-03-15T12:00:00Z in the tests
    expect(lines(r.stdout)[0]).toContain("(since 2025-02-13T12:00:00Z)");
    expect(rowVersions(r.stdout)).toEqual(["v9", "v8", "v7", "v6"]);
  });

  test.each([
    ["bob", ["v8", "v2", "-"], ["Bob Smith"]],
    ["ALICE@EXAMPLE.ORG", ["v5", "v4", "v1"], ["Alice Ng"]],
    ["dlee", ["v7"], []],
    ["Carol", ["v9", "v6", "v3"], []],
  ])("--user %s matches Pulumi user, git author or email, any case", async (user, versions, secretAuthors) => {
    const r = await run(["--stack", "production", "--from", CLOUD_FROM, "--user", user]);
    expect(r.code).toBe(0);
    expect(rowVersions(r.stdout)).toEqual(versions);
    const authors = new Set(secretRows(r.stdout).filter((l) => l !== "none").map((l) => l.split(/\s{2,}/)[3].replace(/ <.*/, "")));
    if (secretAuthors.length === 0) expect(secretRows(r.stdout)).toEqual(["none"]);
    else expect([...authors]).toEqual(secretAuthors);
  });

  test("--kind as a comma list and repeated; secret changes only with --kind rotation", async () => {
    const a = await run(["--stack", "production", "--from", CLOUD_FROM, "--kind", "refresh,destroy", "--kind", "import"]);
    expect(rowVersions(a.stdout)).toEqual(["v9", "v6", "v3"]);
    expect(lines(a.stdout)).toContain("Secret changes: not selected (add --kind rotation).");
    const b = await run(["--stack", "production", "--from", CLOUD_FROM, "--kind=rotation", "--since=2025-03-10"]);
    expect(rows(b.stdout)).toEqual([]);
    expect(lines(b.stdout)).toContain("No operation matches the filters.");
    expect(secretRows(b.stdout)).toHaveLength(2);
  });

  test("filters combine", async () => {
    const r = await run(["--stack", "production", "--from", CLI_FROM, "--kind", "update", "--user", "alice", "--since", "2025-02-01"]);
    expect(rowVersions(r.stdout)).toEqual(["v5", "v4"]);
  });
});

describe("--json", () => {
  test("stable field order, config keys and secret changes by name", async () => {
    const r = await run(["--stack", "production", "--from", CLOUD_FROM, "--json"]);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(Object.keys(doc)).toEqual(["project", "stack", "source", "filters", "totalOperations", "operations", "secretChanges", "notes"]);
    expect(doc.operations.map((o: { version: number | null }) => o.version)).toEqual([9, 8, 7, 6, 5, 4, 3, 2, null, 1]);
    for (const op of doc.operations) {
      expect(Object.keys(op)).toEqual([
        "version", "updateId", "kind", "result", "startTime", "endTime", "message", "runBy", "resourceChanges", "config", "secretChanges",
      ]);
    }
    const v7 = doc.operations[2];
    expect(v7).toMatchObject({
      kind: "update",
      result: "succeeded",
      startTime: "2025-03-04T08:30:00Z",
      endTime: "2025-03-04T08:33:12Z",
      runBy: { pulumiUser: "dlee", pulumiUserName: "Dave Lee", gitAuthor: "Dave Lee", execKind: "auto.local", execAgent: "Pulumi Automation API" },
      resourceChanges: { created: 0, updated: 2, deleted: 0, same: 44, replaced: 0, imported: 0, other: {} },
      config: { baselineVersion: 6, initial: false, changes: [{ key: "ci-fleet:teleportGithubClientSecret", change: "set", secret: true }] },
      secretChanges: [{ key: "ci-fleet:teleportGithubClientSecret", change: "rotated", commit: repo.commits[3] }],
    });
    expect(doc.operations[3].config.changes).toEqual([{ key: "ci-fleet:auditArchive", change: "added", secret: false }]);
    expect(doc.secretChanges.find((c: { change: string; commit: string }) => c.change === "rotated" && c.commit === repo.commits[3])).toEqual({
      time: "2025-03-03T16:20:00Z",
      key: "ci-fleet:teleportGithubClientSecret",
      change: "rotated",
      commit: repo.commits[3],
      author: "Dave Lee",
      authorEmail: "dave@example.org",
      subject: "Rotate the Teleport GitHub client secret",
      appliedBy: { version: 7, result: "succeeded", startTime: "2025-03-04T08:30:00Z", matchedBy: "time" },
    });
    // Per key in JSON, even where the human view collapses a re-encryption.
    expect(doc.secretChanges.filter((c: { change: string }) => c.change === "re-encrypted")).toHaveLength(6);
  });

  test("without git history the secret changes are null and a note says why", async () => {
    const r = await run(["--stack", "production", "--from", CLOUD_FROM, "--json", "--no-git"]);
    const doc = JSON.parse(r.stdout);
    expect(doc.secretChanges).toBeNull();
    expect(doc.notes).toEqual(["--no-git: secret rotations not read"]);
  });
});

function cloudServer(options: { maxPageSize: number; status?: number; requests?: Array<{ url: string; headers: Record<string, string> }> }): HttpFetch {
  const all = JSON.parse(fs.readFileSync(CLOUD_FIXTURE, "utf8"));
  return async (url, init) => {
    options.requests?.push({ url, headers: init.headers });
    const u = new URL(url);
    if (options.status) return { status: options.status, text: async () => '{"code":401,"message":"Unauthorized: No credentials provided or are invalid."}' };
    if (u.pathname !== "/api/stacks/example-org/ci-fleet/production/updates") return { status: 404, text: async () => '{"code":404,"message":"Not Found"}' };
    const pageSize = Math.min(Number(u.searchParams.get("pageSize")), options.maxPageSize);
    const page = Number(u.searchParams.get("page"));
    const updates = all.updates.slice((page - 1) * pageSize, page * pageSize);
    return { status: 200, text: async () => JSON.stringify({ updates, itemsPerPage: pageSize, total: all.updates.length }) };
  };
}

describe("sources", () => {
  const cloudEnv = { PULUMI_ACCESS_TOKEN: TOKEN, PULUMI_ORG: "example-org" };

  test("Pulumi Cloud: every page, token in the header only, same timeline as the saved response", async () => {
    const requests: Array<{ url: string; headers: Record<string, string> }> = [];
    const r = await run(["--stack", "production"], { env: cloudEnv, fetch: cloudServer({ maxPageSize: 4, requests }) });
    expect(r.code).toBe(0);
    expect(requests.map((q) => q.url)).toEqual([1, 2, 3].map(
      (page) => `https://api.pulumi.com/api/stacks/example-org/ci-fleet/production/updates?output-type=service&pageSize=100&page=${page}`,
    ));
    expect(requests[0].headers).toEqual({ Authorization: `token ${TOKEN}`, Accept: "application/vnd.pulumi+8" });
    const expected = expectedCloudTimeline();
    expected[1] = "Source: Pulumi Cloud https://api.pulumi.com, org example-org";
    expect(lines(r.stdout)).toEqual(expected);
  });

  test("PULUMI_BACKEND_URL and --org/--project are honoured", async () => {
    const requests: Array<{ url: string; headers: Record<string, string> }> = [];
    await run(["--stack", "production", "--org", "other-org", "--project", "fleet2"], {
      env: { ...cloudEnv, PULUMI_BACKEND_URL: "https://pulumi.example.org/" },
      fetch: cloudServer({ maxPageSize: 100, requests }),
    });
    expect(requests[0].url).toBe("https://pulumi.example.org/api/stacks/other-org/fleet2/production/updates?output-type=service&pageSize=100&page=1");
  });

  function fakePulumi(calls: string[][], behaviour: (args: string[]) => { code: number; stdout: string; stderr: string }): RunProcess {
    return runnerWith(async (file, args) => {
      expect(file).toBe("pulumi");
      calls.push(args);
      return behaviour(args);
    });
  }
  const cliJson = fs.readFileSync(CLI_FIXTURE, "utf8");

  test("pulumi CLI on PATH: stack history --json without secrets, paged", async () => {
    const calls: string[][] = [];
    const r = await run(["--stack", "production"], {
      findOnPath: (name) => (name === "pulumi" ? "/usr/local/bin/pulumi" : undefined),
      runProcess: fakePulumi(calls, () => ({ code: 0, stdout: cliJson, stderr: "" })),
    });
    expect(r.code).toBe(0);
    expect(calls).toEqual([["stack", "history", "--json", "--show-secrets=false", "-s", "production", "--page-size", "100", "--page", "1"]]);
    expect(lines(r.stdout)[1]).toBe("Source: pulumi stack history");
    expect(rowVersions(r.stdout)).toEqual(["v9", "v8", "v7", "v6", "v5", "v4", "v3", "v2", "-", "v1"]);
  });

  test("a CLI without --page-size is asked once without paging", async () => {
    const calls: string[][] = [];
    const r = await run(["--stack", "production", "--source", "cli"], {
      runProcess: fakePulumi(calls, (args) =>
        args.includes("--page-size")
          ? { code: 255, stdout: "", stderr: "error: unknown flag: --page-size\n" }
          : { code: 0, stdout: cliJson, stderr: "" },
      ),
    });
    expect(r.code).toBe(0);
    expect(calls[1]).toEqual(["stack", "history", "--json", "--show-secrets=false", "-s", "production"]);
  });

  test("choice order: --from beats --source and a token; a token beats the CLI; --source cli beats a token", async () => {
    const noCli: RunProcess = runnerWith();
    const fromWins = await run(["--stack", "production", "--from", CLI_FROM, "--source", "cloud"], { env: cloudEnv, runProcess: noCli });
    expect(lines(fromWins.stdout)[1]).toBe(`Source: ${CLI_FROM} (pulumi stack history --json shape)`);
    const tokenWins = await run(["--stack", "production"], {
      env: cloudEnv,
      fetch: cloudServer({ maxPageSize: 100 }),
      findOnPath: () => "/usr/local/bin/pulumi",
      runProcess: noCli,
    });
    expect(lines(tokenWins.stdout)[1]).toBe("Source: Pulumi Cloud https://api.pulumi.com, org example-org");
    const calls: string[][] = [];
    const cliForced = await run(["--stack", "production", "--source", "cli"], {
      env: cloudEnv,
      runProcess: fakePulumi(calls, () => ({ code: 0, stdout: cliJson, stderr: "" })),
    });
    expect(lines(cliForced.stdout)[1]).toBe("Source: pulumi stack history");
  });
});

describe("errors: one line on stderr, exit 2", () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-audit-bad-"));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  function saved(name: string, content: unknown): string {
    const file = path.join(tmp, name);
    fs.writeFileSync(file, typeof content === "string" ? content : JSON.stringify(content));
    return file;
  }
  const cli = JSON.parse(fs.readFileSync(CLI_FIXTURE, "utf8"));
  const cloudEnv = { PULUMI_ACCESS_TOKEN: TOKEN, PULUMI_ORG: "example-org" };
  const refused: HttpFetch = async () => {
    throw Object.assign(new TypeError("fetch failed"), { cause: { code: "ECONNREFUSED" } });
  };

  const cases: Array<[string, string[], Parameters<typeof audit>[1], string]> = [
    ["empty history (file)", ["--from", saved("empty.json", [])], {}, "stack ci-fleet/production has no recorded operations (source: " + path.join(tmp, "empty.json") + " (pulumi stack history --json shape))"],
    ["empty history (cloud)", [], { env: cloudEnv, fetch: async () => ({ status: 200, text: async () => '{"updates":[],"itemsPerPage":100,"total":0}' }) }, "stack ci-fleet/production has no recorded operations (source: Pulumi Cloud https://api.pulumi.com, org example-org)"],
    ["unreachable backend", [], { env: cloudEnv, fetch: refused }, "cannot reach the Pulumi backend at https://api.pulumi.com: ECONNREFUSED"],
    ["HTTP 401", [], { env: cloudEnv, fetch: cloudServer({ maxPageSize: 100, status: 401 }) }, "the Pulumi backend at https://api.pulumi.com refused the access token (HTTP 401): check PULUMI_ACCESS_TOKEN"],
    ["HTTP 404", ["--org", "nobody"], { env: cloudEnv, fetch: cloudServer({ maxPageSize: 100 }) }, "stack nobody/ci-fleet/production not found at https://api.pulumi.com (HTTP 404): check --org, --project and --stack"],
    ["HTTP 500", [], { env: cloudEnv, fetch: async () => ({ status: 502, text: async () => "<html>" }) }, "the Pulumi backend at https://api.pulumi.com answered HTTP 502 for page 1 of the update history"],
    ["malformed: startTime", ["--from", saved("bad-time.json", cli.map((u: object, i: number) => (i === 3 ? { ...u, startTime: "last Tuesday" } : u)))], {}, `malformed history in ${path.join(tmp, "bad-time.json")}: [3].startTime is not a time (RFC 3339 or unix seconds): "last Tuesday"`],
    ["malformed: kind", ["--from", saved("no-kind.json", { updates: [{ info: { startTime: 1741683600 }, version: 1 }] })], {}, `malformed history in ${path.join(tmp, "no-kind.json")}: updates[0].info.kind is missing`],
    ["malformed: resourceChanges", ["--from", saved("bad-rc.json", [{ ...cli[0], resourceChanges: { create: "two" } }])], {}, `malformed history in ${path.join(tmp, "bad-rc.json")}: [0].resourceChanges.create must be a non-negative integer, got "two"`],
    ["malformed: config entry", ["--from", saved("bad-config.json", [{ ...cli[0], config: { "ci-fleet:x": "plain" } }])], {}, `malformed history in ${path.join(tmp, "bad-config.json")}: [0].config["ci-fleet:x"] must be an object like {value, secret}`],
    ["malformed: not JSON", ["--from", saved("not-json.json", "[{\"kind\": ")], {}, `malformed history in ${path.join(tmp, "not-json.json")}: not valid JSON`],
    ["malformed: other shape", ["--from", saved("shape.json", { stacks: [] })], {}, `malformed history in ${path.join(tmp, "shape.json")}: the document is neither \`pulumi stack history --json\` output (an array) nor a Pulumi Cloud response (an object with \`updates\`)`],
    ["missing file", ["--from", "no/such/file.json"], {}, "cannot read no/such/file.json: ENOENT"],
    ["unknown flag", ["--verbose"], {}, "unknown flag --verbose (see --help)"],
    ["unknown flag with value", ["--stak=production"], {}, "unknown flag --stak (see --help)"],
    ["flag without value", ["--since"], {}, "--since needs a value"],
    ["bad --since", ["--since", "last week"], {}, '--since "last week" is not a date (2025-03-01, RFC 3339) or an age (30d, 12h, 2w)'],
    ["bad --kind", ["--kind", "deploy"], {}, '--kind "deploy" is not one of update, preview, refresh, destroy, import, rename, rotation'],
    ["bad --source", ["--source", "s3"], {}, '--source must be cli or cloud, not "s3"'],
    ["no source", [], {}, "no history source: pass --from FILE (saved JSON), set PULUMI_ACCESS_TOKEN and --org for Pulumi Cloud, or put the pulumi CLI on PATH"],
    ["cloud without org", ["--source", "cloud"], { env: { PULUMI_ACCESS_TOKEN: TOKEN } }, "the cloud source needs --org ORG or PULUMI_ORG (`pulumi whoami` is not available offline)"],
    ["cloud without token", ["--source", "cloud", "--org", "example-org"], {}, "the cloud source needs PULUMI_ACCESS_TOKEN"],
    ["self-managed backend", ["--source", "cloud"], { env: { ...cloudEnv, PULUMI_BACKEND_URL: "s3://ci-fleet-state?region=us-east-1&awssdk=v2" } }, "PULUMI_BACKEND_URL is a self-managed backend (s3://ci-fleet-state), which has no REST API: use --source cli or --from FILE"],
    ["CLI missing", ["--source", "cli"], { runProcess: runnerWith(async () => { throw Object.assign(new Error("spawn pulumi ENOENT"), { code: "ENOENT" }); }) }, "the pulumi CLI is not on PATH"],
    ["CLI fails", ["--source", "cli"], { runProcess: runnerWith(async () => ({ code: 255, stdout: "", stderr: "warning: A new version of Pulumi is available.\nerror: no stack named 'production' found\n" })) }, "pulumi stack history -s production failed: error: no stack named 'production' found"],
  ];

  test.each(cases)("%s", async (_name, argv, overrides, message) => {
    const r = await run(["--stack", "production", ...argv], overrides);
    expect(r).toEqual({ code: 2, stdout: "", stderr: `audit: error: ${message}\n` });
  });

  test("--stack is required", async () => {
    const r = await run(["--from", CLOUD_FROM]);
    expect(r).toEqual({ code: 2, stdout: "", stderr: "audit: error: --stack NAME is required (see --help)\n" });
  });
});

test("--help prints the usage and exits 0", async () => {
  const r = await run(["--help"]);
  expect(r.code).toBe(0);
  expect(lines(r.stdout)[0]).toBe("Usage: npm run audit -- --stack NAME [options]");
});

test("terminal escape sequences recorded in a message or name are not passed to the terminal", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-audit-escape-"));
  try {
    const history = JSON.parse(fs.readFileSync(CLI_FIXTURE, "utf8"));
    history[0].message = "\u001b]0;owned\u0007\u001b[2JTeardown";
    history[0].environment["git.author"] = "Eve\u001b[31m";
    const file = path.join(dir, "history.json");
    fs.writeFileSync(file, JSON.stringify(history));
    const r = await run(["--stack", "production", "--from", file, "--no-git"]);
    expect(r.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f]/);
    expect(rows(r.stdout)[0]).toBe("2025-03-11 09:00:00  v9       destroy  succeeded  Eve\ufffd[31m    \ufffd]0;owned\ufffd\ufffd[2JTeardown");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

describe("secrets", () => {
  test("a secret value in a saved history (an export made with --show-secrets) is never printed", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-audit-planted-"));
    try {
      const history = JSON.parse(fs.readFileSync(CLI_FIXTURE, "utf8"));
      history[2].config["ci-fleet:teleportGithubClientSecret"].value = PLANTED;
      history[3].config["ci-fleet:teleportGithubClientSecret"].value = `${PLANTED}-old`;
      const file = path.join(dir, "history.json");
      fs.writeFileSync(file, JSON.stringify(history));
      const human = await run(["--stack", "production", "--from", file]);
      const json = await run(["--stack", "production", "--from", file, "--json"]);
      // The change is still detected, by fingerprint.
      expect(lines(human.stdout)).toContain("    config     secret set ci-fleet:teleportGithubClientSecret");
      expect(JSON.parse(json.stdout).operations[2].config.changes).toEqual([{ key: "ci-fleet:teleportGithubClientSecret", change: "set", secret: true }]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("no ciphertext, planted value or token appears in any output of this suite", () => {
    const forbidden = [...GIT_CIPHERTEXTS, ...cloudFixtureCiphertexts(), PLANTED, TOKEN];
    expect(GIT_CIPHERTEXTS.length).toBeGreaterThanOrEqual(15);
    expect(cloudFixtureCiphertexts().length).toBeGreaterThanOrEqual(5);
    expect(outputs.length).toBeGreaterThan(40);
    const all = outputs.map((o) => o.stdout + o.stderr).join("\n");
    for (const secret of forbidden) expect(all).not.toContain(secret);
    expect(all).not.toMatch(/secure:|v1:[A-Za-z0-9+/=]{8}/);
  });
});
