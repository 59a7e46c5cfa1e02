import { checkFleetSettings, CheckInput } from "../../infra/config/check";
import { stackConfig } from "../support/preview";

/**
 * `saltMaster.ref`: the Salt tree runs as root on every machine, so the master serves an
 * exact commit (40 lower-case hex digits) by default; a branch name only with the explicit
 * opt-in `saltMaster.followBranch: true`. Every problem is reported at once, with its path.
 */

type Values = Record<string, unknown>;

const COMMIT = "bf06e068810b270fc9acd650d1a40e5fcd7cc108";

function values(stack: string, saltMaster: Record<string, unknown> | undefined): Values {
  const out: Values = {};
  for (const [k, v] of Object.entries(stackConfig(stack))) out[k.replace(/^ci-fleet:/, "")] = JSON.parse(JSON.stringify(v));
  if (saltMaster === undefined) delete out.saltMaster;
  else out.saltMaster = saltMaster;
  return out;
}

function check(v: Values, stack = "production") {
  const input: CheckInput = { stack, values: v, secretsPresent: new Set(), queueSecretPaths: {} };
  return checkFleetSettings(input);
}

/** The problems about saltMaster only: other settings are not this test's business. */
const saltProblems = (v: Values, stack = "production") =>
  check(v, stack)
    .problems.filter((p) => p.path.startsWith("ci-fleet:saltMaster"))
    .map((p) => `${p.path}: ${p.message}`);

const master = (extra: Record<string, unknown>) => ({ plan: "control", repository: "https://github.com/example-metal/ci-fleet.git", ...extra });

const NOT_A_COMMIT = (shown: string) =>
  `ci-fleet:saltMaster.ref: ${shown} is not a commit id: the Salt tree runs as root on every machine, so it is pinned to the commit of this repository the Salt master serves, 40 lower-case hex digits (\`git rev-parse <commit>\`); ` +
  "to follow a branch instead (any commit pushed to it then reaches the fleet), set saltMaster.followBranch: true, which the preview flags";

describe("saltMaster.ref is pinned to a commit by default", () => {
  test.each(["production", "production-aws"])("the %s stack file pins a realistic commit, with no opt-in", (stack) => {
    const settings = check(values(stack, (stackConfig(stack)["ci-fleet:saltMaster"] as Record<string, unknown>)), stack).settings;
    expect(settings?.saltMaster.ref).toMatch(/^[0-9a-f]{40}$/);
    expect(settings?.saltMaster.followBranch).toBeUndefined();
    expect(stackConfig(stack)["ci-fleet:saltMaster"]).not.toHaveProperty("followBranch");
  });

  const CASES: [string, Record<string, unknown> | undefined, string[]][] = [
    ["a commit id", master({ ref: COMMIT }), []],
    ["a commit id with followBranch: false", master({ ref: COMMIT, followBranch: false }), []],
    ["a branch name without the opt-in", master({ ref: "main" }), [NOT_A_COMMIT('"main"')]],
    ["a tag without the opt-in", master({ ref: "v1.2.0" }), [NOT_A_COMMIT('"v1.2.0"')]],
    ["a short commit id", master({ ref: COMMIT.slice(0, 12) }), [NOT_A_COMMIT(`"${COMMIT.slice(0, 12)}"`)]],
    ["41 hex digits", master({ ref: `${COMMIT}a` }), [NOT_A_COMMIT(`"${COMMIT}a"`)]],
    ["an upper-case commit id", master({ ref: COMMIT.toUpperCase() }), [`ci-fleet:saltMaster.ref: expected the commit id in lower case (${COMMIT}), got "${COMMIT.toUpperCase()}"`]],
    ["no ref at all", master({}), ["ci-fleet:saltMaster.ref: is required: the commit of this repository the Salt master serves, 40 lower-case hex digits (`git rev-parse <commit>`); a branch name needs saltMaster.followBranch: true"]],
    ["a ref that is not a string", master({ ref: 42 }), ["ci-fleet:saltMaster.ref: expected the commit of this repository the Salt master serves, 40 lower-case hex digits (`git rev-parse <commit>`), got 42"]],
    ["git's null commit id", master({ ref: "0".repeat(40) }), [`ci-fleet:saltMaster.ref: ${"0".repeat(40)} is a placeholder (a repeating pattern), not a commit of this repository`]],
    ["a deadbeef placeholder", master({ ref: "deadbeef".repeat(5) }), [`ci-fleet:saltMaster.ref: ${"deadbeef".repeat(5)} is a placeholder (a repeating pattern), not a commit of this repository`]],
    ["a 0123456789abcdef placeholder", master({ ref: "0123456789abcdef0123456789abcdef01234567" }), ["ci-fleet:saltMaster.ref: 0123456789abcdef0123456789abcdef01234567 is a placeholder (a repeating pattern), not a commit of this repository"]],
    ["the opt-in with a branch", master({ ref: "main", followBranch: true }), []],
    ["the opt-in with a commit id", master({ ref: COMMIT, followBranch: true }), [`ci-fleet:saltMaster.ref: ${COMMIT} is a commit id, but saltMaster.followBranch is true: remove followBranch (a pinned commit needs no opt-in)`]],
    ["the opt-in with a full ref name", master({ ref: "refs/heads/main", followBranch: true }), ['ci-fleet:saltMaster.ref: expected a branch name (as in refs/heads/<name>, without the refs/heads/ prefix), got "refs/heads/main"']],
    ["the opt-in with HEAD", master({ ref: "HEAD", followBranch: true }), ['ci-fleet:saltMaster.ref: expected a branch name (as in refs/heads/<name>, without the refs/heads/ prefix), got "HEAD"']],
    ["an opt-in that is not a boolean, with a branch", master({ ref: "main", followBranch: "yes" }), ['ci-fleet:saltMaster.followBranch: expected true or false, got "yes"', NOT_A_COMMIT('"main"')]],
    ["an unknown key beside them", master({ ref: COMMIT, branch: "main" }), ["ci-fleet:saltMaster.branch: unknown key; expected one of plan, repository, ref, followBranch"]],
  ];

  test.each(CASES)("%s", (_what, saltMaster, expected) => {
    const v = values("production", saltMaster);
    expect(saltProblems(v)).toEqual(expected);
    if (expected.length) expect(check(v).settings).toBeUndefined();
  });

  test("every problem at once: a bad ref beside other bad settings", () => {
    const v = values("production", master({ ref: "main", plan: "huge" }));
    (v.identity as Record<string, unknown>).accountId = "12";
    const lines = check(v).problems.map((p) => `${p.path}: ${p.message}`);
    expect(lines).toEqual(
      expect.arrayContaining([
        'ci-fleet:saltMaster.plan: expected one of the plans (control, runner, runner-large), got "huge"',
        NOT_A_COMMIT('"main"'),
        'ci-fleet:identity.accountId: expected a 12-digit AWS account id, got "12"',
      ]),
    );
  });

  test("the settings carry the opt-in only when it is set", () => {
    expect(check(values("production", master({ ref: COMMIT }))).settings?.saltMaster).toEqual({ plan: "control", repository: "https://github.com/example-metal/ci-fleet.git", ref: COMMIT });
    expect(check(values("production", master({ ref: "main", followBranch: true }))).settings?.saltMaster).toEqual({
      plan: "control",
      repository: "https://github.com/example-metal/ci-fleet.git",
      ref: "main",
      followBranch: true,
    });
  });
});
