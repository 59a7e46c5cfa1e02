// The job-slot launcher (salt/runner/files/ci-job-slot) run for real: QEMU TCG guests built
// from Debian packages (support.ts), taps and nftables inside network namespaces this test
// creates and removes. Needs root and the packages in scripts/debian-packages.txt; without
// them the tests FAIL naming the package, they never skip.
//
// Guest boots are the cost (TCG, 2 cores, other suites running), so five slots run at once,
// started in beforeAll, and each test checks what its slot's run observed:
//   slot 0  once --jobs 3, with a fake minting command for the VMs' AWS sessions
//           (refreshSeconds 3): job 1 (credential, marker; waits for its VM's second
//           session), job 2 (marker, then its QEMU is
//           killed: a crash), job 3 (marker, network probes; its guest lingers
//           120 s after its exit report: the launcher must not wait for it)   3 boots
//   slot 1  once --jobs 2, faults no-filter + reuse-overlay: the control run of the
//           network probes, then its warm spare (a probe target of slot 0's job 3)
//           takes the fresh-disk control                                        2 boots
//   slot 2  once --jobs 1, self-test on, maxJobSeconds 10: a hang                2 boots
//   slot 3  run, SIGTERM mid-job; run again (recovers), SIGKILL mid-job, cleanup 2 boots
//   slot 4  run, self-test that reports "fail"                                   1 boot
//   slot 5  once --jobs 1, an input through `ci-job-slot handoff`: its log line on the
//           handoff's stdout while the job runs, then SIGTERM to the handoff (a cancel) 1 boot
// A boot may fail and be retried (vm-failed, a new VM number): every VM is identified
// from the launcher's event log (the VM that took an input), never by counting. Waits are
// bounded generously (a boot took up to 109 s at load 20); none is a sleep.
import { spawn } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import {
  GUEST_APPEND, GuestEvent, Host, LAUNCHER, Launcher, NET, PYTHON, leftovers, makeHost, outcome, qemuPid, reports, requireJobVmPrerequisites,
  startLauncher, submit, vmOf,
} from "./support";

// Generous bounds, never a race: a wait that includes guest boots, and one that does not.
const BOOTS = 900_000;
const SHORT = 300_000;
jest.setTimeout(1_500_000);

const sha = (s: string) => crypto.createHash("sha256").update(s).digest("hex");
const CREDENTIAL = `cred-${Date.now()}-${crypto.randomBytes(4).toString("hex")}-only-for-job-1`;
const CLOSED_TARGETS = [NET.hostSide(0), NET.uplinkHost, NET.fleetHost, NET.metadata, NET.fleetPeer, NET.guest(1), NET.internet];
const OPEN_TARGETS = [NET.hostSide(1), NET.uplinkHost, NET.metadata, NET.fleetPeer, NET.internet];
// Slot 0's aws.command: a fake ci-fleet-aws-session that mints a new 900 s session per call
// (numbered), logs its argv and time and keeps each document for the test (sha256 only compared).
const SESSION_SECRET = `aws-secret-${crypto.randomBytes(8).toString("hex")}`;
// Its document is written (renamed in) before its call is recorded, and printed after: a mint
// killed at any point (the launcher kills a running mint when its VM goes) leaves either no
// record, or a record with its document; a document the launcher could have read has both.
const FAKE_MINT = `#!/usr/bin/python3
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
t = time.time()
tag = "%d-%s" % (os.getpid(), os.urandom(4).hex())
doc = json.dumps({"Version": 1, "AccessKeyId": "ASIAMINT" + os.urandom(6).hex().upper(), "SecretAccessKey": "${SESSION_SECRET}-" + tag,
                  "SessionToken": "token-" + tag, "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 900))})
with open(os.path.join(here, ".doc-" + tag), "w") as f:
    f.write(doc)
os.rename(os.path.join(here, ".doc-" + tag), os.path.join(here, "doc-" + tag))
with open(os.path.join(here, "calls"), "a") as f:
    f.write(json.dumps({"t": t, "argv": sys.argv[1:], "doc": "doc-" + tag}) + "\\n")
sys.stdout.write(doc)
`;
interface Mint { t: number; vm: number; sha: string }

