import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { performance } from "perf_hooks";
import * as YAML from "yaml";
import { parsePhases, PHASES_ENV, PHASES_PREFIX, PhaseTimings } from "../preview/phases";
import { readStackInput } from "../preview/stack-files";

/**
 * `npm run bench [-- --repeat N]`: times what a maintainer runs. For fleets of 10, 100 and
 * 1000 runners on both providers (the stack file with its queues scaled up, everything else
 * unchanged), and for 50 queues of 20 runners:
 *
 * - "command": `npm start` itself as a child process, wall clock from spawn to exit, every
 *   check included (program, policy pack, IAM access matrix, size check, replacement drill,
 *   blast radius, leak scan, writing the files). Budget: under 15 s at 1000 runners and at
 *   50 × 20, and under 10 ms per added runner between 100 and 1000 (linear growth).
 * - "program": the same run's program phase (the program under the mock runtime, every
 *   resource registered), as the preview reports it (tools/preview/phases.ts), so the share
 *   of each part is visible. Budget: 10 ms per runner at 1000, marginal likewise.
 *
 * Each case runs N times (default 3), the cases interleaved so that a burst of load from
 * elsewhere does not fall on one case only. For each figure the best and the median run
 * are printed, each with the load average (1 min) at its start; the budgets are decided on
 * the best runs (what this machine does when nothing else competes: other work only ever
 * adds time), the medians are shown beside them. At 1000 runners the phases of the median
 * run are printed too. Exits 1 when over budget or when a preview fails.
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
export function scaledQueues(base: Queues, shape: { runners: number } | { queueCount: number; perQueue: number }): Queues {
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

interface Run {
  ms: number;
  /** Load average (1 min) when the run started. */
  load: number;
  phases?: PhaseTimings;
  resources?: number;
  ok: boolean;
  detail: string;
}

interface Case {
  stack: string;
  label: string;
  runners: number;
  configFile: string;
  runs: Run[];
}

/** Why a preview failed: its error, else the checks it printed as FAILED (names only: never a secret). */
function failure(stdout: string, stderr: string, error?: Error): string {
  const errors = stderr.split("\n").filter((l) => l.trim() && !l.startsWith(PHASES_PREFIX));
  if (errors.length) return errors.slice(-3).join(" ");
  const failed = stdout.split("\n").filter((l) => /^\s+FAILED\s/.test(l)).map((l) => l.trim().replace(/^FAILED\s+/, "").replace(/:.*$/, ""));
  return failed.length ? `failed checks: ${failed.join("; ")}` : String(error ?? "no output");
}

/** `npm start -- --stack S --config F --out D` as a whole process, npm included. */
function timeCommand(stack: string, configFile: string): Run {
  // Under `npm run bench`, npm says where it is; otherwise the npm on PATH.
  const npm = process.env.npm_execpath ? [process.execPath, process.env.npm_execpath] : ["npm"];
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-bench-out-"));
  const load = os.loadavg()[0];
  const start = performance.now();
  const r = spawnSync(npm[0], [...npm.slice(1), "start", "--silent", "--", "--stack", stack, "--config", configFile, "--out", out], {
    cwd: ROOT,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, [PHASES_ENV]: "1" },
  });
  const ms = performance.now() - start;
  fs.rmSync(out, { recursive: true, force: true });
  const ok = r.status === 0;
  const resources = /^ {2}resources: (\d+)$/m.exec(r.stdout ?? "")?.[1];
  return {
    ms,
    load,
    phases: parsePhases(r.stderr ?? ""),
    ...(resources ? { resources: Number(resources) } : {}),
    ok,
    detail: ok ? "" : `exit ${r.status}: ${failure(r.stdout ?? "", r.stderr ?? "", r.error)}`,
  };
}

/** A figure over the runs of a case: the best run and the median. */
interface Figure {
  best: number;
  bestLoad: number;
  median: number;
  medianLoad: number;
}

