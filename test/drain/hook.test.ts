/**
 * The drain hook's logic (infra/fleet/drain-hook.ts) with a fake SSM and a fake clock:
 * what it asks, how long it waits, what it tells the maintainer, and when it lets the
 * delete go on. The hook arguments are shaped as @pulumi/pulumi 3.248.0 passes them to a
 * beforeDelete hook (resource.d.ts ResourceHookArgs: urn, id, name, type, oldInputs,
 * oldOutputs; no new inputs or outputs on a delete).
 */
import {
  DEFAULT_DRAIN_TIMEOUT_MINUTES,
  DRAIN_ANSWER_GRACE_SECONDS,
  DRAIN_READ_FAILURE_LIMIT_SECONDS,
  DRAIN_TIMEOUT_ENV,
  DrainDeps,
  DrainHookArgs,
  DrainOutcome,
  DrainRequest,
  DrainSettings,
  drainBeforeDelete,
  drainRequestName,
  drainTarget,
  drainTimeoutMinutes,
  forgetDrainRequest,
} from "../../infra/fleet/drain-hook";

const STACK = "production";
const ACCOUNT = "210987654321";
const REGION = "us-east-2";
const NAME = `/ci-fleet/${STACK}/salt-master/drain/${STACK}-default-r1`;
const T0 = Date.UTC(2026, 10, 1, 12, 0, 0);
const settings = (timeoutMinutes = 60): DrainSettings => ({ stack: STACK, accountId: ACCOUNT, region: REGION, timeoutMinutes });

const ec2Runner: DrainHookArgs = {
  urn: `urn:pulumi:${STACK}::ci-fleet::ci-fleet:fleet:Fleet$ci-fleet:fleet:RunnerQueue$aws:ec2/instance:Instance::${STACK}-default-r1`,
  id: "i-0123456789abcdef0",
  name: `${STACK}-default-r1`,
  type: "aws:ec2/instance:Instance",
  oldInputs: { tags: { Name: `${STACK}-default-r1`, "ci-fleet:stack": STACK, "ci-fleet:role": "runner", "ci-fleet:queue": "default" } },
  oldOutputs: { privateIp: "10.0.1.17", tags: { Name: `${STACK}-default-r1`, "ci-fleet:role": "runner" } },
};
const metalRunner: DrainHookArgs = {
  urn: `urn:pulumi:${STACK}::ci-fleet::equinix-metal:index/device:Device::${STACK}-default-r1`,
  id: "0b0c0d0e-aaaa-4bbb-8ccc-0123456789ab",
  name: `${STACK}-default-r1`,
  type: "equinix-metal:index/device:Device",
  oldInputs: { hostname: `${STACK}-default-r1`, tags: [`ci-fleet:stack=${STACK}`, "ci-fleet:role=runner", "ci-fleet:queue=default"] },
  oldOutputs: { hostname: `${STACK}-default-r1`, accessPrivateIpv4: "10.70.3.9", tags: [`ci-fleet:stack=${STACK}`, "ci-fleet:role=runner"] },
};
const runnerDocument: DrainHookArgs = {
  urn: `urn:pulumi:${STACK}::ci-fleet::aws:ssm/parameter:Parameter::${STACK}-pillars-${STACK}-default-r1`,
  id: `/ci-fleet/${STACK}/pillar/${STACK}-default-r1`,
  name: `${STACK}-pillars-${STACK}-default-r1`,
  type: "aws:ssm/parameter:Parameter",
  oldInputs: { tags: { "ci-fleet:stack": STACK, "ci-fleet:role": "pillar", "ci-fleet:minion": `${STACK}-default-r1` } },
  oldOutputs: {},
};

/** SSM as the hook sees it; `master` plays the Salt master's answers (called before every read). */
class FakeSsm {
  readonly params = new Map<string, string>();
  readonly calls: string[] = [];
  failPut?: Error;
  account = ACCOUNT;
  master?: (request: DrainRequest) => Partial<DrainRequest> | undefined;
  async put(name: string, value: string) {
    this.calls.push(`put ${name}`);
    if (this.failPut) throw this.failPut;
    this.params.set(name, value);
  }
  async get(name: string) {
    this.calls.push(`get ${name}`);
    const value = this.params.get(name);
    if (value === undefined) return undefined;
    const answer = this.master?.(JSON.parse(value) as DrainRequest);
    if (answer) this.params.set(name, JSON.stringify({ ...JSON.parse(value), ...answer }));
    return { value: this.params.get(name)!, arn: `arn:aws:ssm:${REGION}:${this.account}:parameter${name}` };
  }
  async remove(name: string) {
    this.calls.push(`remove ${name}`);
    this.params.delete(name);
  }
}

