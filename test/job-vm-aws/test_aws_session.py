#!/usr/bin/python3
"""Issue 15.4: each job VM's own session of the queue role (docs/job-vm.md "The AWS session").

The real launcher (salt/runner/files/ci-job-slot), guest agent (ci-job-guest) and session
helper (salt/aws_credentials/files/ci_fleet_aws_session.py), imported as modules: the launcher's
config check, seed and QEMU ports; the per-VM command (the host timer's, with --stdout,
--duration 900 and a session name of the minion, slot and VM); the minting cadence on an
injected clock with a fake minting command (at once, every refresh, after a failure with
backoff, a hung mint killed, nothing after the VM is destroyed); the events; the order in
one_job (no input before the VM's first session); the helper's --stdout mode; the guest's frame
reader and writer into a temporary root; both ends together with a real minting process.
Runs as root (the guest's writer chowns): fails otherwise, never skips.
"""
import argparse
import calendar
import datetime
import fcntl
import grp
import io
import json
import os
import re
import socket
import subprocess
import stat
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from load_script import GUEST, LAUNCHER, ROOT, SALT, load  # noqa: E402
from launcher_config import base_config  # noqa: E402


slot_mod = load("ci_job_slot_aws", LAUNCHER)
guest = load("ci_job_guest_aws", GUEST)
helper = load("ci_fleet_aws_session_vm", os.path.join(SALT, "aws_credentials", "files", "ci_fleet_aws_session.py"))

SECRET = "wJalrXUtnFEMI-K7MDENG-secret-" + os.urandom(6).hex()
TOKEN = "IQoJb3JpZ2luX2VjE-token-" + os.urandom(6).hex()
# What the host's timer runs on aws, without its file (aws_credentials/session_command.jinja).
AWS_COMMAND = ["/usr/local/sbin/ci-fleet-aws-session", "--role-arn", "arn:aws:iam::123456789012:role/ci-fleet-production-aws-agent-default",
               "--source", "assume-role", "--session-name", "production-aws-default-pr-1", "--region", "eu-west-1"]
RA_COMMAND = ["/usr/local/sbin/ci-fleet-aws-session", "--role-arn", "arn:aws:iam::123456789012:role/ci-fleet-production-agent-default",
              "--source", "roles-anywhere", "--signing-helper", "/usr/local/bin/aws_signing_helper",
              "--certificate", "/etc/ci-fleet/roles-anywhere/current/certificate.pem",
              "--private-key", "/etc/ci-fleet/roles-anywhere/current/private-key.pem",
              "--trust-anchor-arn", "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/ta-1",
              "--profile-arn", "arn:aws:rolesanywhere:us-east-1:123456789012:profile/p-1"]


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def document(expires_in=900, key="ASIAEXAMPLE0000001", secret=SECRET, at=None):
    at = time.time() if at is None else at
    return json.dumps({"Version": 1, "AccessKeyId": key, "SecretAccessKey": secret,
                       "SessionToken": TOKEN, "Expiration": iso(at + expires_in)}).encode()


def test_group():
    for name in ("nogroup", "users", "daemon"):
        try:
            return grp.getgrnam(name)
        except KeyError:
            continue
    raise RuntimeError("no group nogroup/users/daemon on this machine")


def read_frames_from(sock):
    """Every complete frame the peer sent until now: [(tag, payload bytes)]."""
    sock.setblocking(False)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    frames = []
    while data:
        header, _, rest = data.partition(b"\n")
        tag, _, length = header.decode().partition(" ")
        frames.append((tag, rest[:int(length)]))
        data = rest[int(length):]
    return frames


class Events:
    """The launcher's events and stderr captured, its clock replaced (slot_mod.now)."""

    def __init__(self, start=None):
        self.clock = [time.time() if start is None else start]
        self.saved = (slot_mod.now, slot_mod._events_file, sys.stderr)
        self.events, self.stderr = io.StringIO(), io.StringIO()
        slot_mod.now = lambda: self.clock[0]
        slot_mod._events_file, sys.stderr = self.events, self.stderr

    def restore(self):
        slot_mod.now, slot_mod._events_file, sys.stderr = self.saved

    def list(self, prefix="aws-"):
        return [e for e in map(json.loads, self.events.getvalue().splitlines()) if e["event"].startswith(prefix)]


class FakeChild:
    """A minting process: its stdout a real pipe, its exit what the test says."""

    def __init__(self, out=b"", code=0, running=False):
        r, self.w = os.pipe()
        fcntl.fcntl(self.w, 1031, 1 << 20)  # F_SETPIPE_SZ: room for the too-large case
        os.write(self.w, out)
        self.stdout = os.fdopen(r, "rb", buffering=0)
        self.code, self.running, self.killed = code, running, False
        if not running:
            self.finish()

    def finish(self, code=None):
        if self.w is not None:
            os.close(self.w)
            self.w = None
        if code is not None:
            self.code = code
        self.running = False

    def poll(self):
        return None if self.running else self.code

    def kill(self):
        self.killed = True
        self.finish(-9)

    def wait(self, timeout=None):
        return self.code


class FakeMint:
    """spawn for AwsMinter: records each argv and answers from a queue of outcomes."""

    def __init__(self, clock):
        self.clock, self.calls, self.children, self.plan = clock, [], [], []

    def __call__(self, argv):
        self.calls.append((self.clock[0], list(argv)))
        what = self.plan.pop(0) if self.plan else "ok"
        if what == "ok":
            child = FakeChild(document(key="ASIAMINT%012d" % len(self.calls), at=self.clock[0]))
        elif what == "fail":
            child = FakeChild(b"", code=1)
        elif what == "hang":
            child = FakeChild(b"", running=True)
        elif what == "long":
            child = FakeChild(document(expires_in=3600, at=self.clock[0]))
        elif what == "big":
            child = FakeChild(b"x" * (64 * 1024 + 10), running=True)
        elif what == "oserror":
            raise FileNotFoundError(2, "No such file or directory")
        self.children.append(child)
        return child


