#!/usr/bin/python3
"""Unit tests of the Python and shell scripts the Salt tree installs, with fakes for AWS,
GitHub and Salt's local client, and the real openssl, gpg and dpkg-query.

  python3 test/salt/test_scripts.py      (run by test/salt/salt.test.ts)
"""
import base64
import importlib.util
import io
import hashlib
import json
import urllib.parse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SALT = os.path.join(ROOT, "salt")


def load(name, relpath):
    spec = importlib.util.spec_from_file_location(name, os.path.join(SALT, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pillar_sync = load("pillar_sync", "salt_master/files/ci_fleet_pillar_sync.py")
toolchain = load("toolchain", "runner/files/ci_fleet_toolchain_versions.py")
orchestration = load("ci_fleet_runner", "_runners/ci_fleet.py")
# Issue 12: the master believes only the Teleport minion's answers signed with its Salt key.
sys.path.insert(0, os.path.join(ROOT, "test", "teleport"))
import signed_answers  # noqa: E402  (the real module signs, with a real key)
TELEPORT_KEYS = signed_answers.TeleportKeys("prod-teleport", SALT)
FLEET_KEYS = signed_answers.FleetKeys(TELEPORT_KEYS, SALT)   # own_host_id: signed by each machine
orchestration.MASTER_PKI_DIR = TELEPORT_KEYS.master_pki_dir


def require_tool(tool, package):
    if shutil.which(tool) is None:
        raise AssertionError("%s is missing: apt-get install %s" % (tool, package))


class FakeSSM:
    """get_parameters_by_path with pagination, like boto3's SSM client."""

    def __init__(self, parameters, page_size=2, fail=False):
        self.parameters, self.page_size, self.fail = parameters, page_size, fail
        self.calls = []

    def get_parameters_by_path(self, **kwargs):
        self.calls.append(kwargs)
        if self.fail:
            raise RuntimeError("AccessDenied")
        assert kwargs["WithDecryption"] is True and kwargs["Recursive"] is False
        names = sorted(n for n in self.parameters if n.startswith(kwargs["Path"]))
        start = int(kwargs.get("NextToken", 0))
        page = names[start:start + self.page_size]
        out = {"Parameters": [{"Name": n, "Value": self.parameters[n]} for n in page]}
        if start + self.page_size < len(names):
            out["NextToken"] = str(start + self.page_size)
        return out

    def get_parameter(self, Name, WithDecryption):
        assert WithDecryption is True
        return {"Parameter": {"Name": Name, "Value": self.parameters[Name]}}


def doc(minion_id, secret="s3cret", role="runner"):
    return json.dumps({"ci_fleet": {"minion_id": minion_id, "role": role,
                                    "salt": {"minion_public_key_pem": "PUB-" + minion_id},
                                    "runner": {"queue": "a", "agent": "buildkite"} if role == "runner" else None},
                       "secret": secret})


class PillarSyncTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.out = os.path.join(self.dir, "minions")
        self.commands = []

    def tearDown(self):
        shutil.rmtree(self.dir)

    def run_sync(self, ssm):
        return pillar_sync.sync(ssm, "prod", self.out, run=lambda cmd, **kw: self.commands.append(cmd))

    def test_writes_every_document_root_only_across_pages(self):
        ssm = FakeSSM({"/ci-fleet/prod/pillar/prod-a-r%d" % i: doc("prod-a-r%d" % i) for i in range(5)})
        changed, removed = self.run_sync(ssm)
        self.assertEqual(changed, ["prod-a-r%d" % i for i in range(5)])
        self.assertEqual(removed, [])
        self.assertEqual(len(ssm.calls), 3)
        self.assertEqual(stat.S_IMODE(os.stat(self.out).st_mode), 0o700)
        for name in os.listdir(self.out):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.out, name)).st_mode), 0o600)
        with open(os.path.join(self.out, "prod-a-r3.json")) as handle:
            self.assertEqual(json.load(handle)["ci_fleet"]["minion_id"], "prod-a-r3")
        self.assertEqual(self.commands[0], ["salt", "--async", "-L", ",".join("prod-a-r%d" % i for i in range(5)),
                                            "saltutil.refresh_pillar"])
        self.assertEqual(self.commands[1][-1], "state.apply")

    def test_only_changed_minions_are_refreshed_and_stale_files_removed(self):
        params = {"/ci-fleet/prod/pillar/prod-a-r1": doc("prod-a-r1"),
                  "/ci-fleet/prod/pillar/prod-a-r2": doc("prod-a-r2")}
        self.run_sync(FakeSSM(params))
        self.commands.clear()
        params["/ci-fleet/prod/pillar/prod-a-r1"] = doc("prod-a-r1", secret="rotated")
        del params["/ci-fleet/prod/pillar/prod-a-r2"]
        changed, removed = self.run_sync(FakeSSM(params))
        self.assertEqual((changed, removed), (["prod-a-r1"], ["prod-a-r2"]))
        self.assertEqual(sorted(os.listdir(self.out)), ["prod-a-r1.json"])
        self.assertIn("prod-a-r1", self.commands[0])
        self.commands.clear()
        self.assertEqual(self.run_sync(FakeSSM(params)), ([], []))
        self.assertEqual(self.commands, [])

    def test_master_gets_the_index_of_every_minion_with_its_key(self):
        params = {"/ci-fleet/prod/pillar/prod-salt-master": doc("prod-salt-master", role="salt-master"),
                  "/ci-fleet/prod/pillar/prod-teleport": doc("prod-teleport", role="teleport"),
                  "/ci-fleet/prod/pillar/prod-a-r1": doc("prod-a-r1")}
        self.run_sync(FakeSSM(params))
        with open(os.path.join(self.out, "prod-salt-master.json")) as handle:
            master = json.load(handle)
        self.assertEqual(sorted(master["ci_fleet_master"]["minions"]), ["prod-a-r1", "prod-salt-master", "prod-teleport"])
        self.assertEqual(master["ci_fleet_master"]["minions"]["prod-a-r1"],
                         {"role": "runner", "public_key_pem": "PUB-prod-a-r1", "queue": "a", "agent": "buildkite"})
        # Only the master learns about the others.
        with open(os.path.join(self.out, "prod-a-r1.json")) as handle:
            self.assertNotIn("ci_fleet_master", json.load(handle))
        # Adding a runner is a new document: the master's index (and so its accepted keys) follows.
        params["/ci-fleet/prod/pillar/prod-a-r2"] = doc("prod-a-r2")
        changed, _ = self.run_sync(FakeSSM(params))
        self.assertEqual(changed, ["prod-a-r2", "prod-salt-master"])

    def test_first_boot_accepts_every_minion_key_and_notifies_nobody(self):
        pki = os.path.join(self.dir, "pki", "minions")
        params = {"/ci-fleet/prod/pillar/prod-salt-master": doc("prod-salt-master", role="salt-master"),
                  "/ci-fleet/prod/pillar/prod-a-r1": doc("prod-a-r1")}
        pillar_sync.sync(FakeSSM(params), "prod", self.out, run=lambda cmd, **kw: self.commands.append(cmd),
                         accept_keys_dir=pki)
        self.assertEqual(sorted(os.listdir(pki)), ["prod-a-r1", "prod-salt-master"])
        with open(os.path.join(pki, "prod-a-r1")) as handle:
            self.assertEqual(handle.read(), "PUB-prod-a-r1")
        self.assertEqual(self.commands, [])

    def test_first_boot_waits_for_the_masters_own_document(self):
        # pulumi up writes the pillar documents only after every machine exists (a document
        # holds the machine's address and the Teleport auth address), minutes after the
        # master boots: the first sync waits for them, bounded, instead of failing once.
        pki = os.path.join(self.dir, "pki", "minions")
        master = {"/ci-fleet/prod/pillar/prod-salt-master": doc("prod-salt-master", role="salt-master")}
        runner = {"/ci-fleet/prod/pillar/prod-a-r1": doc("prod-a-r1")}

        class Appearing(FakeSSM):
            """Nothing, then a credential error, then a runner's document, then all of them."""
            def __init__(self):
                super().__init__({})
                self.rounds = 0

            def get_parameters_by_path(self, **kwargs):
                if not kwargs.get("NextToken"):
                    self.rounds += 1
                    self.parameters = [{}, {}, runner, dict(runner, **master)][min(self.rounds - 1, 3)]
                    if self.rounds == 2:
                        raise RuntimeError("ExpiredToken: not yet")
                return super().get_parameters_by_path(**kwargs)

        slept = []
        ssm = Appearing()
        pillar_sync.sync(ssm, "prod", self.out, run=lambda cmd, **kw: self.commands.append(cmd), accept_keys_dir=pki,
                         wait_for="prod-salt-master", wait_seconds=600, sleep=slept.append, clock=lambda: sum(slept))
        self.assertEqual(ssm.rounds, 4)
        self.assertEqual(slept, [30, 30, 30])
        self.assertEqual(sorted(os.listdir(pki)), ["prod-a-r1", "prod-salt-master"])
        # Bounded: after wait_seconds it fails with the reason, having deleted nothing.
        slept.clear()
        with self.assertRaisesRegex(pillar_sync.SyncError, "prod-salt-master.*not in SSM after 120 s"):
            pillar_sync.sync(FakeSSM(runner), "prod", self.out, accept_keys_dir=pki, wait_for="prod-salt-master",
                             wait_seconds=120, sleep=slept.append, clock=lambda: sum(slept))
        self.assertEqual(slept, [30, 30, 30, 30])
        self.assertEqual(sorted(os.listdir(self.out)), ["prod-a-r1.json", "prod-salt-master.json"])

    def test_fails_closed_without_deleting(self):
        self.run_sync(FakeSSM({"/ci-fleet/prod/pillar/prod-a-r1": doc("prod-a-r1")}))
        for ssm, message in [
            (FakeSSM({}), "no pillar documents"),
            (FakeSSM({"/ci-fleet/prod/pillar/prod-a-r2": "{not json"}), "not JSON"),
            (FakeSSM({"/ci-fleet/prod/pillar/prod-a-r2": doc("prod-a-r1")}), "names minion"),
            (FakeSSM({"/ci-fleet/prod/pillar/../etc": doc("x")}), "unexpected parameter name"),
        ]:
            with self.assertRaisesRegex(pillar_sync.SyncError, message):
                self.run_sync(ssm)
            self.assertEqual(os.listdir(self.out), ["prod-a-r1.json"])
        with self.assertRaises(RuntimeError):
            self.run_sync(FakeSSM({}, fail=True))
        self.assertEqual(os.listdir(self.out), ["prod-a-r1.json"])

    def test_never_prints_a_value(self):
        stderr = io.StringIO()
        import logging
        handler = logging.StreamHandler(stderr)
        pillar_sync.LOG.addHandler(handler)
        pillar_sync.LOG.setLevel(logging.INFO)
        try:
            self.run_sync(FakeSSM({"/ci-fleet/prod/pillar/prod-a-r1": doc("prod-a-r1", "TOPSECRET")}))
        finally:
            pillar_sync.LOG.removeHandler(handler)
        self.assertIn("prod-a-r1", stderr.getvalue())
        self.assertNotIn("TOPSECRET", stderr.getvalue())


