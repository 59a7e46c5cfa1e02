"""A GitHub slot asks the master for its next just-in-time config (issue 15, docs/job-vm.md
"Job sources"): the launcher's request schedule, run with the real salt/runner/files/ci-job-slot
(loaded with SourceFileLoader), a fake clock, and a fake `salt-call` on PATH that records its
argv. Run by refill.test.ts; CI_FLEET_SALT_ROOT points at another salt/ tree (the old code)."""
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from load_script import SALT, load  # noqa: E402

LAUNCHER = os.path.join(SALT, "runner", "files", "ci-job-slot")
TAG = "ci-fleet/github-runner/unregistered"

slot_module = load("ci_job_slot_refill_under_test", LAUNCHER)


class FakeClock:
    def __init__(self, start=1000.0):
        self.t = start

    def __call__(self):
        return self.t


class Fixture(unittest.TestCase):
    """A temporary directory with bin/salt-call (records argv, one JSON line per call, then
    sleeps SALT_CALL_SLEEP seconds and exits SALT_CALL_EXIT) first on PATH, the launcher's
    clock replaced by a fake one, and its events captured."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cjs-refill-")
        self.bin = os.path.join(self.dir, "bin")
        os.mkdir(self.bin)
        self.calls = os.path.join(self.dir, "salt-call.jsonl")
        with open(os.path.join(self.bin, "salt-call"), "w") as f:
            f.write("#!/bin/sh\n"
                    f"printf '%s\\n' \"$*\" >> {self.calls}\n"
                    "sleep \"${SALT_CALL_SLEEP:-0}\"\n"
                    "exit \"${SALT_CALL_EXIT:-0}\"\n")
        os.chmod(os.path.join(self.bin, "salt-call"), 0o755)
        self.saved_env = {k: os.environ.get(k) for k in ("PATH", "SALT_CALL_SLEEP", "SALT_CALL_EXIT")}
        os.environ["PATH"] = self.bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
        self.clock = FakeClock()
        self.saved_now = slot_module.now
        slot_module.now = self.clock
        self.events = io.StringIO()
        self.saved_events = slot_module._events_file
        slot_module._events_file = self.events
        self.saved_stderr = sys.stderr
        sys.stderr = io.StringIO()   # the launcher logs every event to stderr too

    def tearDown(self):
        sys.stderr = self.saved_stderr
        slot_module.now = self.saved_now
        slot_module._events_file = self.saved_events
        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(self.dir)

    def recorded(self):
        try:
            with open(self.calls) as f:
                return [line.rstrip("\n") for line in f]
        except FileNotFoundError:
            return []

    def logged(self, name=None):
        out = [json.loads(line) for line in self.events.getvalue().splitlines()]
        return [e for e in out if name is None or e["event"] == name]

    def settle(self, requester, seconds=5.0):
        """Waits (real time) until the salt-call it started has exited, so the next tick reaps it."""
        child = requester.child
        if child is not None:
            child.wait(timeout=seconds)

    def config(self, **extra):
        cfg = {
            "image": "/var/lib/ci-fleet/images/golden.qcow2", "cpus": 2, "memoryMiB": 2048, "diskGiB": 20,
            "maxJobSeconds": 3600, "accel": "tcg", "stateDir": os.path.join(self.dir, "state"),
            "runDir": os.path.join(self.dir, "run"),
            "network": {"base": "10.213.0.0/24", "blockedCidrs": ["169.254.169.254/32"], "dns": ["1.1.1.1"]},
        }
        cfg.update(extra)
        path = os.path.join(self.dir, "job-vm-%d.json" % len(os.listdir(self.dir)))
        with open(path, "w") as f:
            json.dump(cfg, f)
        return path


class RequestScheduleTest(Fixture):
    def drive(self, requester, until, step=1.0, inbox_at=None):
        """Ticks every `step` fake seconds up to `until`; returns the fake times of the sends."""
        sent = []
        while self.clock.t <= until:
            before = len(self.recorded())
            requester.tick()
            self.settle(requester)
            if len(self.recorded()) > before:
                sent.append(self.clock.t - 1000.0)
            self.clock.t += step
        return sent

    def test_a_ready_vm_with_an_empty_inbox_asks_at_once_then_after_10_20_40_and_every_60_s(self):
        requester = slot_module.InputRequester(TAG)
        requester.start_waiting()
        self.assertEqual(self.drive(requester, 1000.0 + 260), [0, 10, 30, 70, 130, 190, 250])
        # Exactly the host runner unit's command: the master sees the tag from this minion's id.
        self.assertEqual(set(self.recorded()), {"--log-level=quiet event.send " + TAG})
        self.assertEqual([e["attempt"] for e in self.logged("input-requested")], [1, 2, 3, 4, 5, 6, 7])
        self.assertEqual(self.logged("input-request-failed"), [])

    def test_no_request_once_the_input_came_and_never_two_within_10_s_across_vms(self):
        requester = slot_module.InputRequester(TAG)
        requester.start_waiting()
        self.assertEqual(self.drive(requester, 1003.0), [0])
        requester.stop_waiting()                    # the input came at t=3
        self.assertEqual(self.drive(requester, 1005.0), [])
        requester.start_waiting()                   # a quick job: the next VM is ready at t=6
        self.assertEqual(self.drive(requester, 1012.0), [10])
        # A VM ready long after the last request asks at once, and the backoff starts again.
        requester.stop_waiting()
        self.clock.t = 2000.0
        requester.start_waiting()
        self.assertEqual(self.drive(requester, 2000.0 + 31), [1000, 1010, 1030])

    def test_salt_call_never_blocks_the_loop_one_at_a_time_killed_after_its_timeout(self):
        os.environ["SALT_CALL_SLEEP"] = "30"       # real seconds: a master that does not answer
        requester = slot_module.InputRequester(TAG)
        requester.start_waiting()
        started = time.monotonic()
        requester.tick()
        # Far less than the 30 s salt-call: the tick does not wait for it (however loaded the host).
        self.assertLess(time.monotonic() - started, 10.0)
        child = requester.child
        self.assertIsNotNone(child)
        deadline = time.monotonic() + 20            # wait (real time) until the fake has recorded
        while not self.recorded() and time.monotonic() < deadline:
            time.sleep(0.02)
        # Due again at t=10, but the first still runs: no second salt-call.
        self.clock.t += 15
        requester.tick()
        self.assertIs(requester.child, child)
        self.assertEqual(len(self.recorded()), 1)
        # Past the timeout it is killed and reaped (one event), and the next request goes out.
        self.clock.t += slot_module.REQUEST_TIMEOUT_SECONDS
        started = time.monotonic()
        requester.tick()
        self.assertLess(time.monotonic() - started, 10.0)  # the kill, not the 30 s salt-call
        self.assertIsNotNone(child.returncode)     # reaped: no zombie left
        self.assertEqual([e["why"] for e in self.logged("input-request-failed")], ["timeout"])
        self.assertIsNot(requester.child, child)
        requester.reap(stopping=True)
        self.assertEqual([e["why"] for e in self.logged("input-request-failed")], ["timeout", "stopped"])

    def test_a_failing_or_missing_salt_call_is_one_logged_event_each_and_the_schedule_goes_on(self):
        os.environ["SALT_CALL_EXIT"] = "2"
        requester = slot_module.InputRequester(TAG)
        requester.start_waiting()
        self.assertEqual(self.drive(requester, 1011.0), [0, 10])
        requester.tick()
        self.assertEqual([e["why"] for e in self.logged("input-request-failed")], ["exit 2", "exit 2"])
        os.environ["PATH"] = os.path.join(self.dir, "nothing-here")
        self.clock.t = 1031.0
        requester.tick()
        self.assertEqual(len(self.logged("input-request-failed")), 3)
        self.assertIsNone(requester.child)
        self.clock.t = 1071.0
        requester.tick()                            # still on schedule (t=70 after t=30)
        self.assertEqual(len(self.logged("input-request-failed")), 4)


class FakeVm:
    """What Runner.one_job needs of a VM: ready at once; each pump advances the fake clock by a
    second (and lets the test put an input into the inbox); the job exits 0 at once."""

    def __init__(self, test, slot, input_at):
        self.test, self.slot, self.input_at = test, slot, input_at
        self.seq, self.proc, self.exited = 1, None, False
        self.log_sink = None    # a GitHub input: its output is discarded (ci-job-slot LogSink)

    def wait_for(self, wanted, deadline, what):
        report = "ready" if wanted == "ready" else "exit 0"
        if report.startswith("exit"):
            self.exited = True
        return re.fullmatch(wanted, report)

    def pump(self, timeout):
        self.test.clock.t += 1.0
        self.test.settle(self.test.runner.requester) if self.test.runner.requester else None
        if self.input_at is not None and self.test.clock.t >= self.input_at:
            path = os.path.join(self.slot.inbox, "github-1")
            if not os.path.exists(os.path.join(self.slot.outbox, "github-1.exit")):
                with open(path, "w") as f:
                    f.write('{"kind": "github", "jitconfig": "x"}')
            self.input_at = None
        return []

    def alive(self):
        return not self.exited

    def destroy(self):
        return None

    def __getattr__(self, name):    # check_firewall, deliver, ...: nothing to do here
        return lambda *args, **kwargs: None


class SlotLoopTest(Fixture):
    def run_one_job(self, cfg_path, input_at):
        cfg = slot_module.load_config(cfg_path)
        slot = slot_module.Slot(cfg, 1)
        slot_module.ensure_dirs(slot)
        self.runner = slot_module.Runner(cfg, slot)
        self.runner.new_vm = lambda selftest=False: setattr(self.runner, "vm", FakeVm(self, slot, input_at)) or self.runner.vm
        code = self.runner.one_job()
        self.assertEqual(code, 0)
        with open(os.path.join(slot.outbox, "github-1.exit")) as f:
            self.assertEqual(f.read(), "0 exited\n")

    def test_a_github_slot_asks_while_its_warm_vm_waits_and_stops_when_the_input_came(self):
        self.run_one_job(self.config(requestInputEvent=TAG), input_at=1075.0)
        sends = [round(e["t"] - 1000.0) for e in self.logged("input-requested")]
        self.assertEqual(sends, [0, 10, 30, 70])
        self.assertEqual(len(self.recorded()), 4)
        self.assertIsNone(self.runner.requester.child)      # reaped by the end of the job

    def test_without_request_input_event_a_slot_never_runs_salt_call(self):
        self.run_one_job(self.config(), input_at=1075.0)
        self.assertEqual(self.recorded(), [])
        self.assertEqual(self.logged("input-requested"), [])

    def test_the_config_key_is_checked(self):
        self.assertEqual(slot_module.load_config(self.config(requestInputEvent=TAG))["requestInputEvent"], TAG)
        for bad in (["ci-fleet/x"], "", "-x", "a tag", "ci-fleet/" + "x" * 130, "x;reboot"):
            with self.assertRaises(slot_module.UsageError, msg=repr(bad)):
                slot_module.load_config(self.config(requestInputEvent=bad))


if __name__ == "__main__":
    unittest.main(verbosity=2)
