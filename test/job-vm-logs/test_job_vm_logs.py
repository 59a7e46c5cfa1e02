#!/usr/bin/python3
"""Issue 15 (Buildkite jobs in VMs, 1): the job's log reaches the job source, a cancel stops the
job's VM, the launcher's report bookkeeping is bounded, a withdrawn input never kills it.

The real launcher (salt/runner/files/ci-job-slot) and guest agent (ci-job-guest), imported as
modules; socketpairs instead of QEMU's chardev sockets and a fake QEMU process; the real
`ci-job-slot handoff` command run as a child process (as ci-job-handoff runs it), reading the
same run directory. Runs as root (the handoff refuses anything else): fails otherwise, never
skips.
"""
import io
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from load_script import GUEST, LAUNCHER, ROOT, load  # noqa: E402
from launcher_config import base_config  # noqa: E402
from fake_qemu import FakeQemu  # noqa: E402
PYTHON = sys.executable or "/usr/bin/python3"


slot_mod = load("ci_job_slot_logs", LAUNCHER)
guest = load("ci_job_guest_logs", GUEST)


class FakeGuest(threading.Thread):
    """The guest's side of one VM: reports on the console, the job input from the job port,
    the job's output through guest.run_logged onto the log port (the real copy code)."""

    def __init__(self, vm_ends, job_argv, exit_code=None, block=None):
        super().__init__(daemon=True)
        self.console, self.job_port, self.log_port, self.qemu = vm_ends
        self.job_argv, self.exit_code, self.block = job_argv, exit_code, block
        self.input = None
        self.job_code = None

    def report(self, text):
        self.console.sendall(f"{guest.MARKER}{text}\n".encode())

    def run(self):
        try:
            self.report("ready")
            self.input = bytes(guest.read_job(os.dup(self.job_port.fileno())))
            self.report("started")
            self.job_code = guest.run_logged(self.job_argv, dict(os.environ), None, self.log_port.fileno(), drain_seconds=2)
            if self.block is not None:
                self.block.wait(60)
            if self.qemu.poll() is None:
                self.report(f"exit {self.exit_code if self.exit_code is not None else self.job_code}")
                self.qemu.poweroff()
        except OSError:
            pass  # the VM was killed under the guest
        finally:
            for s in (self.console, self.job_port, self.log_port):
                try:
                    s.close()
                except OSError:
                    pass


