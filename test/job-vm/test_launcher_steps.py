#!/usr/bin/python3
"""Issue 15 (9): the job-slot launcher's own steps around each VM, without a VM.

The real launcher (salt/runner/files/ci-job-slot) imported as a module: its VM's console, job and
log ports are socketpairs and its QEMU a fake process; the host commands it runs (qemu-img, ip,
nft) are stand-ins on PATH that record their argv and start and end times; those that must run side
by side meet (MEET_SECONDS), so the stamps show which ones ran one after the other. Nothing touches
the host's taps or nftables. Runs as root (as the launcher does): fails otherwise, never skips.
"""
import io
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from load_script import LAUNCHER, load  # noqa: E402
from launcher_config import base_config  # noqa: E402
from fake_qemu import FakeQemu  # noqa: E402

slot_mod = load("ci_job_slot_steps", LAUNCHER)
MARKER = slot_mod.MARKER
# Each stand-in command takes this long: far more than a real one (a step that must still be
# running when something else happens).
STEP_SECONDS = 1.0
# Steps that must run side by side meet: each records its start, arrives, and waits until all have
# arrived (at most this long) before it records its end. Side by side, every start comes before
# every end however slowly the host starts processes; one after the other, the first ends (at this
# deadline) before the next starts. No wall-clock bound, so a loaded host cannot fail it.
MEET_SECONDS = 20


