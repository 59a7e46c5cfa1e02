import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { performance } from "perf_hooks";
import * as YAML from "yaml";
import { createFleet } from "../../infra/program";
import { runUnderMocks } from "../preview/mock-runtime";
import { readStackInput, StackInput } from "../preview/stack-files";
import { valueOf } from "../preview/run";

/**
 * `npm run bench [-- --repeat N]`: times what a maintainer runs. For fleets of 10, 100 and
 * 1000 runners on both providers (the stack file with its queues scaled up, everything else
 * unchanged), and for 50 queues of 20 runners:
 *
 * - "command": `npm start` itself as a child process, wall clock from spawn to exit, every
 *   check included (program, policy pack, IAM access matrix, size check, leak scan, writing
 *   the files). Budget: under 15 s at 1000 runners, and under 10 ms per added runner between
 *   100 and 1000 (linear growth). 50 queues × 20 runners: under 15 s too.
 * - "program": the program alone under the mock runtime, in this process (every resource
 *   registered, every user-data rendered), so the share of each part is visible. Budget:
 *   10 ms per runner at 1000, marginal likewise.
 *
 * With --repeat N each command is timed N times and the median is used (the spread is
 * printed). Exits 1 when over budget or when a preview fails.
 */

const SIZES = [10, 100, 1000];
const STACKS = ["production", "production-aws"];
const QUEUES = ["default", "infra", "release"];
const COMMAND_BUDGET_MS = 15_000;
const MARGINAL_BUDGET_MS = 10;
const PROGRAM_BUDGET_MS_PER_RUNNER = 10;
const ROOT = path.resolve(__dirname, "../..");

type Queues = Record<string, { runners: Record<string, unknown> } & Record<string, unknown>>;

/** `runners` runners spread over the stack's three queues, or `perQueue` runners in each of `queueCount` queues. */
function scaledQueues(base: Queues, shape: { runners: number } | { queueCount: number; perQueue: number }): Queues {
  const names = "runners" in shape ? QUEUES : [...QUEUES, ...Array.from({ length: shape.queueCount - QUEUES.length }, (_, i) => `q${i + QUEUES.length + 1}`)];
  const out: Queues = {};
  names.forEach((q, i) => {
    const count = "runners" in shape ? Math.floor(shape.runners / names.length) + (i < shape.runners % names.length ? 1 : 0) : shape.perQueue;
    const list: Record<string, unknown> = {};
    for (let n = 1; n <= count; n++) list[`${q}-${n}`] = { plan: "runner" };
    // Added queues are trusted Buildkite queues like infra, without deploy targets.
    out[q] = { ...(base[q] ?? base.infra), runners: list };
  });
  return out;
}

function baseQueues(stack: string): Queues {
  return JSON.parse(readStackInput(ROOT, stack).config["ci-fleet:queues"]) as Queues;
}