class Harness(unittest.TestCase):
    """A slot whose VMs are socketpairs and a FakeQemu; events captured; nothing touches the
    host's taps or nftables."""

    def setUp(self):
        if os.geteuid() != 0:
            raise RuntimeError("test_job_vm_logs.py must run as root (ci-job-slot handoff refuses anything else)")
        self.tmp = tempfile.mkdtemp()
        self.config = base_config(self.tmp)
        self.cfg = slot_mod.load_config(self.config)
        self.slot = slot_mod.Slot(self.cfg, 1)
        slot_mod.ensure_dirs(self.slot)
        self.saved = (slot_mod.link_exists, slot_mod.table_exists, slot_mod._events_file, sys.stderr, slot_mod.now)
        slot_mod.link_exists = lambda name: False
        slot_mod.table_exists = lambda slot: False
        self.events = io.StringIO()
        slot_mod._events_file = self.events
        sys.stderr = io.StringIO()
        self.guests = []

    def tearDown(self):
        (slot_mod.link_exists, slot_mod.table_exists, slot_mod._events_file, sys.stderr, slot_mod.now) = self.saved

    def event_list(self):
        return [json.loads(l) for l in self.events.getvalue().splitlines()]

    def make_vm(self, job_argv, exit_code=None, block=None):
        vm = slot_mod.Vm(self.cfg, self.slot, len(self.guests) + 1)
        os.makedirs(self.slot.vm_dir, mode=0o700, exist_ok=True)
        pairs = [socket.socketpair() for _ in range(3)]
        vm.serial, vm.job_sock, vm.log_sock = (p[0] for p in pairs)
        vm.serial.setblocking(False)
        vm.log_sock.setblocking(False)
        vm.proc = FakeQemu()
        vm.check_firewall = lambda: None
        g = FakeGuest(tuple(p[1] for p in pairs) + (vm.proc,), job_argv, exit_code, block)
        self.guests.append(g)
        g.start()
        return vm

    def runner(self, **vm_args):
        runner = slot_mod.Runner(self.cfg, self.slot)

        def new_vm(selftest=False):
            runner.vm = self.make_vm(**vm_args)
            return runner.vm
        runner.new_vm = new_vm
        return runner

    def handoff(self, data=b'{"kind": "buildkite", "env": {"BUILDKITE_JOB_ID": "1"}}'):
        p = subprocess.Popen([PYTHON, LAUNCHER, "handoff", "--config", self.config, "--slot", "1"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdin.write(data)
        p.stdin.close()
        p.stdin = None  # communicate() must not flush it again
        return p

    def wait_inbox(self, timeout=10):
        end = time.time() + timeout
        while time.time() < end:
            if [n for n in os.listdir(self.slot.inbox) if not n.startswith(".")]:
                return
            time.sleep(0.02)
        self.fail("the handoff's input never reached the inbox")


JOB = ["sh", "-c", "echo 'line 1 (stdout)'; echo 'line 2 (stderr)' >&2; printf 'line 3\\r\\n\\001\\377'; echo; echo 'line 5' >&2; exit 3"]
JOB_OUTPUT = b"line 1 (stdout)\nline 2 (stderr)\nline 3\r\n\x01\xff\nline 5\n"


class JobLog(Harness):
    def test_qemu_has_the_log_port(self):
        argv = slot_mod.Vm(self.cfg, self.slot, 4).qemu_argv()
        pairs = list(zip(argv, argv[1:]))
        sock = os.path.join(self.slot.vm_dir, "log.sock")
        self.assertIn(("-chardev", f"socket,id=log,path={sock},server=on,wait=off"), pairs)
        self.assertIn(("-device", "virtserialport,bus=vser0.0,chardev=log,name=org.ci-fleet.log"), pairs)
        self.assertEqual(guest.LOG_PORT, "/dev/virtio-ports/org.ci-fleet.log")

    def test_the_guests_output_reaches_the_handoffs_stdout_in_order(self):
        handoff = self.handoff()
        self.wait_inbox()
        code = self.runner(job_argv=JOB).one_job()
        out, err = handoff.communicate(timeout=20)
        self.assertEqual(code, 3)
        self.assertEqual((handoff.returncode, out), (3, JOB_OUTPUT), err.decode(errors="replace"))
        self.assertEqual(self.guests[0].job_code, 3)
        # The handoff removed the log and the outcome; nothing of the job is left in the outbox.
        self.assertEqual(os.listdir(self.slot.outbox), [])
        self.assertEqual(os.listdir(self.slot.cancel_dir), [])

    def test_the_log_file_is_root_only_and_appears_during_the_job(self):
        seen = {}
        release = threading.Event()
        handoff = self.handoff()
        self.wait_inbox()
        runner = self.runner(job_argv=["sh", "-c", "echo early"], exit_code=0, block=release)
        t = threading.Thread(target=lambda: seen.setdefault("code", runner.one_job()))
        t.start()
        end = time.time() + 10
        logs = []
        while time.time() < end and not logs:
            logs = [n for n in os.listdir(self.slot.outbox) if n.endswith(".log")]
            time.sleep(0.02)
        self.assertEqual(len(logs), 1)
        st = os.lstat(os.path.join(self.slot.outbox, logs[0]))
        self.assertEqual((stat.S_ISREG(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid), (True, 0o600, 0))
        # The handoff streams while the job runs: "early" is on its stdout before the job ends.
        os.set_blocking(handoff.stdout.fileno(), False)
        got = b""
        end = time.time() + 10
        while time.time() < end and b"early\n" not in got:
            try:
                got += os.read(handoff.stdout.fileno(), 4096)
            except BlockingIOError:
                time.sleep(0.02)
        self.assertEqual(got, b"early\n")
        self.assertTrue(t.is_alive(), "the job was still running")
        release.set()
        t.join(20)
        os.set_blocking(handoff.stdout.fileno(), True)
        rest, _ = handoff.communicate(timeout=20)
        self.assertEqual((seen.get("code"), handoff.returncode, rest), (0, 0, b""))

    def test_a_github_input_keeps_no_log(self):
        with open(os.path.join(self.slot.inbox, "github-abc"), "w") as f:
            f.write('{"kind": "github", "jitconfig": "x"}')
        self.assertEqual(self.runner(job_argv=JOB).one_job(), 3)
        self.assertEqual(sorted(os.listdir(self.slot.outbox)), ["github-abc.exit"])

    def test_the_cap_then_one_notice(self):
        path = os.path.join(self.slot.outbox, "handoff-cap.log")
        sink = slot_mod.LogSink(path, cap=100)
        sink.write(b"a" * 60)
        sink.write(b"b" * 60)
        sink.write(b"c" * 60)
        sink.close()
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"a" * 60 + b"b" * 40 + slot_mod.LOG_TRUNCATED)
        self.assertEqual([e["event"] for e in self.event_list()], ["job-log-truncated"])
        self.assertEqual(slot_mod.LOG_MAX_BYTES, 64 << 20)
        # A new file only, never through a link someone left.
        os.symlink("/etc/passwd", os.path.join(self.slot.outbox, "handoff-link.log"))
        with self.assertRaises(FileExistsError):
            slot_mod.LogSink(os.path.join(self.slot.outbox, "handoff-link.log"))

    def test_the_cap_through_the_port(self):
        """More than the cap from the guest: the file holds exactly the cap and one notice, and
        the launcher keeps reading (the guest never blocks on a full port)."""
        vm = slot_mod.Vm(self.cfg, self.slot, 9)
        host, peer = socket.socketpair()
        host.setblocking(False)
        vm.log_sock = host
        path = os.path.join(self.slot.outbox, "handoff-big.log")
        vm.log_sink = slot_mod.LogSink(path, cap=1 << 20)
        total = 3 << 20

        def write():
            chunk = b"x" * 65536
            for _ in range(total // len(chunk)):
                peer.sendall(chunk)
            peer.close()
        w = threading.Thread(target=write)
        w.start()
        end = time.time() + 20
        while vm.log_sock is not None and time.time() < end:
            vm.pump(0.05)
        w.join(5)
        vm.log_sink.close()
        self.assertFalse(w.is_alive())
        self.assertEqual(os.path.getsize(path), (1 << 20) + len(slot_mod.LOG_TRUNCATED))

    def test_guest_run_logged_returns_when_a_leftover_child_keeps_the_pipe(self):
        a, b = socket.socketpair()
        start = time.time()
        code = guest.run_logged(["sh", "-c", "sleep 30 & echo done; exit 4"], dict(os.environ), None, b.fileno(), drain_seconds=0.5)
        self.assertEqual(code, 4)
        self.assertLess(time.time() - start, 10)
        a.settimeout(2)
        self.assertEqual(a.recv(100), b"done\n")


class Cancel(Harness):
    def test_sigterm_to_the_handoff_after_the_slot_took_it_ends_the_vm(self):
        release = threading.Event()
        handoff = self.handoff()
        self.wait_inbox()
        runner = self.runner(job_argv=["sh", "-c", "echo 'job running'"], exit_code=0, block=release)
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("code", runner.one_job()), daemon=True)
        t.start()
        # The job runs (its first output reached the handoff's stdout).
        os.set_blocking(handoff.stdout.fileno(), False)
        got, end = b"", time.time() + 10
        while time.time() < end and b"job running\n" not in got:
            try:
                got += os.read(handoff.stdout.fileno(), 4096)
            except BlockingIOError:
                time.sleep(0.02)
        self.assertEqual(got, b"job running\n")
        vm = runner.vm
        sent = time.time()
        handoff.send_signal(signal.SIGTERM)
        t.join(slot_mod.CANCEL_WAIT_SECONDS)
        self.assertFalse(t.is_alive(), "the slot did not end the job after the cancel")
        self.assertTrue(vm.proc.killed.is_set(), "QEMU was killed")
        os.set_blocking(handoff.stdout.fileno(), True)
        rest, err = handoff.communicate(timeout=10)
        elapsed = time.time() - sent
        release.set()
        self.assertEqual((result["code"], handoff.returncode, rest), (143, 143, b""), err.decode(errors="replace"))
        self.assertLess(elapsed, slot_mod.CANCEL_WAIT_SECONDS)
        self.assertIn("cancel requested", err.decode())
        cancelled = [e for e in self.event_list() if e["event"] in ("job-cancelled", "outcome")]
        self.assertEqual([(e["event"], e.get("reason")) for e in cancelled], [("job-cancelled", None), ("outcome", "cancelled")])
        self.assertEqual((os.listdir(self.slot.outbox), os.listdir(self.slot.cancel_dir)), ([], []))

    def test_sigterm_before_the_slot_took_it_withdraws_it(self):
        handoff = self.handoff()
        self.wait_inbox()
        handoff.send_signal(signal.SIGTERM)
        _, err = handoff.communicate(timeout=10)
        self.assertEqual(handoff.returncode, 143)
        self.assertIn("withdrawn", err.decode())
        self.assertEqual([n for n in os.listdir(self.slot.inbox)], [])
        self.assertEqual(os.listdir(self.slot.cancel_dir), [])

    def test_the_cancel_dir_is_root_only_and_cleaned(self):
        st = os.stat(self.slot.cancel_dir)
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid), (0o700, 0))
        open(os.path.join(self.slot.cancel_dir, "handoff-stale"), "w").close()
        slot_mod.cleanup_slot(self.cfg, self.slot, "test")
        self.assertFalse(os.path.exists(self.slot.cancel_dir))


