import { performance, PerformanceObserver } from "perf_hooks";

/**
 * Where `npm start`'s time goes, phase by phase: for `npm run bench` and diagnostics only.
 * With CI_FLEET_PREVIEW_PHASES=1 the preview prints one line to stderr at the end,
 * `ci-fleet-phases {"wall":{"startup":812.3,"program":4021.7,...},"cpu":{...},"totalMs":...}`;
 * otherwise nothing is printed, and nothing of this is ever written to a file.
 *
 * Each phase is the time since the previous mark (the first: since the process started),
 * summed when a phase is marked more than once: wall clock, and the process's CPU time
 * (every thread: the garbage collector's helpers too). `gcMs` is the collector's pauses of
 * the main thread over the whole run, `heapMB` the heap in use at the end.
 */

export const PHASES_ENV = "CI_FLEET_PREVIEW_PHASES";
export const PHASES_PREFIX = "ci-fleet-phases ";

export interface PhaseTimings {
  wall: Record<string, number>;
  cpu: Record<string, number>;
  totalMs: number;
  cpuMs: number;
  gcMs: number;
  heapMB: number;
}

const enabled = Boolean(process.env[PHASES_ENV]);
const wall = new Map<string, number>();
const cpu = new Map<string, number>();
let lastWall = 0;
let lastCpu = 0;
let gcMs = 0;

if (enabled) {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcMs += e.duration;
  }).observe({ entryTypes: ["gc"] });
}

function cpuNow(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

const round = (ms: number) => Math.round(ms * 10) / 10;

/** Ends the current phase under `name`. */
export function phase(name: string): void {
  const now = performance.now();
  const c = cpuNow();
  wall.set(name, (wall.get(name) ?? 0) + (now - lastWall));
  cpu.set(name, (cpu.get(name) ?? 0) + (c - lastCpu));
  lastWall = now;
  lastCpu = c;
}

export function phaseTimings(): PhaseTimings {
  return {
    wall: Object.fromEntries([...wall].map(([k, v]) => [k, round(v)])),
    cpu: Object.fromEntries([...cpu].map(([k, v]) => [k, round(v)])),
    totalMs: round(performance.now()),
    cpuMs: round(cpuNow()),
    gcMs: round(gcMs),
    heapMB: Math.round(process.memoryUsage().heapUsed / 2 ** 20),
  };
}

/** Prints the phases to stderr when CI_FLEET_PREVIEW_PHASES is set. */
export function reportPhases(): void {
  if (enabled) process.stderr.write(`${PHASES_PREFIX}${JSON.stringify(phaseTimings())}\n`);
}

/** The phases a preview printed, from its stderr (undefined if it printed none). */
export function parsePhases(stderr: string): PhaseTimings | undefined {
  const line = stderr.split("\n").find((l) => l.startsWith(PHASES_PREFIX));
  return line ? (JSON.parse(line.slice(PHASES_PREFIX.length)) as PhaseTimings) : undefined;
}