/** A file's bytes, or none if it was removed meanwhile (the other slots keep running). */
function readIfThere(file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return Buffer.alloc(0);
    throw e;
  }
}

function filesUnder(dir: string): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return []; // removed meanwhile by another slot's launcher
    throw e;
  }
  return entries.flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? filesUnder(p) : e.isFile() ? [p] : [];
  });
}

/** A scenario's result, or its error, kept so that only the tests that use it fail. */
class Outcome<T> {
  private settled: Promise<{ ok: true; value: T } | { ok: false; error: unknown }>;
  constructor(p: Promise<T>) {
    this.settled = p.then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    );
  }
  async get(): Promise<T> {
    const r = await this.settled;
    if (!r.ok) throw r.error;
    return r.value;
  }
}

let host: Host;
const launchers: Launcher[] = [];
const LOG_LINE = `job output ${crypto.randomBytes(4).toString("hex")}`;
const start = (args: string[], env: NodeJS.ProcessEnv = {}) => {
  const l = startLauncher(host, args, env);
  launchers.push(l);
  return l;
};

// --- slot 0: three consecutive jobs, the second one crashes ---------------------------------
interface Slot0 {
  events: GuestEvent[];
  exit: { code: number | null; signal: NodeJS.Signals | null };
  holdingCredential: string[];
  inboxJob1: string[];
  mints: Mint[];
  stderr: string;
  eventsText: string;
  leftovers: string[];
  /** When this test sent SIGKILL to job 2's QEMU (epoch seconds, the launcher's clock). */
  vm2KilledAt: number;
}
let slot0: Outcome<Slot0>;

async function runSlot0(slot1Ready: Promise<unknown>, probed: (v: unknown) => void): Promise<Slot0> {
  const mintDir = path.join(host.dir, "mint");
  fs.mkdirSync(mintDir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(mintDir, "mint"), FAKE_MINT, { mode: 0o700 });
  const config = host.config({ aws: { region: "eu-west-1", command: [path.join(mintDir, "mint"), "--session-name", "test-minion"], refreshSeconds: 3 } });
  const l = start(["once", "--config", config, "--slot", "0", "--jobs", "3"]);
  submit(host, 0, "job-1", { credential: CREDENTIAL, marker: "written-by-job-1", awswait: "2", exit: "0" });
  submit(host, 0, "job-2", { marker: "written-by-job-2", hang: "1" });
  // The moment the guest has the input: no host copy anywhere (inbox, run dir, state dir, logs).
  const vm1 = Number((await l.waitFor((e) => e.event === "input-taken" && e.input === "job-1", BOOTS, "job 1 taken")).vm);
  await l.waitFor((e) => e.event === "guest" && e.vm === vm1 && e.report === "started", SHORT, "job 1 started");
  const inboxJob1 = fs.readdirSync(path.join(host.dir, "run/0/inbox")).filter((f) => f.includes("job-1"));
  const holdingCredential = filesUnder(host.dir).filter((f) => readIfThere(f).includes(CREDENTIAL));
  // Job 2 crashes: its QEMU is killed while the job runs.
  const vm2 = Number((await l.waitFor((e) => e.event === "input-taken" && e.input === "job-2", BOOTS, "job 2 taken")).vm);
  await l.waitFor((e) => e.event === "guest" && e.vm === vm2 && e.report === "hanging", SHORT, "job 2 running");
  const vm2KilledAt = Date.now() / 1000;
  process.kill(qemuPid(l.read(), vm2), "SIGKILL");
  // Job 3 probes the network once slot 1's VM is up (a target: another slot's VM).
  await slot1Ready;
  submit(host, 0, "job-3", { marker: "written-by-job-3", probe: CLOSED_TARGETS.join(" "), exit: "3", linger: "120" });
  try {
    await l.waitFor((e) => e.event === "outcome" && e.input === "job-3", BOOTS, "job 3's outcome");
  } finally {
    probed(undefined);
  }
  const exit = await l.done;
  const eventsText = fs.readFileSync(l.events, "utf8");
  const mints = fs.readFileSync(path.join(mintDir, "calls"), "utf8").trim().split("\n").map((line) => {
    const call = JSON.parse(line) as { t: number; argv: string[]; doc: string };
    const name = call.argv[call.argv.indexOf("--session-name") + 1];
    expect(call.argv).toEqual(["--session-name", name, "--stdout", "--duration", "900"]);
    return { t: call.t, vm: Number(/^test-minion\.s0\.v(\d+)$/.exec(name)?.[1]), sha: sha(fs.readFileSync(path.join(mintDir, call.doc), "utf8")) };
  });
  return { events: l.read(), exit, holdingCredential, inboxJob1, mints, stderr: l.stderr(), eventsText, leftovers: leftovers(host, 0), vm2KilledAt };
}

