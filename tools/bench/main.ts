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
 * - "CPU": the command's processes' CPU time (user + system of npm, its shell and the
 *   preview's node, as the kernel counts a waited-for child: /proc/self/stat cutime + cstime),
 *   beside each wall-clock figure. Wall time on a loaded machine grows with the load; CPU time
 *   much less: a wall figure far above its CPU figure is the machine, not the preview.
 * - "access matrix": the IAM access matrix's phase of the same runs (wall and CPU), the
 *   phase that grows with queues × roles. Budget: under 5 s at 50 queues × 20 runners.
 * - "cold start": `npm start` on the production stack at the smallest size with an empty
 *   transpile cache (tools/preview/ts-register.js; CI_FLEET_TS_CACHE pointed at a new empty
 *   directory each run), what a maintainer pays on the first run after `npm ci`, beside the
 *   same case warm. Budget: under 15 s, like any run.
 *
 * Each case runs N times (default 3), the cases interleaved so that a burst of load from
 * elsewhere does not fall on one case only. For each figure the best and the median run
 * are printed, each with the load average (1 min) at its start; the budgets are decided on
 * the best runs (what this machine does when nothing else competes: other work only ever
 * adds time), the medians are shown beside them. At the largest size the phases of the
 * median run are printed too. Exits 1 when over budget or when a preview fails.
 *
 * A reduced run (`--sizes`, `--stacks`, `--no-wide`, `--no-cold`) applies the same budgets
 * to the sizes it runs: the command and program budgets at its largest size, the marginal
 * one between its two largest. `--help` lists the options.
 */

const SIZES = [10, 100, 1000];
const STACKS = ["production", "production-aws"];
const QUEUES = ["default", "infra", "release"];
const COMMAND_BUDGET_MS = 15_000;
const MARGINAL_BUDGET_MS = 10;
const PROGRAM_BUDGET_MS_PER_RUNNER = 10;
/** The access matrix's phase at 50 queues × 20 runners (was a 30 s test of 16 queues in test/identity). */
const ACCESS_MATRIX_BUDGET_MS = 5_000;
const COLD_START_BUDGET_MS = COMMAND_BUDGET_MS;
const ACCESS_MATRIX_PHASE = "access matrix";

const USAGE = `usage: npm run bench [-- options]
  --repeat N        runs of each case (default 3), interleaved; best and median printed
  --sizes A,B,...   fleet sizes in runners (default ${SIZES.join(",")}); budgets at the largest
  --stacks S,...    stacks (default ${STACKS.join(",")})
  --no-wide         skip 50 queues x 20 runners (and the access matrix's budget)
  --no-cold         skip the cold start (empty transpile cache)
  --help            this text
Times \`npm start\` as a whole process: wall clock and CPU (user+sys of the whole process
tree), the program and access-matrix phases, the cold start after npm ci. Exit 1 over budget.`;

export interface BenchOptions {
  repeat: number;
  sizes: number[];
  stacks: string[];
  wide: boolean;
  cold: boolean;
}

export function parseBenchArgs(argv: string[]): BenchOptions | "help" {
  const o: BenchOptions = { repeat: 3, sizes: SIZES, stacks: STACKS, wide: true, cold: true };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined || v.startsWith("--")) throw new Error(`${flag} needs a value\n${USAGE}`);
      return v;
    };
    if (flag === "--help" || flag === "-h") return "help";
    else if (flag === "--repeat") o.repeat = Math.max(1, Number(value()) || 1);
    else if (flag === "--sizes") {
      o.sizes = value().split(",").map(Number);
      if (!o.sizes.length || o.sizes.some((n) => !Number.isInteger(n) || n < 3)) throw new Error(`--sizes: whole numbers of runners, at least 3 each\n${USAGE}`);
      o.sizes.sort((a, b) => a - b);
    } else if (flag === "--stacks") o.stacks = value().split(",");
    else if (flag === "--no-wide") o.wide = false;
    else if (flag === "--no-cold") o.cold = false;
    else throw new Error(`unknown argument ${flag}\n${USAGE}`);
  }
  return o;
}

/** Clock ticks per second of /proc's CPU times (getconf CLK_TCK; 100 on Linux). */
let clockTicks: number | undefined;
/**
 * CPU time (ms, user + system) of this process's children that have ended and been waited
 * for, with their own waited-for descendants: the kernel's cutime + cstime (/proc/self/stat
 * fields 16 and 17). Read before and after spawnSync, the difference is the child's whole
 * process tree. undefined where there is no /proc.
 */