class Reports(Harness):
    def test_a_flood_of_marked_lines_is_bounded_and_rate_limited(self):
        clock = [1000.0]
        slot_mod.now = lambda: clock[0]
        vm = slot_mod.Vm(self.cfg, self.slot, 1)
        new = []
        vm.take_line(b"CI-FLEET-JOB: ready", new)
        for i in range(20000):
            vm.take_line(b"CI-FLEET-JOB: flood %d" % i, new)
            vm.take_line(b"CI-FLEET-JOB: ready", new)
        self.assertIn("ready", vm.reports)
        self.assertLessEqual(len(vm.reports.seen), 10)
        guest_events = [e for e in self.event_list() if e["event"] == "guest"]
        self.assertEqual(len(guest_events), 1 + slot_mod.UNKNOWN_REPORT_BURST)
        clock[0] += slot_mod.UNKNOWN_REPORT_WINDOW_SECONDS
        vm.take_line(b"CI-FLEET-JOB: after", new)
        events = self.event_list()
        self.assertEqual(events[-2]["event"], "guest-reports-dropped")
        self.assertEqual(events[-2]["count"], 20000 - slot_mod.UNKNOWN_REPORT_BURST)
        self.assertEqual((events[-1]["event"], events[-1]["report"]), ("guest", "after"))

    def test_known_reports_still_drive_the_loop(self):
        vm = slot_mod.Vm(self.cfg, self.slot, 1)
        new = []
        for line in (b"CI-FLEET-JOB: ready", b"CI-FLEET-JOB: something else", b"CI-FLEET-JOB: exit 7", b"CI-FLEET-JOB: exit 7"):
            vm.take_line(line, new)
        self.assertEqual(new, ["ready", "exit 7", "exit 7"])


class WithdrawnRace(Harness):
    def test_an_input_withdrawn_after_it_was_opened_is_skipped(self):
        first = os.path.join(self.slot.inbox, "handoff-1")
        second = os.path.join(self.slot.inbox, "handoff-2")
        for path in (first, second):
            with open(path, "w") as f:
                f.write("{}")
        real_open = os.open

        def racing_open(path, flags, *args):
            fd = real_open(path, flags, *args)
            if path == first:
                os.unlink(first)  # the handoff takes it back now
            return fd
        slot_mod.os.open = racing_open
        try:
            taken = slot_mod.take_input(self.slot)
        finally:
            slot_mod.os.open = real_open
        self.assertEqual(taken[0], "handoff-2")
        self.assertIn(("input-withdrawn", "handoff-1"), [(e["event"], e.get("input")) for e in self.event_list()])
        self.assertEqual(os.listdir(self.slot.outbox), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
