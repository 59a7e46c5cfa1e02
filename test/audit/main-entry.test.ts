import { spawn } from "child_process";
import * as fs from "fs";
import * as http from "http";
import { AddressInfo } from "net";
import * as path from "path";
import { runAudit } from "../../tools/audit/run";
import { findOnPath, httpFetch, runProcess } from "../../tools/audit/system";
import { CLOUD_FIXTURE } from "./helpers";

// The real entry (the `npm run audit` command line), real fetch and real processes.

const ROOT = path.join(__dirname, "..", "..");
const TOKEN = "pul-fedcba9876543210fedcba9876543210fedcba98";

function runMain(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const { PULUMI_ACCESS_TOKEN: _t, PULUMI_BACKEND_URL: _b, PULUMI_ORG: _o, ...base } = process.env;
    const child = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", "tools/audit/main.ts", ...args], {
      cwd: ROOT,
      // An empty PATH: no pulumi CLI can be picked up from this machine.
      env: { ...base, PATH: "", INIT_CWD: ROOT, ...env },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

let server: http.Server;
let base: string;
const seen: Array<{ url: string; authorization?: string; accept?: string }> = [];

beforeAll(async () => {
  const body = fs.readFileSync(CLOUD_FIXTURE, "utf8");
  server = http.createServer((req, res) => {
    seen.push({ url: req.url ?? "", authorization: req.headers.authorization, accept: req.headers.accept });
    if (req.headers.authorization !== `token ${TOKEN}`) {
      res.writeHead(401).end('{"code":401,"message":"Unauthorized"}');
    } else if (req.url?.startsWith("/api/stacks/example-org/ci-fleet/production/updates?")) {
      res.writeHead(200, { "content-type": "application/json" }).end(body);
    } else {
      res.writeHead(404).end('{"code":404,"message":"Not Found"}');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

test("the cloud source over real HTTP prints the timeline and exits 0", async () => {
  const r = await runMain(["--stack", "production", "--no-git", "--kind", "update", "--since", "2025-03-01"], {
    PULUMI_ACCESS_TOKEN: TOKEN,
    PULUMI_ORG: "example-org",
    PULUMI_BACKEND_URL: base,
  });
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  expect(r.stdout.split("\n").slice(0, 5)).toEqual([
    "Stack ci-fleet/production: 2 of 10 operations (since 2025-03-01T00:00:00Z, kind update), newest first; times in UTC",
    `Source: Pulumi Cloud ${base}, org example-org`,
    "",
    "TIME                 VERSION  KIND    RESULT     BY            MESSAGE",
    "2025-03-10 13:00:00  v8       update  succeeded  ci-fleet-bot  Add the release queue",
  ]);
  expect(seen[seen.length - 1]).toEqual({
    url: "/api/stacks/example-org/ci-fleet/production/updates?output-type=service&pageSize=100&page=1",
    authorization: `token ${TOKEN}`,
    accept: "application/vnd.pulumi+8",
  });
  expect(r.stdout).not.toContain(TOKEN);
});

test("an unknown flag: one line on stderr, no stack trace, exit 2", async () => {
  const r = await runMain(["--stack", "production", "--verbose"], {});
  expect(r).toEqual({ code: 2, stdout: "", stderr: "audit: error: unknown flag --verbose (see --help)\n" });
});

describe("real fetch, in process", () => {
  const run = (env: Record<string, string>) =>
    runAudit(["--stack", "production", "--no-git"], {
      env,
      cwd: ROOT,
      invocationDir: ROOT,
      now: () => new Date("2025-03-15T12:00:00Z"),
      fetch: httpFetch,
      runProcess,
      findOnPath: () => undefined,
      readFile: (p) => fs.readFileSync(p, "utf8"),
    });

  test("a rejected token", async () => {
    const r = await run({ PULUMI_ACCESS_TOKEN: "pul-wrong", PULUMI_ORG: "example-org", PULUMI_BACKEND_URL: base });
    expect(r).toEqual({ code: 2, stdout: "", stderr: `audit: error: the Pulumi backend at ${base} refused the access token (HTTP 401): check PULUMI_ACCESS_TOKEN\n` });
  });

  test("an unreachable backend", async () => {
    // A port that was just free: nothing listens there.
    const probe = http.createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const closed = `http://127.0.0.1:${(probe.address() as AddressInfo).port}`;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const r = await run({ PULUMI_ACCESS_TOKEN: TOKEN, PULUMI_ORG: "example-org", PULUMI_BACKEND_URL: closed });
    expect(r).toEqual({ code: 2, stdout: "", stderr: `audit: error: cannot reach the Pulumi backend at ${closed}: ECONNREFUSED\n` });
  });
});

test("findOnPath finds executables only", () => {
  expect(findOnPath("git", "/nonexistent:/usr/bin")).toBe("/usr/bin/git");
  expect(findOnPath("git", "/nonexistent")).toBeUndefined();
  expect(findOnPath("passwd", "/etc")).toBeUndefined();
});
