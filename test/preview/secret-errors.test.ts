import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";
import { overlayFile, ROOT, stackConfig } from "../support/preview";
import { opensshPrivateKey } from "../config/secret-fixtures";

/**
 * `npm start -- --config FILE` with malformed secret values (secret keys in an overlay are
 * still secret): exit 1, one clear error listing every problem with its config path, no
 * stack trace, no object dump, and never the value.
 */

const run = promisify(execFile);
const cli = (args: string[]) =>
  run("node", ["-r", "ts-node/register/transpile-only", "tools/preview/main.ts", ...args], { cwd: ROOT, env: { ...process.env, TS_NODE_TRANSPILE_ONLY: "1" } }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
const out = () => fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-out-"));
const saltMaster = (repository: string) => ({ ...(stackConfig("production")["ci-fleet:saltMaster"] as object), repository });

const BAD_DEPLOY_KEY = "not-an-openssh-key-SECRET-MARKER-1f2e3d";
const BAD_APP_KEY = "-----BEGIN RSA PRIVATE KEY-----\nSECRETMARKERappkey0123456789\n-----END RSA PRIVATE KEY-----\n";

const CASES: [string, Record<string, unknown>, string[], string[]][] = [
  [
    "a deploy key that is not an OpenSSH key, with an ssh repository",
    { "ci-fleet:saltMaster": saltMaster("git@github.com:example-metal/ci-fleet.git"), "ci-fleet:saltRepositoryDeployKey": BAD_DEPLOY_KEY },
    ["ci-fleet:saltRepositoryDeployKey: expected an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----, as ssh-keygen writes it)"],
    [BAD_DEPLOY_KEY],
  ],
  [
    "a well-formed deploy key while the repository is https",
    { "ci-fleet:saltRepositoryDeployKey": opensshPrivateKey("https") },
    ["ci-fleet:saltRepositoryDeployKey: is set, but saltMaster.repository is an https URL, which never uses it: remove it (pulumi config rm ci-fleet:saltRepositoryDeployKey) or use the repository's ssh URL"],
    [],
  ],
  [
    "a GitHub App key that is not an RSA key, and a malformed deploy key with an https URL",
    { "ci-fleet:githubAppPrivateKey": BAD_APP_KEY, "ci-fleet:saltRepositoryDeployKey": BAD_DEPLOY_KEY },
    [
      "ci-fleet:saltRepositoryDeployKey: is set, but saltMaster.repository is an https URL, which never uses it: remove it (pulumi config rm ci-fleet:saltRepositoryDeployKey) or use the repository's ssh URL",
      "ci-fleet:githubAppPrivateKey: expected the GitHub App's private key as GitHub issues it (-----BEGIN RSA PRIVATE KEY-----, unencrypted), but it does not parse as one",
      "ci-fleet:saltRepositoryDeployKey: expected an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----, as ssh-keygen writes it)",
    ],
    ["SECRETMARKERappkey0123456789", BAD_DEPLOY_KEY],
  ],
];

describe("npm start with malformed secret values", () => {
  test.each(CASES)("%s: exit 1, one error listing every problem", async (_what, overlay, expected, secrets) => {
    const r = await cli(["--stack", "production", "--config", overlayFile(overlay), "--out", out()]);
    expect(r.code).toBe(1);
    const problems = r.stderr.split("\n").filter((l) => l.startsWith("  - ")).map((l) => l.slice(4));
    expect(problems).toEqual(expected);
    expect(r.stderr.split("\n")[0]).toBe(`ci-fleet: invalid stack configuration (${expected.length} problem${expected.length === 1 ? "" : "s"}):`);
    expect(r.stderr.trim().split("\n")).toHaveLength(expected.length + 1);
    expect(r.stderr).not.toMatch(/\n\s+at |\[Circular|Promise \{|problems: \[/);
    for (const s of [...secrets, "SECRET-MARKER", "SECRETMARKER"]) {
      expect(r.stderr).not.toContain(s);
      expect(r.stdout).not.toContain(s);
    }
    expect(r.stdout).toBe("");
  });
});

test("an ssh repository whose deploy key is unset previews, listing the key as missing", async () => {
  const dir = out();
  const r = await cli(["--stack", "production", "--config", overlayFile({ "ci-fleet:saltMaster": saltMaster("git@github.com:example-metal/ci-fleet.git") }), "--out", dir]);
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  const report = fs.readFileSync(path.join(dir, "production", "report.md"), "utf8");
  expect(report).toContain("ci-fleet:saltRepositoryDeployKey");
});