// --- slot 1: the control run (no filter, reused overlay) -------------------------------------
interface Slot1 {
  events: GuestEvent[];
  exit: { code: number | null; signal: NodeJS.Signals | null };
  leftovers: string[];
}
let slot1: Outcome<Slot1>;

async function runSlot1(ready: (v: unknown) => void, slot0Probed: Promise<unknown>): Promise<Slot1> {
  const l = start(["once", "--config", host.config(), "--slot", "1", "--jobs", "2"], {
    CI_JOB_SLOT_FAULT: "no-filter,reuse-overlay",
  });
  try {
    submit(host, 1, "open-1", { marker: "written-by-open-1", probe: OPEN_TARGETS.join(" "), exit: "0" });
    const done1 = (await l.waitFor((e) => e.event === "outcome" && e.input === "open-1", BOOTS, "open-1's outcome")).t;
    await l.waitFor((e) => e.event === "vm-ready" && e.t > done1, BOOTS, "slot 1's next warm VM");
  } finally {
    ready(undefined);
  }
  // The warm spare idles (a probe target of slot 0's job 3) until slot 0's probes are done.
  await slot0Probed;
  submit(host, 1, "open-2", { marker: "written-by-open-2", exit: "0" });
  const exit = await l.done;
  return { events: l.read(), exit, leftovers: leftovers(host, 1) };
}

// --- slot 2: a hang ------------------------------------------------------------------------
interface Slot2 {
  events: GuestEvent[];
  exit: { code: number | null; signal: NodeJS.Signals | null };
  outcome?: string;
  leftovers: string[];
}
let slot2: Outcome<Slot2>;

async function runSlot2(): Promise<Slot2> {
  const l = start(["once", "--config", host.config({ selftest: true, maxJobSeconds: 10 }), "--slot", "2"]);
  submit(host, 2, "a-hang", { hang: "1" });
  const exit = await l.done;
  return { events: l.read(), exit, outcome: outcome(host, 2, "a-hang"), leftovers: leftovers(host, 2) };
}

// --- slot 3: SIGTERM, then a run that recovers and is SIGKILLed -------------------------------
interface Slot3 {
  termHeld: string[];
  termVm: number;
  termExit: { code: number | null; signal: NodeJS.Signals | null };
  termOutcome?: string;
  termLeftovers: string[];
  killEvents: GuestEvent[];
  killVm: number;
  killHeld: string[];
  cleanupExit: { code: number | null; signal: NodeJS.Signals | null };
  killOutcome?: string;
  killLeftovers: string[];
}
let slot3: Outcome<Slot3>;

