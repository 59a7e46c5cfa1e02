import { performance } from "perf_hooks";
import * as path from "path";
import { createFleet } from "../../infra/program";
import { runUnderMocks } from "../preview/mock-runtime";
import { readStackInput, StackInput } from "../preview/stack-files";
import { runPreview, valueOf } from "../preview/run";

/**
 * `npm run bench`: previews synthetic fleets of 10, 100 and 1000 runners (the production
 * stack with its queues scaled up, on both providers) in one process and prints the time
 * per runner. The figure that matters is the marginal cost: what one more runner costs
 * the program, which must stay flat (linear growth) and under 10 ms. "program" is the
 * program alone under the mock runtime (every resource registered, every user-data
 * rendered); "preview" adds what the offline preview does on top (masking, gzip, sorting).
 */

const SIZES = [10, 100, 1000];
const QUEUES = ["default", "infra", "release"];
const BUDGET_MS_PER_RUNNER = 10;

function scaledQueues(base: Record<string, { runners: Record<string, unknown> }>, runners: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  QUEUES.forEach((q, i) => {
    const count = Math.floor(runners / QUEUES.length) + (i < runners % QUEUES.length ? 1 : 0);
    const list: Record<string, unknown> = {};
    for (let n = 1; n <= count; n++) list[`${q}-${n}`] = { plan: "runner" };
    out[q] = { ...base[q], runners: list };
  });
  return out;
}

function scaledInput(stack: string, runners: number): StackInput {
  const root = path.resolve(__dirname, "../..");
  const input = readStackInput(root, stack);
  const base = JSON.parse(input.config["ci-fleet:queues"]) as Record<string, { runners: Record<string, unknown> }>;
  input.config["ci-fleet:queues"] = JSON.stringify(scaledQueues(base, runners));
  return input;
}

interface Timing {
  runners: number;
  resources: number;
  programMs: number;
  previewMs: number;
}

async function timeFleet(stack: string, runners: number): Promise<Timing> {
  const input = scaledInput(stack, runners);
  const account = { accountId: "210987654321", region: "us-east-2" };
  let start = performance.now();
  const { result, mocks } = await runUnderMocks({ stack, account, config: input.config, secretKeys: input.secretKeys }, () => createFleet({ offlinePreview: true }));
  await Promise.all(result.fleet.machines.map((m) => valueOf(m.userData)));
  const programMs = performance.now() - start;
  start = performance.now();
  await runPreview(input);
  return { runners, resources: mocks.resources.length, programMs, previewMs: performance.now() - start };
}

async function main(): Promise<number> {
  let ok = true;
  await timeFleet("production", 10); // warm-up: module loading is not the program's cost
  for (const stack of ["production", "production-aws"]) {
    const rows: Timing[] = [];
    for (const runners of SIZES) rows.push(await timeFleet(stack, runners));
    console.log(`stack ${stack}`);
    console.log("  runners  resources  program ms  ms/runner  marginal  |  preview ms  ms/runner");
    rows.forEach((r, i) => {
      const marginal = i === 0 ? "" : ((r.programMs - rows[i - 1].programMs) / (r.runners - rows[i - 1].runners)).toFixed(2);
      console.log(
        `  ${String(r.runners).padStart(7)}  ${String(r.resources).padStart(9)}  ${r.programMs.toFixed(0).padStart(10)}  ${(r.programMs / r.runners).toFixed(2).padStart(9)}  ${marginal.padStart(8)}  |  ${r.previewMs.toFixed(0).padStart(10)}  ${(r.previewMs / r.runners).toFixed(2).padStart(9)}`,
      );
    });
    const marginal = (rows[2].programMs - rows[1].programMs) / (rows[2].runners - rows[1].runners);
    const perRunnerAtScale = rows[2].programMs / rows[2].runners;
    const pass = marginal < BUDGET_MS_PER_RUNNER && perRunnerAtScale < BUDGET_MS_PER_RUNNER;
    console.log(`  ${pass ? "ok" : "OVER BUDGET"}: the program costs ${perRunnerAtScale.toFixed(2)} ms per runner at 1000, marginal ${marginal.toFixed(2)} ms (budget ${BUDGET_MS_PER_RUNNER} ms)`);
    ok &&= pass;
  }
  return ok ? 0 : 1;
}

main().then((code) => process.exit(code), (e: unknown) => {
  console.error(e);
  process.exit(70);
});
