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
    module.__salt__ = {"cmd.run_all": tctl}
    return module


class FakeTctl:
    def __init__(self):
        self.calls, self.tokens, self.counter = [], set(), 0

    def __call__(self, argv, python_shell, output_loglevel, hide_output):
        assert argv[0] == "tctl" and python_shell is False and hide_output is True
        self.calls.append(argv[1:])
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


if __name__ == "__main__":
    unittest.main()