async function runSlot3(): Promise<Slot3> {
  const l = start(["run", "--config", host.config(), "--slot", "3"]);
  submit(host, 3, "term-1", { hang: "1" });
  const termVm = Number((await l.waitFor((e) => e.event === "input-taken" && e.input === "term-1", BOOTS, "term-1 taken")).vm);
  await l.waitFor((e) => e.event === "guest" && e.vm === termVm && e.report === "hanging", SHORT, "term-1 running");
  const termHeld = leftovers(host, 3);
  l.child.kill("SIGTERM");
  const termExit = await l.done;
  const termOutcome = outcome(host, 3, "term-1");
  const termLeftovers = leftovers(host, 3);

  const k = start(["run", "--config", host.config(), "--slot", "3"]);
  submit(host, 3, "kill-1", { hang: "1" });
  const killVm = Number((await k.waitFor((e) => e.event === "input-taken" && e.input === "kill-1", BOOTS, "kill-1 taken")).vm);
  await k.waitFor((e) => e.event === "guest" && e.vm === killVm && e.report === "hanging", SHORT, "kill-1 running");
  const qemu = qemuPid(k.read(), killVm);
  k.child.kill("SIGKILL");
  await k.done;
  process.kill(qemu, "SIGKILL");
  for (const end = Date.now() + SHORT; Date.now() < end && fs.existsSync(`/proc/${qemu}/stat`) && !/\) Z /.test(fs.readFileSync(`/proc/${qemu}/stat`, "utf8")); ) {
    await new Promise((r) => setTimeout(r, 25));
  }
  const killHeld = leftovers(host, 3);
  const c = start(["cleanup", "--config", host.config(), "--slot", "3"]);
  const cleanupExit = await c.done;
  return {
    termHeld, termVm, termExit, termOutcome, termLeftovers, killEvents: k.read(), killVm, killHeld, cleanupExit,
    killOutcome: outcome(host, 3, "kill-1"), killLeftovers: leftovers(host, 3),
  };
}

// --- slot 4: a failing self-test -------------------------------------------------------------
interface Slot4 {
  events: GuestEvent[];
  exit: { code: number | null; signal: NodeJS.Signals | null };
  inboxKept: boolean;
  leftovers: string[];
}
let slot4: Outcome<Slot4>;

async function runSlot4(): Promise<Slot4> {
  const cfg = host.config({ selftest: true, append: `${GUEST_APPEND} citest.selftest=fail` });
  const l = start(["run", "--config", cfg, "--slot", "4"]);
  submit(host, 4, "never", { exit: "0" });
  const exit = await l.done;
  const inboxKept = fs.existsSync(path.join(host.dir, "run/4/inbox/never"));
  fs.rmSync(path.join(host.dir, "run/4/inbox/never"), { force: true });
  return { events: l.read(), exit, inboxKept, leftovers: leftovers(host, 4) };
}

// --- slot 5: a handoff (the Buildkite path): the job's log on its stdout, then a cancel --------
interface Slot5 {
  events: GuestEvent[];
  stdoutWhileRunning: string;
  handoffExit: { code: number | null; signal: NodeJS.Signals | null };
  handoffStdout: string;
  handoffStderr: string;
  cancelSeconds: number;
  exit: { code: number | null; signal: NodeJS.Signals | null };
  outbox: string[];
  leftovers: string[];
}
let slot5: Outcome<Slot5>;

async function runSlot5(): Promise<Slot5> {
  const config = host.config();
  const l = start(["once", "--config", config, "--slot", "5", "--jobs", "1"]);
  // The inbox exists once the launcher has started (it makes the slot's directories).
  const inbox = path.join(host.dir, "run/5/inbox");
  for (const end = Date.now() + SHORT; !fs.existsSync(inbox) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 50));
  const handoff = spawn(PYTHON, [LAUNCHER, "handoff", "--config", config, "--slot", "5"], { stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  handoff.stdout!.setEncoding("utf8").on("data", (c: string) => (stdout += c));
  handoff.stderr!.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  const handoffDone = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    handoff.on("close", (code, signal) => resolve({ code, signal })),
  );
  handoff.stdin!.end(`log=${LOG_LINE}\nhang=1\n`);
  const taken = await l.waitFor((e) => e.event === "input-taken" && String(e.input).startsWith("handoff-"), BOOTS, "the handoff's input taken");
  await l.waitFor((e) => e.event === "guest" && e.vm === taken.vm && e.report === "hanging", SHORT, "the handoff's job running");
  const expected = `${LOG_LINE}\nstderr: ${LOG_LINE}\n`;
  // A boot slower than 60 s (TCG, a loaded host) adds the handoff's own line first: the input waited.
  const job = (text: string) => text.replace(/^\[ci-fleet: job slot 5 has not taken this job after 60 s: [^\n]*\]\n/, "");
  for (const end = Date.now() + SHORT; job(stdout) !== expected && Date.now() < end; ) await new Promise((r) => setTimeout(r, 50));
  const stdoutWhileRunning = job(stdout);
  const sent = Date.now();
  handoff.kill("SIGTERM");
  const handoffExit = await handoffDone;
  const cancelSeconds = (Date.now() - sent) / 1000;
  const exit = await l.done;
  return {
    events: l.read(), stdoutWhileRunning, handoffExit, handoffStdout: job(stdout), handoffStderr: stderr, cancelSeconds, exit,
    outbox: fs.readdirSync(path.join(host.dir, "run/5/outbox")), leftovers: leftovers(host, 5),
  };
}