function figure(runs: Run[], value: (r: Run) => number | undefined): Figure | undefined {
  const xs = runs.map((r) => ({ v: value(r), load: r.load })).filter((x): x is { v: number; load: number } => x.v !== undefined);
  if (!xs.length) return undefined;
  const sorted = [...xs].sort((a, b) => a.v - b.v);
  const best = sorted[0];
  return { best: best.v, bestLoad: best.load, median: median(xs.map((x) => x.v)), medianLoad: median(xs.map((x) => x.load)) };
}

const programMs = (r: Run) => r.phases?.wall.program;
const f = (n: number, width: number, digits = 0) => n.toFixed(digits).padStart(width);

/** The phases of the run whose whole-command time is the median: where the time goes. */
function phaseLine(c: Case): string {
  const sorted = [...c.runs].filter((r) => r.phases).sort((a, b) => a.ms - b.ms);
  const r = sorted[(sorted.length - 1) >> 1];
  if (!r?.phases) return "  (no phases reported)";
  const p = r.phases;
  const named = Object.entries(p.wall).map(([k, v]) => `${k} ${(v / 1000).toFixed(2)}`).join(", ");
  const npm = r.ms - p.totalMs;
  return (
    `  phases at ${c.runners} runners, median run (s): ${named}; npm and node start ${(npm / 1000).toFixed(2)}` +
    ` | CPU ${(p.cpuMs / 1000).toFixed(1)} s, GC pauses ${(p.gcMs / 1000).toFixed(1)} s, heap at exit ${p.heapMB} MB, load ${r.load.toFixed(2)}`
  );
}

