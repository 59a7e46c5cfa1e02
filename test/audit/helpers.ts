import { execFileSync, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { AuditDeps, runAudit, AuditResult } from "../../tools/audit/run";
import { HttpFetch, RunProcess } from "../../tools/audit/sources";
import { runProcess as realRunProcess } from "../../tools/audit/system";

export const FIXTURES = path.join(__dirname, "fixtures");
export const CLI_FIXTURE = path.join(FIXTURES, "cli-history.json");
export const CLOUD_FIXTURE = path.join(FIXTURES, "cloud-updates.json");

/** A missing Debian tool fails the test and names the package. */
export function requireGit(): void {
  const probe = spawnSync("git", ["--version"], { encoding: "utf8" });
  if (probe.error || probe.status !== 0) {
    throw new Error("git is not installed: the audit tests need the Debian package `git` (apt-get install git)");
  }
}

/** Every secure: ciphertext written into the test repository, to prove none is ever printed. */
export const GIT_CIPHERTEXTS: string[] = [];

function ciphertext(tag: string): string {
  // Shaped like the passphrase provider's output: v1:<nonce>:<sealed box>.
  const text = `v1:${Buffer.from(`nonce-${tag}`).toString("base64")}:${Buffer.from(`sealed-${tag}-0123456789abcdef`).toString("base64")}`;
  GIT_CIPHERTEXTS.push(text);
  return text;
}

interface CommitSpec {
  file: string;
  /** Rename the stack file from this name in the same commit. */
  renameFrom?: string;
  content: string | null;
  author: string;
  email: string;
  date: string;
  subject: string;
}

export interface StackRepo {
  dir: string;
  /** Full hashes, in commit order. */
  commits: string[];
  cleanup(): void;
}

function git(dir: string, args: string[], env: Record<string, string> = {}): string {
  return execFileSync("git", ["-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", ...args], {
    cwd: dir,
    encoding: "utf8",
    env: { ...process.env, GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1", ...env },
  });
}

export function makeRepo(commits: CommitSpec[]): StackRepo {
  requireGit();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-audit-"));
  git(dir, ["init", "-q"]);
  const hashes: string[] = [];
  for (const c of commits) {
    if (c.renameFrom) git(dir, ["mv", c.renameFrom, c.file]);
    if (c.content === null) git(dir, ["rm", "-q", c.file]);
    else {
      fs.writeFileSync(path.join(dir, c.file), c.content);
      git(dir, ["add", c.file]);
    }
    git(dir, ["commit", "-q", "-m", c.subject], {
      GIT_AUTHOR_NAME: c.author,
      GIT_AUTHOR_EMAIL: c.email,
      GIT_AUTHOR_DATE: c.date,
      GIT_COMMITTER_NAME: c.author,
      GIT_COMMITTER_EMAIL: c.email,
      GIT_COMMITTER_DATE: c.date,
    });
    hashes.push(git(dir, ["rev-parse", "HEAD"]).trim());
  }
  return { dir, commits: hashes, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

const PLAIN = `  aws:region: us-east-1
  ci-fleet:provider: aws
  ci-fleet:plans:
    control:
      aws: c5.xlarge
    runner:
      aws: c5.metal
`;

function stackFile(header: string, secrets: Record<string, string>, extra = "", nested = ""): string {
  const lines = Object.entries(secrets).map(([k, v]) => `  ${k}:\n    secure: ${v}\n`).join("");
  return `${header}config:\n${PLAIN}${extra}${lines}${nested}`;
}

const PASSPHRASE = "encryptionsalt: v1:c2FsdHNhbHQ=:v1:bm9uY2U=:Y2hlY2s=\n";
const KMS =
  "secretsprovider: awskms://alias/ci-fleet-secrets?region=us-east-1\n" +
  "encryptedkey: AQICAHh0ZXN0LWRhdGEta2V5LWVuY3J5cHRlZC1ieS1rbXM=\n";

/**
 * The production stack file's history: created as Pulumi.prod.yaml and renamed with the
 * stack, a rotation, nested queue secrets added and a plain-text one removed, a move to
 * AWS KMS (every ciphertext re-encrypted), and a rotation of one nested leaf.
 */
export function makeProductionRepo(): StackRepo {
  const id = ciphertext("client-id-1");
  const secret1 = ciphertext("client-secret-1");
  const secret2 = ciphertext("client-secret-2");
  const appKey = ciphertext("app-key-1");
  const legacy = ciphertext("legacy-1");
  const agent = ciphertext("agent-token-1");
  const npm1 = ciphertext("npm-1");
  const sshKey = ciphertext("ssh-key-1");
  const audit = "  ci-fleet:auditArchive:\n    enabled: true\n";
  const nested = (agentCt: string, npmCt: string, sshCt: string) =>
    `  ci-fleet:queueSecrets:\n    default:\n      buildkite/agent-token:\n        secure: ${agentCt}\n` +
    `    release:\n      global/env/NPM_TOKEN:\n        secure: ${npmCt}\n      deploy/ssh/key:\n        secure: ${sshCt}\n`;
  const v1 = { "ci-fleet:githubAppPrivateKey": appKey, "ci-fleet:legacyRunnerToken": legacy, "ci-fleet:teleportGithubClientId": id, "ci-fleet:teleportGithubClientSecret": secret1 };
  const v2 = { ...v1, "ci-fleet:teleportGithubClientSecret": secret2 };
  const { ["ci-fleet:legacyRunnerToken"]: _legacy, ...v3 } = v2;
  const kms = {
    "ci-fleet:githubAppPrivateKey": ciphertext("app-key-kms"),
    "ci-fleet:teleportGithubClientId": ciphertext("client-id-kms"),
    "ci-fleet:teleportGithubClientSecret": ciphertext("client-secret-kms"),
  };
  const kmsNested = [ciphertext("agent-token-kms"), ciphertext("npm-kms"), ciphertext("ssh-key-kms")] as const;
  const npm2 = ciphertext("npm-2");
  return makeRepo([
    { file: "Pulumi.prod.yaml", content: stackFile(PASSPHRASE, v1), author: "Alice Ng", email: "alice@example.org", date: "2025-01-05T09:00:00Z", subject: "Initial production stack" },
    { file: "Pulumi.production.yaml", renameFrom: "Pulumi.prod.yaml", content: stackFile(PASSPHRASE, v1), author: "Alice Ng", email: "alice@example.org", date: "2025-01-06T09:30:00Z", subject: "Rename stack prod to production" },
    { file: "Pulumi.production.yaml", content: stackFile(PASSPHRASE, v1, audit), author: "Carol Diaz", email: "carol@example.org", date: "2025-02-20T10:00:00Z", subject: "Archive audit events" },
    { file: "Pulumi.production.yaml", content: stackFile(PASSPHRASE, v2, audit), author: "Dave Lee", email: "dave@example.org", date: "2025-03-03T16:20:00Z", subject: "Rotate the Teleport GitHub client secret" },
    { file: "Pulumi.production.yaml", content: stackFile(PASSPHRASE, v3, audit, nested(agent, npm1, sshKey)), author: "Bob Smith", email: "bob@example.org", date: "2025-03-09T17:45:00Z", subject: "Add the release queue" },
    { file: "Pulumi.production.yaml", content: stackFile(KMS, kms, audit, nested(...kmsNested)), author: "Alice Ng", email: "alice@example.org", date: "2025-03-11T12:00:00Z", subject: "Move stack secrets to AWS KMS" },
    { file: "Pulumi.production.yaml", content: stackFile(KMS, kms, audit, nested(kmsNested[0], npm2, kmsNested[2])), author: "Erin Park", email: "erin@example.org", date: "2025-03-12T08:00:00Z", subject: "Rotate the release NPM token" },
  ]);
}

/** Secret config values and ciphertexts in the recorded Pulumi Cloud fixture. */
export function cloudFixtureCiphertexts(): string[] {
  const doc = JSON.parse(fs.readFileSync(CLOUD_FIXTURE, "utf8"));
  const out = new Set<string>();
  for (const u of doc.updates) {
    for (const v of Object.values(u.info.config) as Array<{ string: string; secret: boolean }>) if (v.secret) out.add(v.string);
  }
  return [...out];
}

export const NO_FETCH: HttpFetch = async (url) => {
  throw new Error(`unexpected network request to ${url}`);
};

/** Runs git for real; any other program is a test failure unless a fake is given. */
export function runnerWith(fake?: RunProcess): RunProcess {
  return async (file, args, options) => {
    if (file === "git") return realRunProcess(file, args, options);
    if (fake) return fake(file, args, options);
    throw new Error(`unexpected process ${file} ${args.join(" ")}`);
  };
}

export function deps(overrides: Partial<AuditDeps> = {}): AuditDeps {
  return {
    env: {},
    cwd: os.tmpdir(),
    invocationDir: path.join(__dirname, "..", ".."),
    now: () => new Date("2025-03-15T12:00:00Z"),
    fetch: NO_FETCH,
    runProcess: runnerWith(),
    findOnPath: () => undefined,
    readFile: (p) => fs.readFileSync(p, "utf8"),
    ...overrides,
  };
}

export function audit(argv: string[], overrides: Partial<AuditDeps> = {}): Promise<AuditResult> {
  return runAudit(argv, deps(overrides));
}
