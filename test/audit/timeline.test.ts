import { ConfigValue, Operation, SecretChange } from "../../tools/audit/model";
import { applyFilters, buildTimeline, diffConfig, findApplyingUpdate, parseKinds, parseSince } from "../../tools/audit/timeline";

const plain = (value: string): ConfigValue => ({ secret: false, value });
const secret = (fingerprint?: string): ConfigValue => (fingerprint ? { secret: true, fingerprint } : { secret: true });
const cfg = (entries: Record<string, ConfigValue>) => new Map(Object.entries(entries));

function op(version: number | undefined, kind: string, start: string, extra: Partial<Operation> = {}): Operation {
  return { version, kind, result: "succeeded", startTime: new Date(start), message: "", actor: {}, ...extra };
}

describe("diffConfig", () => {
  test.each<[string, Record<string, ConfigValue>, Record<string, ConfigValue>, ReturnType<typeof diffConfig>]>([
    ["plain added", {}, { k: plain("a") }, [{ key: "k", change: "added", secret: false }]],
    ["plain removed", { k: plain("a") }, {}, [{ key: "k", change: "removed", secret: false }]],
    ["plain changed", { k: plain("a") }, { k: plain("b") }, [{ key: "k", change: "changed", secret: false }]],
    ["plain same", { k: plain("a") }, { k: plain("a") }, []],
    ["secret added is set", {}, { s: secret() }, [{ key: "s", change: "set", secret: true }]],
    ["secret removed", { s: secret() }, {}, [{ key: "s", change: "removed", secret: true }]],
    ["secret without values: unknown, not reported", { s: secret() }, { s: secret() }, []],
    ["secret, one side unknown: not reported", { s: secret("aa") }, { s: secret() }, []],
    ["secret ciphertext changed is set", { s: secret("aa") }, { s: secret("bb") }, [{ key: "s", change: "set", secret: true }]],
    ["secret ciphertext same", { s: secret("aa") }, { s: secret("aa") }, []],
    ["plain made secret is set", { s: plain("x") }, { s: secret() }, [{ key: "s", change: "set", secret: true }]],
    ["secret made plain is changed", { s: secret() }, { s: plain("x") }, [{ key: "s", change: "changed", secret: false }]],
  ])("%s", (_name, before, after, expected) => {
    expect(diffConfig(cfg(before), cfg(after))).toEqual(expected);
  });
});

describe("buildTimeline", () => {
  test("a preview is compared with the last deployed config but never becomes the baseline", () => {
    const ops = [
      op(2, "update", "2025-01-03T00:00:00Z", { config: cfg({ q: plain("2") }) }),
      op(undefined, "preview", "2025-01-02T00:00:00Z", { config: cfg({ q: plain("2") }) }),
      op(1, "update", "2025-01-01T00:00:00Z", { config: cfg({ q: plain("1") }) }),
      op(3, "refresh", "2025-01-04T00:00:00Z"),
    ];
    const t = buildTimeline(ops, []);
    expect(t.entries.map((e) => [e.op.kind, e.config])).toEqual([
      ["refresh", undefined],
      ["update", { baselineVersion: 1, initial: false, changes: [{ key: "q", change: "changed", secret: false }] }],
      ["preview", { baselineVersion: 1, initial: false, changes: [{ key: "q", change: "changed", secret: false }] }],
      ["update", { baselineVersion: undefined, initial: true, changes: [{ key: "q", change: "added", secret: false }] }],
    ]);
  });

  const change: SecretChange = {
    key: "ci-fleet:teleportGithubClientSecret", change: "rotated", commit: "9ab12cd0f00dfeedbeef0123456789abcdef0123",
    author: "Dave Lee", authorEmail: "dave@example.org", time: new Date("2025-03-03T16:20:00Z"), subject: "Rotate",
  };

  test("an update run on the very commit wins over the nearest one in time", () => {
    const ops = [
      op(7, "update", "2025-03-04T08:00:00Z"),
      op(8, "update", "2025-03-05T08:00:00Z", { actor: { gitHead: "9ab12cd0f00dfeedbeef0123456789abcdef0123" } }),
    ];
    expect(findApplyingUpdate(change, ops)).toEqual({ version: 8, result: "succeeded", startTime: ops[1].startTime, matchedBy: "git.head" });
  });

  test("otherwise the first update at or after the commit; previews and refreshes do not apply secrets", () => {
    const ops = [
      op(6, "update", "2025-03-01T00:00:00Z"),
      op(undefined, "preview", "2025-03-03T17:00:00Z"),
      op(7, "refresh", "2025-03-03T18:00:00Z"),
      op(8, "update", "2025-03-04T08:00:00Z", { result: "failed" }),
      op(9, "update", "2025-03-05T08:00:00Z"),
    ];
    expect(findApplyingUpdate(change, ops)).toEqual({ version: 8, result: "failed", startTime: ops[3].startTime, matchedBy: "time" });
    expect(findApplyingUpdate({ ...change, time: new Date("2025-04-01T00:00:00Z") }, ops)).toBeUndefined();
  });

  test("the secret change is listed on the update that applied it", () => {
    const t = buildTimeline([op(7, "update", "2025-03-04T08:00:00Z"), op(6, "update", "2025-03-01T00:00:00Z")], [change]);
    expect(t.entries[0].secretChanges.map((c) => c.key)).toEqual(["ci-fleet:teleportGithubClientSecret"]);
    expect(t.entries[1].secretChanges).toEqual([]);
  });
});

describe("filters", () => {
  const now = new Date("2025-03-15T12:00:00Z");
  test.each([
    ["30d", "2025-02-13T12:00:00.000Z"],
    ["12h", "2025-03-15T00:00:00.000Z"],
    ["2w", "2025-03-01T12:00:00.000Z"],
    ["2025-03-01", "2025-03-01T00:00:00.000Z"],
    ["2025-03-01T10:00:00+02:00", "2025-03-01T08:00:00.000Z"],
  ])("--since %s", (text, iso) => {
    expect(parseSince(text, now).toISOString()).toBe(iso);
  });

  test.each([["30"], ["30y"], ["2025-3-1"], ["2025-02-30x"], ["yesterday"], ["2025-13-01"]])("--since %s is an error", (text) => {
    expect(() => parseSince(text, now)).toThrow(/is not a date/);
  });

  test("--kind lists are split, lower-cased, deduplicated and checked", () => {
    expect(parseKinds(["Update,preview", "update", " destroy "])).toEqual(["update", "preview", "destroy"]);
    expect(() => parseKinds(["up"])).toThrow('--kind "up" is not one of');
  });

  test("--user does not match the committer or CI system", () => {
    const t = buildTimeline([op(1, "update", "2025-01-01T00:00:00Z", { actor: { gitCommitter: "Bob", ciSystem: "bob-ci" } })], []);
    expect(applyFilters(t, { user: "bob", kinds: [] }).entries).toEqual([]);
  });
});
