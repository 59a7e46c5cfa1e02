#!/usr/bin/python3
"""The master's drain runner (salt/_runners/ci_fleet_drain.py) against fakes shaped like the
upstream interfaces it uses, built on the fake Salt harness of test/orchestration:

- salt.client.LocalClient.cmd (full_return=True, as ci_fleet.salt_local calls it): a minion that
  does not answer is False, then dropped;
- Salt 3008 execution modules: grains.get ipv4 (a list of addresses), service.mask/masked/unmask
  with runtime=True (a symlink in /run/systemd/system: shadowed by the unit file in /etc),
  service.systemctl_reload, file.mkdir/write/remove, service.show (systemctl show: MainPID as a
  string, "0" when not running), service.status (systemctl is-active), service.start,
  ps.kill_pid(pid, signal) (psutil send_signal);
- buildkite-agent 3.123.1: the first SIGTERM stops the agent gracefully (it finishes its job,
  then exits), a second one cancels the job (clicommand/agent_start.go poolSignals); with
  disconnect-after-job it exits after each job and systemd's Restart= (as last loaded) decides
  whether it starts again (BuildkiteHost: systemd 255's unit search path and drop-ins);
- GitHub REST: runners list {total_count, runners:[{id,name,busy,...}]}; DELETE of a runner
  answers 204, or 422 while the runner is busy (actions-runner-controller
  runner_graceful_stop.go: "Runner ... is still running a job");
- SSM GetParametersByPath / PutParameter / DeleteParameter (boto3), through the module run as
  a script.

  python3 test/drain/test_drain_runner.py        (run by test/drain/drain-runner.test.ts)
"""
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from contextlib import redirect_stdout

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from load_script import ROOT, SALT, load  # noqa: E402


drain = load("ci_fleet_drain_under_test", os.path.join(SALT, "_runners", "ci_fleet_drain.py"))
# The orchestration's fakes (LocalClient, GitHub HTTP) and its harness of ci_fleet.py.
orch = load("orchestration_harness", os.path.join(ROOT, "test", "orchestration", "test_orchestration.py"))
ci_fleet = orch.orchestration

STACK = "prod"
BK, GH = "prod-release-r1", "prod-default-r1"
BK_UNIT, GH_UNIT = "buildkite-agent.service", "actions-runner.service"
T0 = 1_800_000_000
MINIONS = {
    "prod-salt-master": {"role": "salt-master"},
    "prod-teleport": {"role": "teleport"},
    GH: {"role": "runner", "queue": "default", "agent": "github-actions"},
    "prod-default-r2": {"role": "runner", "queue": "default", "agent": "github-actions"},
    BK: {"role": "runner", "queue": "release", "agent": "buildkite"},
}
DROPIN = "/run/systemd/system/buildkite-agent.service.d/zz-ci-fleet-drain.conf"


def _running_unless():
    """The `unless` of buildkite.service's service.running, as the minion renders it."""
    with open(os.path.join(SALT, "buildkite", "service.sls")) as handle:
        text = handle.read()
    block = text[text.index("buildkite-service-agent-service-running:"):]
    block = block[:block.index("\n\n")]
    found = re.search(r"^    - unless: (.+)$", block, re.M)
    return found.group(1).replace("{{ buildkite.unit }}", BK_UNIT) if found else None


BUILDKITE_RUNNING_UNLESS = _running_unless()
RUNNER_PILLAR = {GH: {"github_organization": "example-org"}, "prod-default-r2": {"github_organization": "example-org"}}


