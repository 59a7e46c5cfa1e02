import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { diffSecretSnapshots, formatLeafPath, readSecretHistory, secretSnapshot } from "../../tools/audit/secret-history";
import { runProcess } from "../../tools/audit/system";
import { makeProductionRepo, makeRepo, requireGit } from "./helpers";

describe("secure leaves of a stack file", () => {
  test.each<[string, Array<string | number>, string]>([
    ["ci-fleet:teleportGithubClientSecret", [], "ci-fleet:teleportGithubClientSecret"],
    ["ci-fleet:queueSecrets", ["default", "buildkite/agent-token"], 'ci-fleet:queueSecrets.default["buildkite/agent-token"]'],
    ["ci-fleet:keys", ["deploy", 0, "pem"], "ci-fleet:keys.deploy[0].pem"],
    ["ci-fleet:odd", ['say "hi"'], 'ci-fleet:odd["say \\"hi\\""]'],
  ])("%s %p", (top, segments, expected) => {
    expect(formatLeafPath(top, segments)).toBe(expected);
  });

  test("nested secure: leaves count one by one; plain values and look-alikes do not", () => {
    const snapshot = secretSnapshot(
      [
        "config:",
        "  ci-fleet:a:",
        "    secure: v1:AAAA:BBBB",
        "  ci-fleet:queueSecrets:",
        "    release:",
        "      global/env/NPM_TOKEN:",
        "        secure: v1:CCCC:DDDD",
        "      list:",
        "        - secure: v1:EEEE:FFFF",
        "  ci-fleet:plain: secure",
        "  ci-fleet:notALeaf:",
        "    secure: v1:GGGG",
        "    other: 1",
      ].join("\n"),
    );
    expect([...snapshot.leaves.keys()]).toEqual([
      "ci-fleet:a",
      'ci-fleet:queueSecrets.release["global/env/NPM_TOKEN"]',
      "ci-fleet:queueSecrets.release.list[0]",
    ]);
    for (const fp of snapshot.leaves.values()) expect(fp).toMatch(/^[0-9a-f]{64}$/);
  });

  test("invalid YAML throws without quoting the file", () => {
    expect(() => secretSnapshot("config:\n  k:\n    secure: v1:SECRETISH\n   bad: [")).toThrow(new Error("not valid YAML"));
  });

  test("ciphertext changes under a new secrets provider are re-encryptions, not rotations", () => {
    const before = secretSnapshot("encryptionsalt: v1:a\nconfig:\n  p:k:\n    secure: v1:one\n");
    const after = secretSnapshot("secretsprovider: awskms://alias/x\nencryptedkey: Zm9v\nconfig:\n  p:k:\n    secure: v1:two\n");
    const commit = { commit: "c", author: "A", authorEmail: "a@x", time: new Date(0), subject: "s" };
    expect(diffSecretSnapshots(before, after, commit).map((c) => c.change)).toEqual(["re-encrypted"]);
    expect(diffSecretSnapshots(before, secretSnapshot("encryptionsalt: v1:a\nconfig:\n  p:k:\n    secure: v1:two\n"), commit).map((c) => c.change)).toEqual(["rotated"]);
  });
});