function main(): number {
  const repeatAt = process.argv.indexOf("--repeat");
  const repeat = repeatAt >= 0 ? Math.max(1, Number(process.argv[repeatAt + 1]) || 1) : 3;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-bench-"));
  const failures: string[] = [];
  try {
    const cases: Case[] = [];
    for (const stack of STACKS) {
      for (const runners of SIZES) {
        cases.push({ stack, label: `${runners}`, runners, configFile: overlay(dir, stack, scaledQueues(baseQueues(stack), { runners }), `${runners}`), runs: [] });
      }
    }
    const wide: Case = { stack: "production", label: "50x20", runners: 1000, configFile: overlay(dir, "production", scaledQueues(baseQueues("production"), { queueCount: 50, perQueue: 20 }), "50x20"), runs: [] };
    cases.push(wide);

    // Warm-up: the first process pays for cold disk caches.
    timeCommand("production", cases[0].configFile);
    for (let i = 0; i < repeat; i++) {
      for (const c of cases) {
        const r = timeCommand(c.stack, c.configFile);
        c.runs.push(r);
        process.stderr.write(`  run ${i + 1}/${repeat} ${c.stack} ${c.label}: ${(r.ms / 1000).toFixed(1)} s (load ${r.load.toFixed(2)})${r.ok ? "" : " FAILED"}\n`);
      }
    }

    console.log(`npm start as a whole process (wall clock), ${repeat} run${repeat > 1 ? "s" : ""} of each case: best and median, with the load average (1 min) at the start of that run`);
    console.log(`(${os.cpus().length} CPUs; budgets are decided on the best runs)`);
    for (const stack of STACKS) {
      const rows = cases.filter((c) => c.stack === stack && c !== wide);
      console.log(`stack ${stack}`);
      console.log("  runners  resources |  command ms best (load)  median (load)  ms/runner  marginal best/median | program ms best  median  ms/runner  marginal  share");
      rows.forEach((c, i) => {
        const prev = rows[i - 1];
        const cmd = figure(c.runs, (r) => r.ms)!;
        const prog = figure(c.runs, programMs);
        const prevCmd = prev && figure(prev.runs, (r) => r.ms)!;
        const prevProg = prev && figure(prev.runs, programMs);
        const per = (a: number, b: number) => (a - b) / (c.runners - prev!.runners);
        const marginal = prevCmd ? `${f(per(cmd.best, prevCmd.best), 8, 2)}/${per(cmd.median, prevCmd.median).toFixed(2).padEnd(8)}` : " ".repeat(17);
        const progText = prog
          ? `${f(prog.best, 15)}  ${f(prog.median, 6)}  ${f(prog.best / c.runners, 9, 2)}  ${prevProg ? f(per(prog.best, prevProg.best), 8, 2) : " ".repeat(8)}  ${f((100 * prog.median) / cmd.median, 4)}%`
          : "  (no phases reported)";
        console.log(
          `  ${f(c.runners, 7)}  ${f(c.runs.find((r) => r.resources)?.resources ?? 0, 9)} | ${f(cmd.best, 15)} (${cmd.bestLoad.toFixed(1)})  ${f(cmd.median, 7)} (${cmd.medianLoad.toFixed(1)})  ${f(cmd.best / c.runners, 9, 2)}  ${marginal} |${progText}`,
        );
        const failed = c.runs.filter((x) => !x.ok);
        if (failed.length) failures.push(`${stack} at ${c.runners} runners: the preview failed in ${failed.length} of ${c.runs.length} runs (${failed[0].detail})`);
      });
      const [, mid, big] = rows;
      const cmdMid = figure(mid.runs, (r) => r.ms)!;
      const cmdBig = figure(big.runs, (r) => r.ms)!;
      const progMid = figure(mid.runs, programMs);
      const progBig = figure(big.runs, programMs);
      const commandMarginal = (cmdBig.best - cmdMid.best) / (big.runners - mid.runners);
      const checks: [boolean, string][] = [
        [cmdBig.best < COMMAND_BUDGET_MS, `npm start at ${big.runners} runners: ${(cmdBig.best / 1000).toFixed(1)} s best, ${(cmdBig.median / 1000).toFixed(1)} s median (budget ${COMMAND_BUDGET_MS / 1000} s)`],
        [commandMarginal < MARGINAL_BUDGET_MS, `npm start marginal ${mid.runners}->${big.runners}: ${commandMarginal.toFixed(2)} ms per runner best, ${((cmdBig.median - cmdMid.median) / (big.runners - mid.runners)).toFixed(2)} median (budget ${MARGINAL_BUDGET_MS} ms)`],
      ];
      if (progMid && progBig) {
        const programMarginal = (progBig.best - progMid.best) / (big.runners - mid.runners);
        checks.push([
          progBig.best / big.runners < PROGRAM_BUDGET_MS_PER_RUNNER && programMarginal < PROGRAM_BUDGET_MS_PER_RUNNER,
          `program ${(progBig.best / big.runners).toFixed(2)} ms per runner at ${big.runners}, marginal ${programMarginal.toFixed(2)} ms (budget ${PROGRAM_BUDGET_MS_PER_RUNNER} ms)`,
        ]);
      } else checks.push([false, "the preview reported no phases: no program figure"]);
      for (const [pass, text] of checks) {
        console.log(`  ${pass ? "ok" : "OVER BUDGET"}: ${text}`);
        if (!pass) failures.push(`${stack}: ${text}`);
      }
      console.log(phaseLine(big));
    }

    // Many queues: the access matrix is queues × roles, the key policy grows with queues.
    const w = figure(wide.runs, (r) => r.ms)!;
    const failed = wide.runs.filter((r) => !r.ok);
    const pass = failed.length === 0 && w.best < COMMAND_BUDGET_MS;
    console.log(`stack production, 50 queues x 20 runners: npm start ${(w.best / 1000).toFixed(1)} s best (load ${w.bestLoad.toFixed(1)}), ${(w.median / 1000).toFixed(1)} s median (load ${w.medianLoad.toFixed(1)})`);
    console.log(`  ${pass ? "ok" : "OVER BUDGET"}: 50 queues x 20 runners within ${COMMAND_BUDGET_MS / 1000} s${failed.length ? ` (the preview failed: ${failed[0].detail})` : ""}`);
    console.log(phaseLine(wide));
    if (!pass) failures.push(`50 queues x 20 runners: ${(w.best / 1000).toFixed(1)} s${failed.length ? ", the preview failed" : ""}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (failures.length) console.log(`\nOVER BUDGET or failed:\n${failures.map((x) => `  - ${x}`).join("\n")}`);
  return failures.length ? 1 : 0;
}

if (require.main === module) process.exit(main());