class ToolchainVersionsTest(unittest.TestCase):
    def test_real_dpkg_query_write_and_check(self):
        require_tool("dpkg-query", "dpkg")
        directory = tempfile.mkdtemp()
        try:
            path = os.path.join(directory, "versions.json")
            script = os.path.join(SALT, "runner/files/ci_fleet_toolchain_versions.py")
            check = [sys.executable, script, "--check", path, "dpkg", "python3"]
            self.assertEqual(subprocess.run(check).returncode, 1)
            out = subprocess.run([sys.executable, script, "--write", path, "dpkg", "python3"],
                                 stdout=subprocess.PIPE, check=True).stdout
            versions = json.loads(out)
            self.assertEqual(sorted(versions), ["dpkg", "python3"])
            self.assertRegex(versions["dpkg"], r"^\d")
            self.assertEqual(subprocess.run(check).returncode, 0)
            missing = subprocess.run([sys.executable, script, "--write", path, "no-such-package-ci"],
                                     stderr=subprocess.PIPE)
            self.assertNotEqual(missing.returncode, 0)
            self.assertIn(b"not installed: no-such-package-ci", missing.stderr)
        finally:
            shutil.rmtree(directory)


# The Buildkite agent token script is gone (the token comes from the runner's pillar as a
# systemd credential): test/buildkite/agent-token.test.ts runs the agent's start script.


