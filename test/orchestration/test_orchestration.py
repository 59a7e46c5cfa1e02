#!/usr/bin/python3
"""The master's orchestration (salt/_runners/ci_fleet.py) against the upstream interfaces
it uses, with fakes shaped like them (docs/upstream-conformance.md, orchestration rows):

- salt.client.LocalClient.cmd: a minion that does not answer is False (or absent) with
  full_return=False; with full_return=True an answer is {"ret", "retcode"}.
- Salt publications reach every minion (ZeroMQ, unfiltered by default): no token may be an
  argument of a publication to a minion; tokens travel through that minion's pillar
  (salt/pillar/minion.sls, rendered here with Debian's Jinja2 through test/salt/render.py).
- GitHub REST: runners list {total_count, runners:[{id,name,status,busy,labels:[{name}]}]};
  runner groups {total_count, runner_groups:[{id,name}]}; generate-jitconfig {name,
  runner_group_id, labels, work_folder} -> 201 {runner, encoded_jit_config} where the config
  is base64 of a JSON map file name -> base64 content (actions/runner Runner.cs).

  python3 test/orchestration/test_orchestration.py      (run by orchestration.test.ts)
  CI_FLEET_SALT_ROOT=DIR runs the same tests against another copy of the salt/ tree.
"""
import base64
import importlib.machinery
import importlib.util
import hashlib
import json
import urllib.parse
import os
import shutil
import stat
import sys
import tempfile
import types
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SALT = os.environ.get("CI_FLEET_SALT_ROOT") or os.path.join(ROOT, "salt")
sys.path.insert(0, os.path.join(ROOT, "test", "salt"))
import render  # noqa: E402  (test/salt/render.py: Salt's Jinja extensions over real Jinja2)


