// npm run bench:job-vm [-- --jobs N]: the job-slot launcher's own cost, measured from its
// timestamped events (ci-job-slot --events) on the test guest under this machine's
// accelerator (TCG here). Per job:
//   overhead  = wall time of the job's cycle (the previous VM's end, or the run's start, to
//               this VM's destruction) minus the guest's boot (vm-started -> ready) minus the
//               job itself (delivered -> exit report) minus the idle wait for the input;
//   job start = the input renamed into the inbox (by this bench, wall clock) -> the guest's
//               "started" report, with a warm spare waiting.
// Targets (issue 15): overhead < 1 s, job start < 5 s. Root; the packages of test/job-vm.
import { GuestEvent, makeHost, requireJobVmPrerequisites, startLauncher, submit, vmOf } from "../../test/job-vm/support";

const jobsArg = process.argv.indexOf("--jobs");
const JOBS = jobsArg > 0 ? Number(process.argv[jobsArg + 1]) : 5;
// --keep-events FILE: a copy of the launcher's event log, for a breakdown of the overhead.
const keepArg = process.argv.indexOf("--keep-events");
const KEEP_EVENTS = keepArg > 0 ? process.argv[keepArg + 1] : undefined;

const at = (events: GuestEvent[], pred: (e: GuestEvent) => boolean): number => {
  const e = events.find(pred);
  if (!e) throw new Error("missing event");
  return e.t;
};

async function main(): Promise<void> {
  requireJobVmPrerequisites();
  const host = makeHost("b");
  try {
    const l = startLauncher(host, ["once", "--config", host.config(), "--slot", "0", "--jobs", String(JOBS)]);
    const offered: number[] = [];
    let previous = 0; // the previous job's outcome: the next warm spare is the first VM ready after it
    for (let k = 1; k <= JOBS; k++) {
      await l.waitFor((e) => e.event === "vm-ready" && e.t > previous, 900_000, `a warm VM for job ${k}`);
      await new Promise((r) => setTimeout(r, 500)); // a warm spare, idle
      offered.push(Date.now() / 1000);
      const input = `bench-${String(k).padStart(3, "0")}`;
      submit(host, 0, input, { exit: "0" });
      previous = (await l.waitFor((e) => e.event === "outcome" && e.input === input, 900_000, `${input}'s outcome`)).t;
    }
    const result = await l.done;
    if (result.code !== 0) throw new Error(`launcher exit ${result.code}: ${l.stderr().slice(-3000)}`);
    const events = l.read();
    if (KEEP_EVENTS) require("fs").copyFileSync(l.events, KEEP_EVENTS);
    const runStart = at(events, (e) => e.event === "cleanup");
    const rows: string[] = [];
    const overheads: number[] = [];
    const starts: number[] = [];
    let cycleStart = runStart;
    for (let k = 1; k <= JOBS; k++) {
      // The VM that took the input (a failed boot is retried under a new number).
      const n = vmOf(events, `bench-${String(k).padStart(3, "0")}`);
      const vm = (e: GuestEvent) => e.vm === n;
      const started = at(events, (e) => e.event === "vm-started" && vm(e));
      const ready = at(events, (e) => e.event === "vm-ready" && vm(e));
      const taken = at(events, (e) => e.event === "input-taken" && vm(e));
      const delivered = at(events, (e) => e.event === "delivered" && vm(e));
      const guestStarted = at(events, (e) => e.event === "guest" && e.report === "started" && vm(e));
      const exitReport = at(events, (e) => e.event === "guest" && String(e.report).startsWith("exit ") && vm(e));
      const destroyed = at(events, (e) => e.event === "vm-destroyed" && vm(e));
      // The launcher's steps (events of this launcher; absent from older ones: NaN).
      const maybe = (pred: (e: GuestEvent) => boolean) => events.find(pred)?.t ?? NaN;
      const prepared = maybe((e) => e.event === "vm-prepared" && vm(e));
      const ended = maybe((e) => e.event === "vm-ended" && vm(e));
      const boot = ready - started;
      const idle = taken - ready;
      const job = exitReport - delivered;
      const overhead = destroyed - cycleStart - boot - idle - job;
      const start = guestStarted - offered[k - 1];
      overheads.push(overhead);
      starts.push(start);
      rows.push(
        `| ${k} | ${boot.toFixed(2)} | ${job.toFixed(3)} | ${overhead.toFixed(3)} | ${(started - cycleStart).toFixed(3)} | ${(prepared - cycleStart).toFixed(3)} | ${(started - prepared).toFixed(3)} | ${(delivered - taken).toFixed(3)} | ${(destroyed - exitReport).toFixed(3)} | ${(ended - exitReport).toFixed(3)} | ${(destroyed - ended).toFixed(3)} | ${start.toFixed(3)} |`,
      );
      cycleStart = destroyed;
    }
    const max = (xs: number[]) => Math.max(...xs);
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    console.log(`job-slot launcher, ${JOBS} jobs, test guest under TCG, load ${require("os").loadavg()[0].toFixed(2)}`);
    console.log(
      "| job | guest boot s | job s | launcher overhead s | prepare s (cycle start -> qemu) | of which overlay+tap+nft | of which qemu spawn | input taken -> delivered | teardown s (exit report -> destroyed) | of which exit -> qemu ended | of which tap+nft+files | job start s (offered -> guest started) |",
    );
    console.log("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (const r of rows) console.log(r);
    const min = (xs: number[]) => Math.min(...xs);
    console.log(
      `overhead best ${min(overheads).toFixed(3)} / median ${median(overheads).toFixed(3)} / max ${max(overheads).toFixed(3)} s (target < 1 s); ` +
        `job start best ${min(starts).toFixed(3)} / median ${median(starts).toFixed(3)} / max ${max(starts).toFixed(3)} s (target < 5 s)`,
    );
    if (max(overheads) >= 1 || max(starts) >= 5) process.exitCode = 1;
  } finally {
    host.destroy();
  }
}

void main().catch((e) => {
  console.error(e);
  process.exit(1);
});
