import * as pulumi from "@pulumi/pulumi";
import { machineNames } from "../config/model";
import { drainRequestPath } from "../identity/policies";

/**
 * Replacing or removing a runner must not kill the job on it. Pulumi's resource hooks
 * (@pulumi/pulumi 3.248.0 resource.d.ts `ResourceHookBinding`; engine v3.248.0
 * pkg/resource/deploy/step.go `DeleteStep.Apply`) run a `beforeDelete` hook of the program
 * before every delete of a resource whose state carries the binding: a runner removed from
 * config, `pulumi destroy --run-program`, and the delete half of a replacement (both
 * create-before-delete and delete-before-replace build a `DeleteStep`). An error thrown by
 * the hook stops that delete.
 *
 * The hook runs on the maintainer's machine, with the maintainer's AWS credentials; it cannot
 * reach the fleet's private network. So it writes a drain request (a String SSM parameter,
 * `drainRequestPath(stack)/<minion-id>`) and waits, bounded, for the Salt master
 * (salt/_runners/ci_fleet_drain.py, every minute) to answer in the same parameter: the agent
 * stopped taking jobs and its running job ended (`drained`), or it could not be drained.
 * Every way it cannot be drained fails open, with a warning that says why: a machine the
 * master cannot reach, or does not manage, runs no job anyone can save, and a dead runner
 * must not block `pulumi up` forever. What stops the delete is not knowing: a request that
 * cannot be written (nothing was asked), or answers that cannot be read for
 * DRAIN_READ_FAILURE_LIMIT_SECONDS or at the bound (the maintainer's AWS session expired during
 * the wait): nobody could tell whether a job runs.
 *
 * Hooks are found by name in the program of the run that deletes: these two are created in
 * every run (the Fleet component makes them whether or not any runner is declared), and
 * their names must never change, or the deletes of machines bound to the old name fail
 * ("hook ... was not registered", deployment.go `RunHooks`).
 */

/** The hook that drains a runner before its machine (or its pillar document) is deleted. */
export const DRAIN_HOOK_NAME = "ci-fleet-drain-runner";
/** The hook that removes the drain request once the machine is gone. */
export const DRAIN_DONE_HOOK_NAME = "ci-fleet-drain-runner-done";

/** The bound, in minutes, for one `pulumi up` (0: delete without draining). */
export const DRAIN_TIMEOUT_ENV = "CI_FLEET_DRAIN_TIMEOUT_MINUTES";
/** GitHub Actions' default job timeout (360 min) and 10 minutes for the agent to stop and the master to notice. */
export const DEFAULT_DRAIN_TIMEOUT_MINUTES = 370;
/** A week: longer than any job either CI service runs (GitHub: 5 days on self-hosted runners). */
export const MAX_DRAIN_TIMEOUT_MINUTES = 7 * 24 * 60;
/** How often the hook reads the master's answer. */
export const DRAIN_POLL_SECONDS = 15;
/**
 * The master writes `timed out` when the deadline passes (its pass runs every minute): the
 * hook waits this much longer for that answer before it gives up on its own.
 */
export const DRAIN_ANSWER_GRACE_SECONDS = 180;

/**
 * Reads of the master's answer that keep failing this long (an expired AWS session fails every
 * call) fail the hook, so the delete does not happen: nobody can tell whether a job still runs.
 */
export const DRAIN_READ_FAILURE_LIMIT_SECONDS = 300;

/** `requested` and `draining` are written while it runs; the others are final. */
export type DrainState = "requested" | "draining" | "drained" | "timed out" | "unreachable" | "not managed";
const FINAL_STATES: readonly DrainState[] = ["drained", "timed out", "unreachable", "not managed"];

/** The parameter's JSON (docs/contracts.md, "Drain request"); times are Unix seconds. */
export interface DrainRequest {
  version: 1;
  minion_id: string;
  /** The machine being deleted: its resource type, id and private address (the master checks it answers from there). */
  machine?: { type: string; id: string; private_ipv4?: string };
  urn: string;
  requested_at: number;
  deadline: number;
  state: DrainState;
  /** Written by the master with every final state: shown to the maintainer. */
  message?: string;
}