def load_runner():
    spec = importlib.util.spec_from_file_location("ci_fleet_runner_under_test", os.path.join(SALT, "_runners", "ci_fleet.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


orchestration = load_runner()
# Issue 12: the master believes only the Teleport minion's answers signed with its Salt key; the
# fake Teleport minion signs with the real module and a real key (test/teleport/signed_answers.py).
sys.path.insert(0, os.path.join(ROOT, "test", "teleport"))
import signed_answers  # noqa: E402
TELEPORT_KEYS = signed_answers.TeleportKeys("prod-teleport", SALT)
FLEET_KEYS = signed_answers.FleetKeys(TELEPORT_KEYS, SALT)
orchestration.MASTER_PKI_DIR = TELEPORT_KEYS.master_pki_dir

STACK = "prod"
MASTER_ID = "prod-salt-master"
MINIONS = {
    "prod-salt-master": {"role": "salt-master"},
    "prod-teleport": {"role": "teleport"},
    "prod-default-r1": {"role": "runner", "queue": "default", "agent": "github-actions"},
    "prod-default-r2": {"role": "runner", "queue": "default", "agent": "github-actions"},
    "prod-release-r1": {"role": "runner", "queue": "release", "agent": "buildkite"},
}
GITHUB_APP = {"app_id": "123", "installation_id": "456", "private_key_pem": "unused"}
REG_TOKEN = "AABBCCDDEEFFGGHHIIJJKKLLMMNN0"
RSA_SECRET = "RSA-PRIVATE-PARAMS-OF-THE-RUNNER"
# ci_fleet:runner of each GitHub runner, as the master compiles its pillar.
RUNNER_GROUP, LABELS = "untrusted", ["self-hosted", "linux", "x64", "netboot"]
# GET /orgs/{org}/actions/runner-groups, two per page: the group is on the second page.
GROUPS = [{"id": 1, "name": "Default"}, {"id": 3, "name": "trusted"}, {"id": 7, "name": "untrusted"}]


def b64(data):
    return base64.b64encode(data if isinstance(data, bytes) else json.dumps(data).encode()).decode()


def encoded_jit_config(name):
    """What generate-jitconfig answers: base64 of {file: base64(content)}."""
    return b64({".runner": b64({"agentId": 42, "agentName": name, "poolId": 7, "poolName": RUNNER_GROUP,
                                "ephemeral": True, "serverUrl": "https://pipelines.example/x",
                                "gitHubUrl": "https://github.com/example-org", "workFolder": "_work"}),
                ".credentials": b64({"scheme": "OAuth", "data": {"clientId": "c", "authorizationUrl": "u"}}),
                ".credentials_rsaparams": b64(RSA_SECRET.encode())})


def decoded_jit_config(encoded):
    files = json.loads(base64.b64decode(encoded))
    return {name: base64.b64decode(content) for name, content in files.items()}
JOIN_TOKEN_PREFIX = "0123456789abcdef"
# What the program writes into each minion's pillar (ci_fleet:teleport): the labels the auth
# service assigns (infra/teleport/config.ts teleportNodeLabels) and the SSH listen address.
ADDRESSES = {"prod-salt-master": "10.0.0.5", "prod-teleport": "10.0.0.6", "prod-default-r1": "10.0.1.10",
             "prod-default-r2": "10.0.1.11", "prod-release-r1": "10.0.1.12"}


def assigned_labels(minion_id):
    spec = MINIONS[minion_id]
    labels = {"dynamic/role": spec["role"], "dynamic/stack": STACK}
    if "queue" in spec:
        labels["dynamic/queue"] = spec["queue"]
    return labels


def minion_document(minion_id):
    """The parts of a minion's pillar document the Teleport orchestration reads."""
    labels = assigned_labels(minion_id)
    ssh = "ssh_service:\n  enabled: true\n  listen_addr: %s:3022\n" % ADDRESSES[minion_id]
    if MINIONS[minion_id]["role"] == "teleport":
        return {"ci_fleet": {"teleport": {"labels": labels}}, "ci_fleet_teleport": {"auth_config": ssh}}
    return {"ci_fleet": {"teleport": {"labels": labels, "node_config": ssh}}}


# Each machine's own <data_dir>/host_uuid in the tests' honest fleet (what own_host_id reports).
HOST_UUIDS = {"prod-salt-master": "h-master", "prod-default-r1": "h-d1", "prod-default-r2": "h-d2",
              "prod-release-r1": "h-r1"}


def node(host, hostname, addr=None, labels=None, own=False):
    """One node as ci_fleet_teleport.nodes returns it (tctl nodes ls: what the node announced)."""
    return {"name": host, "hostname": hostname, "addr": addr or "%s:3022" % ADDRESSES.get(hostname, "10.9.9.9"),
            "labels": dict(labels or {}), "self": own}


class FakeClock:
    """Fake time: each reading advances by `step`; advance() moves it on."""

    def __init__(self, now, step=0):
        self.now, self.step = float(now), step

    def __call__(self):
        value = self.now
        self.now += self.step
        return value

    def advance(self, seconds):
        self.now += seconds


class HungForever(Exception):
    pass


class FakeLocalClient:
    """salt.client.LocalClient as of the newer releases: `cmd` with full_return=False maps a
    targeted minion that did not answer to False; with full_return=True every answer is
    {"ret": ..., "retcode": ...} and a non-answer is still False."""

    def __init__(self, down=(), active=(), joined=(), teleport_down=False, nodes=None, server_infos=None,
                 files=None, host_uuids=None, refuse_locks=()):
        self.down, self.active = set(down), set(active)   # active: the runner unit runs
        # (minion, path) -> what file.readdir / file.read answer (a slot's inbox, its state.json);
        # any other path raises on the minion (retcode 1), as Salt's file module does.
        self.files = dict(files or {})
        self.teleport_down = teleport_down
        self.publications = []
        self.tokens = 0
        # ONE model of the Teleport cluster: nodes (host id, announced hostname/address/labels;
        # `joined` names become honest nodes h-<name>), the server_info assignments (host id ->
        # labels), the locks Teleport holds (a lock in refuse_locks fails, as tctl can), and each
        # machine's own <data_dir>/host_uuid (default: the first node announcing its name).
        self.nodes = list(nodes or []) + [node("h-%s" % name, name) for name in joined]
        self.server_infos = dict(server_infos or {})
        self.locks, self.refuse_locks, self.forgotten = [], set(refuse_locks), []
        if host_uuids is None:
            host_uuids = {}
            for n in self.nodes:
                if not n.get("self") and n.get("hostname") in MINIONS:
                    host_uuids.setdefault(n["hostname"], n["name"])
        self.host_uuids = dict(host_uuids)
        self.hung, self.hung_polls, self.clock, self.poll_seconds = set(), 0, None, 0.5

    @property
    def joined(self):
        """The hostnames Teleport lists: derived from `nodes`, never kept apart from it."""
        return [n.get("hostname") for n in self.nodes]

    def cmd(self, tgt, fun, arg=(), timeout=None, tgt_type="glob", ret="", jid="", full_return=False,
            kwarg=None, **kwargs):
        if tgt in self.hung:
            # salt/client get_iter_returns: the minion answers saltutil.find_job that the job still
            # runs, so cmd(timeout=...) sets its timeout again each time and never returns.
            raise HungForever("LocalClient.cmd(%r, %r) never returns: the minion keeps its job 'running'" % (tgt, fun))
        self.publications.append({"tgt": tgt, "fun": fun, "arg": list(arg), "kwarg": dict(kwarg or {})})
        if tgt in self.down or (tgt == "prod-teleport" and self.teleport_down):
            return {tgt: False}
        if fun in ("file.readdir", "file.read") and (tgt, list(arg)[0]) not in self.files:
            error = "ERROR: %s: no such file or directory" % list(arg)[0]
            return {tgt: {"ret": error, "retcode": 1, "jid": "1"}} if full_return else {tgt: error}
        module = TELEPORT_KEYS.module    # the real module's own refusal of a host id (it raises)
        lockable = getattr(module, "LOCKABLE_HOST_ID", None) or module.HOST_ID
        if fun == "ci_fleet_teleport.lock_node" and (list(arg)[0] in self.refuse_locks or not lockable.match(str(list(arg)[0]))):
            # The module raises (tctl failed, or no lock listed afterwards): an error return.
            return {tgt: {"ret": "RuntimeError: tctl lock failed", "retcode": 1, "jid": "1"}} if full_return else {tgt: "ERROR"}
        value = self.execute(tgt, fun, list(arg), dict(kwarg or {}))
        if fun.startswith("ci_fleet_teleport."):
            value = FLEET_KEYS.sign(tgt, fun, kwarg, value)
        return {tgt: {"ret": value, "retcode": 0, "jid": "1"}} if full_return else {tgt: value}

    def cmd_iter_no_block(self, tgt, fun, arg=(), timeout=None, tgt_type="glob", ret="", kwarg=None, **kwargs):
        """What salt_local calls: get_iter_returns with block=False yields each return as it
        comes ({id: {"ret", "retcode", "jid"}}) and None between polls. A minion in `hung` answers
        saltutil.find_job "still running" forever: nothing but None, each poll advancing `clock`
        (fake time) by `poll_seconds`."""
        if tgt in self.hung:
            self.publications.append({"tgt": tgt, "fun": fun, "arg": list(arg), "kwarg": dict(kwarg or {})})
            self.hung_polls += 1
            while True:
                self.clock.advance(self.poll_seconds)
                yield None
        answer = self.cmd(tgt, fun, arg=arg, timeout=timeout, full_return=True, kwarg=kwarg)
        yield None
        if tgt in self.down:
            return      # no return event at all; get_iter_returns ends after its timeout
        yield answer

    def execute(self, tgt, fun, arg, kwarg):
        if fun == "ci_fleet_teleport.host_ca_certificates":   # tctl auth export --type=tls-host
            with open(os.path.join(ROOT, "test", "teleport", "fixtures", "teleport-host-ca.pem")) as handle:
                return handle.read()
        if fun == "ci_fleet_teleport.node_names":       # the hostnames of the same `nodes`
            return sorted(str(h) for h in self.joined)
        if fun == "ci_fleet_teleport.own_host_id":      # any machine: its own host_uuid
            return {"host_id": self.host_uuids.get(tgt)}
        if fun == "ci_fleet_teleport.forget_host":
            self.forgotten.append(arg[0])
            self.server_infos.pop(arg[0], None)
            return True
        if fun == "ci_fleet_teleport.node_token":
            self.tokens += 1
            return "%s%04d" % (JOIN_TOKEN_PREFIX, self.tokens)
        if fun == "ci_fleet_teleport.nodes":
            return [dict(n) for n in self.nodes]
        if fun == "ci_fleet_teleport.server_infos":
            return dict(self.server_infos)
        if fun == "ci_fleet_teleport.assign_labels":
            self.server_infos[arg[0]] = dict(arg[1])
            return True
        if fun == "ci_fleet_teleport.lock_node":       # verified: no lock made twice
            if arg[0] not in self.locks:
                self.locks.append(arg[0])
            return True
        if fun.startswith("grains."):
            # A rooted minion answers whatever it likes; the orchestration must never ask.
            return {"id": "prod-release-r1", "role": "salt-master", "queue": "release"}
        if fun == "state.apply" and arg == ["teleport.node"]:
            self.nodes.append(node("h-%s" % tgt, tgt))
            self.host_uuids[tgt] = "h-%s" % tgt
        if fun == "service.status":
            return tgt in self.active
        if fun == "file.file_exists":
            return False     # every minion claims "no /opt/actions-runner/.runner": it proves nothing
        if fun in ("file.readdir", "file.read"):
            return self.files[(tgt, arg[0])]
        return True


class FakeGitHubHTTP:
    def __init__(self, runners=(), page_size=2, groups=GROUPS):
        self.calls, self.runners, self.page_size, self.groups = [], list(runners), page_size, list(groups)
        self.jit_requests, self.jit_configs = [], []

    def __call__(self, method, url, headers, body=None):
        self.calls.append((method, url))
        assert headers["X-GitHub-Api-Version"] == "2022-11-28"
        path = url[len(orchestration.GITHUB_API):]
        if path == "/app/installations/456/access_tokens":
            return 201, {"token": "ghs_installation", "expires_at": "2030-01-01T00:00:00Z"}
        if path.endswith("/actions/runners/registration-token"):
            return 201, {"token": REG_TOKEN, "expires_at": "2030-01-01T00:00:00Z"}
        if method == "POST" and path == "/orgs/example-org/actions/runners/generate-jitconfig":
            assert headers["Authorization"] == "Bearer ghs_installation"
            self.jit_requests.append(body)
            config = encoded_jit_config(body["name"])
            self.jit_configs.append(config)
            return 201, {"runner": {"id": 42, "name": body["name"], "status": "offline", "busy": False},
                         "encoded_jit_config": config}
        if method == "GET" and path.startswith("/orgs/example-org/actions/runner-groups?"):
            assert "per_page=100" in path
            page = int(path.rsplit("page=", 1)[1])
            chunk = self.groups[(page - 1) * self.page_size: page * self.page_size]
            return 200, {"total_count": len(self.groups), "runner_groups": chunk}
        if path.startswith("/orgs/example-org/actions/runners?name="):
            # The list endpoint's name filter (one name, exact): GitHub's answer for it.
            name = urllib.parse.unquote(path[len("/orgs/example-org/actions/runners?name="):].split("&", 1)[0])
            named = [r for r in self.runners if r.get("name") == name]
            return 200, {"total_count": len(named), "runners": named}
        if path.startswith("/orgs/example-org/actions/runners?"):
            page = int(path.rsplit("page=", 1)[1])
            chunk = self.runners[(page - 1) * self.page_size: page * self.page_size]
            return 200, {"total_count": len(self.runners), "runners": chunk}
        if method == "DELETE":
            return 204, None
        return 404, None


def runner(id_, name, queue, busy=False, status="online"):
    labels = [{"id": 1, "name": "self-hosted", "type": "read-only"},
              {"id": 2, "name": "queue-%s" % queue, "type": "custom"}]
    return {"id": id_, "name": name, "os": "Linux", "status": status, "busy": busy, "labels": labels}


class Harness:
    """The runner module's Salt entry points with the loader globals Salt injects
    (__opts__, __salt__ = the runner loader) and a fake `salt.client` module."""

    def __init__(self, client, http, inline_dir, provider="equinix-metal", runner_extra=None):
        self.client, self.http, self.inline_dir, self.provider = client, http, inline_dir, provider
        self.pillar_reads = {}   # minion id -> ci_fleet_inline seen by each state.apply
        # minion id -> more ci_fleet:runner keys (isolation, job_vm) of that minion's own pillar
        self.runner_extra = dict(runner_extra or {})

    def pillar(self, minion_id):
        document = {"ci_fleet": {"runner": {"github_organization": "example-org", "queue": "default",
                                            "runner_group": RUNNER_GROUP, "labels": list(LABELS)}}}
        document["ci_fleet"]["runner"].update(self.runner_extra.get(minion_id, {}))
        document["ci_fleet"].update(minion_document(minion_id)["ci_fleet"])
        document.update({k: v for k, v in minion_document(minion_id).items() if k != "ci_fleet"})
        if minion_id == MASTER_ID:
            document["ci_fleet"]["provider"] = self.provider
            document["ci_fleet_master"] = {"minions": MINIONS, "github_app": GITHUB_APP}
        return document

    def __enter__(self):
        module = orchestration
        fake_salt = types.ModuleType("salt")
        fake_client = types.ModuleType("salt.client")
        fake_client.LocalClient = lambda mopts=None, **kw: self.client
        fake_salt.client = fake_client
        self.saved = {k: sys.modules.get(k) for k in ("salt", "salt.client")}
        sys.modules.update({"salt": fake_salt, "salt.client": fake_client})
        module.__opts__ = {"ci_fleet": {"master_minion_id": MASTER_ID}}
        module.__salt__ = {"pillar.show_pillar": self.pillar}
        self.saved_github = module.GitHub
        self.saved_inline = getattr(module, "INLINE_PILLAR_DIR", None)
        http = self.http
        module.GitHub = lambda app, **kw: self.saved_github(app, http=http, clock=lambda: 1700000000,
                                                            sign=lambda key, msg: b"sig", **kw)
        # The master's orchestration state (reactor gate, GitHub budget, token cache) in this test's
        # directory; a wall clock 11 s further at each reading, so separate reactor calls of
        # a test are never rate limited unless a test sets its own clock.
        self.saved_state = (getattr(module, "STATE_DIR", None), getattr(module, "_wall_clock", None))
        module.STATE_DIR = os.path.join(os.path.dirname(self.inline_dir), "state")
        self.wall = FakeClock(1_800_000_000, step=11)
        module._wall_clock = self.wall
        module.INLINE_PILLAR_DIR = self.inline_dir
        self.saved_lock = getattr(module, "ORCHESTRATION_LOCK", None)
        module.ORCHESTRATION_LOCK = os.path.join(os.path.dirname(self.inline_dir), "orchestration.lock")
        self.saved_pending = getattr(module, "RESTART_PENDING", None)
        module.RESTART_PENDING = os.path.join(os.path.dirname(self.inline_dir), "orchestration.restart-pending")
        if hasattr(module, "InlinePillar"):
            module.InlinePillar.__init__.__defaults__ = (self.inline_dir,)
        # No real waiting for Teleport joins.
        init = module.Orchestrator.__init__
        self.saved_defaults = init.__defaults__
        init.__defaults__ = tuple((lambda seconds: None) if d is module.time.sleep else d
                                  for d in init.__defaults__)
        # What the minion's pillar holds at the moment its state.apply is published.
        original = self.client.execute

        def execute(tgt, fun, arg, kwarg):
            if fun == "state.apply":
                self.pillar_reads.setdefault(tgt, []).append(read_inline(self.inline_dir, tgt))
            return original(tgt, fun, arg, kwarg)

        self.client.execute = execute
        return self

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
        orchestration.GitHub = self.saved_github
        orchestration.STATE_DIR, orchestration._wall_clock = self.saved_state
        if self.saved_lock is not None:
            orchestration.ORCHESTRATION_LOCK = self.saved_lock
        if self.saved_pending is None:
            del orchestration.RESTART_PENDING
        else:
            orchestration.RESTART_PENDING = self.saved_pending
        orchestration.Orchestrator.__init__.__defaults__ = self.saved_defaults
        if self.saved_inline is None:
            del orchestration.INLINE_PILLAR_DIR
        else:
            orchestration.INLINE_PILLAR_DIR = self.saved_inline
            orchestration.InlinePillar.__init__.__defaults__ = (self.saved_inline,)


def read_inline(inline_dir, minion_id):
    """The ci_fleet_inline salt/pillar/minion.sls gives minion_id, rendered for real."""
    pillar_dir = tempfile.mkdtemp()
    try:
        os.makedirs(os.path.join(pillar_dir, "minions"))
        with open(os.path.join(pillar_dir, "minions", minion_id + ".json"), "w") as handle:
            json.dump({"ci_fleet": {"minion_id": minion_id}}, handle)
        if os.path.isdir(inline_dir):
            shutil.copytree(inline_dir, os.path.join(pillar_dir, "inline"))
        pillar, _, _ = render.compile_pillar(SALT, pillar_dir, minion_id, render.Recorder())
        return pillar.get("ci_fleet_inline", {})
    finally:
        shutil.rmtree(pillar_dir)


class OrchestrationConformanceTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.inline_dir = os.path.join(self.dir, "inline")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def published_tokens(self, client, http=None):
        secrets = [REG_TOKEN, JOIN_TOKEN_PREFIX, RSA_SECRET]
        if http is not None:
            secrets += http.jit_configs
            secrets += [orchestration.jit_config_without_updates(c) for c in http.jit_configs]
        leaked = []
        for publication in client.publications:
            text = json.dumps(publication)
            if any(secret in text for secret in secrets):
                leaked.append((publication["tgt"], publication["fun"]))
        return leaked

    def test_a_jit_config_for_the_exact_name_group_and_labels_reaches_only_that_minions_pillar(self):
        # GitHub lists prod-default-r1: only prod-default-r2 gets a config.
        http = FakeGitHubHTTP(runners=[runner(1, "prod-default-r1", "default")])
        client = FakeLocalClient()
        with Harness(client, http, self.inline_dir) as harness:
            self.assertEqual(orchestration.register_github_runners(), ["prod-default-r2"])
        self.assertEqual(http.jit_requests, [{
            "name": "prod-default-r2",
            "runner_group_id": 7,        # "untrusted", resolved by name (second page)
            "labels": ["self-hosted", "linux", "x64", "netboot", "queue-default"],
            "work_folder": "/var/lib/ci-agent/work",
        }])
        # No organisation-wide registration token, ever.
        self.assertEqual([c for c in http.calls if "registration-token" in c[1]], [])
        self.assertEqual(self.published_tokens(client, http), [])
        applies = [p for p in client.publications if p["fun"] == "state.apply"]
        self.assertEqual(applies, [{"tgt": "prod-default-r2", "fun": "state.apply", "arg": ["github_runner"], "kwarg": {}}])
        # The minion's own pillar held the config while its state.apply ran, and only then:
        # GitHub's config with updates disabled, the credentials unchanged.
        (seen,) = harness.pillar_reads["prod-default-r2"]
        self.assertEqual(set(seen), {"github_jit_config"})
        files = decoded_jit_config(seen["github_jit_config"])
        original = decoded_jit_config(http.jit_configs[0])
        self.assertEqual(json.loads(files[".runner"]), dict(json.loads(original[".runner"]), disableUpdate=True))
        self.assertEqual(files[".credentials_rsaparams"], RSA_SECRET.encode())
        self.assertEqual(files[".credentials"], original[".credentials"])
        self.assertEqual(read_inline(self.inline_dir, "prod-default-r2"), {})
        self.assertEqual(read_inline(self.inline_dir, "prod-default-r1"), {})

    def test_a_minion_claiming_to_be_unregistered_gets_nothing_while_github_lists_it(self):
        # Both units answer "not running" (a rooted minion can say anything); GitHub lists both.
        http = FakeGitHubHTTP(runners=[runner(1, "prod-default-r1", "default", status="offline"),
                                       runner(2, "prod-default-r2", "default")])
        client = FakeLocalClient()
        with Harness(client, http, self.inline_dir):
            self.assertEqual(orchestration.register_github_runners(), [])
            # Listed in the round's list: the minion is not even asked.
            self.assertEqual([p for p in client.publications if p["fun"] == "service.status"], [])
            # A run for one minion (its event) asks it first, then GitHub about that one name only.
            self.assertEqual(orchestration.register_github_runners(minion="prod-default-r1"), [])
        self.assertEqual([p["tgt"] for p in client.publications if p["fun"] == "service.status"], ["prod-default-r1"])
        self.assertEqual([c[1] for c in http.calls if "/actions/runners?" in c[1]][-1],
                         orchestration.GITHUB_API + "/orgs/example-org/actions/runners?name=prod-default-r1&per_page=100&page=1")
        self.assertEqual(http.jit_requests, [])
        self.assertEqual([c for c in http.calls if "registration-token" in c[1]], [])
        self.assertEqual([p for p in client.publications if p["fun"] == "state.apply"], [])

    def test_a_runner_whose_unit_runs_gets_no_config(self):
        http = FakeGitHubHTTP()
        client = FakeLocalClient(active={"prod-default-r1", "prod-default-r2"})
        with Harness(client, http, self.inline_dir):
            self.assertEqual(orchestration.register_github_runners(), [])
        self.assertEqual(http.jit_requests, [])

    def test_a_runner_group_that_does_not_exist_is_an_error_never_default(self):
        http = FakeGitHubHTTP(groups=[{"id": 1, "name": "Default"}, {"id": 3, "name": "trusted"}])
        client = FakeLocalClient()
        with self.assertLogs(orchestration.log, "ERROR") as logs, Harness(client, http, self.inline_dir):
            self.assertEqual(orchestration.register_github_runners(), [])
        self.assertTrue(any("untrusted" in line for line in logs.output))
        self.assertEqual(http.jit_requests, [])
        self.assertEqual([p for p in client.publications if p["fun"] == "state.apply"], [])

    def test_a_runner_without_a_group_in_its_pillar_is_not_registered(self):
        http = FakeGitHubHTTP()
        client = FakeLocalClient()
        orch = orchestration.Orchestrator(STACK, {"ci_fleet_master": {"minions": MINIONS}},
                                          {m: {"github_organization": "example-org", "labels": LABELS}
                                           for m in ("prod-default-r1", "prod-default-r2")},
                                          orchestration.salt_local(client),
                                          orchestration.GitHub(GITHUB_APP, http=http, clock=lambda: 1700000000,
                                                               sign=lambda key, msg: b"sig"),
                                          inline=orchestration.InlinePillar(self.inline_dir))
        with self.assertLogs(orchestration.log, "ERROR"):
            self.assertEqual(orch.register_github_runners(), [])
        self.assertEqual(http.jit_requests, [])

    def test_a_join_token_reaches_only_its_minion_through_pillar_and_is_revoked(self):
        client = FakeLocalClient(joined=["prod-default-r1", "prod-default-r2", "prod-salt-master"])
        with Harness(client, FakeGitHubHTTP(), self.inline_dir) as harness:
            self.assertEqual(orchestration.join_teleport_nodes(), ["prod-release-r1"])
        applies = [p for p in client.publications if p["fun"] == "state.apply"]
        self.assertEqual(applies, [{"tgt": "prod-release-r1", "fun": "state.apply", "arg": ["teleport.node"], "kwarg": {}}])
        token = harness.pillar_reads["prod-release-r1"][0]["teleport_join_token"]
        self.assertTrue(token.startswith(JOIN_TOKEN_PREFIX))
        # No publication names the token: the revocation names it by its sha256 only.
        self.assertEqual(self.published_tokens(client), [])
        self.assertIn({"tgt": "prod-teleport", "fun": "ci_fleet_teleport.remove_token",
                       "arg": [hashlib.sha256(token.encode()).hexdigest()]},
                      [{k: v for k, v in p.items() if k != "kwarg"} for p in client.publications])
        self.assertIn({"tgt": "prod-release-r1", "fun": "file.remove", "arg": [orchestration.TELEPORT_TOKEN_FILE],
                       "kwarg": {}}, client.publications)
        self.assertEqual(read_inline(self.inline_dir, "prod-release-r1"), {})

    def test_token_files_are_root_only_and_malformed_tokens_are_refused(self):
        inline = orchestration.InlinePillar(self.inline_dir)
        inline.put("prod-default-r1", "github_jit_config", encoded_jit_config("prod-default-r1"))
        path = os.path.join(self.inline_dir, "prod-default-r1", "github_jit_config.json")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.inline_dir).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)
        for bad in ("{{ 7*7 }}", "a\"b", "", None, "x" * 600):
            with self.assertRaises(ValueError):
                inline.put("prod-default-r1", "teleport_join_token", bad)
        for bad_id in ("../etc", "prod/x", ""):
            with self.assertRaises(ValueError):
                inline.put(bad_id, "teleport_join_token", REG_TOKEN)
        for bad in ("{{ 7*7 }}", "a\"b", "", None, "abc{%def%}ghijklmnop", "x" * 70000):
            with self.assertRaises(ValueError):
                inline.put("prod-default-r1", "github_jit_config", bad)
        for key in ("other_key", "github_registration_token"):
            with self.assertRaises(ValueError):
                inline.put("prod-default-r1", key, REG_TOKEN)

    def test_a_minion_that_does_not_answer_is_not_taken_for_an_idle_runner(self):
        # prod-default-r2 is down: LocalClient.cmd reports it as False, like "unit not running".
        client = FakeLocalClient(active={"prod-default-r1"}, down={"prod-default-r2"})
        http = FakeGitHubHTTP()
        with Harness(client, http, self.inline_dir):
            self.assertEqual(orchestration.register_github_runners(), [])
        self.assertEqual(http.jit_requests, [])
        self.assertEqual([c for c in http.calls if c[1].endswith("/registration-token")], [])
        self.assertEqual([p for p in client.publications if p["fun"] == "state.apply"], [])

    def test_no_join_tokens_while_the_teleport_machine_does_not_answer(self):
        client = FakeLocalClient(teleport_down=True)
        with Harness(client, FakeGitHubHTTP(), self.inline_dir):
            self.assertEqual(orchestration.join_teleport_nodes(), [])
        # Only questions to the Teleport machine (its CA export, then nothing else): no token.
        self.assertEqual([p["fun"] for p in client.publications], ["ci_fleet_teleport.host_ca_certificates"])

    def test_reactor_call_registers_only_the_minion_named_by_the_event(self):
        # salt/utils/reactor.py: `args: [{minion: ID}]` becomes kwarg {"minion": ID}.
        client = FakeLocalClient()
        http = FakeGitHubHTTP()
        with Harness(client, http, self.inline_dir):
            self.assertEqual(orchestration.register_github_runners(minion="prod-default-r1"), ["prod-default-r1"])
        self.assertEqual({p["tgt"] for p in client.publications}, {"prod-default-r1"})
        self.assertEqual([r["name"] for r in http.jit_requests], ["prod-default-r1"])

    def test_stale_runners_are_only_this_stacks_by_name_and_queue_label(self):
        http = FakeGitHubHTTP(runners=[
            runner(1, "prod-default-r1", "default"),          # a minion
            runner(2, "prod-default-r9", "default", status="offline"),   # stale: deleted
            runner(3, "prod-eu-default-r1", "default"),       # stack prod-eu, not ours
            runner(4, "prod-default-r8", "default", busy=True),   # running a job: kept
            runner(5, "staging-default-r1", "default"),
            runner(6, "someone-elses-runner", "default"),
            runner(7, "prod-release-r7", "release"),          # stale, other queue page: deleted
        ])
        client = FakeLocalClient()
        with Harness(client, http, self.inline_dir):
            self.assertEqual(orchestration.deregister_stale(), ["prod-default-r9", "prod-release-r7"])
        deletes = [c[1] for c in http.calls if c[0] == "DELETE"]
        self.assertEqual(deletes, [orchestration.GITHUB_API + "/orgs/example-org/actions/runners/2",
                                   orchestration.GITHUB_API + "/orgs/example-org/actions/runners/7"])
        pages = [c[1] for c in http.calls if c[0] == "GET"]
        self.assertEqual(len(pages), 4)   # 7 runners, 2 per page
        self.assertTrue(all("per_page=100" in p for p in pages))

    def test_a_current_minions_runner_left_offline_without_its_config_is_removed(self):
        # After any stop the unit has removed its single-use config: a runner GitHub still
        # lists offline and idle, whose unit is down, never comes back; it is deleted so the
        # next round mints a new config. Online, busy or running units are kept.
        http = FakeGitHubHTTP(runners=[
            runner(1, "prod-default-r1", "default", status="offline"),   # unit down: deleted
            runner(2, "prod-default-r2", "default", status="offline"),   # unit runs: kept
        ])
        client = FakeLocalClient(active={"prod-default-r2"})
        with Harness(client, http, self.inline_dir):
            self.assertEqual(orchestration.deregister_stale(), ["prod-default-r1"])
        http = FakeGitHubHTTP(runners=[
            runner(1, "prod-default-r1", "default", status="online"),
            runner(2, "prod-default-r2", "default", status="offline", busy=True),
        ])
        client = FakeLocalClient()
        with Harness(client, http, self.inline_dir):
            self.assertEqual(orchestration.deregister_stale(), [])
        self.assertEqual([c for c in http.calls if c[0] == "DELETE"], [])
        # The next round: GitHub no longer lists it, so the master mints a config for it.
        http = FakeGitHubHTTP(runners=[runner(2, "prod-default-r2", "default")])
        with Harness(FakeLocalClient(), http, self.inline_dir):
            self.assertEqual(orchestration.register_github_runners(), ["prod-default-r1"])