class Harness(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            raise RuntimeError("test_launcher_steps.py must run as root (as ci-job-slot does)")
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.cfg = slot_mod.load_config(base_config(self.tmp))
        self.slot = slot_mod.Slot(self.cfg, 1)
        slot_mod.ensure_dirs(self.slot)
        saved = {name: getattr(slot_mod, name, None) for name in ("link_exists", "table_exists", "write_proc", "_events_file", "tap_add", "tap_delete")}
        self.addCleanup(lambda: [setattr(slot_mod, k, v) for k, v in saved.items()])
        saved_stderr, saved_path = sys.stderr, os.environ["PATH"]
        self.addCleanup(lambda: setattr(sys, "stderr", saved_stderr))
        self.addCleanup(lambda: os.environ.__setitem__("PATH", saved_path))
        self.links = set()
        slot_mod.link_exists = lambda name: name in self.links
        slot_mod.table_exists = lambda slot: False
        self.proc_writes = []
        slot_mod.write_proc = lambda path, value: self.proc_writes.append((path, value))
        # The tap's ioctls (TUNSETIFF, TUNSETPERSIST), recorded with their time instead of made.
        self.taps = []
        slot_mod.tap_add = lambda name: self.taps.append(("add", name, time.time()))
        slot_mod.tap_delete = lambda name: self.taps.append(("delete", name, time.time()))
        self.events = io.StringIO()
        slot_mod._events_file = self.events
        sys.stderr = io.StringIO()
        self.calls = os.path.join(self.tmp, "calls")
        self.fakebin = os.path.join(self.tmp, "bin")
        os.mkdir(self.fakebin)
        os.environ["PATH"] = f"{self.fakebin}:{saved_path}"
        self.meetdir = os.path.join(self.tmp, "meet")
        os.mkdir(self.meetdir)

    def fake(self, name, code=0, seconds=STEP_SECONDS, meet=0):
        """A stand-in for `name` on PATH: records '<start> <end> <argv> | <stdin>', sleeps (or, with
        `meet`, waits until `meet` steps have arrived, at most MEET_SECONDS), exits `code`."""
        if meet:
            wait = (f': >"{self.meetdir}/{name}"\n'
                    f'until [ "$(ls {self.meetdir} | wc -l)" -ge {meet} ] || '
                    f'[ "$(date +%s)" -ge "$(( ${{start%.*}} + {MEET_SECONDS} ))" ]; do sleep 0.05; done')
        else:
            wait = f"sleep {seconds}"
        path = os.path.join(self.fakebin, name)
        with open(path, "w") as f:
            f.write(f"""#!/bin/sh
start=$(date +%s.%N)
if [ "$1" = -f ] || [ "$1" = -batch ]; then input=$(cat | tr '\\n' ';'); else input=; fi
{wait}
{'for a; do prev=$cur; cur=$a; done; : >"$prev"' if name == "qemu-img" else ""}
echo "$start $(date +%s.%N) {name} $* | $input" >>{self.calls}
exit {code}
""")
        os.chmod(path, 0o755)

    def arrive(self, name, meet):
        """In the test's process, what a stand-in with `meet` does: (start, end) of a step that
        arrives at the meeting point and waits for `meet` steps (at most MEET_SECONDS)."""
        start = time.time()
        with open(os.path.join(self.meetdir, name), "w"):
            pass
        while len(os.listdir(self.meetdir)) < meet and time.time() < start + MEET_SECONDS:
            time.sleep(0.05)
        return start, time.time()

    def assert_side_by_side(self, spans, what):
        """Every step started before any ended: (start, end) pairs that all overlap."""
        self.assertLess(max(s for s, _ in spans), min(e for _, e in spans), f"{what} ran one after the other: {spans}")

    def recorded(self):
        if not os.path.exists(self.calls):
            return []
        with open(self.calls) as f:
            return [line.split(" ", 2) for line in f.read().splitlines()]

    def event_list(self):
        return [json.loads(l) for l in self.events.getvalue().splitlines()]


class Prepare(Harness):
    def test_the_overlay_the_firewall_and_the_tap_are_made_side_by_side(self):
        for name in ("qemu-img", "ip", "nft"):
            self.fake(name, meet=3)
        vm = slot_mod.Vm(self.cfg, self.slot, 7)
        vm.prepare()
        calls = sorted(self.recorded(), key=lambda c: float(c[0]))
        commands = [c[2] for c in calls]
        overlay = os.path.join(self.slot.state_dir, "vm-7.qcow2")
        self.assertEqual(sorted(c.split(" | ")[0] for c in commands), sorted([
            f"qemu-img create -q -f qcow2 -b /var/lib/ci-fleet/golden.qcow2 -F qcow2 {overlay} 1G",
            "nft -f -",
            "ip -batch -",
        ]))
        # The tap itself is made in the launcher's process (no `ip tuntap add`), before its address.
        self.assertEqual([t[:2] for t in self.taps], [("add", "cijs1")])
        batch = next(c for c in commands if c.startswith("ip -batch"))
        self.assertEqual(batch.split(" | ")[1], "address add 10.213.0.5/30 dev cijs1;link set cijs1 up;")
        table = next(c for c in commands if c.startswith("nft -f"))
        self.assertIn("table inet ci_job_slot_1 {", table)
        # The tap's IPv6 is off before the link is up (the address and `up` come after the proc write).
        self.assertEqual(self.proc_writes[-1], ("/proc/sys/net/ipv4/ip_forward", "1"))
        # The three run side by side: each started before any of them ended.
        self.assert_side_by_side([(float(c[0]), float(c[1])) for c in calls], "prepare's steps")
        batch_start = next(float(c[0]) for c in calls if c[2].startswith("ip -batch"))
        self.assertLessEqual(self.taps[0][2], batch_start)
        self.assertEqual(stat.S_IMODE(os.stat(vm.seed).st_mode), 0o600)
        prepared = [e for e in self.event_list() if e["event"] == "vm-prepared"]
        self.assertEqual([e["vm"] for e in prepared], [7])

    def test_a_failing_step_fails_the_vm_after_every_step_has_finished(self):
        self.fake("qemu-img")
        self.fake("ip")
        self.fake("nft", code=1, seconds=0)
        vm = slot_mod.Vm(self.cfg, self.slot, 2)
        with self.assertRaises(slot_mod.VmFailed) as failed:
            vm.prepare()
        self.assertIn("nft -f -: exit 1", str(failed.exception))
        # Nothing still running that could create a tap after the slot's cleanup: every step ran to
        # its end before prepare() gave up.
        finished = [c[2].split(" | ")[0] for c in self.recorded()]
        self.assertIn("ip -batch -", finished)
        self.assertIn(f"qemu-img create -q -f qcow2 -b /var/lib/ci-fleet/golden.qcow2 -F qcow2 "
                      f"{os.path.join(self.slot.state_dir, 'vm-2.qcow2')} 1G", finished)


class Destroy(Harness):
    def test_the_tap_and_the_table_go_side_by_side_and_everything_of_the_vm_is_removed(self):
        self.fake("ip")
        self.fake("nft", meet=2)
        # The tap's ioctl meets the nft process: both must be under way at once.
        tap_spans = []
        slot_mod.tap_delete = lambda name: (tap_spans.append(self.arrive("tap", 2)), self.taps.append(("delete", name, time.time())))
        vm = slot_mod.Vm(self.cfg, self.slot, 3)
        os.makedirs(self.slot.vm_dir, mode=0o700)
        with open(vm.overlay, "w"):
            pass
        with open(vm.seed, "w"):
            pass
        slot_mod.write_state(self.slot, {"qemuPid": 1, "qemuStart": "1", "vm": 3, "job": None})
        vm.firewall_applied = True
        self.links.add("cijs1")
        vm.proc = FakeQemu()
        vm.destroy()
        commands = sorted(c[2].split(" | ")[0] for c in self.recorded())
        self.assertEqual(commands, ["nft delete table inet ci_job_slot_1"])
        self.assertEqual([t[:2] for t in self.taps], [("delete", "cijs1")])
        self.assert_side_by_side(tap_spans + [(float(c[0]), float(c[1])) for c in self.recorded()], "destroy's tap and table")
        self.assertEqual(vm.proc.returncode, -9)
        for path in (vm.overlay, self.slot.vm_dir, self.slot.state_file):
            self.assertFalse(os.path.exists(path), path)
        self.assertEqual([e["event"] for e in self.event_list()], ["vm-ended", "vm-destroyed"])


# A stand-in QEMU for Vm.start(): makes its chardev sockets as QEMU does, in argv order, each one
# socket() + bind() + listen(); the console's bind() comes LISTEN_DELAY before its listen() (a
# loaded host: the socket file exists, a connect is refused), then it waits for the launcher.
LISTEN_DELAY = 1.0
FAKE_QEMU = f"""#!/usr/bin/python3
import socket, sys, time
socks = []
for i, a in enumerate(sys.argv):
    if sys.argv[i - 1] == "-chardev" and a.startswith("socket,"):
        opts = dict(o.split("=", 1) for o in a.split(",")[1:])
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(opts["path"])
        if opts["id"] == "console":
            time.sleep({LISTEN_DELAY})
        s.listen(1)
        socks.append(s)
        if opts["wait"] == "on":
            s.accept()
time.sleep(120)
"""


class Start(Harness):
    def test_a_socket_that_exists_before_qemu_listens_on_it_is_waited_for(self):
        fake = os.path.join(self.fakebin, "fake-qemu")
        with open(fake, "w") as f:
            f.write(FAKE_QEMU)
        os.chmod(fake, 0o755)
        self.cfg["qemu"] = fake
        vm = slot_mod.Vm(self.cfg, self.slot, 5)
        os.makedirs(self.slot.vm_dir, mode=0o700)
        try:
            vm.start()
            self.assertIsNotNone(vm.serial)
            self.assertTrue(vm.alive())
        finally:
            if vm.proc is not None:
                vm.proc.kill()
                vm.proc.wait()

    def test_qemu_that_never_listens_fails_the_vm_not_the_launcher(self):
        fake = os.path.join(self.fakebin, "fake-qemu")
        with open(fake, "w") as f:
            f.write(FAKE_QEMU.replace(f"time.sleep({LISTEN_DELAY})", "time.sleep(120)"))
        os.chmod(fake, 0o755)
        self.cfg["qemu"] = fake
        saved = slot_mod.SOCKET_WAIT_SECONDS
        slot_mod.SOCKET_WAIT_SECONDS = 2
        self.addCleanup(setattr, slot_mod, "SOCKET_WAIT_SECONDS", saved)
        vm = slot_mod.Vm(self.cfg, self.slot, 6)
        os.makedirs(self.slot.vm_dir, mode=0o700)
        try:
            with self.assertRaises(slot_mod.VmFailed):
                vm.start()
        finally:
            if vm.proc is not None:
                vm.proc.kill()
                vm.proc.wait()


class Crash(Harness):
    def test_an_unexpected_error_still_ends_the_vm_answers_the_job_and_empties_the_slot(self):
        import signal
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.addCleanup(signal.signal, sig, signal.getsignal(sig))
        made = []

        def one_job(runner):
            vm = slot_mod.Vm(self.cfg, self.slot, 1)
            os.makedirs(self.slot.vm_dir, mode=0o700, exist_ok=True)
            vm.proc = FakeQemu()
            runner.vm, runner.job = vm, "job-x"
            made.append(vm)
            raise RuntimeError("a bug in the loop")
        saved = slot_mod.Runner.one_job
        slot_mod.Runner.one_job = one_job
        self.addCleanup(setattr, slot_mod.Runner, "one_job", saved)
        with self.assertRaises(RuntimeError):
            slot_mod.cmd_run(self.cfg, self.slot, 1)
        self.assertEqual(made[0].proc.returncode, -9)  # QEMU killed, not left running
        with open(os.path.join(self.slot.outbox, "job-x.exit")) as f:
            self.assertEqual(f.read(), "143 aborted\n")
        self.assertFalse(os.path.exists(self.slot.vm_dir))
        names = [e["event"] for e in self.event_list()]
        self.assertIn("crashed", names)
        self.assertEqual(names[-1], "cleanup")


class GuestThatLingers(threading.Thread):
    """A guest that reports "exit <code>" after writing its job's output, then does not power off
    (a slow shutdown: unmounting, syncing a large disk)."""

    def __init__(self, console, job_port, log_port, output):
        super().__init__(daemon=True)
        self.console, self.job_port, self.log_port, self.output = console, job_port, log_port, output

    def run(self):
        try:
            self.console.sendall(f"{MARKER}ready\n".encode())
            self.job_port.recv(65536)
            self.console.sendall(f"{MARKER}started\n".encode())
            self.log_port.sendall(self.output)
            self.console.sendall(f"{MARKER}exit 7\n".encode())
            time.sleep(120)
        except OSError:
            pass


class AfterTheExitReport(Harness):
    def run_one(self, name, output):
        runner = slot_mod.Runner(self.cfg, self.slot)
        guests = []

        def new_vm(selftest=False):
            runner.seq += 1
            vm = slot_mod.Vm(self.cfg, self.slot, runner.seq)
            os.makedirs(self.slot.vm_dir, mode=0o700, exist_ok=True)
            pairs = [socket.socketpair() for _ in range(3)]
            for p in pairs:
                p[1].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
            vm.serial, vm.job_sock, vm.log_sock = (p[0] for p in pairs)
            vm.serial.setblocking(False)
            vm.log_sock.setblocking(False)
            vm.proc = FakeQemu()
            vm.check_firewall = lambda: None
            g = GuestThatLingers(*(p[1] for p in pairs), output)
            guests.append(g)
            g.start()
            runner.vm = vm
            return vm
        runner.new_vm = new_vm
        with open(os.path.join(self.slot.inbox, name), "w") as f:
            f.write("{}")
        began = time.time()
        code = runner.one_job()
        return code, time.time() - began

    def test_qemu_is_ended_at_once_when_the_guest_has_reported_its_exit(self):
        code, took = self.run_one("job-1", b"some output\n")
        self.assertEqual(code, 7)
        events = self.event_list()
        names = [e["event"] for e in events]
        exit_report = next(i for i, e in enumerate(events) if e["event"] == "guest" and e.get("report") == "exit 7")
        self.assertEqual(names[exit_report + 1:], ["vm-ended", "vm-destroyed", "outcome"])
        self.assertEqual(events[exit_report + 1]["how"], "killed")
        self.assertNotIn("poweroff-timeout", names)
        # Not the old 30 s wait for a power-off the disk no longer needs (the guest lingers 120 s);
        # 20 s leaves a loaded host its own steps' time and still rules that wait out.
        self.assertLess(took, 20, names)
        with open(os.path.join(self.slot.outbox, "job-1.exit")) as f:
            self.assertEqual(f.read(), "7 exited\n")

    def test_a_handoffs_log_is_complete_though_qemu_is_killed_at_the_exit_report(self):
        output = b"".join(b"line %06d of the job's output\n" % i for i in range(20000))  # ~580 KiB
        code, _ = self.run_one("handoff-1", output)
        self.assertEqual(code, 7)
        with open(os.path.join(self.slot.outbox, "handoff-1.log"), "rb") as f:
            self.assertEqual(f.read(), output)


# A stand-in qemu-img that does what the real one does with a missing backing file: "Could not
# open backing image" and exit 1 (then the overlay it names is made).
FAKE_QEMU_IMG = """#!/bin/sh
for a; do prev=$cur; cur=$a; [ "$prev" = -b ] && base=$a; done
echo "$(date +%s.%N) $(date +%s.%N) qemu-img $* | " >>{calls}
[ -f "$base" ] || {{ echo "qemu-img: Could not open backing image '$base'" >&2; exit 1; }}
for a; do prev=$cur; cur=$a; done; : >"$prev"
"""


class GuestThatRebuilds(GuestThatLingers):
    """A guest whose job runs while the golden image is rebuilt: `during` runs when the job comes."""

    def __init__(self, console, job_port, log_port, during):
        super().__init__(console, job_port, log_port, b"")
        self.during = during

    def run(self):
        try:
            self.console.sendall(f"{MARKER}ready\n".encode())
            self.job_port.recv(65536)
            self.console.sendall(f"{MARKER}started\n".encode())
            self.during()
            self.console.sendall(f"{MARKER}exit 0\n".encode())
            time.sleep(120)
        except OSError:
            pass


class ConfigBetweenVms(Harness):
    """Issue 15 review (1): a rebuilt golden image. The build deletes the old image; the slot reads
    job-vm.json again between VMs, so its next VM is made on the new one, without a restart."""

    def setUp(self):
        super().setUp()
        import signal
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.addCleanup(signal.signal, sig, signal.getsignal(sig))
        for name in ("ip", "nft"):
            self.fake(name, seconds=0)
        with open(os.path.join(self.fakebin, "qemu-img"), "w") as f:
            f.write(FAKE_QEMU_IMG.format(calls=self.calls))
        os.chmod(os.path.join(self.fakebin, "qemu-img"), 0o755)
        self.images = os.path.join(self.tmp, "images")
        os.mkdir(self.images)
        self.old = os.path.join(self.images, "golden-1.qcow2")
        self.new = os.path.join(self.images, "golden-2.qcow2")
        for path in (self.old, self.new):
            with open(path, "w"):
                pass
        self.path = base_config(self.tmp, image=self.old)
        with open(self.path) as f:
            self.original = f.read()
        self.cfg = slot_mod.load_config(self.path)
        self.during = [lambda: None]
        saved = slot_mod.Runner.new_vm
        slot_mod.Runner.new_vm = lambda runner, selftest=False: self.new_vm(runner, selftest)
        self.addCleanup(setattr, slot_mod.Runner, "new_vm", saved)
        saved_delays = getattr(slot_mod, "CONFIG_RETRY_DELAYS", None)  # None: the old launcher
        slot_mod.CONFIG_RETRY_DELAYS = (0.3, 0.3)
        self.addCleanup(setattr, slot_mod, "CONFIG_RETRY_DELAYS", saved_delays)

    def new_vm(test, runner, selftest=False):  # noqa: N805 - the test, then the Runner
        """The real Vm and its real prepare (the stand-in qemu-img), then a fake QEMU and guest."""
        runner.seq += 1
        vm = slot_mod.Vm(runner.cfg, test.slot, runner.seq, selftest, runner.previous_overlay)
        runner.vm = vm
        vm.prepare()
        pairs = [socket.socketpair() for _ in range(3)]
        vm.serial, vm.job_sock, vm.log_sock = (p[0] for p in pairs)
        vm.serial.setblocking(False)
        vm.log_sock.setblocking(False)
        vm.proc = FakeQemu()
        vm.check_firewall = lambda: None
        during = test.during.pop(0) if test.during else (lambda: None)
        GuestThatRebuilds(*(p[1] for p in pairs), during).start()
        return vm

    def rewrite(self, text):
        tmp = self.path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.path)

    def rebuild(self):
        """What the image build and runner.job_vm_config do: the new image in the config, the old one gone."""
        with open(self.path) as f:
            cfg = json.load(f)
        cfg["image"] = self.new
        self.rewrite(json.dumps(cfg))
        os.unlink(self.old)

    def run_jobs(self, n):
        for i in range(n):
            with open(os.path.join(self.slot.inbox, f"job-{i + 1}"), "w") as f:
                f.write("{}")
        # The launcher as the unit runs it (`run --config ... --slot 1`), ended by SIGTERM (exit
        # 143) if it has not done its jobs within 120 s (a few seconds' work: the bound only ends
        # a run that never would): the old launcher retried a VM on the deleted image for ever.
        import signal
        stop = threading.Timer(120, os.kill, (os.getpid(), signal.SIGTERM))
        stop.start()
        try:
            return slot_mod.main(["run", "--config", self.path, "--slot", str(self.slot.n), "--jobs", str(n)])
        finally:
            stop.cancel()

    def bases(self):
        return [c[2].split(" -b ")[1].split(" ")[0] for c in self.recorded() if c[2].startswith("qemu-img create")]

    def outcomes(self, n):
        got = []
        for i in range(n):
            with open(os.path.join(self.slot.outbox, f"job-{i + 1}.exit")) as f:
                got.append(f.read())
        return got

    def test_the_next_vm_uses_the_rebuilt_image_and_the_deleted_one_fails_nothing(self):
        self.during = [self.rebuild]
        self.assertEqual(self.run_jobs(2), 0)
        self.assertEqual(self.bases(), [self.old, self.new])
        self.assertEqual(self.outcomes(2), ["0 exited\n", "0 exited\n"])
        names = [e["event"] for e in self.event_list()]
        self.assertNotIn("vm-failed", names)
        self.assertEqual([e["image"] for e in self.event_list() if e["event"] == "config-reloaded"], [self.new])

    def test_an_unusable_config_keeps_the_current_one_while_its_image_exists(self):
        self.during = [lambda: self.rewrite('{"image": "relative.qcow2"')]
        self.assertEqual(self.run_jobs(2), 0)
        self.assertEqual(self.bases(), [self.old, self.old])
        refused = [e for e in self.event_list() if e["event"] == "config-refused"]
        self.assertEqual(len(refused), 1)
        self.assertEqual(refused[0]["kept"], self.old)

    def test_an_unusable_config_and_the_image_gone_waits_with_backoff_for_a_usable_one(self):
        def broken_rebuild():
            self.rewrite("{not json")
            os.unlink(self.old)

            def fixed():
                # Repaired once the slot has reported the unusable config twice (its backoff seen),
                # however slowly it gets there; the deadline only ends a test that has failed.
                deadline = time.time() + 25
                while self.events.getvalue().count('"event": "config-unusable"') < 2 and time.time() < deadline:
                    time.sleep(0.05)
                self.rebuild_after_break()
            threading.Thread(target=fixed, daemon=True).start()
        self.during = [broken_rebuild]
        self.assertEqual(self.run_jobs(2), 0)
        # No VM is made on the missing image: the slot waits for a usable config, then uses it.
        self.assertEqual(self.bases(), [self.old, self.new])
        unusable = [e for e in self.event_list() if e["event"] == "config-unusable"]
        self.assertGreaterEqual(len(unusable), 2)
        self.assertEqual([e["attempt"] for e in unusable][:2], [1, 2])
        self.assertTrue(all(e["image"] == self.old and "cannot read config" in e["why"] for e in unusable))
        self.assertNotIn("vm-failed", [e["event"] for e in self.event_list()])

    def rebuild_after_break(self):
        self.rewrite(self.original.replace(self.old, self.new))

    def test_a_changed_state_dir_takes_a_restart_and_is_refused_between_vms(self):
        def move():
            with open(self.path) as f:
                cfg = json.load(f)
            cfg["stateDir"] = os.path.join(self.tmp, "elsewhere")
            self.rewrite(json.dumps(cfg))
        self.during = [move]
        self.assertEqual(self.run_jobs(2), 0)
        refused = [e for e in self.event_list() if e["event"] == "config-refused"]
        self.assertEqual(len(refused), 1)
        self.assertIn("stateDir changed", refused[0]["why"])
        self.assertEqual(self.bases(), [self.old, self.old])

if __name__ == "__main__":
    unittest.main(verbosity=2)