function harness(ssm = new FakeSsm()) {
  let now = T0;
  const logs: { level: "info" | "warn"; message: string }[] = [];
  const sleeps: number[] = [];
  const deps: DrainDeps = {
    ssm,
    now: () => now,
    sleep: async (ms) => {
      sleeps.push(ms);
      now += ms;
    },
    log: { info: (message) => logs.push({ level: "info", message }), warn: (message) => logs.push({ level: "warn", message }) },
  };
  return { ssm, deps, logs, sleeps, elapsedSeconds: () => (now - T0) / 1000, advance: (s: number) => (now += s * 1000) };
}

describe("what the hook asks", () => {
  test("it writes one request for the runner's minion id, under the master's drain path, with a deadline the bound away", async () => {
    const h = harness();
    const seen: DrainRequest[] = [];
    h.ssm.master = (r) => (seen.push(r), { state: "drained", message: "buildkite-agent.service stopped after its job" });
    const outcome = await drainBeforeDelete(ec2Runner, settings(60), h.deps);
    expect(drainRequestName(STACK, `${STACK}-default-r1`)).toBe(NAME);
    expect(seen[0]).toEqual({
      version: 1,
      minion_id: `${STACK}-default-r1`,
      machine: { type: "aws:ec2/instance:Instance", id: "i-0123456789abcdef0", private_ipv4: "10.0.1.17" },
      urn: ec2Runner.urn,
      requested_at: T0 / 1000,
      deadline: T0 / 1000 + 3600,
      state: "requested",
    });
    expect(h.ssm.calls[0]).toBe(`put ${NAME}`);
    expect(outcome).toEqual({ minionId: `${STACK}-default-r1`, state: "drained", message: `${STACK}-default-r1 drained: buildkite-agent.service stopped after its job` });
  });

  test.each([
    ["an EC2 instance", ec2Runner, { minionId: `${STACK}-default-r1`, machine: { type: ec2Runner.type, id: ec2Runner.id, private_ipv4: "10.0.1.17" } }],
    ["an Equinix Metal device", metalRunner, { minionId: `${STACK}-default-r1`, machine: { type: metalRunner.type, id: metalRunner.id, private_ipv4: "10.70.3.9" } }],
    ["a runner's pillar document (no machine to check)", runnerDocument, { minionId: `${STACK}-default-r1` }],
  ])("the runner of %s", (_what, args, expected) => {
    expect(drainTarget(args, STACK)).toEqual(expected);
  });

  test.each([
    ["the Salt master", { ...ec2Runner, oldInputs: { tags: { Name: `${STACK}-salt-master`, "ci-fleet:role": "salt-master" } }, oldOutputs: {} }],
    ["the Teleport machine", { ...metalRunner, oldInputs: { hostname: `${STACK}-teleport`, tags: ["ci-fleet:role=teleport"] }, oldOutputs: {} }],
    ["a machine of another stack", { ...ec2Runner, oldInputs: { tags: { Name: "staging-default-r1", "ci-fleet:role": "runner" } }, oldOutputs: {} }],
    ["a resource that is no machine", { ...ec2Runner, type: "aws:iam/role:Role" }],
  ])("%s is never drained: the delete goes on with a warning, nothing is asked", async (_what, args) => {
    const h = harness();
    const outcome = await drainBeforeDelete(args as DrainHookArgs, settings(), h.deps);
    expect(outcome.state).toBe("skipped");
    expect(h.ssm.calls).toEqual([]);
    expect(h.logs.map((l) => l.level)).toEqual(["warn"]);
  });
});

