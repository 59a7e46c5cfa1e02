import * as fs from "fs";
import { inspect } from "util";
import { AuditError } from "../../tools/audit/model";
import { parseCliHistory, parseCloudPage, parseSavedHistory, parseTime } from "../../tools/audit/parse-history";
import { CLI_FIXTURE, CLOUD_FIXTURE, cloudFixtureCiphertexts } from "./helpers";

const cli = JSON.parse(fs.readFileSync(CLI_FIXTURE, "utf8"));
const cloud = JSON.parse(fs.readFileSync(CLOUD_FIXTURE, "utf8"));

describe("parseTime", () => {
  test.each([
    ["2025-03-04T08:30:00Z", "2025-03-04T08:30:00.000Z"],
    ["2025-03-04T09:30:00+01:00", "2025-03-04T08:30:00.000Z"],
    ["2025-03-04T08:30:00.123456789Z", "2025-03-04T08:30:00.123Z"],
    // Go's time.Time.String(), printed by older CLIs
    ["2025-03-04 08:30:00 +0000 UTC", "2025-03-04T08:30:00.000Z"],
    ["2025-03-04 10:30:00 +0200 EET", "2025-03-04T08:30:00.000Z"],
    [1741077000, "2025-03-04T08:30:00.000Z"],
    ["1741077000", "2025-03-04T08:30:00.000Z"],
  ])("%p", (input, iso) => {
    expect(parseTime(input)?.toISOString()).toBe(iso);
  });

  test.each([["yesterday"], [""], [0], [-5], [null], [{}], ["2025-03-04"], ["2025-13-45T99:00:00Z"]])("rejects %p", (input) => {
    expect(parseTime(input)).toBeUndefined();
  });
});