/** An overlay file (a stack-file-shaped config: map), as a maintainer would write one. */
function overlay(dir: string, stack: string, queues: Queues, label: string): string {
  const file = path.join(dir, `${stack}-${label}.yaml`);
  fs.writeFileSync(file, YAML.stringify({ config: { "ci-fleet:queues": queues } }));
  return file;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

interface CommandTiming {
  ms: number;
  runs: number[];
  ok: boolean;
  detail: string;
}

/** `npm start -- --stack S --config F --out D` as a whole process, npm included. */
function timeCommand(stack: string, configFile: string, repeat: number): CommandTiming {
  // Under `npm run bench`, npm says where it is; otherwise the npm on PATH.
  const npm = process.env.npm_execpath ? [process.execPath, process.env.npm_execpath] : ["npm"];
  const runs: number[] = [];
  let ok = true;
  let detail = "";
  for (let i = 0; i < repeat; i++) {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-bench-out-"));
    const start = performance.now();
    const r = spawnSync(npm[0], [...npm.slice(1), "start", "--silent", "--", "--stack", stack, "--config", configFile, "--out", out], {
      cwd: ROOT,
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    });
    runs.push(performance.now() - start);
    fs.rmSync(out, { recursive: true, force: true });
    if (r.status !== 0) {
      ok = false;
      detail = `exit ${r.status}: ${(r.stderr || r.stdout || String(r.error)).trim().split("\n").slice(-3).join(" ")}`;
    }
  }
  return { ms: median(runs), runs, ok, detail };
}

/** The program alone under the mocks, in this process. */
async function timeProgram(stack: string, queues: Queues): Promise<{ programMs: number; resources: number }> {
  const input: StackInput = readStackInput(ROOT, stack);
  input.config["ci-fleet:queues"] = JSON.stringify(queues);
  const account = { accountId: "210987654321", region: "us-east-2" };
  const start = performance.now();
  const { result, mocks } = await runUnderMocks({ stack, account, config: input.config, secretKeys: input.secretKeys }, () => createFleet({ offlinePreview: true }));
  await Promise.all(result.fleet.machines.map((m) => valueOf(m.userData)));
  return { programMs: performance.now() - start, resources: mocks.resources.length };
}

interface Row {
  runners: number;
  resources: number;
  command: CommandTiming;
  programMs: number;
}

const f = (n: number, width: number, digits = 0) => n.toFixed(digits).padStart(width);
const spread = (t: CommandTiming) => (t.runs.length > 1 ? ` (${Math.min(...t.runs).toFixed(0)}-${Math.max(...t.runs).toFixed(0)})` : "");

async function main(): Promise<number> {
  const repeatAt = process.argv.indexOf("--repeat");
  const repeat = repeatAt >= 0 ? Math.max(1, Number(process.argv[repeatAt + 1]) || 1) : 1;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-bench-"));
  const failures: string[] = [];
  try {
    // Warm-up: the first process pays for cold disk caches; the first in-process run for module loading.
    timeCommand("production", overlay(dir, "production", scaledQueues(baseQueues("production"), { runners: 10 }), "warm-up"), 1);
    await timeProgram("production", scaledQueues(baseQueues("production"), { runners: 10 }));

    console.log(`npm start as a whole process (wall clock${repeat > 1 ? `, median of ${repeat}` : ""}), and the program alone under the mocks`);
    for (const stack of STACKS) {
      const rows: Row[] = [];
      for (const runners of SIZES) {
        const queues = scaledQueues(baseQueues(stack), { runners });
        const command = timeCommand(stack, overlay(dir, stack, queues, `${runners}`), repeat);
        const program = await timeProgram(stack, queues);
        rows.push({ runners, command, ...program });
        if (!command.ok) failures.push(`${stack} at ${runners} runners: the preview failed (${command.detail})`);
      }
      console.log(`stack ${stack}`);
      console.log("  runners  resources |  command ms  ms/runner  marginal | program ms  ms/runner  marginal  share");
      rows.forEach((r, i) => {
        const prev = rows[i - 1];
        const marginal = (a: number, b: number) => (prev ? f((a - b) / (r.runners - prev.runners), 8, 2) : " ".repeat(8));
        console.log(
          `  ${f(r.runners, 7)}  ${f(r.resources, 9)} | ${f(r.command.ms, 10)}  ${f(r.command.ms / r.runners, 9, 2)}  ${marginal(r.command.ms, prev?.command.ms ?? 0)} |` +
            ` ${f(r.programMs, 10)}  ${f(r.programMs / r.runners, 9, 2)}  ${marginal(r.programMs, prev?.programMs ?? 0)}  ${f((100 * r.programMs) / r.command.ms, 4)}%${spread(r.command)}`,
        );
      });
      const [, mid, big] = rows;
      const commandMarginal = (big.command.ms - mid.command.ms) / (big.runners - mid.runners);
      const programMarginal = (big.programMs - mid.programMs) / (big.runners - mid.runners);
      const checks: [boolean, string][] = [
        [big.command.ms < COMMAND_BUDGET_MS, `npm start at ${big.runners} runners: ${(big.command.ms / 1000).toFixed(1)} s (budget ${COMMAND_BUDGET_MS / 1000} s)`],
        [commandMarginal < MARGINAL_BUDGET_MS, `npm start marginal ${mid.runners}->${big.runners}: ${commandMarginal.toFixed(2)} ms per runner (budget ${MARGINAL_BUDGET_MS} ms)`],
        [big.programMs / big.runners < PROGRAM_BUDGET_MS_PER_RUNNER && programMarginal < PROGRAM_BUDGET_MS_PER_RUNNER, `program ${(big.programMs / big.runners).toFixed(2)} ms per runner at ${big.runners}, marginal ${programMarginal.toFixed(2)} ms (budget ${PROGRAM_BUDGET_MS_PER_RUNNER} ms)`],
      ];
      for (const [pass, text] of checks) {
        console.log(`  ${pass ? "ok" : "OVER BUDGET"}: ${text}`);
        if (!pass) failures.push(`${stack}: ${text}`);
      }
    }

    // Many queues: the access matrix is queues × roles, the key policy grows with queues.
    const queues = scaledQueues(baseQueues("production"), { queueCount: 50, perQueue: 20 });
    const wide = timeCommand("production", overlay(dir, "production", queues, "50x20"), repeat);
    const pass = wide.ok && wide.ms < COMMAND_BUDGET_MS;
    console.log(`stack production, 50 queues x 20 runners: npm start ${(wide.ms / 1000).toFixed(1)} s${spread(wide)}`);
    console.log(`  ${pass ? "ok" : "OVER BUDGET"}: 50 queues x 20 runners within ${COMMAND_BUDGET_MS / 1000} s${wide.ok ? "" : ` (the preview failed: ${wide.detail})`}`);
    if (!pass) failures.push(`50 queues x 20 runners: ${(wide.ms / 1000).toFixed(1)} s${wide.ok ? "" : ", the preview failed"}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (failures.length) console.log(`\nOVER BUDGET or failed:\n${failures.map((x) => `  - ${x}`).join("\n")}`);
  return failures.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e);
    process.exit(70);
  },
);
