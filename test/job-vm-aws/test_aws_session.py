#!/usr/bin/python3
"""Issue 15.4: the queue role's session into each job VM (docs/job-vm.md "The AWS session").

The real launcher (salt/runner/files/ci-job-slot) and guest agent (ci-job-guest), imported as
modules: the launcher's config check, seed and QEMU ports; its frame sending and change
detection on a socketpair instead of QEMU; the order in one_job (session before the job
input); the guest's frame reader and writer into a temporary root; both ends together.
Runs as root (the guest's writer chowns): fails otherwise, never skips.
"""
import calendar
import grp
import io
import json
import os
import re
import socket
import stat
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from load_script import GUEST, LAUNCHER, ROOT, load  # noqa: E402


slot_mod = load("ci_job_slot_aws", LAUNCHER)
guest = load("ci_job_guest_aws", GUEST)

SECRET = "wJalrXUtnFEMI-K7MDENG-secret-" + os.urandom(6).hex()
TOKEN = "IQoJb3JpZ2luX2VjE-token-" + os.urandom(6).hex()


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def document(expires_in=3600, key="ASIAEXAMPLE0000001", secret=SECRET):
    return json.dumps({"Version": 1, "AccessKeyId": key, "SecretAccessKey": secret,
                       "SessionToken": TOKEN, "Expiration": iso(time.time() + expires_in)}).encode()


def test_group():
    for name in ("nogroup", "users", "daemon"):
        try:
            return grp.getgrnam(name)
        except KeyError:
            continue
    raise RuntimeError("no group nogroup/users/daemon on this machine")


def base_config(tmp, **extra):
    cfg = {"image": "/var/lib/ci-fleet/golden.qcow2", "cpus": 1, "memoryMiB": 128, "diskGiB": 1,
           "maxJobSeconds": 60, "accel": "tcg", "stateDir": os.path.join(tmp, "state"),
           "runDir": os.path.join(tmp, "run"), "network": {"base": "10.213.0.0/16", "blockedCidrs": [], "dns": []}}
    cfg.update(extra)
    path = os.path.join(tmp, "job-vm-%d.json" % len(os.listdir(tmp)))
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


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