describe("both documented shapes", () => {
  const fromCli = parseCliHistory(cli, "cli");
  const fromCloud = parseCloudPage(cloud, "cloud");

  test("the recorded fixtures hold every kind of operation and result", () => {
    expect(fromCli.map((o) => `${o.kind}/${o.result}`)).toEqual([
      "destroy/succeeded", "update/succeeded", "update/succeeded", "import/succeeded", "update/succeeded",
      "update/failed", "refresh/succeeded", "update/succeeded", "preview/succeeded", "update/succeeded",
    ]);
    expect(fromCloud).toMatchObject({ itemsPerPage: 10, total: 10 });
  });

  test("normalise to the same operations, except what only the Cloud records", () => {
    const common = (ops: typeof fromCli) =>
      ops.map((o) => ({
        version: o.version, kind: o.kind, result: o.result, start: o.startTime.toISOString(), end: o.endTime?.toISOString(),
        message: o.message, changes: o.resourceChanges, author: o.actor.gitAuthor, head: o.actor.gitHead, ci: o.actor.ciBuildUrl,
        keys: [...(o.config?.keys() ?? [])], secretKeys: [...(o.config?.entries() ?? [])].filter(([, v]) => v.secret).map(([k]) => k),
      }));
    expect(common(fromCloud.operations)).toEqual(common(fromCli));
    expect(fromCloud.operations.map((o) => o.actor.pulumiUser)).toEqual([
      "cdiaz", "ci-fleet-bot", "dlee", "cdiaz", "alice-ng", "alice-ng", "cdiaz", "ci-fleet-bot", "ci-fleet-bot", "alice-ng",
    ]);
    expect(fromCli.every((o) => o.actor.pulumiUser === undefined)).toBe(true);
    expect(fromCloud.operations[0].updateId).toBe("3f1ca0d2-7b1e-4c5f-9e08-1d2c3b4a5f60");
  });

  test("the recorded environment keys land in the actor", () => {
    expect(fromCli[8].actor).toEqual({
      gitAuthor: "Bob Smith",
      gitAuthorEmail: "bob@example.org",
      gitCommitter: "GitHub",
      gitCommitterEmail: "noreply@github.com",
      gitHead: "8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5",
      gitHeadName: "refs/pull/58/merge",
      gitDirty: "false",
      vcsOwner: "example-org",
      vcsRepo: "ci-fleet",
      vcsKind: "github.com",
      ciSystem: "GitHub Actions",
      ciBuildId: "7731",
      ciBuildNumber: "731",
      ciBuildType: "pull_request",
      ciBuildUrl: "https://github.com/example-org/ci-fleet/actions/runs/7731",
      ciPrNumber: "58",
      execKind: "cli",
    });
  });

  test("resource changes map engine operations; unknown ones are kept apart", () => {
    const [op] = parseCliHistory([{ ...cli[0], resourceChanges: { create: 1, "create-replacement": 2, "delete-replaced": 2, replace: 2, read: 3 } }], "x");
    expect(op.resourceChanges).toEqual({
      created: 1, updated: 0, deleted: 0, same: 0, replaced: 2, imported: 0,
      other: { "create-replacement": 2, "delete-replaced": 2, read: 3 },
    });
  });

  test("a secret's ciphertext becomes a fingerprint and is not kept", () => {
    const dump = inspect(fromCloud.operations, { depth: 10, maxArrayLength: null, maxStringLength: null });
    for (const ct of cloudFixtureCiphertexts()) expect(dump).not.toContain(ct);
    const secret = fromCloud.operations[2].config!.get("ci-fleet:teleportGithubClientSecret");
    expect(secret).toEqual({ secret: true, fingerprint: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(fromCli[2].config!.get("ci-fleet:teleportGithubClientSecret")).toEqual({ secret: true });
  });

  test("a saved file is told apart by its top level", () => {
    expect(parseSavedHistory(cli, "f").shape).toBe("cli");
    expect(parseSavedHistory(cloud, "f").shape).toBe("cloud");
  });
});

describe("malformed input names the field, never a config value", () => {
  const one = cli[0];
  test.each([
    ["not an array", { kind: "update" }, "malformed history in f: the document must be a JSON array of updates"],
    ["entry not an object", [42], "malformed history in f: [0] must be an object"],
    ["version", [{ ...one, version: "9" }], 'malformed history in f: [0].version must be a non-negative integer, got "9"'],
    ["endTime", [{ ...one, endTime: "soon" }], 'malformed history in f: [0].endTime is not a time (RFC 3339 or unix seconds): "soon"'],
    ["environment", [{ ...one, environment: ["git.author"] }], "malformed history in f: [0].environment must be an object of strings"],
    ["environment value", [{ ...one, environment: { "git.author": 7 } }], 'malformed history in f: [0].environment["git.author"] must be a string, got 7'],
    ["message", [{ ...one, message: { text: "x" } }], 'malformed history in f: [0].message must be a string, got {"text":"x"}'],
    ["config.secret", [{ ...one, config: { "ci-fleet:k": { secret: "yes" } } }], 'malformed history in f: [0].config["ci-fleet:k"].secret must be true or false'],
    ["config value", [{ ...one, config: { "ci-fleet:k": { secret: true, value: { hidden: "PLANTED-VALUE" } } } }], 'malformed history in f: [0].config["ci-fleet:k"].value must be a string'],
  ])("%s", (_name, doc, message) => {
    expect(() => parseCliHistory(doc, "f")).toThrow(new AuditError(message));
  });

  test.each([
    ["updates missing", { items: [] }, "malformed history in c: updates must be an array"],
    ["info missing", { updates: [{ version: 1 }] }, "malformed history in c: updates[0].info must be an object"],
    ["startTime", { updates: [{ info: { kind: "update", startTime: "0x12" } }] }, 'malformed history in c: updates[0].info.startTime is not a time (RFC 3339 or unix seconds): "0x12"'],
    ["requestedBy", { updates: [{ info: { kind: "update", startTime: 1 }, requestedBy: "alice" }] }, "malformed history in c: requestedBy must be an object"],
  ])("cloud: %s", (_name, doc, message) => {
    expect(() => parseCloudPage(doc, "c")).toThrow(new AuditError(message));
  });
});