RUN_DIR = "/run/ci-fleet/job-slots"
GUEST = os.path.join(SALT, "runner", "files", "ci-job-guest")


def load_guest():
    """salt/runner/files/ci-job-guest as a module (it runs main() only as a script)."""
    loader = importlib.machinery.SourceFileLoader("ci_job_guest_under_test", GUEST)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def idle_slot(minion_id, n, inbox=(), job=None):
    """What a slot's minion answers: its inbox listing (file.readdir) and state.json (file.read,
    as ci-job-slot writes it at each VM's start and when it takes an input)."""
    state = {"qemuPid": 4242, "qemuStart": "123", "vm": 1, "job": job}
    return {(minion_id, "%s/%d/inbox" % (RUN_DIR, n)): [".", ".."] + list(inbox),
            (minion_id, "%s/%d/state.json" % (RUN_DIR, n)): json.dumps(state)}


def vm_pillar(slots):
    return {"isolation": "vm", "job_vm": {"slots": slots, "cpus": 4, "memory_mib": 16384, "disk_gib": 80}}


def render_slot_state(minion_id, runner_pillar, inline, slot):
    """salt/runner/job_vm_github.sls rendered with real Jinja2 for the pillar the minion has
    while the master's state.apply runs: its own document, ci_fleet_inline, and the
    publication's `pillar=` override. {state id: (function, args)}."""
    pillar = {"ci_fleet": {"minion_id": minion_id, "runner": dict(runner_pillar, agent="github-actions")}}
    if inline:
        pillar["ci_fleet_inline"] = inline
    pillar.update(slot)
    env = render.make_env([SALT])
    grains = render.grains_for(minion_id)
    extra = {"salt": render.salt_functions(pillar, grains, render.Recorder())}
    highstate = render.Highstate(SALT, env, pillar, grains, minion_id, extra)
    highstate.add("runner.job_vm_github")
    if highstate.errors:
        raise AssertionError(highstate.errors)
    out = {}
    for state_id, (_, body) in highstate.states.items():
        ((function, args),) = render.state_function(state_id, body)
        out[state_id] = (function, args)
    return out