class LauncherConfig(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()

    def test_aws_is_accepted_and_checked(self):
        cfg = slot_mod.load_config(base_config(self.tmp, aws={"sessionFile": "/run/ci-fleet/aws/credentials.json", "region": "eu-central-1"}))
        self.assertEqual(cfg["aws"], {"sessionFile": "/run/ci-fleet/aws/credentials.json", "region": "eu-central-1"})
        for aws, problem in (
            ({"sessionFile": "run/credentials.json", "region": "us-east-1"}, "aws.sessionFile must be an absolute path"),
            ({"sessionFile": 7, "region": "us-east-1"}, "aws.sessionFile must be a str"),
            ({"sessionFile": "/run/x.json"}, "missing key aws.region"),
            ({"region": "us-east-1"}, "missing key aws.sessionFile"),
            ({"sessionFile": "/run/x.json", "region": ["us-east-1"]}, "aws.region must be a str"),
            ({"sessionFile": "/run/x.json", "region": "us-east-1\nselftest=1"}, "is not an AWS region name"),
            ({"sessionFile": "/run/x.json", "region": "us-east-1", "roleArn": "x"}, "unknown key aws.'roleArn'"),
        ):
            with self.assertRaises(slot_mod.UsageError) as e:
                slot_mod.load_config(base_config(self.tmp, aws=aws))
            self.assertIn(problem, str(e.exception))
        with self.assertRaises(slot_mod.UsageError) as e:
            slot_mod.load_config(base_config(self.tmp, aws="/run/x.json"))
        self.assertIn("aws must be a dict", str(e.exception))

    def test_seed_and_qemu_ports_only_when_configured(self):
        with_aws = slot_mod.load_config(base_config(self.tmp, aws={"sessionFile": "/run/s.json", "region": "us-west-2"}))
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
            # Nothing secret in the seed: the session never travels there.
            self.assertNotIn("Secret", seed)


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
        self.session = os.path.join(self.tmp, "aws", "credentials.json")
        os.makedirs(os.path.dirname(self.session))
        cfg = slot_mod.load_config(base_config(self.tmp, aws={"sessionFile": self.session, "region": "eu-west-1"}))
        self.vm = slot_mod.Vm(cfg, slot_mod.Slot(cfg, 0), 1)
        self.host, self.peer = socket.socketpair()
        self.vm.aws_sock = self.host
        self.clock = [time.time()]
        self.saved = (slot_mod.now, slot_mod._events_file, sys.stderr)
        slot_mod.now = lambda: self.clock[0]
        self.events = io.StringIO()
        self.stderr = io.StringIO()
        slot_mod._events_file = self.events
        sys.stderr = self.stderr

    def tearDown(self):
        slot_mod.now, slot_mod._events_file, sys.stderr = self.saved
        self.host.close()
        self.peer.close()

    def write(self, data):
        tmp = self.session + ".new"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.session)

    def check(self, advance=0.0):
        self.clock[0] += advance
        self.vm.check_aws_session()
        return read_frames_from(self.peer)

    def names(self):
        return [(e["event"], e.get("reason")) for e in map(json.loads, self.events.getvalue().splitlines())]

    def test_sent_once_ready_and_again_on_every_change_at_most_every_2s(self):
        first = document()
        self.write(first)
        self.assertEqual(self.check(), [], "nothing before the guest reports ready")
        self.vm.reports.append("ready")
        self.assertEqual(self.check(), [("CI-FLEET-AWS-SESSION", first)])
        self.assertEqual(self.check(5), [], "an unchanged file is not sent again")
        second = document(key="ASIAEXAMPLE0000002")
        self.write(second)
        self.assertEqual(self.check(1.0), [], "at most every 2 s")
        self.assertEqual(self.check(1.5), [("CI-FLEET-AWS-SESSION", second)])
        # Same bytes, same size, new inode (a rename, as the host's timer writes): sent again.
        self.write(second)
        self.assertEqual(self.check(2.5), [("CI-FLEET-AWS-SESSION", second)])
        # A rewrite in place that changes only the mtime: sent again.
        st = os.stat(self.session)
        os.utime(self.session, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        self.assertEqual(self.check(2.5), [("CI-FLEET-AWS-SESSION", second)])
        self.assertEqual([n for n in self.names() if n[0].startswith("aws")], [("aws-session-sent", None)] * 4)

    def test_missing_bad_or_expired_sends_nothing_and_logs_once(self):
        self.vm.reports.append("ready")
        self.assertEqual(self.check(), [])
        self.assertEqual(self.check(3), [])
        for data, reason in ((b"{not json " + SECRET.encode(), "not JSON"),
                             (json.dumps({"Version": 1, "AccessKeyId": "A", "SecretAccessKey": SECRET}).encode(), "not a session document"),
                             (document(expires_in=-60), "expired")):
            self.write(data)
            self.assertEqual(self.check(3), [])
            self.assertEqual(self.check(3), [])
        self.write(document())
        self.assertEqual(len(self.check(3)), 1)
        self.assertEqual(self.names(), [("aws-session-unavailable", "missing"), ("aws-session-unavailable", "not JSON"),
                                        ("aws-session-unavailable", "not a session document"),
                                        ("aws-session-unavailable", "expired"), ("aws-session-sent", None)])
        for text in (self.events.getvalue(), self.stderr.getvalue()):
            self.assertNotIn(SECRET, text)
            self.assertNotIn(TOKEN, text)

    def test_the_sent_buffer_is_zeroed(self):
        recorder = RecordingSocket()
        self.vm.aws_sock = recorder
        self.vm.reports.append("ready")
        self.write(document())
        self.vm.check_aws_session()
        self.assertEqual(len(recorder.buffers), 1)
        self.assertIn(SECRET.encode(), recorder.copies[0])
        self.assertEqual(set(recorder.buffers[0]), {0})

    def test_one_job_sends_the_session_before_the_job_input(self):
        """Runner.one_job with QEMU replaced: the guest's first frame on the AWS port comes
        before the job frame on the job port."""
        order = []
        vm = self.vm
        recorder = RecordingSocket()
        recorder.sendall = lambda buf: order.append(bytes(buf).split(b" ")[0].decode())
        vm.aws_sock = recorder
        self.write(document())
        slot = vm.slot
        slot_mod.ensure_dirs(slot)
        with open(os.path.join(slot.inbox, "job-1"), "w") as f:
            f.write('{"kind": "github", "jitconfig": "x"}')
        exited = []

        def wait_for(wanted, deadline, what):
            if wanted == r"ready":
                vm.reports.append("ready")
                return re.fullmatch(wanted, "ready")
            exited.append(True)
            return re.fullmatch(wanted, "exit 0")
        vm.wait_for = wait_for
        vm.pump = lambda timeout: []
        vm.alive = lambda: not exited
        vm.check_firewall = lambda: None
        vm.deliver = lambda data: order.append("CI-FLEET-JOB-INPUT")
        vm.destroy = lambda: None
        runner = slot_mod.Runner(vm.cfg, slot)
        runner.new_vm = lambda selftest=False: vm
        self.assertEqual(runner.one_job(), 0)
        self.assertEqual(order, ["CI-FLEET-AWS-SESSION", "CI-FLEET-JOB-INPUT"])


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


class BothEnds(unittest.TestCase):
    def test_the_host_file_arrives_in_the_guest_and_its_change_too(self):
        if os.geteuid() != 0:
            raise RuntimeError("must run as root")
        tmp, root = tempfile.mkdtemp(), tempfile.mkdtemp()
        host_file = os.path.join(tmp, "credentials.json")
        cfg = slot_mod.load_config(base_config(tmp, aws={"sessionFile": host_file, "region": "eu-west-1"}))
        vm = slot_mod.Vm(cfg, slot_mod.Slot(cfg, 0), 1)
        a, b = socket.socketpair()
        vm.aws_sock = a
        vm.reports.append("ready")
        group = test_group().gr_name
        guest.write_aws_files("eu-west-1", group, root=root)
        session = guest.AwsSession(group, root=root)
        reader = threading.Thread(target=guest.read_frames, args=(b.fileno(), session.take), kwargs={"stop_at_eof": True})
        reader.start()
        saved = slot_mod.now, slot_mod._events_file, sys.stderr
        clock = [0.0]
        slot_mod.now, slot_mod._events_file, sys.stderr = (lambda: clock[0] + time.time()), io.StringIO(), io.StringIO()
        try:
            for n, key in enumerate(("ASIAFIRST00000000001", "ASIASECOND0000000002"), 1):
                data = document(key=key)
                with open(host_file + ".new", "wb") as f:
                    f.write(data)
                os.replace(host_file + ".new", host_file)
                clock[0] += 3
                vm.check_aws_session()
                for _ in range(100):
                    if session.written == n:
                        break
                    time.sleep(0.02)
                self.assertEqual(open(root + guest.AWS_SESSION, "rb").read(), data)
        finally:
            slot_mod.now, slot_mod._events_file, sys.stderr = saved
            a.close()
            reader.join(10)
            b.close()


if __name__ == "__main__":
    unittest.main(verbosity=1)
