import { isMainThread, parentPort } from "worker_threads";
import { performance } from "perf_hooks";
import { computeAccessMatrix } from "./access-matrix";
import { replacementDrill } from "./drill";
import type { CheckReply, CheckRequest } from "./parallel";

/**
 * The worker thread of tools/preview/parallel.ts: answers each request in order with the very
 * function the preview would call in-process (replacementDrill, computeAccessMatrix).
 */
function serve(): void {
  let queue = Promise.resolve();
  parentPort!.on("message", (request: CheckRequest) => {
    queue = queue.then(async () => {
      const start = performance.now();
      try {
        const value = request.kind === "drill" ? await replacementDrill(request.input) : await computeAccessMatrix(request.resources, request.ctx);
        parentPort!.postMessage({ id: request.id, ok: true, value, ms: performance.now() - start } satisfies CheckReply);
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        const problems = (e as { problems?: unknown } | null)?.problems;
        parentPort!.postMessage({ id: request.id, ok: false, error: { name: err.name, message: err.message, ...(problems !== undefined ? { problems } : {}) } } satisfies CheckReply);
      }
    });
  });
}

if (!isMainThread && parentPort) serve();