class BuildkiteHost:
    """A runner with buildkite-agent.service (unit file in /etc/systemd/system: Restart=always),
    disconnect-after-job, modelled on systemd 255:

    - the unit search path ranks /etc/systemd/system above /run/systemd/system: the first
      directory holding the unit's name wins, so a runtime mask (/run/.../<unit> -> /dev/null)
      is shadowed by the /etc file (systemd issue #10583; path-lookup.c);
    - drop-ins (<dir>/<unit>.d/*.conf) of every directory are merged, by file name, the first
      directory winning for one name; they are read at daemon-reload only, and systemctl show
      reports them (DropInPaths), the value in effect (Restart) and NeedDaemonReload;
    - Restart= is read when the main process exits (service.c service_shall_restart); an
      automatic restart checks no condition (unit.c unit_start: not while activating); an
      explicit start does, and does nothing (successfully) when one fails;
    - Salt's minion turns a positional `KEY=value` argument into a keyword argument."""

    def __init__(self, ipv4, busy=False, pid=4242):
        self.ipv4, self.job_running, self.pid = ipv4, busy, pid
        self.active = True
        self.files = {"/etc/systemd/system/" + BK_UNIT: "[Service]\nRestart=always\n"}
        self.links = {}                 # path -> target (symlinks: masks)
        self.daemon_reload()
        self.stopping = set()      # pids told to stop gracefully
        self.cancelled = []        # jobs cancelled by a second SIGTERM
        self.signals = []
        self.restarts = 0

    # -- systemd ----------------------------------------------------------------------
    UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system")

    def _fragment(self):
        for directory in self.UNIT_DIRS:
            path = "%s/%s" % (directory, BK_UNIT)
            if path in self.links:
                return "masked" if self.links[path] == "/dev/null" else path
            if path in self.files:
                return path
        return None

    def _dropins(self):
        chosen = {}
        for directory in self.UNIT_DIRS:
            prefix = "%s/%s.d/" % (directory, BK_UNIT)
            for path in self.files:
                name = path[len(prefix):]
                if path.startswith(prefix) and name.endswith(".conf") and "/" not in name:
                    chosen.setdefault(name, path)
        return [chosen[name] for name in sorted(chosen)]

    @staticmethod
    def _parse(text, settings):
        section = None
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                if key == "ConditionPathExists":
                    settings["conditions"].append(value)
                elif section == "Service" and key == "Restart":
                    settings["Restart"] = value

    def daemon_reload(self):
        fragment = self._fragment()
        loaded = {"load_state": "masked" if fragment == "masked" else "loaded", "Restart": "no",
                  "conditions": [], "dropins": self._dropins()}
        if fragment != "masked":
            self._parse(self.files[fragment], loaded)
            for path in loaded["dropins"]:
                self._parse(self.files[path], loaded)
        loaded["disk"] = (fragment, tuple(loaded["dropins"]))
        self.loaded = loaded

    def _conditions_hold(self):
        for condition in self.loaded["conditions"]:
            negate, path = condition.startswith("!"), condition.lstrip("!")
            if (path in self.files) == negate:
                return False
        return True

    def start(self):
        """An explicit start (systemctl start, the highstate's service.running)."""
        if self.loaded["load_state"] == "masked":
            raise RuntimeError("Unit %s is masked." % BK_UNIT)
        if not self.active and self._conditions_hold():
            self.active, self.pid = True, self.pid + 1
        return True                     # systemctl start exits 0 when a condition fails

    def highstate(self, unless):
        """buildkite.service's service.running, skipped when its `unless` command succeeds."""
        if unless and unless.startswith("test -e ") and unless[len("test -e "):] in self.files:
            return "skipped"
        return self.start()

    def _exit(self):
        """The agent process exits; systemd restarts it when Restart= (as loaded) says so."""
        if self.loaded["Restart"] == "always":
            self.pid += 1               # RestartSec=5 later; conditions not checked
            self.restarts += 1
        else:
            self.active = False

    def finish_job(self):
        self.job_running = False
        self._exit()               # disconnect-after-job

    def reboot(self):
        for path in [p for p in self.files if p.startswith("/run/")]:
            del self.files[path]
        self.links = {p: t for p, t in self.links.items() if not p.startswith("/run/")}
        self.daemon_reload()
        self.active, self.job_running = True, False
        self.pid += 100

    def show(self):
        disk = (self._fragment(), tuple(self._dropins()))
        return {"Id": BK_UNIT, "MainPID": str(self.pid if self.active else 0),
                "ActiveState": "active" if self.active else "inactive",
                "LoadState": self.loaded["load_state"], "Restart": self.loaded["Restart"],
                "DropInPaths": " ".join(self.loaded["dropins"]),
                "NeedDaemonReload": "yes" if disk != self.loaded["disk"] else "no"}

    # -- Salt execution modules -----------------------------------------------------------
    def execute(self, fun, arg, kwarg):
        # salt.utils.args.parse_input: a positional "KEY=value" reaches the function as a kwarg.
        if any(isinstance(a, str) and re.match(r"^[^\d\W][\w.-]*=(?!=)", a) for a in arg):
            raise AssertionError("%s: positional KEY=value would become a keyword argument: %s" % (fun, arg))
        unit_args = arg[:1] == [BK_UNIT]
        runtime_link = "/run/systemd/system/" + BK_UNIT
        if fun == "grains.get" and arg == ["ipv4"]:
            return ["127.0.0.1", self.ipv4]
        if fun == "service.mask" and unit_args and kwarg == {"runtime": True}:
            self.links[runtime_link] = "/dev/null"     # systemctl mask --runtime succeeds...
            self.daemon_reload()
            return True
        if fun == "service.masked" and unit_args and kwarg == {"runtime": True}:
            return self.links.get(runtime_link) == "/dev/null"   # Salt reads the symlink only
        if fun == "service.unmask" and unit_args and kwarg == {"runtime": True}:
            self.links.pop(runtime_link, None)
            self.daemon_reload()
            return True
        if fun == "service.show" and unit_args:
            return self.show()
        if fun == "service.status" and unit_args:
            return self.active
        if fun == "service.systemctl_reload" and not arg:
            self.daemon_reload()
            return True
        if fun == "service.start" and unit_args:
            return self.start()
        if fun == "file.mkdir" and len(arg) == 1:
            return True
        if fun == "file.write" and len(arg) == 1 and set(kwarg) == {"args"}:
            self.files[arg[0]] = "".join("%s\n" % line for line in kwarg["args"])
            return "Wrote %d lines to \"%s\"" % (len(kwarg["args"]), arg[0])
        if fun == "file.remove" and len(arg) == 1:
            return self.files.pop(arg[0], None) is not None
        if fun == "ps.kill_pid":
            pid, signal = kwarg["pid"], kwarg.get("signal", 15)
            self.signals.append((pid, signal))
            if pid != self.pid or not self.active:
                return False
            if signal == 15 and pid in self.stopping:
                if self.job_running:
                    self.cancelled.append(pid)
                    self.job_running = False
                self._exit()
            elif signal == 15:
                self.stopping.add(pid)
                if not self.job_running:
                    self._exit()
            return True
        raise AssertionError("unexpected publication %s %s %s" % (fun, arg, kwarg))