class FingerprintScriptTest(unittest.TestCase):
    def test_real_gpg_accepts_only_the_pinned_key(self):
        require_tool("gpg", "gpg")
        home = tempfile.mkdtemp()
        try:
            env = dict(os.environ, GNUPGHOME=home)
            # Key generation goes through gpg-agent, whose start can time out on a loaded machine:
            # try again (the key, not the script under test, is what is retried).
            for attempt in range(3):
                generated = subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                                            "--quick-gen-key", "ci-fleet test <t@example>", "ed25519", "sign", "1d"],
                                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
                if generated.returncode == 0:
                    break
                subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env)
            self.assertEqual(generated.returncode, 0, generated.stderr)
            listing = subprocess.run(["gpg", "--with-colons", "--list-keys"], env=env, check=True,
                                     stdout=subprocess.PIPE, universal_newlines=True).stdout
            fpr = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")][0]
            key = os.path.join(home, "key.asc")
            with open(key, "wb") as handle:
                handle.write(subprocess.run(["gpg", "--armor", "--export"], env=env, check=True,
                                            stdout=subprocess.PIPE).stdout)
            script = os.path.join(SALT, "base/files/ci-fleet-verify-key-fingerprint")
            self.assertEqual(subprocess.run(["sh", script, fpr.lower(), key]).returncode, 0)
            wrong = subprocess.run(["sh", script, "0" * 40, key], stderr=subprocess.PIPE)
            self.assertEqual(wrong.returncode, 1)
            self.assertIn(b"fingerprint mismatch", wrong.stderr)
        finally:
            # gpg-agent (started by the key generation) keeps removing its sockets in the home:
            # stop it first, or rmtree races it (an ERROR under load on CI).
            subprocess.run(["gpgconf", "--kill", "all"], env=dict(os.environ, GNUPGHOME=home),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            shutil.rmtree(home, ignore_errors=True)


class FakeGitHubHTTP:
    def __init__(self, runners=()):
        self.calls = []
        self.runners = list(runners)
        self.jit_requests = []

    def __call__(self, method, url, headers, body=None):
        self.calls.append((method, url, headers["Authorization"]))
        path = url[len(orchestration.GITHUB_API):]
        if path == "/app/installations/456/access_tokens":
            return 201, {"token": "ghs_installation"}
        if path.endswith("/actions/runners/registration-token"):
            return 201, {"token": "REGTOKEN0123456789", "expires_at": "later"}
        if method == "POST" and path == "/orgs/example-org/actions/runners/generate-jitconfig":
            assert headers["Authorization"] == "Bearer ghs_installation"
            self.jit_requests.append(body)
            runner_file = base64.b64encode(json.dumps({"agentName": body["name"]}).encode()).decode()
            config = base64.b64encode(json.dumps({".runner": runner_file}).encode()).decode()
            return 201, {"runner": {"id": 9, "name": body["name"]}, "encoded_jit_config": config}
        if path.startswith("/orgs/example-org/actions/runner-groups?"):
            return 200, {"total_count": 2, "runner_groups": [{"id": 1, "name": "Default"}, {"id": 5, "name": "untrusted"}]}
        if path.startswith("/orgs/example-org/actions/runners?name="):
            # The list endpoint's name filter (one name, exact): GitHub's answer for it.
            name = urllib.parse.unquote(path[len("/orgs/example-org/actions/runners?name="):].split("&", 1)[0])
            named = [r for r in self.runners if r.get("name") == name]
            return 200, {"total_count": len(named), "runners": named}
        if path.startswith("/orgs/example-org/actions/runners?"):
            page = int(path.rsplit("page=", 1)[1])
            chunk = self.runners[(page - 1) * 2: page * 2]   # two per page: pagination
            return 200, {"total_count": len(self.runners), "runners": chunk}
        if method == "DELETE":
            return 204, None
        return 404, None


class FakeLocal:
    def __init__(self, joined=(), active=()):
        self.calls = []
        self.joined = list(joined)
        self.active = set(active)     # runner units that run

    def __call__(self, tgt, fun, arg=(), kwarg=None):
        # The master's per-call nonce is not recorded; the Teleport minion signs its answer for it.
        plain = {k: v for k, v in (kwarg or {}).items() if k != "nonce"} or None
        return {m: FLEET_KEYS.sign(m, fun, kwarg, v) for m, v in self.answer(tgt, fun, arg, plain).items()}

    def answer(self, tgt, fun, arg=(), kwarg=None):
        self.calls.append((tgt, fun, list(arg), kwarg))
        if fun == "ci_fleet_teleport.host_ca_certificates":   # issue 12: no join without CA pins
            with open(os.path.join(ROOT, "test", "teleport", "fixtures", "teleport-host-ca.pem")) as handle:
                return {tgt: handle.read()}
        if fun == "ci_fleet_teleport.nodes":   # one model: the joined machines' nodes
            return {tgt: [{"name": "h-%s" % m, "hostname": m, "addr": None, "labels": {}, "self": False}
                          for m in self.joined]}
        if fun == "ci_fleet_teleport.own_host_id":
            return {tgt: {"host_id": "h-%s" % tgt if tgt in self.joined else None}}
        if fun == "ci_fleet_teleport.node_token":
            return {tgt: "JOIN-TOKEN-%04d" % len(self.calls)}
        if fun == "state.apply" and arg == ["teleport.node"]:
            self.joined.append(tgt)
        if fun == "service.status":
            return {tgt: tgt in self.active}
        if fun == "file.file_exists":
            return {tgt: False}       # a minion's claim, which must not decide anything
        return {tgt: True}


# equinix-metal: the provider whose nodes join with master-minted tokens.
MASTER_PILLAR = {"ci_fleet": {"provider": "equinix-metal"}, "ci_fleet_master": {"minions": {
    "prod-salt-master": {"role": "salt-master"},
    "prod-teleport": {"role": "teleport"},
    "prod-default-r1": {"role": "runner", "queue": "default", "agent": "github-actions"},
    "prod-default-r2": {"role": "runner", "queue": "default", "agent": "github-actions"},
    "prod-release-r1": {"role": "runner", "queue": "release", "agent": "buildkite"},
}, "github_app": {"app_id": "123", "installation_id": "456", "private_key_pem": "unused"}}}
RUNNER_PILLAR = {m: {"github_organization": "example-org", "runner_group": "untrusted", "queue": "default",
                     "labels": ["self-hosted", "linux"]} for m in ("prod-default-r1", "prod-default-r2")}


class OrchestrationTest(unittest.TestCase):
    def github(self, http):
        return orchestration.GitHub(MASTER_PILLAR["ci_fleet_master"]["github_app"], http=http,
                                    clock=lambda: 1700000000, sign=lambda key, msg: b"sig")

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.inline = orchestration.InlinePillar(os.path.join(self.dir, "inline"))

    def tearDown(self):
        shutil.rmtree(self.dir)

    def test_teleport_join_gives_each_token_to_one_minion_then_revokes_it(self):
        local = FakeLocal(joined=["prod-default-r1"])
        inline_dir = self.inline.directory
        seen = {}
        original = local.__call__

        def spy(tgt, fun, arg=(), kwarg=None):
            if fun == "state.apply":   # the token file of that minion, and no other
                seen[tgt] = {m: sorted(os.listdir(os.path.join(inline_dir, m))) for m in os.listdir(inline_dir)}
                with open(os.path.join(inline_dir, tgt, "teleport_join_token.json")) as handle:
                    seen[tgt]["token"] = json.load(handle)
            return original(tgt, fun, arg, kwarg)

        orch = orchestration.Orchestrator("prod", MASTER_PILLAR, RUNNER_PILLAR, spy, sleep=lambda s: None,
                                          inline=self.inline, state_dir=os.path.join(self.dir, "state"))
        self.assertEqual(orch.join_teleport_nodes(), ["prod-default-r2", "prod-release-r1", "prod-salt-master"])
        applies = [c for c in local.calls if c[1] == "state.apply"]
        self.assertEqual([c[0] for c in applies], ["prod-default-r2", "prod-release-r1", "prod-salt-master"])
        self.assertTrue(all(c[3] is None for c in applies))   # nothing secret in the publication
        tokens = [seen[c[0]]["token"] for c in applies]
        self.assertEqual(len(set(tokens)), 3)
        for token, apply in zip(tokens, applies):
            self.assertEqual(seen[apply[0]][apply[0]], ["teleport_join_token.json"])
            self.assertEqual([m for m in seen[apply[0]] if m != "token" and seen[apply[0]][m]], [apply[0]])
            self.assertIn(("prod-teleport", "ci_fleet_teleport.remove_token", [hashlib.sha256(token.encode()).hexdigest()], None), local.calls)
            self.assertIn((apply[0], "file.remove", [orchestration.TELEPORT_TOKEN_FILE], None), local.calls)
        self.assertTrue(all(c[1] != "state.apply" or c[0] != "prod-teleport" for c in local.calls))
        self.assertTrue(all(not c[1].startswith("cmd.") for c in local.calls))

    def test_github_jit_config_only_for_runners_github_does_not_list(self):
        http = FakeGitHubHTTP(runners=[{"id": 1, "name": "prod-default-r1", "busy": False, "status": "online",
                                        "labels": [{"name": "queue-default"}]}])
        local = FakeLocal()
        orch = orchestration.Orchestrator("prod", MASTER_PILLAR, RUNNER_PILLAR, local, self.github(http),
                                          inline=self.inline, state_dir=os.path.join(self.dir, "state"))
        self.assertEqual(orch.register_github_runners(), ["prod-default-r2"])
        apply = [c for c in local.calls if c[1] == "state.apply"]
        # The config goes through the minion's pillar file (test/orchestration), not the publication.
        self.assertEqual(apply, [("prod-default-r2", "state.apply", ["github_runner"], None)])
        self.assertEqual(os.listdir(os.path.join(self.inline.directory, "prod-default-r2")), [])
        self.assertEqual([c[:2] for c in http.calls], [
            ("POST", orchestration.GITHUB_API + "/app/installations/456/access_tokens"),
            # The round reads the list once; the one name to mint is looked up again under its lock.
            ("GET", orchestration.GITHUB_API + "/orgs/example-org/actions/runners?per_page=100&page=1"),
            ("GET", orchestration.GITHUB_API + "/orgs/example-org/actions/runners?name=prod-default-r2&per_page=100&page=1"),
            ("GET", orchestration.GITHUB_API + "/orgs/example-org/actions/runner-groups?per_page=100&page=1"),
            ("POST", orchestration.GITHUB_API + "/orgs/example-org/actions/runners/generate-jitconfig")])
        self.assertEqual(http.jit_requests, [{"name": "prod-default-r2", "runner_group_id": 5,
                                              "labels": ["self-hosted", "linux", "queue-default"],
                                              "work_folder": "/var/lib/ci-agent/work"}])
        self.assertFalse([c for c in http.calls if "registration-token" in c[1]])
        self.assertTrue(http.calls[0][2].startswith("Bearer ey"))   # the App JWT

    def test_deregisters_only_this_stacks_runners_that_are_no_minion(self):
        def gh_runner(id_, name, queue):
            return {"id": id_, "name": name, "busy": False, "status": "offline",
                    "labels": [{"name": "self-hosted"}, {"name": "queue-" + queue}]}
        http = FakeGitHubHTTP(runners=[
            gh_runner(1, "prod-default-r1", "default"), gh_runner(2, "prod-default-r9", "default"),
            gh_runner(3, "staging-default-r1", "default"), gh_runner(4, "prod-release-r4", "release"),
            gh_runner(5, "someone-elses-runner", "default")])
        # prod-default-r1's unit runs (offline is then a blip): a current minion's runner is kept.
        orch = orchestration.Orchestrator("prod", MASTER_PILLAR, RUNNER_PILLAR, FakeLocal(active={"prod-default-r1"}),
                                          self.github(http), inline=self.inline, state_dir=os.path.join(self.dir, "state"))
        self.assertEqual(orch.deregister_stale_github_runners(), ["prod-default-r9", "prod-release-r4"])
        deletes = [c[1] for c in http.calls if c[0] == "DELETE"]
        self.assertEqual(deletes, [orchestration.GITHUB_API + "/orgs/example-org/actions/runners/2",
                                   orchestration.GITHUB_API + "/orgs/example-org/actions/runners/4"])

    def test_github_app_jwt_verifies_with_openssl(self):
        require_tool("openssl", "openssl")
        directory = tempfile.mkdtemp()
        try:
            key = os.path.join(directory, "app.pem")
            subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                            "-out", key], check=True, stderr=subprocess.DEVNULL)
            pub = os.path.join(directory, "app.pub")
            subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True)
            with open(key) as handle:
                jwt = orchestration.github_app_jwt("123", handle.read(), 1700000000)
            header, payload, signature = jwt.split(".")
            pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
            self.assertEqual(json.loads(base64.urlsafe_b64decode(pad(header))), {"alg": "RS256", "typ": "JWT"})
            self.assertEqual(json.loads(base64.urlsafe_b64decode(pad(payload))),
                             {"iat": 1699999940, "exp": 1700000540, "iss": "123"})
            sig = os.path.join(directory, "sig")
            with open(sig, "wb") as handle:
                handle.write(base64.urlsafe_b64decode(pad(signature)))
            data = os.path.join(directory, "data")
            with open(data, "w") as handle:
                handle.write(header + "." + payload)
            verify = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pub, "-signature", sig, data],
                                    stdout=subprocess.PIPE)
            self.assertEqual(verify.returncode, 0, verify.stdout)
        finally:
            shutil.rmtree(directory)


if __name__ == "__main__":
    result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
    sys.exit(0 if result.wasSuccessful() else 1)