/** What the hook needs of SSM (the real one: awsDrainSsm). */
export interface DrainSsm {
  put(name: string, value: string): Promise<void>;
  /** undefined when there is no such parameter. */
  get(name: string): Promise<{ value: string; arn: string } | undefined>;
  remove(name: string): Promise<void>;
}

export interface DrainLog {
  info(message: string): void;
  warn(message: string): void;
}

export interface DrainDeps {
  ssm: DrainSsm;
  /** Milliseconds, like Date.now. */
  now(): number;
  sleep(ms: number): Promise<void>;
  log: DrainLog;
}

export interface DrainSettings {
  stack: string;
  /** The identity account and region: where the fleet's SSM parameters live. */
  accountId: string;
  region: string;
  timeoutMinutes: number;
  pollSeconds?: number;
}

/** How one drain ended; `skipped` when nothing was asked. */
export interface DrainOutcome {
  minionId?: string;
  state: DrainState | "skipped";
  message: string;
}

/** The bound from the environment of `pulumi up`: a whole number of minutes, 0 to skip draining. */
export function drainTimeoutMinutes(env: Record<string, string | undefined>): number {
  const raw = env[DRAIN_TIMEOUT_ENV];
  if (raw === undefined || raw.trim() === "") return DEFAULT_DRAIN_TIMEOUT_MINUTES;
  if (!/^\d+$/.test(raw.trim()) || Number(raw) > MAX_DRAIN_TIMEOUT_MINUTES) {
    throw new Error(`${DRAIN_TIMEOUT_ENV}="${raw}": expected whole minutes from 0 (delete runners without draining) to ${MAX_DRAIN_TIMEOUT_MINUTES}`);
  }
  return Number(raw);
}

/** The SSM parameter of a minion's drain request. */
export function drainRequestName(stack: string, minionId: string): string {
  return `${drainRequestPath(stack)}/${minionId}`;
}

const EC2_INSTANCE = "aws:ec2/instance:Instance";
const METAL_DEVICE = "equinix-metal:index/device:Device";
const SSM_PARAMETER = "aws:ssm/parameter:Parameter";
const MINION_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** What a hook knows about the resource being deleted: its old state (resource.d.ts `ResourceHookArgs`). */
export type DrainHookArgs = Pick<pulumi.ResourceHookArgs, "urn" | "id" | "name" | "type" | "oldInputs" | "oldOutputs">;

export interface DrainTarget {
  minionId: string;
  machine?: { type: string; id: string; private_ipv4?: string };
}

const text = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);
const record = (v: unknown): Record<string, unknown> | undefined =>
  typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;

/**
 * The runner a deleted resource belongs to, from its old state: an EC2 instance (tag `Name`,
 * `privateIp`), an Equinix Metal device (`hostname`, `accessPrivateIpv4`) or a runner's pillar
 * document (tag `ci-fleet:minion`). Secret values reach hooks as Outputs and are never used.
 */
