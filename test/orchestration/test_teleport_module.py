#!/usr/bin/python3
"""salt/_modules/ci_fleet_teleport.py with a fake `tctl` (Salt's cmd.run_all): tokens are
kept root-only by their sha256 and revoked by it, so no publication ever names a token."""
import hashlib
import importlib.util
import json
import os
import stat
import tempfile
import unittest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def load_module(token_dir, tctl):
    spec = importlib.util.spec_from_file_location("ci_fleet_teleport", os.path.join(ROOT, "salt", "_modules", "ci_fleet_teleport.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.TOKEN_DIR = token_dir
    module.HOST_UUID_FILE = os.path.join(os.path.dirname(token_dir), "host_uuid")
    with open(module.HOST_UUID_FILE, "w") as handle:
        handle.write("own-host\n")
    module.__salt__ = {"cmd.run_all": tctl}
    return module


# `tctl nodes ls --format=json`: []types.Server (ServerV2) as the auth service stores them.
NODES_JSON = json.dumps([
    {"kind": "node", "version": "v2", "metadata": {"name": "own-host", "labels": {"role": "teleport"}},
     "spec": {"hostname": "prod-teleport", "addr": "10.0.0.6:3022"}},
    {"kind": "node", "version": "v2", "metadata": {"name": "1f2e", "labels": {"role": "runner", "dynamic/queue": "default"}},
     "spec": {"hostname": "prod-default-r1", "addr": "10.0.1.10:3022"}},
    # ssh_service.commands (api/types CommandLabelV2: period, command, result): RBAC's GetAllLabels
    # merges their results over metadata.labels.
    {"kind": "node", "version": "v2", "metadata": {"name": "9c9c", "labels": {}},
     "spec": {"hostname": "prod-default-r2", "addr": "10.0.1.11:3022",
              "cmd_labels": {"dynamic/queue": {"period": "1m0s", "command": ["echo", "release"], "result": "release"}}}},
])


class FakeTctl:
    def __init__(self):
        self.calls, self.tokens, self.counter = [], set(), 0
        # The locks Teleport holds (LockV2 as `tctl get locks --format=json` prints them), the
        # server_infos; `refuse_lock`: tctl lock exits 0 yet no lock is listed.
        self.locks, self.refuse_lock = [], False
        self.infos = [{"kind": "server_info", "metadata": {"name": "si-1f2e"}, "spec": {"new_labels": {"dynamic/queue": "default"}}},
                      {"kind": "server_info", "metadata": {"name": "aws-123-i-0abc"}, "spec": {"new_labels": {"aws/x": "y"}}}]

    def __call__(self, argv, python_shell, output_loglevel, hide_output, stdin=None):
        assert argv[0] == "tctl" and python_shell is False and hide_output is True
        self.calls.append(argv[1:])
        self.stdin = stdin
        if argv[1:] == ["nodes", "ls", "--format=json"]:
            return {"retcode": 0, "stdout": NODES_JSON, "stderr": ""}
        if argv[1:] == ["get", "server_info", "--format=json"]:
            return {"retcode": 0, "stdout": json.dumps(self.infos), "stderr": ""}
        if argv[1:] == ["get", "locks", "--format=json"]:
            return {"retcode": 0, "stdout": json.dumps(self.locks), "stderr": ""}
        if argv[1] == "lock":
            assert argv[2].startswith("--server-id=") and argv[3].startswith("--message=") and len(argv) == 4
            if not self.refuse_lock:
                self.locks.append({"kind": "lock", "version": "v2", "metadata": {"name": "lock-%d" % len(self.locks)},
                                   "spec": {"target": {"server_id": argv[2][len("--server-id="):]}}})
            return {"retcode": 0, "stdout": "", "stderr": ""}
        if argv[1] == "rm" and argv[2].startswith("server_info/"):
            self.infos = [i for i in self.infos if i["metadata"]["name"] != argv[2][len("server_info/"):]]
            return {"retcode": 0, "stdout": "", "stderr": ""}
        if argv[1:3] == ["create", "-f"]:
            return {"retcode": 0, "stdout": "", "stderr": ""}
        if argv[1:3] == ["tokens", "add"]:
            self.counter += 1
            token = "tok%029d" % self.counter
            self.tokens.add(token)
            return {"retcode": 0, "stdout": json.dumps({"token": token, "roles": ["Node"], "expires": "x"}), "stderr": ""}
        if argv[1:3] == ["tokens", "rm"]:
            self.tokens.discard(argv[3])
            return {"retcode": 0, "stdout": "", "stderr": ""}
        return {"retcode": 1, "stdout": "", "stderr": "unexpected"}


class TeleportModule(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.token_dir = os.path.join(self.dir, "tokens")
        self.tctl = FakeTctl()
        self.module = load_module(self.token_dir, self.tctl)

    def test_a_minted_token_is_kept_root_only_and_revoked_by_its_hash(self):
        token = self.module.node_token(ttl="15m")
        self.assertEqual(self.tctl.calls[0], ["tokens", "add", "--type=node", "--ttl=15m", "--format=json"])
        digest = hashlib.sha256(token.encode()).hexdigest()
        path = os.path.join(self.token_dir, digest)
        self.assertEqual(stat.S_IMODE(os.stat(self.token_dir).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertTrue(self.module.remove_token(digest))
        self.assertEqual(self.tctl.calls[-1], ["tokens", "rm", token])
        self.assertEqual(self.tctl.tokens, set())
        self.assertFalse(os.path.exists(path))
        # Revoking twice, or a hash this module never minted, does nothing.
        self.assertFalse(self.module.remove_token(digest))
        self.assertEqual(len(self.tctl.calls), 2)

    def test_remove_token_refuses_anything_but_a_sha256(self):
        token = self.module.node_token()
        for bad in (token, "../" + "0" * 61, "A" * 64, ""):
            with self.assertRaises(ValueError):
                self.module.remove_token(bad)
        self.assertEqual(self.tctl.tokens, {token})

    def test_files_of_expired_tokens_are_swept(self):
        token = self.module.node_token()
        path = os.path.join(self.token_dir, hashlib.sha256(token.encode()).hexdigest())
        old = os.stat(path).st_mtime - self.module.STALE_SECONDS - 1
        os.utime(path, (old, old))
        self.module.node_token()
        self.assertFalse(os.path.exists(path))


class TeleportLabelsModule(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.tctl = FakeTctl()
        self.module = load_module(os.path.join(self.dir, "tokens"), self.tctl)

    def test_nodes_are_host_ids_with_what_each_announced_and_the_own_host_marked(self):
        self.assertEqual(self.module.nodes(), [
            {"name": "1f2e", "hostname": "prod-default-r1", "addr": "10.0.1.10:3022",
             "labels": {"role": "runner", "dynamic/queue": "default"}, "cmd_labels": {}, "self": False},
            {"name": "9c9c", "hostname": "prod-default-r2", "addr": "10.0.1.11:3022", "labels": {},
             "cmd_labels": {"dynamic/queue": "release"}, "self": False},
            {"name": "own-host", "hostname": "prod-teleport", "addr": "10.0.0.6:3022", "labels": {"role": "teleport"},
             "cmd_labels": {}, "self": True},
        ])

    def test_server_infos_are_the_si_assignments_only(self):
        self.assertEqual(self.module.server_infos(), {"1f2e": {"dynamic/queue": "default"}})

    def test_assign_labels_creates_the_si_server_info_through_stdin(self):
        labels = {"dynamic/role": "runner", "dynamic/queue": "default", "dynamic/stack": "prod"}
        self.assertTrue(self.module.assign_labels("1f2e", labels))
        self.assertEqual(self.tctl.calls[-1], ["create", "-f"])
        self.assertEqual(json.loads(self.tctl.stdin), {
            "kind": "server_info", "version": "v1", "sub_kind": "cloud_info", "metadata": {"name": "si-1f2e"},
            "spec": {"new_labels": {"dynamic/queue": "default", "dynamic/role": "runner", "dynamic/stack": "prod"}}})
        for host, bad in (("1f2e", {"role": "runner"}), ("1f2e", {}), ("1f2e", {"dynamic/role": "a b"}), ("../x", labels)):
            with self.assertRaises(ValueError):
                self.module.assign_labels(host, bad)

    def test_a_node_is_locked_once_by_its_server_id_and_never_the_auth_service_itself(self):
        self.assertTrue(self.module.lock_node("1f2e", "announced labels"))
        self.assertEqual(self.tctl.calls[-2], ["lock", "--server-id=1f2e", "--message=announced labels"])
        self.assertEqual(self.tctl.calls[-1], ["get", "locks", "--format=json"])   # verified, not assumed
        # Locked already (Teleport lists it): True, no second lock.
        self.assertTrue(self.module.lock_node("1f2e", "again"))
        self.assertEqual(len([c for c in self.tctl.calls if c[0] == "lock"]), 1)
        with self.assertRaises(ValueError):
            self.module.lock_node("own-host", "x")

    def test_any_host_id_teleport_can_hold_is_locked_as_one_argv_element(self):
        # The legacy join RPCs take the client's host id: `_`, `.`, long, even `--user=admin`
        # (3876af1 refused these: nothing was locked).
        for host in ("evil_1", "a.b", "x" * 300, "--user=admin", "id with spaces"):
            self.assertTrue(self.module.lock_node(host, "impostor"))
            self.assertEqual(self.tctl.calls[-2], ["lock", "--server-id=" + host, "--message=impostor"])
        for bad in ("", "a\nb", "trailing\n", "nul\x00", None, 7):
            with self.assertRaises(ValueError):
                self.module.lock_node(bad, "x")

    def test_a_removed_lock_is_made_again_and_a_lock_teleport_does_not_list_raises(self):
        self.assertTrue(self.module.lock_node("1f2e", "first"))
        self.tctl.locks = []                          # a human ran `tctl rm lock/<name>`
        self.assertTrue(self.module.lock_node("1f2e", "again"))   # 3876af1: its marker said "done"
        self.assertEqual(len([c for c in self.tctl.calls if c[0] == "lock"]), 2)
        self.tctl.refuse_lock = True
        with self.assertRaises(RuntimeError):
            self.module.lock_node("9c9c", "x")

    def test_own_host_id_is_the_data_dirs_host_uuid_or_none(self):
        self.assertEqual(self.module.own_host_id(), {"host_id": "own-host"})
        os.remove(self.module.HOST_UUID_FILE)
        self.assertEqual(self.module.own_host_id(), {"host_id": None})
        self.assertEqual(self.module.HOST_UUID_FILE.rsplit("/", 1)[1], "host_uuid")

    def test_forget_host_deletes_the_si_server_info(self):
        self.assertTrue(self.module.forget_host("1f2e"))
        self.assertIn(["rm", "server_info/si-1f2e"], self.tctl.calls)
        self.assertEqual(self.module.server_infos(), {})
        self.assertTrue(self.module.forget_host("1f2e"))          # gone already: nothing to delete
        self.assertEqual(len([c for c in self.tctl.calls if c[0] == "rm"]), 1)
        with self.assertRaises(ValueError):
            self.module.forget_host("../x")


if __name__ == "__main__":
    unittest.main()