beforeAll(() => {
  requireJobVmPrerequisites();
  host = makeHost("l");
  let slot1IsReady: (v: unknown) => void = () => undefined;
  const slot1Ready = new Promise((r) => (slot1IsReady = r));
  let slot0HasProbed: (v: unknown) => void = () => undefined;
  const slot0Probed = new Promise((r) => (slot0HasProbed = r));
  // Each hand-over is also released when its scenario ends early (a failure): the other slot's
  // scenario then goes on (and its own tests judge it), never waits for good.
  slot0 = new Outcome(runSlot0(slot1Ready, slot0HasProbed).finally(() => slot0HasProbed(undefined)));
  slot1 = new Outcome(runSlot1(slot1IsReady, slot0Probed).finally(() => slot1IsReady(undefined)));
  slot2 = new Outcome(runSlot2());
  slot3 = new Outcome(runSlot3());
  slot4 = new Outcome(runSlot4());
  slot5 = new Outcome(runSlot5());
}, 600_000);

afterAll(async () => {
  // A failed scenario may leave a launcher running: stop it (it cleans up its slot).
  for (const l of launchers) if (l.child.exitCode === null && l.child.signalCode === null) l.child.kill("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([Promise.all(launchers.map((l) => l.done)), new Promise((r) => (timer = setTimeout(r, 60_000)))]);
  clearTimeout(timer); // jest exits when the run ends, not 60 s later
  host?.destroy();
}, 120_000);

describe("every job in a fresh VM", () => {
  test("three consecutive jobs: nothing job 1 wrote on its disk or in its home reaches jobs 2 and 3; the credential is read once and gone from the host", async () => {
    const r = await slot0.get();
    expect(r.inboxJob1).toEqual([]);
    expect(r.holdingCredential).toEqual([]);
    const [vm1, vm2, vm3] = ["job-1", "job-2", "job-3"].map((input) => vmOf(r.events, input));
    expect(reports(r.events, vm1).filter((x) => !x.startsWith("aws-"))).toEqual([
      "ready",
      "started",
      `credential sha256=${sha(CREDENTIAL)} length=${CREDENTIAL.length} second-read-bytes=0`,
      "disk raw=- home=-",
      "disk wrote written-by-job-1",
      "exit 0",
    ]);
    for (const vm of [vm2, vm3]) {
      expect(reports(r.events, vm)).toContain("disk raw=- home=-");
      expect(reports(r.events, vm)).toContain(`credential sha256=${sha("")} length=0 second-read-bytes=0`);
    }
    // Each VM its own overlay, each destroyed before the next job's VM.
    const overlays = r.events.filter((e) => e.event === "vm-started").map((e) => e.overlay);
    expect(new Set(overlays).size).toBe(overlays.length);
    expect(vm1 < vm2 && vm2 < vm3).toBe(true);
    for (const vm of [vm1, vm2]) {
      const destroyed = r.events.findIndex((e) => e.event === "vm-destroyed" && e.vm === vm);
      const nextStarted = r.events.findIndex((e) => e.event === "vm-started" && Number(e.vm) > vm);
      expect(destroyed).toBeGreaterThan(-1);
      expect(destroyed).toBeLessThan(nextStarted);
    }
    expect([outcome(host, 0, "job-1"), outcome(host, 0, "job-3")]).toEqual(["0 exited\n", "3 exited\n"]);
    expect(r.exit).toEqual({ code: 0, signal: null });
    expect(r.stderr).not.toContain(CREDENTIAL);
    expect(r.eventsText).not.toContain(CREDENTIAL);
    expect(r.leftovers).toEqual([]);
  });

  test("the check above fails if a VM boots on the previous job's overlay (CI_JOB_SLOT_FAULT=reuse-overlay, slot 1)", async () => {
    const r = await slot1.get();
    expect(reports(r.events, vmOf(r.events, "open-2"))).toContain("disk raw=written-by-open-1 home=written-by-open-1");
    expect(r.exit).toEqual({ code: 0, signal: null });
    expect(r.leftovers).toEqual([]);
  });

  test("the self-test passes in a fresh VM before the slot takes a job, and that VM is never given one (slot 2)", async () => {
    const r = await slot2.get();
    const selftest = r.events.find((e) => e.event === "selftest");
    expect(selftest?.result).toBe("ok");
    const selftestVm = Number(selftest?.vm);
    expect(reports(r.events, selftestVm)).toContain("selftest ok");
    const taken = r.events.filter((e) => e.event === "input-taken");
    expect(taken.map((e) => e.input)).toEqual(["a-hang"]);
    expect(taken.map((e) => e.vm)).not.toContain(selftestVm);
    const selftestIndex = r.events.indexOf(selftest!);
    expect(r.events.findIndex((e) => e.event === "input-taken")).toBeGreaterThan(selftestIndex);
  });
});

describe("the launcher's own cost", () => {
  test("QEMU is ended at the guest's exit report, not after its power-off (job 3's guest lingers 120 s before powering off)", async () => {
    const r = await slot0.get();
    const vm3 = vmOf(r.events, "job-3");
    const mine = r.events.filter((e) => e.vm === vm3 || (e.event === "outcome" && e.input === "job-3"));
    const exitAt = mine.findIndex((e) => e.event === "guest" && e.report === "exit 3");
    // The guest's own session reports ("aws-session n=…") may still arrive behind its exit report.
    const steps = mine.slice(exitAt + 1)
      .filter((e) => ["guest", "vm-ended", "vm-destroyed", "outcome"].includes(e.event))
      .filter((e) => !(e.event === "guest" && String(e.report).startsWith("aws-")));
    expect(steps.map((e) => [e.event, e.how ?? null])).toEqual([
      ["vm-ended", "killed"], ["vm-destroyed", null], ["outcome", null],
    ]);
    // Bounded by the launcher's own steps (a kill, a tap, a table), not by the guest.
    expect(steps[0].t - mine[exitAt].t).toBeLessThan(10);
    expect(r.events.filter((e) => e.event === "poweroff-timeout")).toEqual([]);
  });
});

describe("the queue role's session in the VM", () => {
  test("each VM gets sessions minted for it alone: the first on org.ci-fleet.aws before the job starts, a fresh one while it runs, none after the VM is destroyed; nothing of them is logged", async () => {
    const r = await slot0.get();
    const [vm1, vm3] = [vmOf(r.events, "job-1"), vmOf(r.events, "job-3")];
    const mintedFor = (vm: number) => r.mints.filter((m) => m.vm === vm);
    const seen = reports(r.events, vm1).filter((x) => x.startsWith("aws-"));
    // The guest's first two frames are two different sessions minted for VM 1 (the fake's documents).
    const shas = seen.filter((x) => x.startsWith("aws-session ")).slice(0, 2).map((x) => /sha256=(\w+)/.exec(x)?.[1]);
    expect(shas.length).toBe(2);
    expect(new Set(shas).size).toBe(2);
    for (const h of shas) expect(mintedFor(vm1).map((m) => m.sha)).toContain(h);
    expect(seen).toContain("aws-wait 2 done");
    const all = reports(r.events, vm1);
    expect(all.indexOf("ready")).toBeLessThan(all.findIndex((x) => x.startsWith("aws-session n=1 ")));
    expect(all.findIndex((x) => x.startsWith("aws-session n=1 "))).toBeLessThan(all.indexOf("started"));
    // The launcher's order: the first session sent before the job input was taken from the inbox.
    const at = (pred: (e: GuestEvent) => boolean) => r.events.find(pred)?.t ?? NaN;
    const sent = r.events.filter((e) => e.event === "aws-session-sent" && e.vm === vm1);
    expect(sent.length).toBeGreaterThanOrEqual(2);
    expect(sent[0].t).toBeLessThan(at((e) => e.event === "input-taken" && e.input === "job-1"));
    // Each VM its own: no document of VM 1 reaches VM 3, and every VM's mints stop at its destruction.
    const vm3Shas = reports(r.events, vm3).filter((x) => x.startsWith("aws-session ")).map((x) => /sha256=(\w+)/.exec(x)?.[1]);
    expect(vm3Shas.length).toBeGreaterThan(0);
    for (const h of vm3Shas) expect(mintedFor(vm3).map((m) => m.sha)).toContain(h);
    expect(new Set(r.mints.map((m) => m.sha)).size).toBe(r.mints.length);
    for (const vm of new Set(r.mints.map((m) => m.vm))) {
      const destroyed = at((e) => e.event === "vm-destroyed" && e.vm === vm);
      expect({ vm, after: mintedFor(vm).filter((m) => !(m.t < destroyed)).length }).toEqual({ vm, after: 0 });
    }
    // A refresh refused because QEMU closed the port is the VM's end (aws-session-dropped), never
    // a session the VM lacked: allowed only where QEMU is gone, killed by this test (job 2, the
    // crash above), or a guest that reported its exit and powered off while a refresh was being
    // sent (its exit report, still unread on the console, is logged after the drop).
    expect(r.events.filter((e) => e.event === "aws-session-unavailable")).toEqual([]);
    const vm2 = vmOf(r.events, "job-2");
    for (const e of r.events.filter((x) => x.event === "aws-session-dropped")) {
      const reportedExit = r.events.some((x) => x.event === "guest" && x.vm === e.vm && /^exit \d+$/.test(String(x.report)));
      const qemuGone = (e.vm === vm2 && e.t >= r.vm2KilledAt) || (e.vm !== vm2 && reportedExit);
      expect({ vm: e.vm, reason: e.reason, qemuGone }).toEqual({ vm: e.vm, reason: expect.stringMatching(/^the VM ended \((BrokenPipeError|ConnectionResetError)\)$/), qemuGone: true });
    }
    expect(r.stderr).not.toContain(SESSION_SECRET);
    expect(r.eventsText).not.toContain(SESSION_SECRET);
  });
});

describe("the VM's network", () => {
  test("from inside the guest the host, the metadata address, a fleet private address and another slot's VM are unreachable; the internet is reachable through NAT", async () => {
    const r = await slot0.get();
    const vm3 = vmOf(r.events, "job-3");
    const seen = reports(r.events, vm3).filter((x) => x.startsWith("probe "));
    expect(seen.sort()).toEqual(
      CLOSED_TARGETS.map((a) => `probe ${a} ${a === NET.internet ? "reachable" : "unreachable"}`).sort(),
    );
  });

  test("the control: with the slot's filter rules removed (NAT kept, slot 1) the same guest reaches them, so the drops above are the firewall's", async () => {
    const r = await slot1.get();
    const control = reports(r.events, vmOf(r.events, "open-1")).filter((x) => x.startsWith("probe "));
    expect(control.sort()).toEqual(OPEN_TARGETS.map((a) => `probe ${a} reachable`).sort());
    // Slot 1's warm spare was up (ready, no job yet) while slot 0 probed it.
    const s0 = await slot0.get();
    const probedAt = s0.events.find((e) => e.event === "guest" && String(e.report).startsWith(`probe ${NET.guest(1)} `))!.t;
    const spare = vmOf(r.events, "open-2");
    const readyAt = r.events.find((e) => e.event === "vm-ready" && e.vm === spare)!.t;
    const takenAt = r.events.find((e) => e.event === "input-taken" && e.vm === spare)!.t;
    expect(readyAt).toBeLessThan(probedAt);
    expect(takenAt).toBeGreaterThan(probedAt);
  });
});

describe("every path cleans up", () => {
  test("a hang is killed at maxJobSeconds (124 timeout) and leaves nothing", async () => {
    const r = await slot2.get();
    expect(r.outcome).toBe("124 timeout\n");
    const vm = vmOf(r.events, "a-hang");
    expect(r.events.find((e) => e.event === "job-failed" && e.input === "a-hang")?.reason).toBe("timeout");
    expect(r.events.some((e) => e.event === "vm-destroyed" && e.vm === vm)).toBe(true);
    expect(fs.existsSync(path.join(host.dir, `state/2/vm-${vm}.qcow2`))).toBe(false);
    expect(r.exit).toEqual({ code: 0, signal: null });
    expect(r.leftovers).toEqual([]);
  });

  test("a crash (QEMU killed mid-job) is answered 125 no-report, leaves nothing, and the slot runs the next job", async () => {
    const r = await slot0.get();
    const vm2 = vmOf(r.events, "job-2");
    expect(outcome(host, 0, "job-2")).toBe("125 no-report\n");
    expect(r.events.find((e) => e.event === "job-failed" && e.input === "job-2")?.reason).toBe("no-report");
    expect(fs.existsSync(path.join(host.dir, `state/0/vm-${vm2}.qcow2`))).toBe(false);
    expect(reports(r.events, vmOf(r.events, "job-3"))).toContain("exit 3");
    expect(r.leftovers).toEqual([]);
  });

  test("SIGTERM of the launcher mid-job answers the job (aborted) and leaves nothing", async () => {
    const r = await slot3.get();
    expect(r.termHeld).toEqual(
      expect.arrayContaining(["tap cijs3", "nft table ci_job_slot_3", `state/3/vm-${r.termVm}.qcow2`, "run/3/vm"]),
    );
    expect(r.termExit).toEqual({ code: 143, signal: null });
    expect(r.termOutcome).toBe("143 aborted\n");
    expect(r.termLeftovers).toEqual([]);
  });

  test("after SIGKILL of the launcher and its QEMU (the unit's cgroup killed, or a host reboot), the next run took a job, and `cleanup` removes the VM's files, tap and nft table and answers the job", async () => {
    const r = await slot3.get();
    expect(reports(r.killEvents, r.killVm)).toContain("started"); // the slot recovered from the SIGTERM
    expect(r.killHeld).toEqual(
      expect.arrayContaining(["tap cijs3", "nft table ci_job_slot_3", `state/3/vm-${r.killVm}.qcow2`, "run/3/vm", "run/3/state.json"]),
    );
    expect(r.cleanupExit).toEqual({ code: 0, signal: null });
    expect(r.killOutcome).toBe("143 aborted\n");
    expect(r.killLeftovers).toEqual([]);
  });

  test("a failing self-test keeps the slot from taking jobs (exit 3) and leaves nothing", async () => {
    const r = await slot4.get();
    expect(r.exit).toEqual({ code: 3, signal: null });
    expect(r.events.find((e) => e.event === "selftest")?.result).toBe("fail");
    expect(r.events.filter((e) => e.event === "input-taken")).toEqual([]);
    expect(r.inboxKept).toBe(true);
    expect(r.leftovers).toEqual([]);
  });

  test("a handoff's job: its log lines reach the handoff's stdout while it runs; SIGTERM to the handoff cancels it (VM killed, 143 cancelled) within seconds, and nothing is left", async () => {
    const r = await slot5.get();
    expect(r.stdoutWhileRunning).toBe(`${LOG_LINE}\nstderr: ${LOG_LINE}\n`);
    expect({ exit: r.handoffExit, stdout: r.handoffStdout }).toEqual({ exit: { code: 143, signal: null }, stdout: r.stdoutWhileRunning });
    expect(r.handoffStderr).toMatch(/cancel requested/);
    expect(r.cancelSeconds).toBeLessThan(8);
    const out = r.events.find((e) => e.event === "outcome");
    expect([out?.code, out?.reason]).toEqual([143, "cancelled"]);
    expect(r.exit).toEqual({ code: 0, signal: null });
    expect(r.outbox).toEqual([]);
    expect(r.leftovers).toEqual([]);
  });
});