export function drainTarget(args: DrainHookArgs, stack: string): DrainTarget | { problem: string } {
  const outputs = record(args.oldOutputs) ?? {};
  const inputs = record(args.oldInputs) ?? {};
  const at = (key: string) => outputs[key] ?? inputs[key];
  let minionId: string | undefined;
  let role: string | undefined;
  let privateIpv4: string | undefined;
  switch (args.type) {
    case EC2_INSTANCE: {
      const tags = record(at("tags")) ?? {};
      minionId = text(tags.Name);
      role = text(tags["ci-fleet:role"]);
      privateIpv4 = text(outputs.privateIp);
      break;
    }
    case METAL_DEVICE: {
      minionId = text(at("hostname"));
      const tags = Array.isArray(at("tags")) ? (at("tags") as unknown[]) : [];
      role = tags.map(text).find((t) => t?.startsWith("ci-fleet:role="))?.slice("ci-fleet:role=".length);
      privateIpv4 = text(outputs.accessPrivateIpv4);
      break;
    }
    case SSM_PARAMETER: {
      minionId = text((record(at("tags")) ?? {})["ci-fleet:minion"]);
      role = "runner"; // the binding is only on runners' documents
      break;
    }
    default:
      return { problem: `${args.urn}: a ${args.type} is not a runner machine` };
  }
  if (!minionId || !MINION_ID.test(minionId) || !minionId.startsWith(`${stack}-`)) {
    return { problem: `${args.urn}: no runner name of stack ${stack} in its state` };
  }
  if (role !== "runner" || minionId === machineNames.saltMaster(stack) || minionId === machineNames.teleport(stack)) {
    return { problem: `${args.urn}: ${minionId} is not a runner` };
  }
  if (args.type === SSM_PARAMETER) return { minionId };
  return { minionId, machine: { type: args.type, id: args.id, ...(privateIpv4 ? { private_ipv4: privateIpv4 } : {}) } };
}

function parseRequest(value: string): Partial<DrainRequest> | undefined {
  try {
    return record(JSON.parse(value)) as Partial<DrainRequest> | undefined;
  } catch {
    return undefined;
  }
}

const minutes = (seconds: number) => `${Math.round(seconds / 60)} min`;

/**
 * The beforeDelete hook's logic: ask, wait (bounded), report. Returns how it ended; throws
 * when the request cannot be written or its answer cannot be read (see
 * DRAIN_READ_FAILURE_LIMIT_SECONDS): the delete then does not happen.
 */