class LauncherConfig(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()

    def test_aws_is_the_region_and_the_minting_command_and_is_checked(self):
        aws = {"region": "eu-central-1", "command": AWS_COMMAND}
        self.assertEqual(slot_mod.load_config(base_config(self.tmp, aws=aws))["aws"], aws)
        self.assertEqual(slot_mod.load_config(base_config(self.tmp, aws=dict(aws, refreshSeconds=3)))["aws"]["refreshSeconds"], 3)
        for bad, problem in (
            # The host's session file is no longer something a VM can be given.
            ({"sessionFile": "/run/ci-fleet/aws/credentials.json", "region": "us-east-1", "command": AWS_COMMAND}, "unknown key aws.'sessionFile'"),
            ({"region": "us-east-1"}, "missing key aws.command"),
            ({"command": AWS_COMMAND}, "missing key aws.region"),
            ({"region": "us-east-1", "command": "/usr/local/sbin/ci-fleet-aws-session"}, "aws.command must be a list"),
            ({"region": "us-east-1", "command": []}, "aws.command must be 1 to 64 non-empty strings"),
            ({"region": "us-east-1", "command": ["ci-fleet-aws-session"]}, "aws.command[0] must be an absolute path"),
            ({"region": "us-east-1", "command": AWS_COMMAND + ["--output", "/run/ci-fleet/aws/credentials.json"]}, "must not contain --output"),
            ({"region": "us-east-1", "command": AWS_COMMAND + ["--alarm-dir=/run"]}, "must not contain --alarm-dir"),
            ({"region": "us-east-1", "command": AWS_COMMAND + ["--duration", "3600"]}, "must not contain --duration"),
            ({"region": "us-east-1", "command": AWS_COMMAND[:-2] + ["--session-name", "a b"]}, "has --session-name twice"),
            ({"region": "us-east-1", "command": AWS_COMMAND[:6] + ["x"]}, "--session-name must be followed by 2 to 64"),
            ({"region": "us-east-1", "command": AWS_COMMAND, "refreshSeconds": 0}, "aws.refreshSeconds must be 1 to 300"),
            ({"region": "us-east-1", "command": AWS_COMMAND, "refreshSeconds": 900}, "aws.refreshSeconds must be 1 to 300"),
            ({"region": "us-east-1", "command": AWS_COMMAND, "refreshSeconds": True}, "aws.refreshSeconds must be a int"),
            ({"region": "us-east-1\nselftest=1", "command": AWS_COMMAND}, "is not an AWS region name"),
        ):
            with self.assertRaises(slot_mod.UsageError, msg=problem) as e:
                slot_mod.load_config(base_config(self.tmp, aws=bad))
            self.assertIn(problem, str(e.exception))

    def test_seed_and_qemu_ports_only_when_configured(self):
        with_aws = slot_mod.load_config(base_config(self.tmp, aws={"region": "us-west-2", "command": RA_COMMAND}))
        without = slot_mod.load_config(base_config(self.tmp))
        for cfg, region in ((with_aws, "us-west-2"), (without, None)):
            slot = slot_mod.Slot(cfg, 2)
            seed = slot_mod.render_seed(cfg, slot, 5, False)
            lines = [l for l in seed.splitlines() if l.startswith("aws")]
            self.assertEqual(lines, ["aws_region=%s" % region] if region else [])
            argv = slot_mod.Vm(cfg, slot, 5).qemu_argv()
            aws_sock = os.path.join(slot.vm_dir, "aws.sock")
            pairs = list(zip(argv, argv[1:]))
            want = [("-chardev", "socket,id=aws,path=%s,server=on,wait=off" % aws_sock),
                    ("-device", "virtserialport,bus=vser0.0,chardev=aws,name=org.ci-fleet.aws")]
            for pair in want:
                self.assertEqual(pair in pairs, region is not None, pair)
            self.assertNotIn("Secret", seed)

    def test_each_vm_is_minted_with_the_timers_command_its_own_name_900_s_and_stdout(self):
        cfg = slot_mod.load_config(base_config(self.tmp, aws={"region": "eu-west-1", "command": AWS_COMMAND}))
        argv = slot_mod.aws_mint_argv(cfg, slot_mod.Slot(cfg, 2), 5)
        self.assertEqual(argv, AWS_COMMAND[:6] + ["production-aws-default-pr-1.s2.v5"] + AWS_COMMAND[7:] + ["--stdout", "--duration", "900"])
        self.assertNotIn("--output", argv)
        # Roles Anywhere: no session name (the profile does not accept one); the rest as the timer's.
        ra = slot_mod.load_config(base_config(self.tmp, aws={"region": "us-east-1", "command": RA_COMMAND}))
        self.assertEqual(slot_mod.aws_mint_argv(ra, slot_mod.Slot(ra, 0), 1), RA_COMMAND + ["--stdout", "--duration", "900"])
        # RoleSessionName: 2-64 characters of [\w+=,.@-]; the minion part is shortened, never the slot and VM.
        name = slot_mod.vm_session_name("m" * 64, 999, 123456789)
        self.assertEqual((len(name), name[-16:]), (64, ".s999.v123456789"))
        self.assertTrue(re.fullmatch(r"[\w+=,.@-]{2,64}", name, re.ASCII))
        # Every name the launcher makes is one the helper accepts.
        self.assertTrue(helper.SESSION_NAME_RE.fullmatch(slot_mod.vm_session_name("production-aws-default-pr-1", 12, 40001)))


class Minting(unittest.TestCase):
    """AwsMinter on an injected clock with a fake minting command: no sleeps."""

    def setUp(self):
        self.ev = Events(start=1_800_000_000.0)
        self.clock = self.ev.clock
        self.mint = FakeMint(self.clock)
        self.minter = slot_mod.AwsMinter(["/x/mint", "--stdout"], 7, refresh=300, clock=lambda: self.clock[0], spawn=self.mint)

    def tearDown(self):
        self.ev.restore()

    def run_for(self, seconds, step=1.0):
        """Ticks every `step` s of fake time; the documents minted meanwhile."""
        got = []
        end = self.clock[0] + seconds
        while self.clock[0] < end:
            d = self.minter.tick()
            if d is not None:
                got.append(json.loads(bytes(d))["AccessKeyId"])
            self.clock[0] += step
        return got

    def times(self):
        t0 = 1_800_000_000.0
        return [round(t - t0) for t, _ in self.mint.calls]

    def test_at_once_then_every_refresh_while_it_lives(self):
        got = self.run_for(3600)
        self.assertEqual(self.times(), list(range(0, 3600, 300)))
        self.assertEqual(len(got), 12)
        self.assertEqual(len(set(got)), 12, "every mint is a new session")
        self.assertEqual([e["event"] for e in self.ev.list()], ["aws-session-minted"] * 12)

    def test_a_failed_mint_is_retried_at_once_with_backoff_and_a_success_resets_it(self):
        self.mint.plan = ["ok", "fail", "fail", "oserror", "fail", "fail", "fail", "ok"]
        self.run_for(1000)
        # Started at 0 ok; 300 fail (seen at 301: +5) 306 fail (+10) 317 oserror (at once: +20) 337 fail (+40)
        # 378 fail (+60) 439 fail (+60) 500 ok; 800 ok (a session is refreshed 300 s after its mint started).
        self.assertEqual(self.times(), [0, 300, 306, 317, 337, 378, 439, 500, 800])
        unavailable = [(e["attempt"], e["retryIn"]) for e in self.ev.list() if e["event"] == "aws-session-unavailable"]
        self.assertEqual(unavailable, [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (6, 60)])
        reasons = {e["reason"] for e in self.ev.list() if e["event"] == "aws-session-unavailable"}
        self.assertEqual(reasons, {"exit 1", "cannot run mint: No such file or directory"})

    def test_a_hung_mint_is_killed_after_90_s_and_retried(self):
        self.mint.plan = ["hang", "ok"]
        got = self.run_for(100)
        self.assertTrue(self.mint.children[0].killed)
        self.assertEqual(self.times()[:2], [0, 96])  # killed at 91 s, retried 5 s later
        self.assertEqual(len(got), 1)
        self.assertEqual(self.ev.list()[0]["reason"], "no session within 90 s")

    def test_a_session_longer_than_asked_or_too_large_is_refused(self):
        self.mint.plan = ["long", "big", "ok"]
        got = self.run_for(30)
        self.assertEqual(len(got), 1)
        self.assertEqual([e["reason"] for e in self.ev.list() if e["event"] == "aws-session-unavailable"],
                         ["lasts more than 900 s", "more than 64 KiB on stdout"])
        self.assertTrue(self.mint.children[1].killed)

    def test_nothing_is_minted_after_stop_and_a_running_mint_is_killed(self):
        self.run_for(10)
        self.mint.plan = ["hang"]
        self.run_for(300)
        running = self.mint.children[-1]
        self.assertTrue(running.running)
        self.minter.stop()
        self.assertTrue(running.killed)
        calls = len(self.mint.calls)
        self.assertEqual(self.run_for(3600), [])
        self.assertEqual(len(self.mint.calls), calls)

    def test_no_credential_in_events_or_stderr(self):
        self.mint.plan = ["ok", "long"]
        self.run_for(400)
        for text in (self.ev.events.getvalue(), self.ev.stderr.getvalue()):
            self.assertNotIn(SECRET, text)
            self.assertNotIn(TOKEN, text)


class RecordingSocket:
    """Keeps the very buffer object sendall got, to see it zeroed afterwards."""

    def __init__(self):
        self.buffers, self.copies = [], []

    def sendall(self, buf):
        self.buffers.append(buf)
        self.copies.append(bytes(buf))

    def close(self):
        pass


class LauncherSending(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        cfg = slot_mod.load_config(base_config(self.tmp, aws={"region": "eu-west-1", "command": AWS_COMMAND}))
        self.vm = slot_mod.Vm(cfg, slot_mod.Slot(cfg, 0), 1)
        self.host, self.peer = socket.socketpair()
        self.vm.aws_sock = self.host
        self.ev = Events()
        self.clock = self.ev.clock
        self.mint = FakeMint(self.clock)
        self.vm.aws = slot_mod.AwsMinter(slot_mod.aws_mint_argv(cfg, self.vm.slot, 1), 1, clock=lambda: self.clock[0], spawn=self.mint)

    def tearDown(self):
        self.ev.restore()
        self.host.close()
        self.peer.close()

    def check(self, advance=0.0):
        self.clock[0] += advance
        self.vm.check_aws_session()
        return read_frames_from(self.peer)

    def test_minted_at_start_sent_once_ready_and_each_refresh_sent(self):
        self.assertEqual(self.check(), [])
        self.assertEqual(len(self.mint.calls), 1, "minted before the guest is ready")
        self.assertEqual(self.check(1), [], "nothing sent before the guest reports ready")
        self.assertFalse(self.vm.aws_ready())
        self.vm.reports.append("ready")
        frames = self.check(1)
        self.assertEqual([t for t, _ in frames], ["CI-FLEET-AWS-SESSION"])
        self.assertEqual(json.loads(frames[0][1])["AccessKeyId"], "ASIAMINT000000000001")
        self.assertTrue(self.vm.aws_ready())
        self.assertEqual(self.check(100), [], "no new session before the refresh")
        self.check(200)  # the refresh starts
        frames = self.check(0.1)
        self.assertEqual(json.loads(frames[0][1])["AccessKeyId"], "ASIAMINT000000000002")
        self.assertEqual(self.mint.calls[0][1][-3:], ["--stdout", "--duration", "900"])
        self.assertIn("production-aws-default-pr-1.s0.v1", self.mint.calls[0][1])

    def test_the_sent_buffer_is_zeroed(self):
        recorder = RecordingSocket()
        self.vm.aws_sock = recorder
        self.vm.reports.append("ready")
        self.vm.check_aws_session()
        self.vm.check_aws_session()
        self.assertEqual(len(recorder.buffers), 1)
        self.assertIn(SECRET.encode(), recorder.copies[0])
        self.assertEqual(set(recorder.buffers[0]), {0})

    def test_a_guest_that_does_not_take_its_first_session_is_replaced_later_ones_only_stop(self):
        class Refusing(RecordingSocket):
            def sendall(self, buf):
                raise socket.timeout("timed out")
        self.vm.reports.append("ready")
        self.vm.aws_sock = Refusing()
        self.vm.check_aws_session()
        with self.assertRaises(slot_mod.VmFailed):
            self.vm.check_aws_session()
        self.assertTrue(self.vm.aws.stopped)
        # After a first session went, a refused refresh ends sending but not the job's VM.
        vm = slot_mod.Vm(self.vm.cfg, self.vm.slot, 2)
        vm.reports.append("ready")
        vm.aws_sock = RecordingSocket()
        vm.aws = slot_mod.AwsMinter(["/x"], 2, clock=lambda: self.clock[0], spawn=self.mint)
        vm.check_aws_session()
        vm.check_aws_session()
        self.assertEqual(vm.aws_sent, 1)
        vm.aws_sock = Refusing()
        self.clock[0] += 300
        vm.check_aws_session()
        vm.check_aws_session()
        self.assertIsNone(vm.aws_sock)
        self.assertTrue(vm.aws.stopped)

    def test_a_refresh_refused_because_qemu_closed_the_port_is_the_vms_end_not_an_unavailable_session(self):
        # QEMU closes its end of the port only when it exits (a crash, or the guest's power-off
        # before the launcher kills it at the exit report): the send is refused at once.
        self.vm.reports.append("ready")
        self.check()  # the mint starts
        self.assertEqual(len(self.check(1)), 1)
        self.peer.close()
        self.clock[0] += 300
        self.vm.check_aws_session()  # the refresh starts
        self.vm.check_aws_session()  # its session is refused
        self.vm.check_aws_session()
        events = [(e["event"], e.get("reason")) for e in self.ev.list() if e["event"].startswith("aws-session-") and e["event"] not in ("aws-session-minted", "aws-session-sent")]
        self.assertEqual(events, [("aws-session-dropped", "the VM ended (BrokenPipeError)")])
        self.assertIsNone(self.vm.aws_sock)
        self.assertTrue(self.vm.aws.stopped)

    def test_a_vm_whose_qemu_ended_before_its_first_session_is_failed_as_a_vm_that_ended(self):
        # QEMU exited (status 3) with the guest ready and no session sent yet: the VM is replaced,
        # and the failure says what the job loop says of a VM that ended (its exit, its console).
        self.vm.proc = subprocess.Popen(["/bin/sh", "-c", "exit 3"])
        self.vm.tail = b"guest console: kernel panic\n"
        self.vm.reports.append("ready")
        self.check()  # the mint starts
        self.peer.close()
        with self.assertRaises(slot_mod.VmFailed) as failed:
            self.vm.check_aws_session()  # its session is refused
        self.assertRegex(str(failed.exception), r"^the VM ended \(qemu exit 3\) before its first AWS session; qemu: .*; console:\nguest console: kernel panic$")
        self.assertEqual([(e["event"], e.get("reason")) for e in self.ev.list() if e["event"] in ("aws-session-dropped", "aws-session-unavailable")],
                         [("aws-session-dropped", "the VM ended (BrokenPipeError)")])
        self.assertTrue(self.vm.aws.stopped)

    def test_a_session_that_expired_before_ready_is_not_sent(self):
        self.check()
        self.check(0.1)
        self.vm.reports.append("ready")
        self.assertEqual(self.check(901), [])
        self.assertIn(("aws-session-unavailable", "expired"), [(e["event"], e.get("reason")) for e in self.ev.list()])

    def test_a_self_test_vm_gets_no_session(self):
        cfg = self.vm.cfg
        vm = slot_mod.Vm(cfg, slot_mod.Slot(cfg, 0), 2, selftest=True)
        vm.aws_sock = self.host
        vm.check_aws_session()
        self.assertIsNone(vm.aws)
        self.assertTrue(vm.aws_ready())

    def test_no_mint_after_the_vm_is_destroyed(self):
        self.vm.reports.append("ready")
        self.check()
        self.check(0.1)
        self.mint.plan = ["hang"]
        self.check(300)
        running = self.mint.children[-1]
        calls = len(self.mint.calls)
        slot_mod.ensure_dirs(self.vm.slot)
        self.vm.destroy()  # the real destroy: no QEMU here, no tap, no table
        self.assertTrue(running.killed)
        for _ in range(20):
            self.check(300)
        self.assertEqual(len(self.mint.calls), calls)
        self.assertTrue(self.vm.aws.stopped)
        self.assertIsNone(self.vm.aws_pending)

    def one_job(self, plan, advance_per_turn=1.0, requester=None, input_at=0):
        """Runner.one_job with QEMU replaced; the clock moves 1 s per turn of its loop."""
        order = []
        vm = self.vm
        recorder = RecordingSocket()
        recorder.sendall = lambda buf: order.append(bytes(buf).split(b" ")[0].decode())
        vm.aws_sock = recorder
        self.mint.plan = list(plan)
        slot = vm.slot
        slot_mod.ensure_dirs(slot)
        def submit():
            with open(os.path.join(slot.inbox, "job-1"), "w") as f:
                f.write('{"kind": "github", "jitconfig": "x"}')
        if not input_at:
            submit()
        exited = []

        def wait_for(wanted, deadline, what):
            if wanted == r"ready":
                vm.reports.append("ready")
                return re.fullmatch(wanted, "ready")
            exited.append(True)
            return re.fullmatch(wanted, "exit 0")

        def pump(timeout):
            self.clock[0] += advance_per_turn
            if input_at and round(self.clock[0] - self.start) == input_at:
                submit()
            if self.clock[0] > self.start + 3600:
                raise AssertionError("the input was never taken")
            return []
        self.start = self.clock[0]
        vm.wait_for = wait_for
        vm.pump = pump
        vm.alive = lambda: not exited
        vm.check_firewall = lambda: None
        vm.deliver = lambda data: order.append("CI-FLEET-JOB-INPUT@%d" % round(self.clock[0] - self.start))
        vm.destroy = lambda: None
        runner = slot_mod.Runner(vm.cfg, slot)
        runner.new_vm = lambda selftest=False: vm
        runner.requester = requester
        self.assertEqual(runner.one_job(), 0)
        return order

    def test_one_job_sends_the_vms_session_before_the_job_input(self):
        self.assertEqual(self.one_job(["ok"]), ["CI-FLEET-AWS-SESSION", "CI-FLEET-JOB-INPUT@1"])

    def test_a_vm_whose_first_session_cannot_be_minted_takes_no_input_until_one_comes(self):
        order = self.one_job(["fail", "fail", "fail", "ok"])
        # Attempts at 0, 6, 17, 38 s (each failure seen a turn later, then 5, 10, 20 s): the input
        # waits in the inbox, and goes in the turn the session went.
        self.assertEqual(order, ["CI-FLEET-AWS-SESSION", "CI-FLEET-JOB-INPUT@39"])
        self.assertEqual(os.listdir(self.vm.slot.inbox), [])
        self.assertEqual([(e["event"], e.get("attempt"), e.get("retryIn")) for e in self.ev.list()][:3],
                         [("aws-session-unavailable", 1, 5), ("aws-session-unavailable", 2, 10), ("aws-session-unavailable", 3, 20)])


    def test_a_github_slot_asks_for_no_input_before_its_vms_first_session(self):
        test = self

        class Requester:
            ticks = []

            def start_waiting(self):
                pass

            def stop_waiting(self):
                pass

            def reap(self, stopping=False):
                pass

            def tick(self):
                self.ticks.append(round(test.clock[0] - test.start))
        requester = Requester()
        # Mints at 0 and 6 fail, the one at 17 comes (sent at 18); the master's input arrives at 25.
        order = self.one_job(["fail", "fail", "ok"], requester=requester, input_at=25)
        self.assertEqual(order, ["CI-FLEET-AWS-SESSION", "CI-FLEET-JOB-INPUT@25"])
        self.assertEqual(requester.ticks, list(range(18, 25)))


class Helper(unittest.TestCase):
    """ci_fleet_aws_session.py --stdout: the launcher's per-VM call of the timer's own helper."""

    def args(self, **kw):
        base = dict(source="assume-role", role_arn="arn:aws:iam::123456789012:role/r", session_name="production-aws-default-pr-1.s0.v1",
                    region="eu-west-1", stdout=True, duration=900, output=None, group=None, alarm_dir=None)
        base.update(kw)
        return argparse.Namespace(**base)

    def test_assume_role_asks_for_the_duration_and_the_vms_session_name(self):
        calls = []

        class Sts:
            def assume_role(self, **kwargs):
                calls.append(kwargs)
                return {"Credentials": {"AccessKeyId": "A", "SecretAccessKey": "S", "SessionToken": "T",
                                        "Expiration": datetime.datetime.fromtimestamp(1_800_000_900, datetime.timezone.utc)}}
        out = io.StringIO()
        code = helper.to_stdout(self.args(), now=1_800_000_000, fetch=lambda a: helper.from_assume_role(a, client=Sts()), out=out, log=lambda _l: None)
        self.assertEqual(code, 0)
        self.assertEqual(calls, [{"RoleArn": "arn:aws:iam::123456789012:role/r", "RoleSessionName": "production-aws-default-pr-1.s0.v1", "DurationSeconds": 900}])
        self.assertEqual(json.loads(out.getvalue())["Expiration"], "2027-01-15T08:15:00Z")

    def test_the_signing_helper_is_asked_for_the_duration(self):
        seen = []

        def run(argv, **kwargs):
            seen.append(argv)
            import subprocess
            return subprocess.CompletedProcess(argv, 0, document(at=1_800_000_000), b"")
        args = self.args(source="roles-anywhere", signing_helper="/usr/local/bin/aws_signing_helper", certificate="/c", private_key="/k",
                         trust_anchor_arn="arn:ta", profile_arn="arn:p")
        out = io.StringIO()
        self.assertEqual(helper.to_stdout(args, now=1_800_000_000, fetch=lambda a: helper.from_signing_helper(a, run=run), out=out), 0)
        self.assertEqual(seen[0][seen[0].index("--session-duration") + 1], "900")
        self.assertNotIn("--role-session-name", seen[0])

    def test_stdout_writes_no_file_and_a_failure_prints_nothing_but_one_stderr_line(self):
        out, logs = io.StringIO(), []

        def broken(_a):
            raise RuntimeError("AccessDenied " + SECRET)
        self.assertEqual(helper.to_stdout(self.args(), now=1_800_000_000, fetch=broken, out=out, log=logs.append), 1)
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(logs, ["<4>ci-fleet-aws-session: no session: RuntimeError"])
        self.assertEqual(helper.to_stdout(self.args(), now=1_800_000_000, fetch=lambda a: json.loads(document(expires_in=3600, at=1_800_000_000)),
                                          out=out, log=logs.append), 1, "a session longer than asked is refused")

    def test_arguments(self):
        common = ["--source", "assume-role", "--role-arn", "arn:r", "--region", "eu-west-1", "--session-name", "m-1.s0.v1"]
        for extra, problem in ((["--stdout", "--output", "/run/x.json"], "--stdout writes no file"),
                               (["--stdout", "--duration", "899"], "--duration must be 900 to 3600"),
                               (["--stdout", "--duration", "3601"], "--duration must be 900 to 3600"),
                               (["--output", "/x", "--group", "root", "--alarm-dir", "/a", "--duration", "900"], "--duration is for --stdout"),
                               ([], "needs --output, --group, --alarm-dir")):
            stderr, sys.stderr = sys.stderr, io.StringIO()
            try:
                with self.assertRaises(SystemExit):
                    helper.main(common + extra)
                text = sys.stderr.getvalue()
            finally:
                sys.stderr = stderr
            self.assertIn(problem, text)
        stderr, sys.stderr = sys.stderr, io.StringIO()
        try:
            with self.assertRaises(SystemExit):
                helper.main(common[:-1] + ["bad name!", "--stdout"])
            self.assertIn("--session-name must be 2 to 64", sys.stderr.getvalue())
        finally:
            sys.stderr = stderr


class Guest(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            raise RuntimeError("test_aws_session.py must run as root (the guest's writer chowns)")
        self.root = tempfile.mkdtemp()
        self.group = test_group()

    def test_aws_files(self):
        self.assertEqual(guest.aws_files("eu-west-1", "ci"), [
            {"path": "/run/ci-fleet", "kind": "dir", "owner": "root", "group": "root", "mode": 0o755, "content": None},
            {"path": "/run/ci-fleet/aws", "kind": "dir", "owner": "root", "group": "ci", "mode": 0o750, "content": None},
            {"path": "/run/ci-fleet/aws/session.json", "kind": "file", "owner": "root", "group": "ci", "mode": 0o640, "content": None},
            {"path": "/etc/ci-fleet", "kind": "dir", "owner": "root", "group": "root", "mode": 0o755, "content": None},
            {"path": "/etc/ci-fleet/aws", "kind": "dir", "owner": "root", "group": "root", "mode": 0o755, "content": None},
            {"path": "/etc/ci-fleet/aws/config", "kind": "file", "owner": "root", "group": "root", "mode": 0o644,
             "content": "[default]\nregion = eu-west-1\ncredential_process = /bin/cat /run/ci-fleet/aws/session.json\n"},
        ])
        self.assertEqual((guest.AWS_PORT, guest.AWS_SESSION, guest.AWS_CONFIG, guest.AWS_CREDENTIALS_NONE),
                         ("/dev/virtio-ports/org.ci-fleet.aws", "/run/ci-fleet/aws/session.json",
                          "/etc/ci-fleet/aws/config", "/etc/ci-fleet/aws/credentials-none"))
        self.assertNotIn(guest.AWS_CREDENTIALS_NONE, [f["path"] for f in guest.aws_files("eu-west-1", "ci")])
        with self.assertRaises(RuntimeError):
            guest.aws_files("eu-west-1\ncredential_process = /bin/sh", "ci")

    def test_job_command_points_both_kinds_at_the_session(self):
        env = {"HOME": "/home/ci", "USER": "ci", "PATH": "/usr/bin:/bin"}
        aws_env = {"AWS_CONFIG_FILE": "/etc/ci-fleet/aws/config", "AWS_SHARED_CREDENTIALS_FILE": "/etc/ci-fleet/aws/credentials-none",
                   "AWS_REGION": "eu-west-1"}
        jobs = [{"kind": "github", "jitconfig": "abc"}, {"kind": "buildkite", "env": {"BUILDKITE_JOB_ID": "1"}}]
        for job in jobs:
            _, with_aws = guest.job_command(job, env, aws_region="eu-west-1")
            self.assertEqual({k: v for k, v in with_aws.items() if k.startswith("AWS_")}, aws_env)
            _, without = guest.job_command(job, env)
            self.assertEqual([k for k in without if k.startswith("AWS_")], [])
            _, positional = guest.job_command(job, env, "/opt/actions-runner")
            self.assertEqual([k for k in positional if k.startswith("AWS_")], [])
        # A Buildkite job's own env (pipeline variables) cannot redirect the session: the guest's values win.
        for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_REGION"):
            _, own = guest.job_command({"kind": "buildkite", "env": {"BUILDKITE_JOB_ID": "1", name: "/tmp/x"}}, env, aws_region="eu-west-1")
            self.assertEqual({k: v for k, v in own.items() if k.startswith("AWS_")}, aws_env)

    def frames(self, *parts):
        a, b = socket.socketpair()
        session = guest.AwsSession(self.group.gr_name, root=self.root)
        guest.write_aws_files("eu-west-1", self.group.gr_name, root=self.root)
        seen = []
        original = session.take

        def take(payload):
            original(payload)
            path = self.root + guest.AWS_SESSION
            seen.append(open(path, "rb").read() if os.path.exists(path) else None)
        stderr, sys.stderr = sys.stderr, io.StringIO()
        try:
            reader = threading.Thread(target=guest.read_frames, args=(b.fileno(), take, True))
            reader.start()
            for part in parts:
                a.sendall(part)
                time.sleep(0.02)
            a.close()
            reader.join(10)
            log = sys.stderr.getvalue()
        finally:
            sys.stderr = stderr
            b.close()
        return session, seen, log

    def test_frames_are_written_atomically_and_bad_ones_dropped(self):
        one, two = document(key="ASIAONE0000000000001"), document(key="ASIATWO0000000000002")
        frame = lambda data: b"CI-FLEET-AWS-SESSION %d\n" % len(data) + data
        bad_json = b"{" + SECRET.encode()
        not_session = json.dumps({"Version": 2, "AccessKeyId": "A", "SecretAccessKey": SECRET, "SessionToken": "t", "Expiration": "x"}).encode()
        two_frame = frame(two)
        session, seen, log = self.frames(frame(one), b"noise " + SECRET.encode(), frame(bad_json), frame(not_session),
                                         b"CI-FLEET-AWS-SESSION 99999999\n", two_frame[:30], two_frame[30:])
        self.assertEqual(seen, [one, one, one, two], log)  # the file after each frame: bad ones change nothing
        self.assertEqual(session.written, 2)
        self.assertTrue(session.first.is_set())
        self.assertNotIn(SECRET, log)
        self.assertGreaterEqual(len(log.strip().splitlines()), 4)
        path = self.root + guest.AWS_SESSION
        st = os.stat(path)
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid), (0o640, 0, self.group.gr_gid))
        d = os.stat(os.path.dirname(path))
        self.assertEqual((stat.S_IMODE(d.st_mode), d.st_uid, d.st_gid), (0o750, 0, self.group.gr_gid))
        self.assertEqual(os.listdir(os.path.dirname(path)), ["session.json"])  # no temp file left
        config = os.stat(self.root + guest.AWS_CONFIG)
        self.assertEqual((stat.S_IMODE(config.st_mode), config.st_uid, config.st_gid), (0o644, 0, 0))
        with open(self.root + guest.AWS_CONFIG) as f:
            config_text = f.read()
        self.assertEqual(config_text,
                         "[default]\nregion = eu-west-1\ncredential_process = /bin/cat /run/ci-fleet/aws/session.json\n")
        self.assertFalse(os.path.exists(self.root + guest.AWS_CREDENTIALS_NONE))
        for directory in ("/run/ci-fleet", "/etc/ci-fleet", "/etc/ci-fleet/aws"):
            s = os.stat(self.root + directory)
            self.assertEqual((stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid), (0o755, 0, 0), directory)

    def test_a_new_document_replaces_the_file(self):
        one, two = document(key="ASIAONE0000000000001"), document(key="ASIATWO0000000000002")
        frame = lambda data: b"CI-FLEET-AWS-SESSION %d\n" % len(data) + data
        _, seen, _ = self.frames(frame(one), frame(two))
        self.assertEqual(seen, [one, two])


FAKE_MINT = r'''#!/usr/bin/python3
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "calls"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
n = sum(1 for _ in open(os.path.join(here, "calls")))
print(json.dumps({"Version": 1, "AccessKeyId": "ASIAREAL%012d" % n, "SecretAccessKey": "secret-%d" % n, "SessionToken": "token",
                  "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 900))}))
'''


class BothEnds(unittest.TestCase):
    def test_a_real_minting_process_reaches_the_guest_and_its_refresh_too(self):
        if os.geteuid() != 0:
            raise RuntimeError("must run as root")
        tmp, root = tempfile.mkdtemp(), tempfile.mkdtemp()
        mint = os.path.join(tmp, "mint")
        with open(mint, "w") as f:
            f.write(FAKE_MINT)
        os.chmod(mint, 0o755)
        cfg = slot_mod.load_config(base_config(tmp, aws={"region": "eu-west-1", "command": [mint, "--session-name", "minion-1"], "refreshSeconds": 60}))
        vm = slot_mod.Vm(cfg, slot_mod.Slot(cfg, 3), 9)
        a, b = socket.socketpair()
        vm.aws_sock = a
        vm.reports.append("ready")
        group = test_group().gr_name
        guest.write_aws_files("eu-west-1", group, root=root)
        session = guest.AwsSession(group, root=root)
        reader = threading.Thread(target=guest.read_frames, args=(b.fileno(), session.take), kwargs={"stop_at_eof": True})
        reader.start()
        ev = Events()
        try:
            for n in (1, 2):
                # The real process runs (a Python start each: slow on a loaded host): poll it, 60 s
                # at most; the deadline only ends a test that has failed.
                deadline = time.monotonic() + 60
                while vm.aws_sent != n and time.monotonic() < deadline:
                    vm.check_aws_session()
                    if vm.aws_sent != n:
                        time.sleep(0.01)
                while session.written != n and time.monotonic() < deadline:
                    time.sleep(0.01)
                with open(root + guest.AWS_SESSION) as f:
                    self.assertEqual(json.load(f)["AccessKeyId"], "ASIAREAL%012d" % n)
                ev.clock[0] += 61  # the refresh is due
        finally:
            ev.restore()
            vm.aws.stop()
            a.close()
            reader.join(10)
            b.close()
        with open(os.path.join(tmp, "calls")) as f:
            calls = [json.loads(l) for l in f]
        self.assertEqual(calls, [["--session-name", "minion-1.s3.v9", "--stdout", "--duration", "900"]] * 2)
        # Nothing of the session was written on the host: only the fake's own call log.
        self.assertEqual(sorted(os.listdir(tmp)), sorted(["calls", "mint"] + [n for n in os.listdir(tmp) if n.startswith("job-vm-")]))


class ReviewFindings(unittest.TestCase):
    """Issue 15 review (2, 3, 4): the fleet's alarm when per-VM minting fails, the handoff's line
    while its input waits, a hung mint killed with everything it started, abbreviated options."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.ev = Events(start=1_800_000_000.0)
        self.clock = self.ev.clock
        self.addCleanup(self.ev.restore)

    def minter(self, vm, mint, alarm):
        return slot_mod.AwsMinter(["/x/mint", "--stdout"], vm, refresh=300, clock=lambda: self.clock[0],
                                  spawn=mint, alarm=alarm)

    def run_for(self, minter, seconds):
        end = self.clock[0] + seconds
        while self.clock[0] < end:
            minter.tick()
            self.clock[0] += 1.0

    def test_minting_that_fails_for_3_minutes_raises_the_fleets_alarm_and_a_success_clears_it(self):
        alarms = os.path.join(self.tmp, "alarms")
        cfg = slot_mod.load_config(base_config(self.tmp, aws={"region": "eu-west-1", "command": AWS_COMMAND, "alarmDir": alarms}))
        slot = slot_mod.Slot(cfg, 4)
        alarm = slot_mod.aws_alarm(cfg, slot)
        alarm.clock = lambda: self.clock[0]
        self.assertIs(slot_mod.aws_alarm(cfg, slot), alarm, "one per slot: it outlives each VM's minter")
        path = os.path.join(alarms, "job-vm-aws-session-s4.alarm")
        self.assertEqual(alarm.path, path)
        # Each Vm's minter reports to the slot's alarm.
        vm = slot_mod.Vm(cfg, slot, 1)
        vm.aws_sock = socket.socketpair()[0]
        self.addCleanup(vm.aws_sock.close)
        vm.check_aws_session()
        self.assertIs(vm.aws.alarm, alarm)
        vm.aws.stop()  # (it found no minting program: one failure, forgotten here)
        alarm.failing_since = None
        mint = FakeMint(self.clock)
        mint.plan = ["fail"] * 100
        first = self.minter(1, mint, alarm)
        self.run_for(first, 120)  # failing for 2 minutes: no alarm yet (a blip)
        self.assertFalse(os.path.exists(path))
        first.stop()  # the VM is replaced; the next one keeps failing: the failure is continuous
        second = self.minter(2, mint, alarm)
        self.run_for(second, 120)
        self.assertTrue(os.path.exists(path))
        raised = [e for e in self.ev.list("aws-session-alarm") if e["event"] == "aws-session-alarm"]
        self.assertEqual(len(raised), 1)
        self.assertGreaterEqual(raised[0]["failingFor"], 180)
        self.assertLessEqual(raised[0]["failingFor"], 180 + 60)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644)
        with open(path) as f:
            text = f.read()
        self.assertIn("job slot 4: no AWS session", text)
        self.assertNotIn(SECRET, text)
        mint.plan = ["ok"]
        self.run_for(second, 70)
        self.assertFalse(os.path.exists(path), "removed at the next success")
        self.assertEqual([e["event"] for e in self.ev.list("aws-session-alarm")], ["aws-session-alarm", "aws-session-alarm-cleared"])
        second.stop()

    def test_a_handoff_whose_input_waits_says_so_in_the_jobs_log_once(self):
        cfg = slot_mod.load_config(base_config(self.tmp))
        slot = slot_mod.Slot(cfg, 0)
        slot_mod.ensure_dirs(slot)
        self.ev.restore()
        saved = slot_mod.HANDOFF_UNCLAIMED_NOTICE_SECONDS if hasattr(slot_mod, "HANDOFF_UNCLAIMED_NOTICE_SECONDS") else None
        slot_mod.HANDOFF_UNCLAIMED_NOTICE_SECONDS = 0.5
        self.addCleanup(setattr, slot_mod, "HANDOFF_UNCLAIMED_NOTICE_SECONDS", saved)
        import signal as sig
        for s in (sig.SIGTERM, sig.SIGINT, sig.SIGHUP):
            self.addCleanup(sig.signal, s, sig.getsignal(s))

        out = io.BytesIO()

        def slot_takes_it_late():
            # The VM had no session yet: the input waits in the inbox until the handoff has said so
            # (60 s at most, however slow the host), then for two more notice periods (a repeated
            # notice would show), then the slot takes it.
            deadline = time.monotonic() + 60
            while b"has not taken this job" not in out.getvalue() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(2 * slot_mod.HANDOFF_UNCLAIMED_NOTICE_SECONDS)
            name = next(n for n in os.listdir(slot.inbox) if not n.startswith("."))
            os.unlink(os.path.join(slot.inbox, name))
            with open(os.path.join(slot.outbox, name + ".log"), "wb") as f:
                f.write(b"the job ran\n")
            # As the launcher's write_outcome: renamed in, so the handoff never reads half a file.
            tmp = os.path.join(slot.outbox, f".{name}.exit.tmp")
            with open(tmp, "w") as f:
                f.write("0 exited\n")
            os.replace(tmp, os.path.join(slot.outbox, name + ".exit"))
        t = threading.Thread(target=slot_takes_it_late)
        t.start()
        stdin, sys.stdin = sys.stdin, io.TextIOWrapper(io.BytesIO(b"{}"))
        stderr, sys.stderr = sys.stderr, io.StringIO()
        try:
            code = slot_mod.cmd_handoff(cfg, slot, None, out=out)
        finally:
            sys.stdin, sys.stderr = stdin, stderr
            t.join()
        self.assertEqual(code, 0)
        lines = out.getvalue().decode().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertRegex(lines[0], r"^\[ci-fleet: job slot 0 has not taken this job after .* no AWS session yet")
        self.assertEqual(lines[1], "the job ran")

    def test_a_hung_mint_is_killed_with_everything_it_started(self):
        # A stand-in for ci-fleet-aws-session whose signing helper hangs: it starts a child
        # (`sleep`, in the helper's place) and waits for it; its pid goes to a file.
        mint = os.path.join(self.tmp, "mint")
        pidfile = os.path.join(self.tmp, "helper.pid")
        with open(mint, "w") as f:
            f.write("#!/bin/sh\nsleep 300 &\necho $! >%s\nwait\n" % pidfile)
        os.chmod(mint, 0o755)
        self.ev.restore()
        minter = slot_mod.AwsMinter([mint], 1)
        minter.tick()
        for _ in range(100):
            if os.path.exists(pidfile) and os.path.getsize(pidfile):
                break
            time.sleep(0.05)
        with open(pidfile) as f:
            helper_pid = int(f.read())
        group = minter.child.pid
        self.addCleanup(lambda: os.path.exists("/proc/%d" % helper_pid) and os.kill(helper_pid, 9))
        minter.stop()

        def alive(pid):
            try:
                with open("/proc/%d/stat" % pid) as f:
                    return f.read().rsplit(")", 1)[1].split()[0] != "Z"
            except FileNotFoundError:
                return False

        def in_group(pgid):
            left = []
            for p in os.listdir("/proc"):
                if p.isdigit():
                    try:
                        with open("/proc/%s/stat" % p) as f:
                            fields = f.read().rsplit(")", 1)[1].split()
                    except (FileNotFoundError, ProcessLookupError):
                        continue
                    if int(fields[2]) == pgid and fields[0] != "Z":
                        left.append(int(p))
            return left
        for _ in range(40):
            if not alive(helper_pid):
                break
            time.sleep(0.05)
        self.assertFalse(alive(helper_pid), "the signing helper outlived the killed mint")
        self.assertNotEqual(os.getpgid(0), group, "the mint runs in a process group of its own")
        self.assertEqual(in_group(group), [])

    def test_refused_options_are_refused_abbreviated_and_with_equals(self):
        for extra, problem in ((["--dur", "3600"], "--duration"), (["--out", "/x"], "--output"),
                               (["--alarm", "/a"], "--alarm-dir"), (["--std"], "--stdout"), (["--gr=ci"], "--group"),
                               (["--duration=3600"], "--duration"), (["--s"], "--stdout")):
            with self.assertRaises(slot_mod.UsageError, msg=extra) as e:
                slot_mod.load_config(base_config(self.tmp, aws={"region": "eu-west-1", "command": AWS_COMMAND + extra}))
            self.assertIn("must not contain", str(e.exception))
            self.assertIn(problem, str(e.exception))
        # --session-name only as itself (the launcher extends the next argument per VM).
        base = AWS_COMMAND[:5]
        for extra in (["--session-name=abc"], ["--session", "abc"], ["--session-n=abc"]):
            with self.assertRaises(slot_mod.UsageError, msg=extra) as e:
                slot_mod.load_config(base_config(self.tmp, aws={"region": "eu-west-1", "command": base + extra}))
            self.assertIn("--session-name only as itself", str(e.exception))
        # What the host's timer runs is still accepted.
        slot_mod.load_config(base_config(self.tmp, aws={"region": "eu-west-1", "command": AWS_COMMAND}))
        slot_mod.load_config(base_config(self.tmp, aws={"region": "us-east-1", "command": RA_COMMAND}))

    def test_the_helper_takes_no_abbreviated_option(self):
        common = ["--source", "assume-role", "--role-arn", "arn:r", "--region", "eu-west-1", "--session-name", "m-1.s0.v1", "--stdout"]
        for extra in (["--dur", "3600"], ["--out", "/x"], ["--session-n=abc"]):
            stderr, sys.stderr = sys.stderr, io.StringIO()
            try:
                with self.assertRaises(SystemExit, msg=extra):
                    helper.main(common + extra)
                self.assertIn("unrecognized arguments", sys.stderr.getvalue())
            finally:
                sys.stderr = stderr

if __name__ == "__main__":
    unittest.main(verbosity=1)