class GitHubListingMinted(FakeGitHubHTTP):
    """GitHub listing a runner from its generate-jitconfig on (offline until it connects), as
    the real one does: what makes a second pass over a minion find nothing left to mint."""

    def __call__(self, method, url, headers, body=None):
        status, data = super().__call__(method, url, headers, body)
        if url.endswith("/generate-jitconfig") and status == 201:
            self.runners.append(runner(100 + len(self.runners), body["name"], "default", status="offline"))
        return status, data


class JobSlotRegistrationTest(unittest.TestCase):
    """Issue 15: a GitHub runner host with isolation vm runs no runner itself; each job slot N
    gets its own just-in-time config (runner <minion>-s<N>) as a job input in its inbox."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.inline_dir = os.path.join(self.dir, "inline")

    def tearDown(self):
        shutil.rmtree(self.dir)

    published_tokens = OrchestrationConformanceTest.published_tokens

    def test_each_idle_slot_gets_one_config_for_its_name_through_the_minions_pillar_into_its_inbox(self):
        files = {}
        for n in (1, 2, 3):
            files.update(idle_slot("prod-default-r1", n))
        http = FakeGitHubHTTP(runners=[runner(1, "prod-default-r2", "default")])
        client = FakeLocalClient(files=files)
        extra = {"prod-default-r1": vm_pillar(3)}
        with Harness(client, http, self.inline_dir, runner_extra=extra) as harness:
            self.assertEqual(orchestration.register_github_runners(),
                             ["prod-default-r1-s1", "prod-default-r1-s2", "prod-default-r1-s3"])
        self.assertEqual(http.jit_requests, [{
            "name": "prod-default-r1-s%d" % n, "runner_group_id": 7,
            "labels": ["self-hosted", "linux", "x64", "netboot", "queue-default"],
            "work_folder": "/home/ci/_work",    # the job user's home in the golden image
        } for n in (1, 2, 3)])
        # No config in any publication (the slot number is the only argument beyond the sls).
        self.assertEqual(self.published_tokens(client, http), [])
        applies = [p for p in client.publications if p["fun"] == "state.apply"]
        self.assertEqual(applies, [{"tgt": "prod-default-r1", "fun": "state.apply", "arg": ["runner.job_vm_github"],
                                    "kwarg": {"pillar": {"ci_fleet_job_slot": n}}} for n in (1, 2, 3)])
        # The host's own runner is never registered, its unit never asked.
        self.assertEqual([p for p in client.publications if p["fun"] == "service.status"], [])
        self.assertEqual(read_inline(self.inline_dir, "prod-default-r1"), {})
        guest = load_guest()
        for n, (seen, sent) in enumerate(zip(harness.pillar_reads["prod-default-r1"], http.jit_configs), start=1):
            self.assertEqual(set(seen), {"github_jit_config"})
            self.assertEqual(decoded_jit_config(seen["github_jit_config"])[".credentials_rsaparams"], RSA_SECRET.encode())
            states = render_slot_state("prod-default-r1", vm_pillar(3), seen, {"ci_fleet_job_slot": n})
            function, managed = states["runner-job_vm_github-input-file-managed"]
            self.assertEqual(function, "file.managed")
            self.assertTrue(managed["name"].startswith("%s/%d/.github-" % (RUN_DIR, n)))
            self.assertEqual((managed["user"], managed["group"], managed["mode"], managed["show_changes"]),
                             ("root", "root", "0600", False))
            function, renamed = states["runner-job_vm_github-input-file-rename"]
            self.assertEqual(function, "file.rename")
            self.assertEqual(renamed["source"], managed["name"])
            self.assertEqual(os.path.dirname(renamed["name"]), "%s/%d/inbox" % (RUN_DIR, n))
            # ci-job-slot's inbox names: [A-Za-z0-9_.:-]{1,128}, no leading dot once renamed in.
            self.assertRegex(os.path.basename(renamed["name"]), r"^[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,127}$")
            # The guest's own parser turns the rendered input into run.sh --jitconfig <the config>.
            job = guest.parse_job(managed["contents"].encode())
            argv, env = guest.job_command(job, {"HOME": "/home/ci", "PATH": "/usr/bin:/bin"}, runner_dir="/opt/actions-runner")
            self.assertEqual(argv, ["/opt/actions-runner/run.sh", "--jitconfig", seen["github_jit_config"]])
            self.assertEqual(json.loads(decoded_jit_config(argv[2])[".runner"])["agentName"], "prod-default-r1-s%d" % n)
            self.assertNotIn(seen["github_jit_config"], json.dumps(env))

    def test_a_slot_github_lists_a_busy_slot_or_a_silent_one_gets_none(self):
        files = {}
        files.update(idle_slot("prod-default-r1", 1))                          # listed by GitHub
        files.update(idle_slot("prod-default-r1", 2, inbox=["github-abc"]))    # an input waits
        files.update(idle_slot("prod-default-r1", 3, job="github-abc"))        # a job runs
        files.update({k: v for k, v in idle_slot("prod-default-r1", 4).items() if k[1].endswith("inbox")})  # no VM
        # slot 5: the minion does not answer at all
        http = FakeGitHubHTTP(runners=[runner(1, "prod-default-r1-s1", "default", status="offline"),
                                       runner(2, "prod-default-r2", "default")])
        client = FakeLocalClient(files=files)
        with Harness(client, http, self.inline_dir, runner_extra={"prod-default-r1": vm_pillar(5)}):
            self.assertEqual(orchestration.register_github_runners(), [])
        self.assertEqual(http.jit_requests, [])
        self.assertEqual([p for p in client.publications if p["fun"] == "state.apply"], [])
        # GitHub's list decides first: the listed slot's minion is not even asked.
        asked = {p["arg"][0] for p in client.publications if p["fun"].startswith("file.")}
        self.assertNotIn("%s/1/inbox" % RUN_DIR, asked)

    def test_a_minion_answering_for_slots_it_does_not_have_gets_nothing_for_them(self):
        # The minion answers "idle" for slots 1..8; its pillar (the master's) says 2.
        files = {}
        for n in range(1, 9):
            files.update(idle_slot("prod-default-r1", n))
        http = FakeGitHubHTTP(runners=[runner(1, "prod-default-r2", "default")])
        client = FakeLocalClient(files=files)
        with Harness(client, http, self.inline_dir, runner_extra={"prod-default-r1": vm_pillar(2)}) as harness:
            self.assertEqual(orchestration.register_github_runners(), ["prod-default-r1-s1", "prod-default-r1-s2"])
            harness.wall.advance(getattr(orchestration, "GITHUB_LOOKUP_REFILL_SECONDS", 300))   # its lookup budget refilled
            self.assertEqual(orchestration.register_github_runners(minion="prod-default-r1"),
                             ["prod-default-r1-s1", "prod-default-r1-s2"])
        asked = sorted({p["arg"][0] for p in client.publications if p["fun"].startswith("file.")})
        self.assertEqual(asked, ["%s/%d/%s" % (RUN_DIR, n, f) for n in (1, 2) for f in ("inbox", "state.json")])
        # The state itself refuses a slot its own pillar does not have, and a missing config.
        for slot, inline in (({"ci_fleet_job_slot": 3}, {"github_jit_config": "QUJD" * 8}),
                             ({"ci_fleet_job_slot": 0}, {"github_jit_config": "QUJD" * 8}),
                             ({"ci_fleet_job_slot": True}, {"github_jit_config": "QUJD" * 8}),
                             ({"ci_fleet_job_slot": "1"}, {"github_jit_config": "QUJD" * 8}),
                             ({"ci_fleet_job_slot": 1}, {})):
            states = render_slot_state("prod-default-r1", vm_pillar(2), inline, slot)
            self.assertEqual([f for f, _ in states.values()], ["test.fail_without_changes"], slot)

    def test_isolation_vm_without_slots_registers_nothing_not_even_the_host(self):
        http = FakeGitHubHTTP(runners=[runner(1, "prod-default-r2", "default")])
        client = FakeLocalClient()
        with Harness(client, http, self.inline_dir, runner_extra={"prod-default-r1": {"isolation": "vm"}}):
            self.assertEqual(orchestration.register_github_runners(), [])
        self.assertEqual(http.jit_requests, [])
        self.assertEqual([p for p in client.publications if p["tgt"] == "prod-default-r1"], [])

    def test_deregistration_knows_slot_names(self):
        files = {}
        files.update(idle_slot("prod-default-r1", 1))                    # offline, slot idle: dead
        files.update(idle_slot("prod-default-r1", 2, job="github-x"))    # offline, its VM has it: kept
        http = FakeGitHubHTTP(runners=[
            runner(1, "prod-default-r1-s1", "default", status="offline"),  # deleted (dead JIT runner)
            runner(2, "prod-default-r1-s2", "default", status="offline"),  # kept
            runner(3, "prod-default-r1-s3", "default"),                    # online: kept
            runner(4, "prod-default-r1-s4", "default", status="offline"),  # beyond the 3 slots: stale
            runner(5, "prod-default-r1", "default", status="offline"),     # the host runner of before: stale
            runner(6, "prod-default-r9-s1", "default", status="offline"),  # a removed host's slot: stale
            runner(7, "prod-default-r2-s1", "default", status="offline"),  # r2 is a host runner: stale
            runner(8, "prod-default-r2", "default"),                       # r2's own runner: kept
            runner(9, "prod-eu-default-r1-s1", "default"),                 # another stack: kept
            runner(10, "prod-default-r1-s5", "default", busy=True),        # busy: kept
        ])
        client = FakeLocalClient(files=files)
        with Harness(client, http, self.inline_dir, runner_extra={"prod-default-r1": vm_pillar(3)}):
            self.assertEqual(orchestration.deregister_stale(), [
                "prod-default-r1-s1", "prod-default-r1-s4", "prod-default-r1",
                "prod-default-r9-s1", "prod-default-r2-s1"])
        self.assertEqual(self.published_tokens(client, http), [])
        # Only slots 1 and 2 (offline, current) were asked about; nobody named a slot for the master.
        asked = sorted({p["arg"][0] for p in client.publications if p["fun"].startswith("file.")})
        self.assertEqual(asked, ["%s/%d/%s" % (RUN_DIR, n, f) for n in (1, 2) for f in ("inbox", "state.json")])


    def test_github_api_cost_one_list_per_round_and_one_lookup_per_idle_slot_per_event(self):
        """The App's REST quota is hourly: a round reads the organisation's list once (not once
        per minion), and a run for one minion (each finished job's event) asks GitHub only about
        its idle names, one request each, never for the whole list."""
        files = {}
        for n in range(1, 16):
            files.update(idle_slot("prod-default-r1", n, job=None if n == 7 else "github-%d" % n))
        listed = [runner(i, "prod-default-r1-s%d" % i, "default") for i in range(1, 16) if i != 7]
        listed += [runner(100 + i, "other-%d" % i, "default") for i in range(300)]    # a big organisation
        http = FakeGitHubHTTP(runners=listed)
        client = FakeLocalClient(files=files)
        with Harness(client, http, self.inline_dir, runner_extra={"prod-default-r1": vm_pillar(15)}):
            self.assertEqual(orchestration.register_github_runners(minion="prod-default-r1"), ["prod-default-r1-s7"])
            event_gets = [c[1] for c in http.calls if c[0] == "GET" and "/actions/runners?" in c[1]]
            self.assertEqual(event_gets, [orchestration.GITHUB_API + "/orgs/example-org/actions/runners?name=prod-default-r1-s7&per_page=100&page=1"])
            del http.calls[:]
            orchestration.register_github_runners()
            pages = [c[1] for c in http.calls if c[0] == "GET" and "/actions/runners?per_page" in c[1]]
            # One pass over the list (its pages), whatever the number of GitHub minions.
            self.assertEqual(len(pages), len(set(pages)))

    def test_overlapping_runs_for_one_minion_never_mint_twice_for_a_slot(self):
        """Each slot's launcher sends the reactor event (ci-job-slot InputRequester), so reactor
        runs for one minion overlap each other and the 5-minute round. While one run delivers a
        config (its state.apply), another arrives for the same minion: it must not mint for the
        same idle, unlisted names (or race on the minion's one inline pillar file); it leaves the
        holder a marker, and the holder makes one more pass, so a slot that became ready after the
        holder looked at it is not left for later. Other minions are not held up."""

        files = {}
        files.update(idle_slot("prod-default-r1", 1, job="github-earlier"))   # busy when the holder looks
        files.update(idle_slot("prod-default-r1", 2))
        for n in (1, 2):
            files.update(idle_slot("prod-default-r2", n))
        http = GitHubListingMinted(runners=[])
        client = FakeLocalClient(files=files)
        extra = {"prod-default-r1": vm_pillar(2), "prod-default-r2": vm_pillar(2)}
        nested = {}
        with Harness(client, http, self.inline_dir, runner_extra=extra) as harness:
            delivering = harness.client.execute

            def execute(tgt, fun, arg, kwarg):
                value = delivering(tgt, fun, arg, kwarg)
                if fun == "state.apply" and tgt == "prod-default-r1" and "same" not in nested:
                    # While slot 2's config is delivered, slot 1's job ends and its next VM is
                    # ready: its launcher's event arrives, and r2's too.
                    nested["same"] = None
                    client.files.update(idle_slot("prod-default-r1", 1))
                    nested["same"] = orchestration.register_github_runners(minion="prod-default-r1")
                    nested["other"] = orchestration.register_github_runners(minion="prod-default-r2")
                return value

            harness.client.execute = execute
            self.assertEqual(orchestration.register_github_runners(minion="prod-default-r1"),
                             ["prod-default-r1-s2", "prod-default-r1-s1"])
            # Nothing holds the lock or a marker afterwards: GitHub drops slot 2's finished runner,
            # and the next run for that minion mints it again.
            http.runners = [r for r in http.runners if r["name"] != "prod-default-r1-s2"]
            harness.wall.advance(getattr(orchestration, "GITHUB_LOOKUP_REFILL_SECONDS", 300))   # a job later: its lookup budget refilled
            self.assertEqual(orchestration.register_github_runners(minion="prod-default-r1"), ["prod-default-r1-s2"])
        self.assertEqual(nested, {"same": [], "other": ["prod-default-r2-s1", "prod-default-r2-s2"]})
        self.assertEqual([r["name"] for r in http.jit_requests],
                         ["prod-default-r1-s2", "prod-default-r2-s1", "prod-default-r2-s2", "prod-default-r1-s1",
                          "prod-default-r1-s2"])
        # Each of r1's deliveries read the config minted for its own slot, none another run's.
        seen = [(read_args["pillar"]["ci_fleet_job_slot"],
                 json.loads(decoded_jit_config(read["github_jit_config"])[".runner"])["agentName"])
                for read, read_args in zip(harness.pillar_reads["prod-default-r1"],
                                           [p["kwarg"] for p in client.publications
                                            if p["fun"] == "state.apply" and p["tgt"] == "prod-default-r1"])]
        self.assertEqual(seen, [(2, "prod-default-r1-s2"), (1, "prod-default-r1-s1"), (2, "prod-default-r1-s2")])
        lock_dir = os.path.join(self.dir, orchestration.REGISTRATION_LOCK_DIRNAME)
        self.assertEqual(stat.S_IMODE(os.stat(lock_dir).st_mode), 0o700)
        self.assertEqual(sorted(os.listdir(lock_dir)), ["prod-default-r1.lock", "prod-default-r2.lock"])

    def test_two_runs_that_both_find_a_slot_idle_and_unlisted_mint_once(self):
        """The plain race: a second run for the minion arrives while the first is asking whether
        slot 1 is idle (both have read GitHub's list without it). Only one config per name."""
        files = {}
        for n in (1, 2):
            files.update(idle_slot("prod-default-r1", n))
        http = GitHubListingMinted(runners=[])
        client = FakeLocalClient(files=files)
        nested = {}
        with Harness(client, http, self.inline_dir, runner_extra={"prod-default-r1": vm_pillar(2)}) as harness:
            asking = harness.client.execute

            def execute(tgt, fun, arg, kwarg):
                if fun == "file.read" and "run" not in nested:
                    nested["run"] = None
                    nested["run"] = orchestration.register_github_runners(minion="prod-default-r1")
                return asking(tgt, fun, arg, kwarg)

            harness.client.execute = execute
            first = orchestration.register_github_runners(minion="prod-default-r1")
        names = [r["name"] for r in http.jit_requests]
        self.assertEqual(sorted(names), sorted(set(names)))
        self.assertEqual((first, nested["run"]), (["prod-default-r1-s1", "prod-default-r1-s2"], []))

    def test_the_round_never_deletes_a_runner_a_registration_is_delivering(self):
        """GitHub lists a just-minted runner offline, and its slot answers idle until the state
        lands the config in the inbox: a deregister_stale running meanwhile (the 5-minute round
        beside a reactor run) must leave it, or the slot gets a config for a deleted runner."""
        files = {}
        files.update(idle_slot("prod-default-r1", 1))
        http = FakeGitHubHTTP(runners=[])
        client = FakeLocalClient(files=files)
        removed = {}
        with Harness(client, http, self.inline_dir, runner_extra={"prod-default-r1": vm_pillar(1)}) as harness:
            delivering = harness.client.execute

            def execute(tgt, fun, arg, kwarg):
                if fun == "state.apply" and "during" not in removed:
                    removed["during"] = None
                    http.runners.append(runner(42, "prod-default-r1-s1", "default", status="offline"))
                    removed["during"] = orchestration.deregister_stale()
                return delivering(tgt, fun, arg, kwarg)

            harness.client.execute = execute
            self.assertEqual(orchestration.register_github_runners(minion="prod-default-r1"), ["prod-default-r1-s1"])
            # Once no registration holds the lock, an offline runner of an idle slot is dead as before.
            removed["after"] = orchestration.deregister_stale()
        self.assertEqual(removed, {"during": [], "after": ["prod-default-r1-s1"]})
        self.assertEqual([c for c in http.calls if c[0] == "DELETE"],
                         [("DELETE", orchestration.GITHUB_API + "/orgs/example-org/actions/runners/42")])


class RootedMinionStallTest(unittest.TestCase):
    """Root on one runner can fire any event at the master and answer any job as it likes
    (docs/security.md). It must not stall or starve the master: the reactor, the App's GitHub
    quota, the 5-minute round and the orchestration lock a restart waits for. Fake clocks, no
    real sleeps."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.inline_dir = os.path.join(self.dir, "inline")
        self.saved_monotonic = getattr(orchestration, "_monotonic", None)

    def tearDown(self):
        orchestration._monotonic = self.saved_monotonic
        shutil.rmtree(self.dir)

    def counting_builds(self, harness):
        """Wall-clock times at which an orchestrator was built (the master's pillar read)."""
        builds, pillar = [], harness.pillar

        def counted(minion_id):
            if minion_id == MASTER_ID:
                builds.append(harness.wall.now)
            return pillar(minion_id)

        orchestration.__salt__["pillar.show_pillar"] = counted
        return builds

    def test_an_event_flood_for_one_minion_builds_at_most_one_orchestrator_per_10s(self):
        client = FakeLocalClient(active={"prod-default-r1", "prod-default-r2"})
        http = FakeGitHubHTTP()
        with Harness(client, http, self.inline_dir) as harness, \
                self.assertLogs(orchestration.log, "WARNING") as logs:
            harness.wall.step = 0
            builds = self.counting_builds(harness)
            start = harness.wall.now
            for _ in range(600):    # one event every 0.1 s for a minute
                orchestration.register_github_runners(minion="prod-default-r1")
                harness.wall.advance(0.1)
            flood_builds = list(builds)
            # Another machine's event in the middle of the flood still runs.
            orchestration.register_github_runners(minion="prod-default-r2")
        self.assertLessEqual(len(flood_builds), 6)
        self.assertTrue(all(b - a >= getattr(orchestration, "REACTOR_MINION_INTERVAL_SECONDS", 10) - 1e-6
                            for a, b in zip(flood_builds, flood_builds[1:])), flood_builds)
        self.assertEqual(len(builds), len(flood_builds) + 1)
        self.assertGreaterEqual(flood_builds[0], start)
        # Over the limit: one log line a minute, not one per event.
        self.assertLessEqual(sum("rate limit" in line for line in logs.output), 1)

    def test_forged_ids_cannot_run_more_than_the_fleet_cap(self):
        # Batched events may carry any id (docs/security.md): each new id is a new minion to the
        # per-minion limit, so the fleet-wide bucket bounds the sum.
        client = FakeLocalClient(active={"prod-default-r1", "prod-default-r2"})
        with Harness(client, FakeGitHubHTTP(), self.inline_dir) as harness:
            harness.wall.step = 0
            builds = self.counting_builds(harness)
            for n in range(300):    # 300 forged ids in 30 s
                orchestration.register_github_runners(minion="prod-forged-%d" % n)
                harness.wall.advance(0.1)
            self.assertLessEqual(len(builds), getattr(orchestration, "REACTOR_RUNS_PER_MINUTE", 60) + 30)
            self.assertEqual(orchestration.register_github_runners(minion="x" * 200), [])   # not an id at all

    def test_a_minion_answering_idle_forever_costs_a_bounded_number_of_github_calls(self):
        # 4 slots, every one answering idle with no job, forever; GitHub lists all four (busy or
        # not, the minion lies). An event every 10 s and the round every 5 minutes, for an hour.
        files = {}
        for n in range(1, 5):
            files.update(idle_slot("prod-default-r1", n))
        http = FakeGitHubHTTP(runners=[runner(n, "prod-default-r1-s%d" % n, "default") for n in range(1, 5)])
        client = FakeLocalClient(files=files, active={"prod-default-r2"})
        with Harness(client, http, self.inline_dir, runner_extra={"prod-default-r1": vm_pillar(4)}) as harness:
            harness.wall.step = 0
            for second in range(0, 3600, 10):
                orchestration.register_github_runners(minion="prod-default-r1")
                if second % 300 == 0:
                    orchestration.register_github_runners()
                harness.wall.advance(10)
        lookups = [url for method, url in http.calls if method == "GET" and "/actions/runners?name=" in url]
        # At most its slot count per refill interval (plus the first full bucket): 4 * 12 + 4.
        self.assertLessEqual(len(lookups), 4 * 3600 // getattr(orchestration, "GITHUB_LOOKUP_REFILL_SECONDS", 300) + 4)
        self.assertEqual(http.jit_requests, [])
        # One installation token for the hour (expires_at 2030): not one per run.
        self.assertEqual(sum(url.endswith("/access_tokens") for _, url in http.calls), 1)

    def test_the_installation_token_is_cached_across_runs_root_only_and_renewed_before_it_expires(self):
        files = {}
        files.update(idle_slot("prod-default-r1", 1))
        http = GitHubListingMinted(runners=[])
        client = FakeLocalClient(files=files, active={"prod-default-r2"})
        with Harness(client, http, self.inline_dir, runner_extra={"prod-default-r1": vm_pillar(1)}), \
                self.assertLogs(orchestration.log, "DEBUG") as logs:
            orchestration.log.debug("start")
            self.assertEqual(orchestration.register_github_runners(minion="prod-default-r1"), ["prod-default-r1-s1"])
            orchestration.register_github_runners(minion="prod-default-r1")
        posts = [url for method, url in http.calls if method == "POST" and url.endswith("/access_tokens")]
        self.assertEqual(len(posts), 1)
        state = os.path.join(self.dir, "state")
        path = os.path.join(state, getattr(orchestration, "GITHUB_TOKEN_FILE", "github-installation-token.json"))
        self.assertEqual(stat.S_IMODE(os.stat(state).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertFalse(any("ghs_installation" in line for line in logs.output))
        # Renewed shortly before expires_at (2030-01-01T00:00:00Z), not after.
        expires = 1893456000
        cache = orchestration.TokenCache(state)
        for now, posts_expected in ((expires - 301, 0), (expires - 299, 1)):
            http.calls.clear()
            github = orchestration.GitHub(GITHUB_APP, http=http, clock=lambda: now, sign=lambda key, msg: b"sig",
                                          token_cache=cache)
            self.assertEqual(github.installation_token(), "ghs_installation")
            self.assertEqual(sum(url.endswith("/access_tokens") for _, url in http.calls), posts_expected, now)
        # Another installation's token is never reused.
        other = orchestration.GitHub(dict(GITHUB_APP, installation_id="457"), http=lambda *a, **k: (201, {
            "token": "ghs_other_installation", "expires_at": "2030-01-01T00:00:00Z"}), clock=lambda: 1700000000,
            sign=lambda key, msg: b"sig", token_cache=cache)
        self.assertEqual(other.installation_token(), "ghs_other_installation")

    def test_a_minion_whose_job_keeps_running_does_not_stop_the_round(self):
        # prod-default-r1 answers saltutil.find_job "still running" for every job, forever.
        client = FakeLocalClient()
        client.hung, client.clock = {"prod-default-r1"}, FakeClock(0)
        orchestration._monotonic = client.clock
        http = FakeGitHubHTTP()
        with Harness(client, http, self.inline_dir):
            self.assertEqual(orchestration.register_github_runners(), ["prod-default-r2"])
        # Within r1's one call deadline (fake time): the round moved on after it.
        self.assertLessEqual(client.clock.now, getattr(orchestration, "MINION_CALL_DEADLINE_SECONDS", 60) + 1)
        self.assertEqual([r["name"] for r in http.jit_requests], ["prod-default-r2"])

    def test_the_run_budget_is_enforced_between_minions(self):
        # Every call to r1 takes its whole deadline and then some (a slow poll): once the round's
        # budget is used, no later minion is started and the run (and its lock) ends.
        client = FakeLocalClient()
        client.hung, client.clock, client.poll_seconds = {"prod-default-r1"}, FakeClock(0), orchestration.RUN_BUDGET_SECONDS + 1
        orchestration._monotonic = client.clock
        http = FakeGitHubHTTP()
        with Harness(client, http, self.inline_dir), self.assertLogs(orchestration.log, "WARNING") as logs:
            self.assertEqual(orchestration.register_github_runners(), [])
            self.assertEqual(orchestration.deregister_stale(), [])
        self.assertNotIn("prod-default-r2", {p["tgt"] for p in client.publications})
        self.assertTrue(any("run budget" in line for line in logs.output))


class StaleInlinePillarTest(unittest.TestCase):
    """A master restart (or any kill) mid-orchestration skips the `finally` that removes a token
    file; such a file must never outlive its token (teleport 15 min, GitHub 1 h)."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.inline_dir = os.path.join(self.dir, "inline")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def test_sweep_removes_files_older_than_their_tokens_lifetime_fake_clock(self):
        now = 1_800_000_000
        inline = orchestration.InlinePillar(self.inline_dir)
        inline.clock = lambda: now
        inline.put("prod-default-r1", "teleport_join_token", JOIN_TOKEN_PREFIX + "aa")
        inline.put("prod-default-r2", "teleport_join_token", JOIN_TOKEN_PREFIX + "bb")
        inline.put("prod-default-r1", "github_jit_config", encoded_jit_config("prod-default-r1"))
        inline.put("prod-default-r2", "github_jit_config", encoded_jit_config("prod-default-r2"))
        path = lambda m, k: os.path.join(self.inline_dir, m, k + ".json")
        os.utime(path("prod-default-r1", "teleport_join_token"), (now - 15 * 60 - 1,) * 2)   # expired
        os.utime(path("prod-default-r2", "teleport_join_token"), (now - 14 * 60,) * 2)       # live
        os.utime(path("prod-default-r1", "github_jit_config"), (now - 3600 - 1,) * 2)  # expired
        os.utime(path("prod-default-r2", "github_jit_config"), (now - 3500,) * 2)      # live
        # A half-written file of a killed put().
        with open(path("prod-default-r2", "teleport_join_token") + ".tmp", "w") as handle:
            handle.write("x")
        os.utime(path("prod-default-r2", "teleport_join_token") + ".tmp", (now - 3 * 3600,) * 2)
        removed = inline.sweep()
        self.assertEqual(sorted(removed), sorted([path("prod-default-r1", "teleport_join_token"),
                                                  path("prod-default-r1", "github_jit_config"),
                                                  path("prod-default-r2", "teleport_join_token") + ".tmp"]))
        self.assertEqual(read_inline(self.inline_dir, "prod-default-r1"), {})
        self.assertEqual(set(read_inline(self.inline_dir, "prod-default-r2")), {"teleport_join_token", "github_jit_config"})

    def test_every_entry_point_sweeps_before_it_works(self):
        for entry in ("reconcile", "join_teleport_nodes", "register_github_runners", "deregister_stale"):
            inline = orchestration.InlinePillar(self.inline_dir)
            inline.put("prod-default-r1", "github_jit_config", encoded_jit_config("prod-default-r1"))
            stale = os.path.join(self.inline_dir, "prod-default-r1", "github_jit_config.json")
            os.utime(stale, (os.path.getmtime(stale) - 2 * 3600,) * 2)
            client = FakeLocalClient(active={"prod-default-r1", "prod-default-r2"},
                                     joined=list(MINIONS))
            with Harness(client, FakeGitHubHTTP(), self.inline_dir):
                getattr(orchestration, entry)()
            self.assertFalse(os.path.exists(stale), entry)

    def test_entry_points_hold_the_orchestration_lock_a_master_refresh_waits_for(self):
        import fcntl
        lock = os.path.join(self.dir, "orchestration.lock")
        client = FakeLocalClient(active={"prod-default-r1"})
        seen = []
        with Harness(client, FakeGitHubHTTP(), self.inline_dir):
            saved = orchestration.ORCHESTRATION_LOCK
            orchestration.ORCHESTRATION_LOCK = lock
            original = client.execute

            def execute(tgt, fun, arg, kwarg):
                if fun == "state.apply":
                    with open(lock) as handle:
                        try:
                            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                            seen.append("free")
                        except BlockingIOError:
                            seen.append("held")
                return original(tgt, fun, arg, kwarg)

            client.execute = execute
            try:
                orchestration.register_github_runners()
            finally:
                orchestration.ORCHESTRATION_LOCK = saved
        self.assertEqual(seen, ["held"])


def load_refresh_defaults():
    """salt_master:runner_refresh in the formula's defaults (what service.sls renders)."""
    import yaml
    with open(os.path.join(SALT, "salt_master", "parameters", "defaults.yaml")) as handle:
        return yaml.safe_load(handle)["salt_master"]["runner_refresh"]


class RestartPendingTest(unittest.TestCase):
    """Linux flock(2) has no writer preference: overlapping shared holders (the 5-minute reconcile,
    reactor runs, on purpose a rooted minion flooding the unregistered event) can starve the
    master's exclusive restart forever. The restart announces itself with a marker file before it
    waits; every entry point then returns without doing anything, so the shared holders drain
    within one run. Fake clock throughout."""

    NOW = 1_800_000_000

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.inline_dir = os.path.join(self.dir, "inline")
        self.marker = os.path.join(self.dir, "orchestration.restart-pending")
        self.lock = os.path.join(self.dir, "orchestration.lock")
        self.saved_clock = getattr(orchestration, "_clock", None)
        orchestration._clock = lambda: self.NOW

    def tearDown(self):
        if self.saved_clock is None:
            del orchestration._clock
        else:
            orchestration._clock = self.saved_clock
        shutil.rmtree(self.dir)

    def write_marker(self, age):
        with open(self.marker, "w"):
            pass
        os.utime(self.marker, (self.NOW - age,) * 2)

    def test_the_lock_and_marker_paths_are_the_formulas_defaults(self):
        defaults = load_refresh_defaults()
        self.assertEqual(orchestration.ORCHESTRATION_LOCK, defaults["lock"])
        self.assertEqual(orchestration.RESTART_PENDING, defaults["pending"])
        self.assertTrue(defaults["pending"].startswith("/run/"))

    def test_a_pending_restart_makes_every_entry_point_return_without_doing_anything(self):
        for entry in ("reconcile", "join_teleport_nodes", "register_github_runners", "deregister_stale"):
            self.write_marker(age=10)
            client = FakeLocalClient()
            http = FakeGitHubHTTP(runners=[runner(2, "prod-default-r9", "default")])
            with self.assertLogs(orchestration.log, "INFO") as logs, Harness(client, http, self.inline_dir):
                result = getattr(orchestration, entry)()
            self.assertFalse(result, entry)
            self.assertEqual((client.publications, http.calls), ([], []), entry)
            self.assertFalse(os.path.exists(self.lock), entry)    # not even the shared lock taken
            self.assertTrue(any("restart" in line for line in logs.output), entry)

    def test_a_stale_marker_of_a_killed_restart_does_not_stop_orchestration_forever(self):
        # The restart waits lock_wait_seconds at most; a marker much older than that is left
        # by a killed restart (its trap never ran) and is ignored.
        wait = load_refresh_defaults()["lock_wait_seconds"]
        self.write_marker(age=wait + 120)
        client = FakeLocalClient(joined=["prod-default-r1", "prod-default-r2", "prod-salt-master"])
        with self.assertLogs(orchestration.log, "WARNING") as logs, Harness(client, FakeGitHubHTTP(), self.inline_dir):
            self.assertEqual(orchestration.join_teleport_nodes(), ["prod-release-r1"])
        self.assertTrue(any("stale" in line for line in logs.output))

    def test_a_restart_announced_during_a_run_stops_new_joins_and_registrations(self):
        client = FakeLocalClient()
        original = client.execute

        def execute(tgt, fun, arg, kwarg):
            if fun == "state.apply":
                self.write_marker(age=0)     # the highstate's restart starts waiting now
            return original(tgt, fun, arg, kwarg)

        client.execute = execute
        with Harness(client, FakeGitHubHTTP(), self.inline_dir):
            joined = orchestration.join_teleport_nodes()
        applies = [p["tgt"] for p in client.publications if p["fun"] == "state.apply"]
        self.assertEqual(len(applies), 1)
        self.assertEqual(joined, applies)
        # The started join still cleaned up after itself.
        self.assertEqual([p["fun"] for p in client.publications].count("ci_fleet_teleport.remove_token"), 1)
        os.unlink(self.marker)
        client = FakeLocalClient()
        original2 = client.execute

        def execute2(tgt, fun, arg, kwarg):
            if fun == "state.apply":
                self.write_marker(age=0)
            return original2(tgt, fun, arg, kwarg)

        client.execute = execute2
        with Harness(client, FakeGitHubHTTP(), self.inline_dir):
            self.assertEqual(len(orchestration.register_github_runners()), 1)

    def test_one_run_stops_starting_teleport_joins_after_its_time_budget(self):
        # Minions that never join: each join waits join_timeout on the fake clock.
        minions = {"prod-teleport": {"role": "teleport"}}
        minions.update({"prod-default-r%d" % i: {"role": "runner", "queue": "default"} for i in range(10)})
        now = [0.0]

        class NeverJoins(FakeLocalClient):
            def execute(self, tgt, fun, arg, kwarg):
                if fun == "state.apply":
                    now[0] += 1
                    return True
                return FakeLocalClient.execute(self, tgt, fun, arg, kwarg)

        client = NeverJoins()

        def sleep(seconds):
            now[0] += seconds

        orchestrator = orchestration.Orchestrator(
            STACK, {"ci_fleet": {"provider": "equinix-metal"}, "ci_fleet_master": {"minions": minions}}, {}, orchestration.salt_local(client),
            sleep=sleep, join_timeout=120, inline=orchestration.InlinePillar(self.inline_dir),
            clock=lambda: now[0], run_budget_seconds=300, state_dir=os.path.join(self.dir, "state"))
        with self.assertLogs(orchestration.log, "WARNING") as logs:
            self.assertEqual(orchestrator.join_teleport_nodes(), [])
        started = [p["tgt"] for p in client.publications if p["fun"] == "state.apply"]
        # Joins start at t=0, ~126, ~252; the fourth would start past 300 s.
        self.assertEqual(len(started), 3)
        self.assertEqual([p["fun"] for p in client.publications].count("ci_fleet_teleport.remove_token"), 3)
        self.assertTrue(any("budget" in line for line in logs.output))
        self.assertLessEqual(now[0], 300 + 130)


class RootedRunnerTeleportTest(unittest.TestCase):
    """Root on prod-default-r1 (untrusted pull-request code) against the Teleport orchestration:
    it can stop its agent, answer anything to any question, announce any hostname, address or
    label in Teleport. It must get no token for another machine, no labels of another machine,
    and announcing labels it was not given gets it locked."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.inline_dir = os.path.join(self.dir, "inline")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def tokens_in_pillars(self):
        """minion id -> the join token its pillar would serve now (every minion's, rendered)."""
        return {m: read_inline(self.inline_dir, m).get("teleport_join_token") for m in MINIONS}

    def test_a_runner_that_stops_its_agent_gets_a_token_only_in_its_own_pillar(self):
        # Everyone is joined except the rooted runner, which stopped its agent (its node expired).
        client = FakeLocalClient(joined=["prod-default-r2", "prod-release-r1", "prod-salt-master"])
        seen = {}
        original = client.execute

        def execute(tgt, fun, arg, kwarg):
            if fun == "state.apply":
                seen[tgt] = self.tokens_in_pillars()
            return original(tgt, fun, arg, kwarg)

        client.execute = execute
        with Harness(client, FakeGitHubHTTP(), self.inline_dir):
            self.assertEqual(orchestration.join_teleport_nodes(), ["prod-default-r1"])
        # While the token existed, only prod-default-r1's own pillar served it.
        holders = {m for m, token in seen["prod-default-r1"].items() if token}
        self.assertEqual(holders, {"prod-default-r1"})
        self.assertEqual(list(seen), ["prod-default-r1"])
        self.assertEqual(client.tokens, 1)
        # Revoked after the join was seen, and no copy is left anywhere.
        self.assertEqual([p["fun"] for p in client.publications].count("ci_fleet_teleport.remove_token"), 1)
        self.assertEqual({m: t for m, t in self.tokens_in_pillars().items() if t}, {})
        self.assertEqual(OrchestrationConformanceTest.published_tokens(self, client), [])

    def test_what_a_minion_says_about_itself_is_never_asked(self):
        # A rooted runner would claim in its grains to be prod-release-r1 (the fake answers so):
        # the orchestration never reads grains; the token goes by the master's own minion list.
        client = FakeLocalClient(joined=["prod-default-r2", "prod-release-r1", "prod-salt-master"])
        with Harness(client, FakeGitHubHTTP(), self.inline_dir) as harness:
            orchestration.join_teleport_nodes()
            orchestration.assign_teleport_labels()
        self.assertEqual([p for p in client.publications if p["fun"].startswith("grains.")], [])
        self.assertEqual(sorted(harness.pillar_reads), ["prod-default-r1"])

    def test_a_runner_claiming_another_machines_hostname_gets_no_token_for_it(self):
        # prod-release-r1 has not joined; the rooted prod-default-r1 stopped its own agent and
        # announces prod-release-r1's hostname from a second node. Teleport's list then shows
        # prod-release-r1 and no prod-default-r1: the master mints one token, for the name it
        # sees missing, into that minion's own pillar; prod-release-r1's pillar gets nothing.
        client = FakeLocalClient(joined=["prod-default-r2", "prod-release-r1", "prod-salt-master"])
        seen = {}
        original = client.execute

        def execute(tgt, fun, arg, kwarg):
            if fun == "state.apply":
                seen[tgt] = {m: t for m, t in self.tokens_in_pillars().items() if t}
            return original(tgt, fun, arg, kwarg)

        client.execute = execute
        with Harness(client, FakeGitHubHTTP(), self.inline_dir):
            orchestration.join_teleport_nodes()
        self.assertEqual(list(seen), ["prod-default-r1"])
        self.assertEqual(list(seen["prod-default-r1"]), ["prod-default-r1"])
        self.assertEqual(client.tokens, 1)

    def test_aws_mints_no_token_at_all(self):
        client = FakeLocalClient(joined=[])
        with Harness(client, FakeGitHubHTTP(), self.inline_dir, provider="aws"):
            self.assertEqual(orchestration.join_teleport_nodes(), [])
        self.assertEqual(client.tokens, 0)
        self.assertEqual([p for p in client.publications if p["fun"] in ("ci_fleet_teleport.node_token", "state.apply")], [])

    def test_an_unknown_provider_mints_nothing(self):
        client = FakeLocalClient(joined=[])
        with Harness(client, FakeGitHubHTTP(), self.inline_dir, provider=None):
            with self.assertLogs(orchestration.log, "WARNING"):
                self.assertEqual(orchestration.join_teleport_nodes(), [])
        self.assertEqual(client.tokens, 0)

    def honest_nodes(self):
        return [node("h-master", "prod-salt-master"), node("h-teleport", "prod-teleport", own=True),
                node("h-d1", "prod-default-r1"), node("h-d2", "prod-default-r2"), node("h-r1", "prod-release-r1")]

    def test_each_machine_gets_exactly_its_own_labels_from_its_pillar(self):
        client = FakeLocalClient(nodes=self.honest_nodes())
        with Harness(client, FakeGitHubHTTP(), self.inline_dir):
            result = orchestration.assign_teleport_labels()
        self.assertEqual(sorted(result["assigned"]), sorted(MINIONS))
        self.assertEqual(client.server_infos, {
            "h-master": assigned_labels("prod-salt-master"), "h-teleport": assigned_labels("prod-teleport"),
            "h-d1": assigned_labels("prod-default-r1"), "h-d2": assigned_labels("prod-default-r2"),
            "h-r1": assigned_labels("prod-release-r1")})
        self.assertEqual(client.locks, [])
        # Every label written is a dynamic/ label: the only keys the roles select on.
        for labels in client.server_infos.values():
            self.assertTrue(all(k.startswith("dynamic/") for k in labels))
        # A second round changes nothing.
        before = len([p for p in client.publications if p["fun"] == "ci_fleet_teleport.assign_labels"])
        with Harness(client, FakeGitHubHTTP(), self.inline_dir):
            orchestration.assign_teleport_labels()
        self.assertEqual(len([p for p in client.publications if p["fun"] == "ci_fleet_teleport.assign_labels"]), before)

    def test_a_runner_announcing_labels_it_was_not_given_is_locked(self):
        nodes = self.honest_nodes()
        nodes[2]["labels"] = {"dynamic/role": "runner", "dynamic/queue": "release", "dynamic/stack": STACK}
        client = FakeLocalClient(nodes=nodes, server_infos={"h-d1": assigned_labels("prod-default-r1")})
        with Harness(client, FakeGitHubHTTP(), self.inline_dir):
            with self.assertLogs(orchestration.log, "ERROR"):
                result = orchestration.assign_teleport_labels()
        self.assertEqual(client.locks, ["h-d1"])
        self.assertEqual(result["locked"], ["h-d1"])
        self.assertEqual(client.server_infos["h-d1"], assigned_labels("prod-default-r1"))   # never rewritten

    def test_a_node_with_dynamic_labels_and_no_assignment_is_locked(self):
        nodes = self.honest_nodes() + [node("h-rogue", "prod-rogue", addr="10.0.1.10:3023",
                                            labels={"dynamic/role": "salt-master"})]
        client = FakeLocalClient(nodes=nodes)
        with Harness(client, FakeGitHubHTTP(), self.inline_dir):
            with self.assertLogs(orchestration.log, "ERROR"):
                orchestration.assign_teleport_labels()
        self.assertEqual(client.locks, ["h-rogue"])
        self.assertNotIn("h-rogue", client.server_infos)

    def test_an_impostor_of_a_machines_name_gets_none_of_its_labels(self):
        # The rooted runner joins a second node announcing prod-release-r1's hostname, at its own
        # address or at M's address too: M itself reports its host id (h-r1, signed with its own
        # Salt key), so the other node is no one's: locked, and M gets its labels either way.
        for impostor_addr in ("10.0.1.10:3022", "10.0.1.12:3022"):
            nodes = self.honest_nodes() + [node("h-impostor", "prod-release-r1", addr=impostor_addr)]
            client = FakeLocalClient(nodes=nodes, host_uuids=HOST_UUIDS)
            with Harness(client, FakeGitHubHTTP(), self.inline_dir):
                with self.assertLogs(orchestration.log, "ERROR"):
                    result = orchestration.assign_teleport_labels()
            self.assertNotIn("h-impostor", client.server_infos)
            self.assertEqual(client.locks, ["h-impostor"])
            self.assertEqual(client.server_infos["h-r1"], assigned_labels("prod-release-r1"))

    def test_a_runner_claiming_the_teleport_machine_is_not_taken_for_it(self):
        nodes = self.honest_nodes() + [node("h-fake-teleport", "prod-teleport")]
        client = FakeLocalClient(nodes=nodes)
        with Harness(client, FakeGitHubHTTP(), self.inline_dir):
            orchestration.assign_teleport_labels()
        self.assertEqual(client.server_infos["h-teleport"], assigned_labels("prod-teleport"))
        self.assertNotIn("h-fake-teleport", client.server_infos)

    def test_no_labels_and_no_locks_while_the_teleport_machine_does_not_answer(self):
        client = FakeLocalClient(nodes=self.honest_nodes(), teleport_down=True)
        with Harness(client, FakeGitHubHTTP(), self.inline_dir):
            with self.assertLogs(orchestration.log, "WARNING"):
                self.assertEqual(orchestration.assign_teleport_labels(),
                                 {"assigned": [], "locked": [], "lock_failed": [], "control_plane": [], "errors": []})
        self.assertEqual(client.server_infos, {})


if __name__ == "__main__":
    result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
    sys.exit(0 if result.wasSuccessful() else 1)