describe("how long it waits", () => {
  test("it waits, polling, until the master answers drained, and no longer", async () => {
    const h = harness();
    h.ssm.master = () => (h.elapsedSeconds() < 30 ? { state: "draining" } : { state: "drained" });
    const outcome = await drainBeforeDelete(ec2Runner, settings(60), h.deps);
    expect(outcome.state).toBe("drained");
    expect(h.sleeps).toEqual([15000, 15000]);
    expect(h.elapsedSeconds()).toBe(30);
  });

  test("a master that never answers: it waits the bound (plus the master's grace for `timed out`), then lets the delete go on and says so", async () => {
    const h = harness();
    h.ssm.master = () => ({ state: "draining" });
    const outcome = await drainBeforeDelete(ec2Runner, settings(60), h.deps);
    expect(h.elapsedSeconds()).toBe(3600 + DRAIN_ANSWER_GRACE_SECONDS);
    expect(outcome.state).toBe("timed out");
    expect(outcome.message).toMatch(/no answer from the Salt master within 60 min \(last state: draining\); deleting it without a confirmed drain, so a job still running on it is lost/);
    expect(h.logs.at(-1)).toEqual({ level: "warn", message: outcome.message });
  });

  test("a failed read is retried until the bound, not taken as an answer", async () => {
    const h = harness();
    h.ssm.master = (r) => (r.state === "requested" && h.elapsedSeconds() >= 45 ? { state: "drained" } : undefined);
    const ssmGet = h.ssm.get.bind(h.ssm);
    let reads = 0;
    h.ssm.get = async (name: string) => {
      reads++;
      // Read 1 checks the request right after writing it; reads 2 and 3 are polls.
      if (reads >= 2 && reads <= 3) throw new Error("ThrottlingException: Rate exceeded");
      return ssmGet(name);
    };
    const outcome = await drainBeforeDelete(ec2Runner, settings(60), h.deps);
    expect(outcome.state).toBe("drained");
    expect(h.elapsedSeconds()).toBe(45);
  });

  test("the master's own `timed out` (job still running at the deadline): fail open with its message", async () => {
    const h = harness();
    h.ssm.master = (r) => (h.elapsedSeconds() >= r.deadline - T0 / 1000 ? { state: "timed out", message: "the agent was still running a job" } : { state: "draining" });
    const outcome = await drainBeforeDelete(ec2Runner, settings(30), h.deps);
    expect(outcome.state).toBe("timed out");
    expect(outcome.message).toBe(`${STACK}-default-r1 not drained, still running a job after 30 min: the agent was still running a job; deleting it anyway (fail open: a dead or unmanaged runner must not block pulumi up)`);
    expect(h.elapsedSeconds()).toBeLessThanOrEqual(30 * 60 + 15);
  });

  test.each([
    ["unreachable", "did not answer the Salt master for 300 s", /the Salt master cannot reach it/],
    ["not managed", "no pillar document: not a minion of this master", /the Salt master does not manage it/],
  ])("a machine that is already gone (%s) never blocks: the first answer ends the wait", async (state, said, why) => {
    const h = harness();
    h.ssm.master = () => ({ state: state as DrainRequest["state"], message: said });
    const outcome = await drainBeforeDelete(metalRunner, settings(DEFAULT_DRAIN_TIMEOUT_MINUTES), h.deps);
    expect(h.sleeps).toEqual([]);
    expect(outcome.state).toBe(state);
    expect(outcome.message).toMatch(why);
    expect(outcome.message).toContain(said);
    expect(h.logs.at(-1)?.level).toBe("warn");
  });

  test("a final answer left from an earlier request is not this request's answer", async () => {
    const h = harness();
    h.ssm.params.set(NAME, JSON.stringify({ minion_id: `${STACK}-default-r1`, requested_at: T0 / 1000 - 86400, state: "drained" }));
    // The master has not seen the new request yet for two polls.
    let reads = 0;
    h.ssm.put = async (name, value) => {
      h.ssm.calls.push(`put ${name}`);
      h.ssm.params.set(name, value);
    };
    h.ssm.master = () => (++reads > 3 ? { state: "drained" } : undefined);
    const outcome = await drainBeforeDelete(ec2Runner, settings(60), h.deps);
    expect(outcome.state).toBe("drained");
    expect(h.elapsedSeconds()).toBe(30);
  });

  test("a runner whose pillar document was drained earlier in this run is not asked again when its machine goes", async () => {
    const h = harness();
    h.ssm.master = () => ({ state: "drained" });
    const done = new Map<string, DrainOutcome>();
    await drainBeforeDelete(runnerDocument, settings(), h.deps, done);
    const calls = h.ssm.calls.length;
    const again = await drainBeforeDelete(ec2Runner, settings(), h.deps, done);
    expect(again.state).toBe("drained");
    expect(h.ssm.calls.length).toBe(calls);
  });
});

