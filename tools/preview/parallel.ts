import * as path from "path";
import { Worker } from "worker_threads";
import type { AccessMatrix, AccessMatrixContext } from "./access-matrix";
import type { DrillResult } from "./drill";
import type { CapturedResource } from "./mock-runtime";
import type { StackInput } from "./stack-files";

/**
 * The preview's checks that need nothing of the main run but its inputs, on the second core
 * (`npm start` only; tests call buildPreview in-process): the replacement drill, which runs
 * the program four times, starts with the preview; the IAM access matrix starts once the
 * program's resources are known. Each is the same function the preview would call
 * in-process, run by tools/preview/checks-worker.ts in a worker thread with its own Pulumi
 * runtime; its result comes back as data (structured clone).
 *
 * A worker costs its start (its own modules to load), so the preview uses one only for a
 * fleet of PARALLEL_MIN_RUNNERS or more.
 */

export interface ParallelChecks {
  drill(input: StackInput): Promise<{ result: DrillResult; ms: number }>;
  accessMatrix(resources: CapturedResource[], ctx: AccessMatrixContext): Promise<AccessMatrix>;
  close(): Promise<void>;
}

export type CheckRequest =
  | { id: number; kind: "drill"; input: StackInput }
  | { id: number; kind: "matrix"; resources: CapturedResource[]; ctx: AccessMatrixContext };
export type CheckReply = { id: number; ok: true; value: unknown; ms: number } | { id: number; ok: false; error: { name: string; message: string; problems?: unknown } };

/**
 * The worker's error as the preview reports one: its name, its message and its list of
 * problems (describeFailure prints these, never a stack). The drill reports config errors
 * as results, so none crosses as a FleetConfigError.
 */
function rebuilt(error: { name: string; message: string; problems?: unknown }): Error {
  return Object.assign(new Error(error.message), { name: error.name, ...(error.problems !== undefined ? { problems: error.problems } : {}) });
}

/**
 * Starts the worker. It loads TypeScript with the preview's own loader (ts-register.js),
 * whatever loaded this thread's (ts-node, jest).
 */
export function startParallelChecks(): ParallelChecks {
  const code = [path.join(__dirname, "ts-register.js"), path.join(__dirname, "checks-worker.ts")].map((m) => `require(${JSON.stringify(m)});`).join("");
  const worker = new Worker(code, { eval: true, execArgv: [] });
  let next = 0;
  let failure: Error | undefined;
  const pending = new Map<number, { resolve(v: CheckReply & { ok: true }): void; reject(e: Error): void }>();
  const fail = (e: Error) => {
    failure ??= e;
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  };
  worker.on("message", (reply: CheckReply) => {
    const p = pending.get(reply.id);
    if (!p) return;
    pending.delete(reply.id);
    if (reply.ok) p.resolve(reply);
    else p.reject(rebuilt(reply.error));
  });
  worker.on("error", fail);
  worker.on("exit", (code) => fail(new Error(`the checks worker stopped (exit ${code})`)));
  const ask = (request: { kind: "drill"; input: StackInput } | { kind: "matrix"; resources: CapturedResource[]; ctx: AccessMatrixContext }) =>
    new Promise<CheckReply & { ok: true }>((resolve, reject) => {
      if (failure) return reject(failure);
      const id = next++;
      pending.set(id, { resolve, reject });
      worker.postMessage({ ...request, id });
    });
  return {
    drill: async (input) => {
      const r = await ask({ kind: "drill", input });
      return { result: r.value as DrillResult, ms: r.ms };
    },
    accessMatrix: async (resources, ctx) => (await ask({ kind: "matrix", resources, ctx })).value as AccessMatrix,
    close: async () => {
      worker.removeAllListeners("exit");
      await worker.terminate();
    },
  };
}

/**
 * Runners at which the worker pays: it spends about a second and a half loading its modules
 * on the other core, which a smaller fleet's program run does not hide (the drill would then
 * wait for the worker); from a few hundred runners on, the program run outlasts it.
 */
export const PARALLEL_MIN_RUNNERS = 200;

/** Runners in the stack's queues (`<project>:queues` of the config map). */
export function runnerCount(input: StackInput): number {
  try {
    const queues = JSON.parse(input.config[`${input.project}:queues`] ?? "{}") as Record<string, { runners?: Record<string, unknown> }>;
    return Object.values(queues).reduce((n, q) => n + Object.keys(q?.runners ?? {}).length, 0);
  } catch {
    return 0;
  }
}