export async function drainBeforeDelete(args: DrainHookArgs, settings: DrainSettings, deps: DrainDeps, done?: Map<string, DrainOutcome>): Promise<DrainOutcome> {
  const target = drainTarget(args, settings.stack);
  if ("problem" in target) {
    const message = `not draining before delete: ${target.problem}`;
    deps.log.warn(message);
    return { state: "skipped", message };
  }
  const { minionId } = target;
  const earlier = done?.get(minionId);
  if (earlier) return earlier; // its pillar document was deleted first, in this run: already drained (or given up)
  if (settings.timeoutMinutes === 0) {
    const message = `${DRAIN_TIMEOUT_ENV}=0: deleting ${minionId} without draining; a job running on it is lost`;
    deps.log.warn(message);
    return { minionId, state: "skipped", message };
  }

  const name = drainRequestName(settings.stack, minionId);
  const nowSeconds = () => Math.floor(deps.now() / 1000);
  const requestedAt = nowSeconds();
  const request: DrainRequest = {
    version: 1,
    minion_id: minionId,
    ...(target.machine ? { machine: target.machine } : {}),
    urn: args.urn,
    requested_at: requestedAt,
    deadline: requestedAt + settings.timeoutMinutes * 60,
    state: "requested",
  };
  const accountOf = (arn: string) => arn.split(":")[4];
  try {
    await deps.ssm.put(name, JSON.stringify(request));
    const written = await deps.ssm.get(name);
    if (written && accountOf(written.arn) !== settings.accountId) {
      await deps.ssm.remove(name);
      throw new Error(`the credentials of this run reach account ${accountOf(written.arn)}, not the fleet's identity account ${settings.accountId}`);
    }
  } catch (error) {
    throw new Error(
      `could not ask the Salt master to drain ${minionId} (SSM ${name}: ${(error as Error).message}); ${minionId} was not deleted. ` +
        `The identity running pulumi up needs ssm:PutParameter, ssm:GetParameter and ssm:DeleteParameter on ${drainRequestPath(settings.stack)}/* ` +
        `in ${settings.region} (README, "Replacing a runner"), or run with ${DRAIN_TIMEOUT_ENV}=0 to delete without draining.`,
    );
  }
  deps.log.info(`asked the Salt master to drain ${minionId} (${name}); waiting up to ${settings.timeoutMinutes} min for its job to finish`);

  const giveUpAt = (request.deadline + DRAIN_ANSWER_GRACE_SECONDS) * 1000;
  const pollMs = (settings.pollSeconds ?? DRAIN_POLL_SECONDS) * 1000;
  let last: DrainState = "requested";
  // Consecutive failed reads: since when, and the last error.
  let failing: { since: number; error: Error } | undefined;
  const unreadable = (why: string) =>
    new Error(
      `could not read the Salt master's answer about ${minionId} (SSM ${name}) ${why}: ${failing!.error.message}; ${minionId} was not deleted, ` +
        `because nobody can tell whether a job still runs on it. Are the AWS credentials of this run still valid (an expired session fails every call)? ` +
        `The drain request stands and the runner stays drained: renew the credentials and run pulumi up again, or put the runner back to work with ` +
        `salt-run ci_fleet_drain.cancel minion=${minionId} on the Salt master.`,
    );
  for (;;) {
    let answer: Partial<DrainRequest> | undefined;
    try {
      const current = await deps.ssm.get(name);
      answer = current ? parseRequest(current.value) : undefined;
      failing = undefined;
    } catch (error) {
      // A failed read is retried, but not for long: a run whose credentials expired reads nothing more.
      failing = { since: failing?.since ?? deps.now(), error: error as Error };
      if (deps.now() - failing.since >= DRAIN_READ_FAILURE_LIMIT_SECONDS * 1000) throw unreadable(`for ${minutes(DRAIN_READ_FAILURE_LIMIT_SECONDS)}`);
      deps.log.warn(`${minionId}: could not read the drain answer (${failing.error.message}); trying again`);
    }
    const state = answer?.state;
    if (state && answer?.requested_at === requestedAt) {
      last = state;
      if (FINAL_STATES.includes(state)) return finish(minionId, state, answer.message, settings, deps, done);
    }
    if (deps.now() >= giveUpAt) break;
    await deps.sleep(Math.max(0, Math.min(pollMs, giveUpAt - deps.now())));
  }
  if (failing) throw unreadable("at the end of the wait");
  const message =
    `${minionId}: no answer from the Salt master within ${settings.timeoutMinutes} min (last state: ${last}); ` +
    `deleting it without a confirmed drain, so a job still running on it is lost. Is the master up, and does it run ci_fleet_drain.run?`;
  deps.log.warn(message);
  const outcome: DrainOutcome = { minionId, state: "timed out", message };
  done?.set(minionId, outcome);
  return outcome;
}

function finish(minionId: string, state: DrainState, masterMessage: string | undefined, settings: DrainSettings, deps: DrainDeps, done?: Map<string, DrainOutcome>): DrainOutcome {
  const said = masterMessage ? `: ${masterMessage}` : "";
  let message: string;
  if (state === "drained") {
    message = `${minionId} drained${said}`;
    deps.log.info(message);
  } else {
    const why =
      state === "timed out"
        ? `still running a job after ${minutes(settings.timeoutMinutes * 60)}`
        : state === "unreachable"
          ? "the Salt master cannot reach it (down or cut off: nothing can stop its agent)"
          : "the Salt master does not manage it";
    message = `${minionId} not drained, ${why}${said}; deleting it anyway (fail open: a dead or unmanaged runner must not block pulumi up)`;
    deps.log.warn(message);
  }
  const outcome: DrainOutcome = { minionId, state, message };
  done?.set(minionId, outcome);
  return outcome;
}

/** The afterDelete hook's logic: the machine is gone, so is its request (its name may come back as a new machine). */
export async function forgetDrainRequest(args: DrainHookArgs, settings: DrainSettings, deps: DrainDeps): Promise<void> {
  const target = drainTarget(args, settings.stack);
  if ("problem" in target) return;
  const name = drainRequestName(settings.stack, target.minionId);
  try {
    await deps.ssm.remove(name);
  } catch (error) {
    // An after hook's error fails the deployment (engine >= 3.238): warn instead. The master
    // removes a request a day after its deadline anyway.
    deps.log.warn(`could not remove the drain request ${name} (${(error as Error).message}); the Salt master removes it a day after its deadline`);
  }
}