class GitHubHost:
    def __init__(self, ipv4, unit_active=True):
        self.ipv4, self.unit_active = ipv4, unit_active

    def execute(self, fun, arg, kwarg):
        if fun == "grains.get" and arg == ["ipv4"]:
            return [self.ipv4]
        if fun == "service.status" and arg == [GH_UNIT]:
            return self.unit_active
        if fun == "state.apply" and arg == ["github_runner"]:   # a new JIT config: the runner starts
            self.unit_active = True
            return True
        raise AssertionError("unexpected publication %s %s %s" % (fun, arg, kwarg))


class FakeFleet(orch.FakeLocalClient):
    """The orchestration's fake LocalClient, its minions modelled as machines."""

    def __init__(self, hosts, down=()):
        super().__init__(down=down)
        self.hosts = hosts

    def execute(self, tgt, fun, arg, kwarg):
        if tgt in self.hosts:
            return self.hosts[tgt].execute(fun, arg, kwarg)
        return super().execute(tgt, fun, arg, kwarg)


class GitHubAPI(orch.FakeGitHubHTTP):
    """GitHub refuses to delete a busy runner (422) and forgets a deleted one."""

    def __call__(self, method, url, headers, body=None):
        if method == "DELETE":
            self.calls.append((method, url))
            runner_id = int(url.rsplit("/", 1)[1])
            runner = next((r for r in self.runners if r["id"] == runner_id), None)
            if runner is None:
                return 404, None
            if runner["busy"]:
                return 422, {"message": 'Bad request - Runner "%s" is still running a job' % runner["name"]}
            self.runners.remove(runner)
            return 204, None
        return super().__call__(method, url, headers, body)


class FakeRequests:
    """The drain requests in SSM; `events` is shared with the fleet to check ordering."""

    def __init__(self, requests=(), events=None):
        self.store = {r["minion_id"]: dict(r) for r in requests}
        self.events = events if events is not None else []
        self.fail = False

    def list(self):
        if self.fail:
            raise drain.SsmError("AccessDeniedException")
        return json.loads(json.dumps(self.store))

    def put(self, minion_id, request):
        self.events.append(("put", request.get("state"), list(request.get("signalled_pids") or [])))
        self.store[minion_id] = json.loads(json.dumps(request))

    def delete(self, minion_id):
        self.events.append(("delete", minion_id))
        self.store.pop(minion_id, None)


def request(minion_id, ipv4=None, timeout_minutes=60, **extra):
    r = {"version": 1, "minion_id": minion_id, "urn": "urn:pulumi:prod::ci-fleet::x::%s" % minion_id,
         "requested_at": T0, "deadline": T0 + timeout_minutes * 60, "state": "requested"}
    if ipv4:
        r["machine"] = {"type": "aws:ec2/instance:Instance", "id": "i-0123", "private_ipv4": ipv4}
    r.update(extra)
    return r


class DrainTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.markers = drain.DrainMarkers(os.path.join(self.dir, "drain"))
        self.now = T0

    def tearDown(self):
        shutil.rmtree(self.dir)

    def drainer(self, fleet, requests, http=None):
        github = ci_fleet.GitHub(orch.GITHUB_APP, http=http, clock=lambda: T0, sign=lambda key, msg: b"sig") if http else None
        return drain.Drainer(STACK, MINIONS, RUNNER_PILLAR, ci_fleet.salt_local(fleet), requests, self.markers,
                             github=github, clock=lambda: self.now, buildkite_unit=BK_UNIT, github_unit=GH_UNIT)

    def functions(self, fleet):
        return [p["fun"] for p in fleet.publications]

    # -- Buildkite ----------------------------------------------------------------------
    def test_buildkite_drop_in_first_then_one_graceful_sigterm_then_wait_for_the_job(self):
        host = BuildkiteHost("10.0.1.17", busy=True)
        fleet = FakeFleet({BK: host})
        events = []
        original = fleet.execute

        def execute(tgt, fun, arg, kwarg):
            events.append(("publish", fun))
            return original(tgt, fun, arg, kwarg)

        fleet.execute = execute
        requests = FakeRequests([request(BK, "10.0.1.17")], events)
        drainer = self.drainer(fleet, requests)

        self.assertEqual(drainer.run(), {BK: "draining"})
        self.assertEqual(host.signals, [(4242, 15)])
        self.assertEqual(host.files[DROPIN], "".join(line + "\n" for line in drain.drain_dropin_lines(BK_UNIT)))
        self.assertEqual(host.show()["Restart"], "no")
        # Loaded (daemon-reload) before the signal; the request records the pid before the signal is sent.
        order = [e for e in events if e[0] == "put" or e[1] in ("file.write", "service.systemctl_reload", "ps.kill_pid")]
        self.assertEqual(order[:4], [("publish", "file.write"), ("publish", "service.systemctl_reload"),
                                     ("put", "draining", [4242]), ("publish", "ps.kill_pid")])

        for minute in range(1, 4):      # the job runs on: the master waits, never signals again
            self.now = T0 + 60 * minute
            self.assertEqual(drainer.run(), {BK: "draining"})
            self.assertEqual(host.highstate(BUILDKITE_RUNNING_UNLESS), "skipped")
        self.assertEqual(host.signals, [(4242, 15)])
        self.assertEqual(host.cancelled, [])

        host.finish_job()               # the agent exits after its job; Restart=no keeps it down
        self.assertEqual((host.active, host.restarts), (False, 0))
        self.now += 60
        self.assertEqual(drainer.run(), {BK: "drained"})
        self.assertEqual(requests.store[BK]["message"],
                         "buildkite-agent.service finished its job and stays stopped (Restart=no from %s until reboot)" % DROPIN)
        # Nothing starts it again: the highstate skips service.running, an explicit start fails its condition.
        self.assertEqual(host.highstate(BUILDKITE_RUNNING_UNLESS), "skipped")
        host.start()
        self.assertFalse(host.active)
        self.assertEqual(host.cancelled, [])
        self.assertEqual(set(self.functions(fleet)) - {"grains.get", "service.show", "file.mkdir", "file.write",
                                                       "service.systemctl_reload", "ps.kill_pid"}, set())

    def test_the_model_a_runtime_mask_is_shadowed_by_the_unit_file_in_etc(self):
        # What the runner did before: `systemctl mask --runtime` "succeeds" and Salt's masked()
        # says True, yet the unit still loads from /etc and Restart=always brings the agent back.
        host = BuildkiteHost("10.0.1.17", busy=True)
        self.assertTrue(host.execute("service.mask", [BK_UNIT], {"runtime": True}))
        self.assertTrue(host.execute("service.masked", [BK_UNIT], {"runtime": True}))
        self.assertEqual(host.show()["LoadState"], "loaded")
        host.execute("ps.kill_pid", [], {"pid": 4242, "signal": 15})
        host.finish_job()
        self.assertEqual((host.active, host.restarts, host.pid), (True, 1, 4243))
        # And without the drain's `unless` the highstate starts a stopped agent again.
        host.active = False
        host.highstate(None)
        self.assertTrue(host.active)

    def test_the_model_a_condition_does_not_stop_an_automatic_restart(self):
        # Why the drop-in sets Restart=no: ConditionPathExists= alone is not re-checked (unit.c).
        host = BuildkiteHost("10.0.1.17", busy=True)
        host.files["/run/systemd/system/%s.d/x.conf" % BK_UNIT] = "[Unit]\nConditionPathExists=!/nonexistent-but-negated\nConditionPathExists=/nowhere\n"
        host.daemon_reload()
        host.finish_job()
        self.assertEqual((host.active, host.restarts), (True, 1))

    def test_buildkite_idle_agent_stops_at_once(self):
        host = BuildkiteHost("10.0.1.17", busy=False)
        fleet = FakeFleet({BK: host})
        requests = FakeRequests([request(BK, "10.0.1.17")])
        drainer = self.drainer(fleet, requests)
        self.assertEqual(drainer.run(), {BK: "draining"})
        self.assertFalse(host.active)
        self.now += 60
        self.assertEqual(drainer.run(), {BK: "drained"})
        self.assertEqual((host.signals, host.restarts), ([(4242, 15)], 0))

    def test_buildkite_an_agent_restarted_after_the_reload_gets_its_own_single_sigterm(self):
        # An automatic restart queued before the reload (RestartSec=5) still happens: that
        # new agent is signalled once, the old pid never again.
        host = BuildkiteHost("10.0.1.17", busy=True)
        fleet = FakeFleet({BK: host})
        requests = FakeRequests([request(BK, "10.0.1.17")])
        drainer = self.drainer(fleet, requests)
        drainer.run()
        host.pid, host.job_running = 4243, False
        self.now += 60
        self.assertEqual(drainer.run(), {BK: "draining"})
        self.now += 60
        self.assertEqual(drainer.run(), {BK: "drained"})
        self.assertEqual(host.signals, [(4242, 15), (4243, 15)])
        self.assertEqual(host.cancelled, [])

    def test_buildkite_a_reboot_during_the_drain_writes_the_drop_in_again_and_signals_only_the_new_agent(self):
        host = BuildkiteHost("10.0.1.17", busy=True)
        fleet = FakeFleet({BK: host})
        requests = FakeRequests([request(BK, "10.0.1.17")])
        drainer = self.drainer(fleet, requests)
        drainer.run()
        host.reboot()                   # /run is emptied: the drop-in with it
        self.assertNotIn(DROPIN, host.files)
        self.now += 60
        self.assertEqual(drainer.run(), {BK: "draining"})
        self.assertEqual(host.signals, [(4242, 15), (4342, 15)])
        self.assertEqual(requests.store[BK]["signalled_pids"], [4242, 4342])
        self.assertIn(DROPIN, host.show()["DropInPaths"].split())
        self.assertFalse(host.active)   # the new agent was idle: it stopped and stays stopped
        self.now += 60
        self.assertEqual(drainer.run(), {BK: "drained"})

    # -- GitHub Actions ----------------------------------------------------------------
    def test_github_busy_runner_keeps_its_job_and_no_new_jit_config_is_minted_while_draining(self):
        http = GitHubAPI(runners=[orch.runner(7, GH, "default", busy=True), orch.runner(8, "prod-default-r2", "default")])
        host = GitHubHost("10.0.1.23")
        fleet = FakeFleet({GH: host})
        requests = FakeRequests([request(GH, "10.0.1.23")])
        drainer = self.drainer(fleet, requests, http)
        self.assertEqual(drainer.run(), {GH: "draining"})
        self.assertEqual(self.markers.present(), [GH])
        self.assertEqual([c for c in http.calls if c[0] == "DELETE"], [])   # busy: not even tried

        # The job ends: GitHub removes the ephemeral runner, the unit stops (its config is gone).
        http.runners = [r for r in http.runners if r["name"] != GH]
        host.unit_active = False
        # The unit's stop sends the master its event, and the 5-minute reconcile runs too: neither
        # mints a config for the runner under drain (the other runner is registered).
        jit = self.register_github_runners(http, fleet)
        self.assertEqual(jit, [])
        self.assertEqual(http.jit_requests, [])

        self.now += 60
        self.assertEqual(drainer.run(), {GH: "drained"})

        # The machine is deleted and the hook removes the request: the marker goes, minting resumes.
        requests.store.clear()
        self.now += 60
        self.assertEqual(drainer.run(), {})
        self.assertEqual(self.markers.present(), [])
        self.assertEqual(self.register_github_runners(http, fleet), [GH])

    def register_github_runners(self, http, fleet):
        saved = ci_fleet.DRAIN_DIR
        ci_fleet.DRAIN_DIR = self.markers.directory
        try:
            with orch.Harness(fleet, http, os.path.join(self.dir, "inline")):
                return ci_fleet.register_github_runners()
        finally:
            ci_fleet.DRAIN_DIR = saved

    def test_github_idle_runner_is_deleted_at_github_so_it_takes_no_job(self):
        http = GitHubAPI(runners=[orch.runner(7, GH, "default", busy=False)])
        host = GitHubHost("10.0.1.23")
        fleet = FakeFleet({GH: host})
        requests = FakeRequests([request(GH, "10.0.1.23")])
        drainer = self.drainer(fleet, requests, http)
        self.assertEqual(drainer.run(), {GH: "draining"})
        self.assertIn(("DELETE", ci_fleet.GITHUB_API + "/orgs/example-org/actions/runners/7"), http.calls)
        host.unit_active = False       # the deleted runner's listener exits
        self.now += 60
        self.assertEqual(drainer.run(), {GH: "drained"})

    def test_github_runner_that_took_a_job_meanwhile_is_refused_by_github_and_waited_for(self):
        http = GitHubAPI(runners=[orch.runner(7, GH, "default", busy=False)])
        real = http.__call__

        def racing(method, url, headers, body=None):
            if method == "DELETE":
                http.runners[0]["busy"] = True     # a job was assigned after the listing
            return real(method, url, headers, body)

        fleet = FakeFleet({GH: GitHubHost("10.0.1.23")})
        requests = FakeRequests([request(GH, "10.0.1.23")])
        drainer = self.drainer(fleet, requests, racing)
        self.assertEqual(drainer.run(), {GH: "draining"})
        self.assertEqual([r["name"] for r in http.runners], [GH])   # kept, with its job

    # -- what the hook is told ----------------------------------------------------------
    def test_a_silent_minion_is_unreachable_after_the_grace_and_nothing_else_is_published(self):
        fleet = FakeFleet({BK: BuildkiteHost("10.0.1.17")}, down={BK})
        requests = FakeRequests([request(BK, "10.0.1.17")])
        drainer = self.drainer(fleet, requests)
        for seconds in (0, 60, 120, 240):
            self.now = T0 + seconds
            self.assertEqual(drainer.run(), {BK: "requested"})
        self.now = T0 + drain.UNREACHABLE_GRACE_SECONDS
        self.assertEqual(drainer.run(), {BK: "unreachable"})
        self.assertEqual(requests.store[BK]["message"], "prod-release-r1 did not answer the Salt master for 300 s")
        self.assertEqual(set(self.functions(fleet)), {"grains.get"})

    def test_a_minion_of_no_pillar_document_is_not_managed_at_once(self):
        fleet = FakeFleet({})
        requests = FakeRequests([request("prod-default-r9", "10.0.1.99")])
        self.assertEqual(self.drainer(fleet, requests).run(), {"prod-default-r9": "not managed"})
        self.assertEqual(fleet.publications, [])

    def test_the_deadline_passes_with_the_job_still_running(self):
        host = BuildkiteHost("10.0.1.17", busy=True)
        fleet = FakeFleet({BK: host})
        requests = FakeRequests([request(BK, "10.0.1.17", timeout_minutes=10)])
        drainer = self.drainer(fleet, requests)
        drainer.run()
        self.now = T0 + 600
        self.assertEqual(drainer.run(), {BK: "timed out"})
        self.assertEqual(host.cancelled, [])   # the master never cancels a job: the hook decides

    def test_another_machine_of_that_name_is_never_drained(self):
        # A provider move: this master's minion of that name is the new machine, not the old one.
        host = BuildkiteHost("10.70.3.9")
        fleet = FakeFleet({BK: host})
        requests = FakeRequests([request(BK, "10.0.1.17")])
        drainer = self.drainer(fleet, requests)
        self.assertEqual(drainer.run(), {BK: "requested"})
        # Nobody reaches the old machine: unreachable after the grace, as if it were silent.
        self.now = T0 + drain.UNREACHABLE_GRACE_SECONDS
        self.assertEqual(drainer.run(), {BK: "unreachable"})
        self.assertIn("answered the Salt master only from another machine of that name (not 10.0.1.17)", requests.store[BK]["message"])
        self.assertEqual(set(self.functions(fleet)), {"grains.get"})
        self.assertNotIn(DROPIN, host.files)

    def test_a_request_another_master_has_taken_on_is_left_to_it(self):
        host = BuildkiteHost("10.70.3.9")
        fleet = FakeFleet({BK: host})
        requests = FakeRequests([request(BK, "10.0.1.17", state="draining", signalled_pids=[4242])])
        drainer = self.drainer(fleet, requests)
        for minute in range(0, 10):
            self.now = T0 + 60 * minute
            self.assertEqual(drainer.run(), {BK: "draining"})
        self.assertEqual(requests.events, [])
        self.assertNotIn(DROPIN, host.files)

    # Review of issue 13: during a `pulumi up` that replaces the master both masters run the
    # drain; the old one, which no minion follows any more, wrote `unreachable` and the hook
    # deleted the runner under its job.
    def test_a_master_the_control_plane_name_no_longer_resolves_to_stands_down(self):
        host = BuildkiteHost("10.0.1.17", busy=True)
        old_fleet = FakeFleet({BK: host}, down={BK})   # the minion followed the name away
        new_fleet = FakeFleet({BK: host})
        requests = FakeRequests([request(BK, "10.0.1.17")])
        name = drain.control_plane_name(STACK, "prod-teleport.fleet.example.org:3025")
        self.assertEqual(name, "prod-salt-master.fleet.example.org")
        resolves = {name: ["10.0.0.9"]}   # the new master's address
        old = drain.Drainer(STACK, MINIONS, RUNNER_PILLAR, ci_fleet.salt_local(old_fleet), requests, self.markers,
                            clock=lambda: self.now, buildkite_unit=BK_UNIT, github_unit=GH_UNIT,
                            in_charge=lambda: drain.in_charge(name, resolve=resolves.get, is_local=lambda a: a == "10.0.0.5"))
        new = drain.Drainer(STACK, MINIONS, RUNNER_PILLAR, ci_fleet.salt_local(new_fleet), requests, self.markers,
                            clock=lambda: self.now, buildkite_unit=BK_UNIT, github_unit=GH_UNIT,
                            in_charge=lambda: drain.in_charge(name, resolve=resolves.get, is_local=lambda a: a == "10.0.0.9"))
        seen = set()
        for minute in range(0, 30):
            self.now = T0 + 60 * minute
            if minute == 20:
                host.finish_job()
            # The old master's pass first: the worst order.
            seen.add(old.run()[BK])
            seen.add(new.run()[BK])
        self.assertNotIn("unreachable", seen)
        self.assertEqual(requests.store[BK]["state"], "drained")
        self.assertNotIn("unanswered_since", requests.store[BK])

    def test_the_master_in_charge_still_calls_a_silent_minion_unreachable(self):
        fleet = FakeFleet({BK: BuildkiteHost("10.0.1.17")}, down={BK})
        requests = FakeRequests([request(BK, "10.0.1.17")])
        name = "prod-salt-master.fleet.example.org"
        for verdict in (lambda: drain.in_charge(name, resolve=lambda n: ["10.0.0.9"], is_local=lambda a: True),
                        lambda: drain.in_charge(name, resolve=lambda n: (_ for _ in ()).throw(OSError("NXDOMAIN")))):
            requests.store[BK] = request(BK, "10.0.1.17")
            drainer = drain.Drainer(STACK, MINIONS, RUNNER_PILLAR, ci_fleet.salt_local(fleet), requests, self.markers,
                                    clock=lambda: self.now, buildkite_unit=BK_UNIT, github_unit=GH_UNIT, in_charge=verdict)
            self.now = T0
            drainer.run()
            self.now = T0 + drain.UNREACHABLE_GRACE_SECONDS
            self.assertEqual(drainer.run(), {BK: "unreachable"})

    def test_in_charge_compares_the_names_addresses_with_this_machines(self):
        self.assertIs(drain.in_charge("m.example", resolve=lambda n: ["10.0.0.9", "10.0.0.10"], is_local=lambda a: a == "10.0.0.10"), True)
        self.assertIs(drain.in_charge("m.example", resolve=lambda n: ["10.0.0.9"], is_local=lambda a: False), False)
        self.assertIsNone(drain.in_charge("m.example", resolve=lambda n: [], is_local=lambda a: False))
        self.assertIsNone(drain.in_charge(None))
        # The real probe: a bind succeeds only on an address of this machine.
        self.assertTrue(drain._is_local_ipv4("127.0.0.1"))
        self.assertFalse(drain._is_local_ipv4("192.0.2.1"))   # TEST-NET-1, on no interface
        self.assertIsNone(drain.control_plane_name(STACK, "10.0.0.7:3025"))
        self.assertIsNone(drain.control_plane_name(STACK, "other-teleport.example.org:3025"))

    def test_a_drained_request_whose_machine_was_replaced_is_withdrawn(self):
        fleet = FakeFleet({GH: GitHubHost("10.0.1.77")})     # the new machine, a new address
        requests = FakeRequests([request(GH, "10.0.1.23", state="drained")])
        self.assertEqual(self.drainer(fleet, requests).run(), {GH: "withdrawn"})
        self.assertEqual(requests.store, {})
        self.assertEqual(self.markers.present(), [])

    def test_an_aborted_pulumi_up_gives_the_runner_back_a_day_after_the_deadline(self):
        host = BuildkiteHost("10.0.1.17")
        fleet = FakeFleet({BK: host})
        requests = FakeRequests([request(BK, "10.0.1.17")])
        drainer = self.drainer(fleet, requests)
        drainer.run()
        self.now += 60
        self.assertEqual(drainer.run(), {BK: "drained"})
        self.now = T0 + 3600 + drain.REQUEST_TTL_SECONDS
        self.assertEqual(drainer.run(), {BK: "drained"})   # not yet
        self.now += 1
        self.assertEqual(drainer.run(), {BK: "withdrawn"})
        self.assertNotIn(DROPIN, host.files)
        self.assertEqual(host.show()["Restart"], "always")
        self.assertTrue(host.active)
        self.assertEqual(self.markers.present(), [])

    def test_cancel_puts_the_runner_back_to_work_now(self):
        host = BuildkiteHost("10.0.1.17")
        fleet = FakeFleet({BK: host})
        requests = FakeRequests([request(BK, "10.0.1.17"), request(GH, "10.0.1.23")])
        drainer = self.drainer(fleet, requests)
        self.markers.sync([BK, GH])
        self.assertTrue(drainer.cancel(BK))
        self.assertEqual(sorted(requests.store), [GH])
        self.assertEqual(self.markers.present(), [GH])
        self.assertNotIn(DROPIN, host.files)

    def test_unreadable_requests_change_nothing(self):
        self.markers.sync([GH])
        requests = FakeRequests()
        requests.fail = True
        with self.assertRaises(drain.SsmError):
            self.drainer(FakeFleet({}), requests).run()
        self.assertEqual(self.markers.present(), [GH])   # still no JIT config for it

    def test_markers_are_root_only(self):
        self.markers.sync([GH])
        self.assertEqual(os.stat(self.markers.directory).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(os.path.join(self.markers.directory, GH)).st_mode & 0o777, 0o600)