describe("when it stops the delete", () => {
  test("a request that cannot be written stops the delete, saying which permission and how to skip", async () => {
    const h = harness();
    h.ssm.failPut = Object.assign(new Error("User: arn:aws:iam::210987654321:user/m is not authorized to perform: ssm:PutParameter"), { name: "AccessDeniedException" });
    await expect(drainBeforeDelete(ec2Runner, settings(), h.deps)).rejects.toThrow(
      new RegExp(
        `could not ask the Salt master to drain ${STACK}-default-r1 .*not authorized to perform: ssm:PutParameter.*was not deleted\\. ` +
          `The identity running pulumi up needs ssm:PutParameter, ssm:GetParameter and ssm:DeleteParameter on /ci-fleet/${STACK}/salt-master/drain/\\* in ${REGION}.*${DRAIN_TIMEOUT_ENV}=0`,
      ),
    );
    expect(h.sleeps).toEqual([]);
  });

  // Review of issue 13: failed reads were swallowed until the bound, then the runner was deleted.
  test("an AWS session that expires during the wait fails the hook within minutes, saying why and what to do", async () => {
    const h = harness();
    h.ssm.master = () => ({ state: "draining" });
    const ssmGet = h.ssm.get.bind(h.ssm);
    let reads = 0;
    h.ssm.get = async (name: string) => {
      // Read 1 checks the request right after writing it; the session expires 10 minutes in.
      if (++reads > 1 && h.elapsedSeconds() >= 600) throw Object.assign(new Error("ExpiredTokenException: The security token included in the request is expired"), { name: "ExpiredTokenException" });
      return ssmGet(name);
    };
    await expect(drainBeforeDelete(ec2Runner, settings(DEFAULT_DRAIN_TIMEOUT_MINUTES), h.deps)).rejects.toThrow(
      new RegExp(
        `could not read the Salt master's answer about ${STACK}-default-r1 \\(SSM ${NAME}\\) for 5 min: ExpiredTokenException.*${STACK}-default-r1 was not deleted.*` +
          `credentials of this run still valid.*salt-run ci_fleet_drain.cancel minion=${STACK}-default-r1`,
      ),
    );
    expect(DRAIN_READ_FAILURE_LIMIT_SECONDS).toBe(300);
    expect(h.elapsedSeconds()).toBeGreaterThanOrEqual(600 + 300);
    expect(h.elapsedSeconds()).toBeLessThanOrEqual(600 + 300 + 15);
    expect(h.ssm.calls.filter((c) => c.startsWith("remove"))).toEqual([]); // the request stands: the runner stays drained
  });

  test("reads that fail when the bound passes fail the hook instead of deleting", async () => {
    const h = harness();
    h.ssm.master = () => ({ state: "draining" });
    const ssmGet = h.ssm.get.bind(h.ssm);
    let reads = 0;
    h.ssm.get = async (name: string) => {
      if (++reads > 1 && h.elapsedSeconds() >= 60 * 60 + DRAIN_ANSWER_GRACE_SECONDS - 30) throw new Error("ThrottlingException: Rate exceeded");
      return ssmGet(name);
    };
    await expect(drainBeforeDelete(ec2Runner, settings(60), h.deps)).rejects.toThrow(/could not read the Salt master's answer .* at the end of the wait: ThrottlingException.*was not deleted/);
  });

  test("credentials of another account: the stray request is removed and the delete stopped", async () => {
    const h = harness();
    h.ssm.account = "999999999999";
    await expect(drainBeforeDelete(ec2Runner, settings(), h.deps)).rejects.toThrow(/reach account 999999999999, not the fleet's identity account 210987654321/);
    expect(h.ssm.params.has(NAME)).toBe(false);
  });

  test(`${DRAIN_TIMEOUT_ENV}=0 deletes without asking, with a warning`, async () => {
    const h = harness();
    const outcome = await drainBeforeDelete(ec2Runner, settings(0), h.deps);
    expect(outcome.state).toBe("skipped");
    expect(h.ssm.calls).toEqual([]);
    expect(h.logs).toEqual([{ level: "warn", message: `${DRAIN_TIMEOUT_ENV}=0: deleting ${STACK}-default-r1 without draining; a job running on it is lost` }]);
  });
});

describe("after the delete", () => {
  test("the request is removed, so a new machine of that name takes jobs again", async () => {
    const h = harness();
    h.ssm.params.set(NAME, "{}");
    await forgetDrainRequest(ec2Runner, settings(), h.deps);
    expect(h.ssm.params.has(NAME)).toBe(false);
  });

  test("a failure to remove it is a warning, never an error (an after hook's error fails the deployment)", async () => {
    const h = harness();
    h.ssm.remove = async () => {
      throw new Error("AccessDeniedException");
    };
    await expect(forgetDrainRequest(ec2Runner, settings(), h.deps)).resolves.toBeUndefined();
    expect(h.logs).toEqual([{ level: "warn", message: expect.stringContaining("the Salt master removes it a day after its deadline") }]);
  });
});

describe(`the bound (${DRAIN_TIMEOUT_ENV})`, () => {
  test.each([
    [undefined, DEFAULT_DRAIN_TIMEOUT_MINUTES],
    ["", DEFAULT_DRAIN_TIMEOUT_MINUTES],
    ["0", 0],
    ["90", 90],
    ["10080", 10080],
  ])("%p -> %p minutes", (raw, minutes) => {
    expect(drainTimeoutMinutes({ [DRAIN_TIMEOUT_ENV]: raw })).toBe(minutes);
  });

  test.each(["-1", "1.5", "2h", "10081"])("%p is refused before anything is deleted", (raw) => {
    expect(() => drainTimeoutMinutes({ [DRAIN_TIMEOUT_ENV]: raw })).toThrow(/expected whole minutes from 0/);
  });
});