describe("git history of the stack file (real git)", () => {
  beforeAll(requireGit);

  test("rotations, additions, removals and re-encryptions with author, date and commit; renames followed", async () => {
    const repo = makeProductionRepo();
    try {
      const history = await readSecretHistory(path.join(repo.dir, "Pulumi.production.yaml"), runProcess);
      expect(history.available).toBe(true);
      expect(history.notes).toEqual([]);
      const rows = history.changes.map((c) => [c.time.toISOString(), c.change, c.key, c.author, c.authorEmail, c.commit, c.subject]);
      const [initial, , , rotation, queue, kms, npm] = repo.commits;
      expect(rows).toEqual([
        ...["ci-fleet:githubAppPrivateKey", "ci-fleet:legacyRunnerToken", "ci-fleet:teleportGithubClientId", "ci-fleet:teleportGithubClientSecret"].map((k) => [
          "2025-01-05T09:00:00.000Z", "added", k, "Alice Ng", "alice@example.org", initial, "Initial production stack",
        ]),
        // The rename (commit 2) and the plain auditArchive change (commit 3) change no secret.
        ["2025-03-03T16:20:00.000Z", "rotated", "ci-fleet:teleportGithubClientSecret", "Dave Lee", "dave@example.org", rotation, "Rotate the Teleport GitHub client secret"],
        ["2025-03-09T17:45:00.000Z", "removed", "ci-fleet:legacyRunnerToken", "Bob Smith", "bob@example.org", queue, "Add the release queue"],
        ...['ci-fleet:queueSecrets.default["buildkite/agent-token"]', 'ci-fleet:queueSecrets.release["deploy/ssh/key"]', 'ci-fleet:queueSecrets.release["global/env/NPM_TOKEN"]'].map((k) => [
          "2025-03-09T17:45:00.000Z", "added", k, "Bob Smith", "bob@example.org", queue, "Add the release queue",
        ]),
        ...[
          "ci-fleet:githubAppPrivateKey",
          'ci-fleet:queueSecrets.default["buildkite/agent-token"]',
          'ci-fleet:queueSecrets.release["deploy/ssh/key"]',
          'ci-fleet:queueSecrets.release["global/env/NPM_TOKEN"]',
          "ci-fleet:teleportGithubClientId",
          "ci-fleet:teleportGithubClientSecret",
        ].map((k) => ["2025-03-11T12:00:00.000Z", "re-encrypted", k, "Alice Ng", "alice@example.org", kms, "Move stack secrets to AWS KMS"]),
        ["2025-03-12T08:00:00.000Z", "rotated", 'ci-fleet:queueSecrets.release["global/env/NPM_TOKEN"]', "Erin Park", "erin@example.org", npm, "Rotate the release NPM token"],
      ]);
    } finally {
      repo.cleanup();
    }
  });

  test("a commit with invalid YAML is skipped with a note that quotes nothing; a deleted file removes its secrets", async () => {
    const repo = makeRepo([
      { file: "Pulumi.dev.yaml", content: "config:\n  ci-fleet:k:\n    secure: v1:Zmlyc3Q=\n", author: "A", email: "a@example.org", date: "2025-01-01T00:00:00Z", subject: "one" },
      { file: "Pulumi.dev.yaml", content: "config:\n  ci-fleet:k:\n    secure: v1:UNTERMINATED\n  [oops\n", author: "B", email: "b@example.org", date: "2025-01-02T00:00:00Z", subject: "broken" },
      { file: "Pulumi.dev.yaml", content: null, author: "C", email: "c@example.org", date: "2025-01-03T00:00:00Z", subject: "drop the dev stack" },
    ]);
    try {
      const history = await readSecretHistory(path.join(repo.dir, "Pulumi.dev.yaml"), runProcess);
      expect(history.notes).toEqual([`commit ${repo.commits[1].slice(0, 7)}: Pulumi.dev.yaml is not valid YAML; skipped`]);
      expect(history.changes.map((c) => [c.change, c.key, c.author])).toEqual([
        ["added", "ci-fleet:k", "A"],
        ["removed", "ci-fleet:k", "C"],
      ]);
    } finally {
      repo.cleanup();
    }
  });

  test("outside a git repository the history is unavailable, with the reason", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-audit-nogit-"));
    try {
      const history = await readSecretHistory(path.join(dir, "Pulumi.production.yaml"), runProcess);
      expect(history).toEqual({ changes: [], notes: [`${dir} is not in a git repository: secret rotations not shown`], available: false });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a stack file git has never seen", async () => {
    const repo = makeRepo([{ file: "Pulumi.yaml", content: "name: ci-fleet\n", author: "A", email: "a@example.org", date: "2025-01-01T00:00:00Z", subject: "project" }]);
    try {
      const history = await readSecretHistory(path.join(repo.dir, "Pulumi.staging.yaml"), runProcess);
      expect(history).toEqual({ changes: [], notes: ["Pulumi.staging.yaml has no git history: secret rotations not shown"], available: false });
    } finally {
      repo.cleanup();
    }
  });
});