/** SSM through the AWS SDK for JavaScript v3, loaded only when a hook runs (never in a preview). */
export function awsDrainSsm(region: string): DrainSsm {
  type Sdk = typeof import("@aws-sdk/client-ssm");
  let loaded: Promise<{ sdk: Sdk; client: InstanceType<Sdk["SSMClient"]> }> | undefined;
  const ssm = () =>
    (loaded ??= import("@aws-sdk/client-ssm").then((sdk) => ({ sdk, client: new sdk.SSMClient({ region }) })));
  const notFound = (error: unknown) => (error as { name?: string }).name === "ParameterNotFound";
  return {
    async put(name, value) {
      const { sdk, client } = await ssm();
      await client.send(new sdk.PutParameterCommand({ Name: name, Value: value, Type: "String", Tier: "Standard", Overwrite: true }));
    },
    async get(name) {
      const { sdk, client } = await ssm();
      try {
        const out = await client.send(new sdk.GetParameterCommand({ Name: name }));
        return out.Parameter?.Value !== undefined && out.Parameter.ARN ? { value: out.Parameter.Value, arn: out.Parameter.ARN } : undefined;
      } catch (error) {
        if (notFound(error)) return undefined;
        throw error;
      }
    },
    async remove(name) {
      const { sdk, client } = await ssm();
      try {
        await client.send(new sdk.DeleteParameterCommand({ Name: name }));
      } catch (error) {
        if (!notFound(error)) throw error;
      }
    },
  };
}

function realDeps(region: string): DrainDeps {
  return {
    ssm: awsDrainSsm(region),
    now: () => Date.now(),
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    log: { info: (m) => void pulumi.log.info(m), warn: (m) => void pulumi.log.warn(m) },
  };
}

/**
 * The two named hooks of a run, and the bindings that put them on runners. One instance per
 * program run (the engine refuses a second registration of a name).
 */
export class RunnerDrainHooks {
  readonly beforeDelete: pulumi.ResourceHook;
  readonly afterDelete: pulumi.ResourceHook;
  /** Minions drained (or given up on) in this run: a runner's document goes first, then its machine. */
  private readonly done = new Map<string, DrainOutcome>();

  constructor(settings: DrainSettings, deps?: () => DrainDeps) {
    let real: DrainDeps | undefined;
    const getDeps = deps ?? (() => (real ??= realDeps(settings.region)));
    // Not on dry runs (the default): `pulumi preview` asks nothing of the fleet.
    this.beforeDelete = new pulumi.ResourceHook(DRAIN_HOOK_NAME, async (args) => {
      await drainBeforeDelete(args, settings, getDeps(), this.done);
    });
    this.afterDelete = new pulumi.ResourceHook(DRAIN_DONE_HOOK_NAME, (args) => forgetDrainRequest(args, settings, getDeps()), { ignoreErrors: true });
  }

  /**
   * A runner machine: drained before it is deleted, its request removed after. Replaced
   * delete-before-create: the old and the new machine share one name (Salt minion id and key,
   * GitHub runner name, Buildkite agent name), and two machines answering as one minion would
   * make every Salt call about it, the drain included, ambiguous.
   */
  machineOptions(): Pick<pulumi.CustomResourceOptions, "hooks" | "deleteBeforeReplace"> {
    return { hooks: { beforeDelete: [this.beforeDelete], afterDelete: [this.afterDelete] }, deleteBeforeReplace: true };
  }

  /**
   * A runner's pillar document: it depends on the machine (it holds its address), so when a
   * runner leaves the config Pulumi deletes the document first, and the master's pillar sync
   * would then remove the minion's key (and its view of the job) within minutes. Draining
   * here, before that, keeps the master in touch until the job is over; the machine's own
   * hook then finds it done.
   */
  documentHooks(): pulumi.ResourceHookBinding {
    return { beforeDelete: [this.beforeDelete] };
  }
}