export function childrenCpuMs(): number | undefined {
  try {
    const stat = fs.readFileSync("/proc/self/stat", "utf8");
    // Fields after "(comm)": state is field 3, so field n is at index n - 3.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (clockTicks === undefined) clockTicks = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;
    return ((Number(fields[16 - 3]) + Number(fields[17 - 3])) * 1000) / clockTicks;
  } catch {
    return undefined;
  }
}
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
  /** CPU time of the command's whole process tree (user + system), when /proc tells. */
  cpuMs?: number;
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
  /** Run with an empty transpile cache each time (the first run after `npm ci`). */
  cold?: boolean;
}

/** Why a preview failed: its error, else the checks it printed as FAILED (names only: never a secret). */
function failure(stdout: string, stderr: string, error?: Error): string {
  const errors = stderr.split("\n").filter((l) => l.trim() && !l.startsWith(PHASES_PREFIX));
  if (errors.length) return errors.slice(-3).join(" ");
  const failed = stdout.split("\n").filter((l) => /^\s+FAILED\s/.test(l)).map((l) => l.trim().replace(/^FAILED\s+/, "").replace(/:.*$/, ""));
  return failed.length ? `failed checks: ${failed.join("; ")}` : String(error ?? "no output");
}

/** `npm start -- --stack S --config F --out D` as a whole process, npm included; `cold`: with an empty transpile cache. */
function timeCommand(stack: string, configFile: string, cold = false): Run {
  // Under `npm run bench`, npm says where it is; otherwise the npm on PATH.
  const npm = process.env.npm_execpath ? [process.execPath, process.env.npm_execpath] : ["npm"];
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-bench-out-"));
  const tsCache = cold ? fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-bench-ts-cache-")) : undefined;
  const load = os.loadavg()[0];
  const cpuBefore = childrenCpuMs();
  const start = performance.now();
  const r = spawnSync(npm[0], [...npm.slice(1), "start", "--silent", "--", "--stack", stack, "--config", configFile, "--out", out], {
    cwd: ROOT,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, [PHASES_ENV]: "1", ...(tsCache ? { CI_FLEET_TS_CACHE: tsCache } : {}) },
  });
  const ms = performance.now() - start;
  const cpuAfter = childrenCpuMs();
  fs.rmSync(out, { recursive: true, force: true });
  if (tsCache) fs.rmSync(tsCache, { recursive: true, force: true });
  const ok = r.status === 0;
  const resources = /^ {2}resources: (\d+)$/m.exec(r.stdout ?? "")?.[1];
  return {
    ms,
    ...(cpuBefore !== undefined && cpuAfter !== undefined ? { cpuMs: cpuAfter - cpuBefore } : {}),
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
const matrixMs = (r: Run) => r.phases?.wall[ACCESS_MATRIX_PHASE];
/** The access-matrix phase of a case's runs: "wall/CPU" ms of the best-wall run and of the median. */
function matrixText(runs: Run[]): string {
  const sorted = runs.filter((r) => r.phases?.wall[ACCESS_MATRIX_PHASE] !== undefined).sort((a, b) => matrixMs(a)! - matrixMs(b)!);
  if (!sorted.length) return "n/a";
  const at = (r: Run) => `${Math.round(matrixMs(r)!)}/${Math.round(r.phases!.cpu[ACCESS_MATRIX_PHASE] ?? 0)}`;
  return `${at(sorted[0])} best, ${at(sorted[(sorted.length - 1) >> 1])} median`;
}
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

/** "best / median" CPU seconds of a case's runs, or n/a where /proc did not tell. */
function cpuText(runs: Run[]): string {
  const c = figure(runs, (r) => r.cpuMs);
  return c ? `${(c.best / 1000).toFixed(1)}/${(c.median / 1000).toFixed(1)}` : "n/a";
}

function main(argv: string[]): number {
  let opts: BenchOptions | "help";
  try {
    opts = parseBenchArgs(argv);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  if (opts === "help") {
    console.log(USAGE);
    return 0;
  }
  const { repeat, sizes, stacks } = opts;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-bench-"));
  const failures: string[] = [];
  try {
    const cases: Case[] = [];
    for (const stack of stacks) {
      for (const runners of sizes) {
        cases.push({ stack, label: `${runners}`, runners, configFile: overlay(dir, stack, scaledQueues(baseQueues(stack), { runners }), `${runners}`), runs: [] });
      }
    }
    const wide: Case | undefined = opts.wide
      ? { stack: "production", label: "50x20", runners: 1000, configFile: overlay(dir, "production", scaledQueues(baseQueues("production"), { queueCount: 50, perQueue: 20 }), "50x20"), runs: [] }
      : undefined;
    if (wide) cases.push(wide);
    // The first run after `npm ci`: the smallest production fleet with an empty transpile cache.
    const warmSmall = cases.find((c) => c.stack === stacks[0] && c.runners === sizes[0])!;
    const cold: Case | undefined = opts.cold ? { ...warmSmall, label: `${sizes[0]} cold`, runs: [], cold: true } : undefined;
    if (cold) cases.push(cold);

    // Warm-up: the first process pays for cold disk caches (and fills the transpile cache).
    timeCommand(stacks[0], cases[0].configFile);
    for (let i = 0; i < repeat; i++) {
      for (const c of cases) {
        const r = timeCommand(c.stack, c.configFile, c.cold);
        c.runs.push(r);
        const cpu = r.cpuMs !== undefined ? `, CPU ${(r.cpuMs / 1000).toFixed(1)} s` : "";
        process.stderr.write(`  run ${i + 1}/${repeat} ${c.stack} ${c.label}: ${(r.ms / 1000).toFixed(1)} s${cpu} (load ${r.load.toFixed(2)})${r.ok ? "" : " FAILED"}\n`);
      }
    }

    console.log(`npm start as a whole process (wall clock, and CPU: user+sys of its whole process tree), ${repeat} run${repeat > 1 ? "s" : ""} of each case: best and median, with the load average (1 min) at the start of that run`);
    console.log(`(${os.cpus().length} CPUs; budgets are decided on the best runs; wall far above CPU means a loaded machine)`);
    for (const stack of stacks) {
      const rows = cases.filter((c) => c.stack === stack && c !== wide && c !== cold);
      console.log(`stack ${stack}`);
      console.log("  runners  resources |  command ms best (load)  median (load)  CPU s best/median  ms/runner  marginal best/median | program ms best  median  ms/runner  marginal  share | access matrix ms wall/CPU");
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
          `  ${f(c.runners, 7)}  ${f(c.runs.find((r) => r.resources)?.resources ?? 0, 9)} | ${f(cmd.best, 15)} (${cmd.bestLoad.toFixed(1)})  ${f(cmd.median, 7)} (${cmd.medianLoad.toFixed(1)})  ${cpuText(c.runs).padStart(17)}  ${f(cmd.best / c.runners, 9, 2)}  ${marginal} |${progText} | ${matrixText(c.runs)}`,
        );
        const failed = c.runs.filter((x) => !x.ok);
        if (failed.length) failures.push(`${stack} at ${c.runners} runners: the preview failed in ${failed.length} of ${c.runs.length} runs (${failed[0].detail})`);
      });
      const big = rows[rows.length - 1];
      const mid = rows.length > 1 ? rows[rows.length - 2] : undefined;
      const cmdBig = figure(big.runs, (r) => r.ms)!;
      const progBig = figure(big.runs, programMs);
      const checks: [boolean, string][] = [
        [cmdBig.best < COMMAND_BUDGET_MS, `npm start at ${big.runners} runners: ${(cmdBig.best / 1000).toFixed(1)} s best, ${(cmdBig.median / 1000).toFixed(1)} s median, CPU ${cpuText(big.runs)} s (budget ${COMMAND_BUDGET_MS / 1000} s)`],
      ];
      if (mid) {
        const cmdMid = figure(mid.runs, (r) => r.ms)!;
        const commandMarginal = (cmdBig.best - cmdMid.best) / (big.runners - mid.runners);
        checks.push([commandMarginal < MARGINAL_BUDGET_MS, `npm start marginal ${mid.runners}->${big.runners}: ${commandMarginal.toFixed(2)} ms per runner best, ${((cmdBig.median - cmdMid.median) / (big.runners - mid.runners)).toFixed(2)} median (budget ${MARGINAL_BUDGET_MS} ms)`]);
      }
      const progMid = mid && figure(mid.runs, programMs);
      if (progBig && (progMid || !mid)) {
        const programMarginal = mid && progMid ? (progBig.best - progMid.best) / (big.runners - mid.runners) : 0;
        checks.push([
          progBig.best / big.runners < PROGRAM_BUDGET_MS_PER_RUNNER && programMarginal < PROGRAM_BUDGET_MS_PER_RUNNER,
          `program ${(progBig.best / big.runners).toFixed(2)} ms per runner at ${big.runners}${mid ? `, marginal ${programMarginal.toFixed(2)} ms` : ""} (budget ${PROGRAM_BUDGET_MS_PER_RUNNER} ms)`,
        ]);
      } else checks.push([false, "the preview reported no phases: no program figure"]);
      for (const [pass, text] of checks) {
        console.log(`  ${pass ? "ok" : "OVER BUDGET"}: ${text}`);
        if (!pass) failures.push(`${stack}: ${text}`);
      }
      console.log(phaseLine(big));
    }

    // Many queues: the access matrix is queues × roles, the key policy grows with queues.
    if (wide) {
      const w = figure(wide.runs, (r) => r.ms)!;
      const m = figure(wide.runs, matrixMs);
      const failed = wide.runs.filter((r) => !r.ok);
      const pass = failed.length === 0 && w.best < COMMAND_BUDGET_MS;
      const matrixPass = m !== undefined && m.best < ACCESS_MATRIX_BUDGET_MS;
      console.log(`stack production, 50 queues x 20 runners: npm start ${(w.best / 1000).toFixed(1)} s best (load ${w.bestLoad.toFixed(1)}), ${(w.median / 1000).toFixed(1)} s median (load ${w.medianLoad.toFixed(1)}), CPU ${cpuText(wide.runs)} s`);
      console.log(`  ${pass ? "ok" : "OVER BUDGET"}: 50 queues x 20 runners within ${COMMAND_BUDGET_MS / 1000} s${failed.length ? ` (the preview failed: ${failed[0].detail})` : ""}`);
      console.log(
        `  ${matrixPass ? "ok" : "OVER BUDGET"}: access matrix at 50 queues ${m ? `${(m.best / 1000).toFixed(2)} s best, ${(m.median / 1000).toFixed(2)} s median` : "(no phases reported)"}, wall/CPU ms ${matrixText(wide.runs)} (budget ${ACCESS_MATRIX_BUDGET_MS / 1000} s)`,
      );
      console.log(phaseLine(wide));
      if (!pass) failures.push(`50 queues x 20 runners: ${(w.best / 1000).toFixed(1)} s${failed.length ? ", the preview failed" : ""}`);
      if (!matrixPass) failures.push(`access matrix at 50 queues: ${m ? `${(m.best / 1000).toFixed(2)} s` : "no phases reported"}`);
    }

    // The first run after `npm ci`: every source transpiled, beside the same case warm.
    if (cold) {
      const c = figure(cold.runs, (r) => r.ms)!;
      const warm = figure(warmSmall.runs, (r) => r.ms)!;
      const failed = cold.runs.filter((r) => !r.ok);
      const pass = failed.length === 0 && c.best < COLD_START_BUDGET_MS;
      console.log(
        `cold start (empty transpile cache, as after npm ci), stack ${cold.stack} ${warmSmall.runners} runners: ${(c.best / 1000).toFixed(1)} s best (load ${c.bestLoad.toFixed(1)}), ${(c.median / 1000).toFixed(1)} s median, CPU ${cpuText(cold.runs)} s; ` +
          `warm ${(warm.best / 1000).toFixed(1)} s best, CPU ${cpuText(warmSmall.runs)} s; the cold start adds ${((c.best - warm.best) / 1000).toFixed(1)} s best, ${((c.median - warm.median) / 1000).toFixed(1)} s median`,
      );
      console.log(`  ${pass ? "ok" : "OVER BUDGET"}: cold start within ${COLD_START_BUDGET_MS / 1000} s${failed.length ? ` (the preview failed: ${failed[0].detail})` : ""}`);
      if (!pass) failures.push(`cold start: ${(c.best / 1000).toFixed(1)} s${failed.length ? ", the preview failed" : ""}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (failures.length) console.log(`\nOVER BUDGET or failed:\n${failures.map((x) => `  - ${x}`).join("\n")}`);
  return failures.length ? 1 : 0;
}

if (require.main === module) process.exit(main(process.argv.slice(2)));