class SsmTest(unittest.TestCase):
    """The SSM side: the module run as a script by Debian's python3 (boto3 faked)."""

    class Boto3Ssm:
        class exceptions:
            class ParameterNotFound(Exception):
                pass

        def __init__(self, params):
            self.params, self.calls = dict(params), []

        def get_parameters_by_path(self, **kwargs):
            self.calls.append(("get_parameters_by_path", kwargs))
            names = sorted(n for n in self.params if n.rsplit("/", 1)[0] == kwargs["Path"])
            start = int(kwargs.get("NextToken", 0))
            page = names[start:start + kwargs["MaxResults"]]
            out = {"Parameters": [{"Name": n, "Value": self.params[n], "Type": "String"} for n in page]}
            if start + kwargs["MaxResults"] < len(names):
                out["NextToken"] = str(start + kwargs["MaxResults"])
            return out

        def put_parameter(self, **kwargs):
            self.calls.append(("put_parameter", kwargs))
            self.params[kwargs["Name"]] = kwargs["Value"]

        def delete_parameter(self, Name):
            self.calls.append(("delete_parameter", {"Name": Name}))
            if Name not in self.params:
                raise self.exceptions.ParameterNotFound(Name)
            del self.params[Name]

    def run_main(self, client, argv, stdin=""):
        out, saved = io.StringIO(), sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            with redirect_stdout(out):
                code = drain._main(argv, client=client)
        finally:
            sys.stdin = saved
        return code, out.getvalue()

    def test_list_pages_through_the_path_only(self):
        path = drain.REQUEST_PATH % STACK
        params = {"%s/prod-default-r%d" % (path, i): "{}" for i in range(12)}
        params["/ci-fleet/prod/pillar/prod-default-r1"] = "secret"
        client = self.Boto3Ssm(params)
        code, out = self.run_main(client, ["list", "--path", path, "--region", "us-east-2"])
        self.assertEqual(code, 0)
        self.assertEqual(sorted(json.loads(out)), sorted(n for n in params if n.startswith(path)))
        self.assertTrue(all(c[1]["Recursive"] is False for c in client.calls))

    def test_put_writes_a_plain_string_over_the_request(self):
        client = self.Boto3Ssm({})
        name = "/ci-fleet/prod/salt-master/drain/prod-default-r1"
        self.assertEqual(self.run_main(client, ["put", "--name", name, "--region", "us-east-2"], stdin='{"state": "drained"}')[0], 0)
        self.assertEqual(client.calls, [("put_parameter", {"Name": name, "Value": '{"state": "drained"}', "Type": "String", "Tier": "Standard", "Overwrite": True})])

    def test_delete_of_a_missing_request_is_fine(self):
        client = self.Boto3Ssm({})
        self.assertEqual(self.run_main(client, ["delete", "--name", "/ci-fleet/prod/salt-master/drain/x", "--region", "us-east-2"])[0], 0)

    def test_the_runner_module_calls_debians_python_and_drops_malformed_requests(self):
        path = drain.REQUEST_PATH % STACK
        seen = []

        def run(argv, **kwargs):
            seen.append((argv, kwargs.get("input")))
            if argv[2] == "list":
                listing = {
                    path + "/prod-default-r1": json.dumps(request(GH)),
                    path + "/prod-default-r2": json.dumps(request("prod-default-r3")),   # names another minion
                    path + "/Not_A_Minion": "{}",
                    path + "/prod-release-r1": "not json",
                }
                return subprocess.CompletedProcess(argv, 0, json.dumps(listing), "")
            if argv[2] == "put":
                return subprocess.CompletedProcess(argv, 1, "", "Traceback...\nAccessDeniedException: not authorized to perform: ssm:PutParameter\n")
            return subprocess.CompletedProcess(argv, 0, "", "")

        requests = drain.DrainRequests(STACK, "us-east-2", run=run, script="/srv/ci-fleet/repo/salt/_runners/ci_fleet_drain.py")
        self.assertEqual(list(requests.list()), [GH])
        self.assertEqual(seen[0][0], ["/usr/bin/python3", "/srv/ci-fleet/repo/salt/_runners/ci_fleet_drain.py", "list", "--path", path, "--region", "us-east-2"])
        with self.assertRaisesRegex(drain.SsmError, "^AccessDeniedException: not authorized to perform: ssm:PutParameter$"):
            requests.put(GH, request(GH))
        self.assertEqual(json.loads(seen[1][1]), request(GH))

    def test_only_run_and_cancel_are_runner_functions(self):
        self.assertEqual(drain.__load__, ["run", "cancel"])


if __name__ == "__main__":
    result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
    sys.exit(0 if result.wasSuccessful() else 1)
