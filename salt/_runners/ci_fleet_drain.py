"""ci_fleet_drain runner module: drain a runner before `pulumi up` deletes its machine
(loaded through runner_dirs).

  salt-run ci_fleet_drain.run                   one pass over every drain request (master schedule, every minute)
  salt-run ci_fleet_drain.cancel minion=ID      withdraw a request and put the runner back to work
                                                (after an aborted `pulumi up`)

A maintainer's `pulumi up` cannot reach the fleet's network. Before it deletes or replaces a
runner, its resource hook (infra/fleet/drain-hook.ts) writes a request to SSM,
`/ci-fleet/<stack>/salt-master/drain/<minion-id>` (a String parameter, JSON: docs/contracts.md,
"Drain request"), and waits for the answer this module writes into the same parameter:

- `drained`: the agent takes no job any more and its running job has ended;
- `timed out`: the request's deadline passed with a job still running;
- `unreachable`: the minion did not answer for UNREACHABLE_GRACE_SECONDS (down or cut off:
  nothing can stop its agent, and a dead machine runs no job);
- `not managed`: not a runner of this master (no pillar document).

The hook lets the delete go on after any of them. How a runner is drained:

- Buildkite: a runtime drop-in first, DRAIN_DROPIN (`[Service] Restart=no`, `[Unit]
  ConditionPathExists=!` itself), then `systemctl daemon-reload`. Not `systemctl mask --runtime`:
  the unit file is in /etc/systemd/system, which ranks above /run/systemd/system in the unit
  search path, so a /run mask is shadowed (systemd issue #10583) although the command succeeds.
  Drop-ins of every directory are merged, so this one applies; daemon-reload re-reads the
  running unit's settings, and Restart= is read when the agent exits (service_shall_restart),
  while conditions are not re-checked for an automatic restart (unit_start skips them while
  activating): hence Restart=no for the running agent, the condition for any explicit start,
  and an `unless` on the highstate's service.running. /run is emptied at reboot, the drop-in
  with it. Then ONE SIGTERM to the agent's main process: buildkite-agent 3.123.1 stops
  gracefully on the first SIGTERM (finishes its job, then exits; disconnect-after-job makes it
  exit after that job anyway) and cancels the job on the second, so a pid is never signalled
  twice (the request records it before the signal). Drained when `systemctl show` reports the
  drop-in loaded (DropInPaths, Restart=no, NeedDaemonReload=no) and the unit inactive.
- GitHub Actions: a just-in-time runner is single use. While a request exists, a marker file
  under DRAIN_DIR makes ci_fleet.register_github_runners mint no new config for that minion.
  An idle runner is deleted at GitHub (DELETE refuses a busy runner with 422, so a runner that
  took a job meanwhile keeps it); a busy one runs its job, after which GitHub removes it.
  Drained when GitHub no longer lists the runner and its unit is down.

Every Salt call targets the minion id and checks first, when the request names the machine's
private address, that the minion answering is that machine (its `ipv4` grain): during a
provider move two machines carry one name, and only a master that reaches the machine being
deleted acts. Another master leaves a request alone once one has taken it on (`draining`), and
calls it `unreachable` if nobody has within UNREACHABLE_GRACE_SECONDS.

Two masters also run this during a `pulumi up` that replaces the master: the old one until it
is deleted, the new one from its first boot, and every minion follows the control-plane name
(`<stack>-salt-master.<zone>`) to the new one. The old master then reaches no minion, and would
call a runner `unreachable` while it runs its job under the new master; the hook would delete
it. So a master that the name no longer resolves to (no address the name has now is one of
this machine's: `in_charge`) stands down: it writes nothing for a minion it cannot reach, and
leaves the answer to the master the minions follow. A name that cannot be resolved at all says
nothing about who is in charge: the master acts as before (logged).

SSM is reached with Debian's python3 and boto3 (the same interpreter and package as the pillar
sync): the Python Salt runs in (onedir) has no AWS SDK, so this file runs itself as a script
for each call (`_main` below). The logic is in `Drainer` with every dependency injected, so
test/drain/test_drain_runner.py runs it with fakes.
"""
import argparse
import copy
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import time

log = logging.getLogger(__name__)

# The runner functions Salt's loader exposes (salt/loader/lazy.py `_load_module`: `__load__`
# before `__all__` and dir()); everything else here is a helper.
__load__ = ["run", "cancel"]

# Under the reserved `salt-master` level (infra/identity/policies.ts drainRequestPath).
REQUEST_PATH = "/ci-fleet/%s/salt-master/drain"
# One empty file per minion under drain; ci_fleet.py register_github_runners reads the same path.
DRAIN_DIR = "/var/lib/ci-fleet/drain"
# A minion silent this long is `unreachable` (5 passes: a minion restart or a network blip is not).
UNREACHABLE_GRACE_SECONDS = 300
# A request whose machine was not deleted (an aborted `pulumi up`) is withdrawn this long after its deadline.
REQUEST_TTL_SECONDS = 24 * 3600
FINAL_STATES = ("drained", "timed out", "unreachable", "not managed")
AGENTS = ("buildkite", "github-actions")
# Debian's interpreter with python3-boto3 (installed by salt_master.pillar_sync).
SYSTEM_PYTHON = "/usr/bin/python3"
MINION_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
SIGTERM = 15
# The Buildkite drain: a runtime drop-in (gone at reboot) that salt/buildkite/service.sls's
# service.running also tests (`unless`). "zz-": parsed after every other drop-in, so its
# Restart= is the one in effect.
DRAIN_DROPIN = "/run/systemd/system/%s.d/zz-ci-fleet-drain.conf"


def drain_dropin_lines(unit):
    """The drop-in's lines (file.write with `args=`: a positional `KEY=value` is a kwarg to Salt)."""
    path = DRAIN_DROPIN % unit
    return ["# Written by ci_fleet_drain (salt/_runners/ci_fleet_drain.py): this runner is drained.",
            "[Unit]",
            "ConditionPathExists=!" + path,
            "[Service]",
            "Restart=no"]


def _drain_loaded(shown, path):
    """Does `systemctl show` (service.show) say the drop-in is in the unit's loaded config?"""
    return isinstance(shown, dict) and path in str(shown.get("DropInPaths", "")).split() \
        and shown.get("Restart") == "no" and shown.get("NeedDaemonReload") == "no"


def control_plane_name(stack, teleport_auth_address):
    """`<stack>-salt-master.<zone>` (infra/fleet/control-plane-dns.ts controlPlaneNames), the zone
    taken from the auth service's stable name in the master's pillar (`<stack>-teleport.<zone>:3025`).
    None when that address is not such a name."""
    host = str(teleport_auth_address or "").rsplit(":", 1)[0]
    prefix = "%s-teleport." % stack
    zone = host[len(prefix):] if host.startswith(prefix) else ""
    if not zone or not re.match(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$", zone):
        return None
    return "%s-salt-master.%s" % (stack, zone)


def _resolve_ipv4(name):
    """The name's current IPv4 addresses (the system resolver, as minions resolve it)."""
    import socket

    return sorted({info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)})


def _is_local_ipv4(address):
    """Is `address` one of this machine's? Binding to it succeeds only then (EADDRNOTAVAIL otherwise)."""
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((address, 0))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def in_charge(name, resolve=_resolve_ipv4, is_local=_is_local_ipv4):
    """True when the control-plane name resolves to this machine, False when it resolves only
    elsewhere (another master took over), None when it cannot be told (no name, no answer)."""
    if not name:
        return None
    try:
        addresses = resolve(name)
    except Exception as error:  # noqa: BLE001 - resolver errors are many; none decides
        log.warning("drain: %s does not resolve (%s): acting as the master in charge", name, error)
        return None
    if not addresses:
        return None
    return any(is_local(address) for address in addresses)


def _load_ci_fleet():
    """salt/_runners/ci_fleet.py beside this file: the GitHub client, the unit names, salt_local."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ci_fleet.py")
    spec = importlib.util.spec_from_file_location("ci_fleet_for_drain", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SsmError(Exception):
    """SSM could not be read or written: this pass changes nothing."""


# --- SSM, as a script run by Debian's python3 ------------------------------------------

def _ssm_list(client, path):
    """{name: value} of every parameter directly under `path`."""
    found, kwargs = {}, {"Path": path, "Recursive": False, "MaxResults": 10}
    while True:
        page = client.get_parameters_by_path(**kwargs)
        for parameter in page.get("Parameters", []):
            found[parameter["Name"]] = parameter["Value"]
        if not page.get("NextToken"):
            return found
        kwargs["NextToken"] = page["NextToken"]


def _ssm_put(client, name, value):
    client.put_parameter(Name=name, Value=value, Type="String", Tier="Standard", Overwrite=True)


def _ssm_delete(client, name):
    try:
        client.delete_parameter(Name=name)
    except client.exceptions.ParameterNotFound:
        pass


def _main(argv=None, client=None):
    parser = argparse.ArgumentParser(description="ci_fleet_drain's SSM calls (run by the runner module)")
    parser.add_argument("action", choices=["list", "put", "delete"])
    parser.add_argument("--region", required=True)
    parser.add_argument("--path")
    parser.add_argument("--name")
    args = parser.parse_args(argv)
    if client is None:
        import boto3  # Debian python3-boto3; imported here so tests need no AWS SDK.
        client = boto3.client("ssm", region_name=args.region)
    try:
        if args.action == "list":
            print(json.dumps(_ssm_list(client, args.path), sort_keys=True))
        elif args.action == "put":
            _ssm_put(client, args.name, sys.stdin.read())
        else:
            _ssm_delete(client, args.name)
    except Exception as error:  # noqa: BLE001 - reported to the runner module, which retries next pass
        print("%s: %s" % (type(error).__name__, error), file=sys.stderr)
        return 1
    return 0


class DrainRequests:
    """The stack's drain requests in SSM, {minion_id: request}, through `_main` above."""

    def __init__(self, stack, region, run=subprocess.run, python=SYSTEM_PYTHON, script=None):
        self.path = REQUEST_PATH % stack
        self.region, self.run, self.python = region, run, python
        self.script = script or os.path.abspath(__file__)

    def _call(self, args, payload=None):
        env = dict(os.environ)
        env.setdefault("HOME", "/root")   # boto3 finds root's AWS config (salt/aws_credentials) there
        done = self.run([self.python, self.script] + list(args) + ["--region", self.region],
                        input=payload, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        universal_newlines=True, timeout=60, env=env, check=False)
        if done.returncode != 0:
            lines = (done.stderr or "").strip().splitlines()
            raise SsmError(lines[-1] if lines else "SSM call failed (exit %s)" % done.returncode)
        return done.stdout

    def name(self, minion_id):
        return "%s/%s" % (self.path, minion_id)

    def list(self):
        requests = {}
        for name, value in json.loads(self._call(["list", "--path", self.path]) or "{}").items():
            minion_id = name[len(self.path) + 1:]
            try:
                request = json.loads(value)
            except ValueError:
                request = None
            if not name.startswith(self.path + "/") or not MINION_ID_PATTERN.match(minion_id) \
                    or not isinstance(request, dict) or request.get("minion_id") != minion_id:
                log.error("ignoring malformed drain request %s", name)
                continue
            requests[minion_id] = request
        return requests

    def put(self, minion_id, request):
        self._call(["put", "--name", self.name(minion_id)], payload=json.dumps(request, sort_keys=True))

    def delete(self, minion_id):
        self._call(["delete", "--name", self.name(minion_id)])


class DrainMarkers:
    """Root-only marker files, one per minion under drain (ci_fleet.register_github_runners)."""

    def __init__(self, directory=DRAIN_DIR):
        self.directory = directory

    def sync(self, minion_ids):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)
        wanted = {m for m in minion_ids if MINION_ID_PATTERN.match(m)}
        for minion_id in sorted(wanted):
            path = os.path.join(self.directory, minion_id)
            if not os.path.exists(path):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        for name in sorted(os.listdir(self.directory)):
            if name not in wanted:
                os.unlink(os.path.join(self.directory, name))

    def present(self):
        try:
            return sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []


class Drainer:
    """One pass: advance every request a step, write back what changed.

    local(tgt, fun, arg=(), kwarg=None) -> {minion_id: return} of the minions that answered
    (ci_fleet.salt_local). minions: the master's index (ci_fleet_master:minions); runner_pillar:
    minion id -> its ci_fleet:runner. Both come from the program's pillar documents, never from
    anything a minion says."""

    def __init__(self, stack, minions, runner_pillar, local, requests, markers, github=None,
                 clock=time.time, buildkite_unit="buildkite-agent.service",
                 github_unit="actions-runner.service", in_charge=lambda: None):
        self.stack, self.minions, self.runner_pillar = stack, minions, runner_pillar
        self.local, self.requests, self.markers, self.github = local, requests, markers, github
        self.clock, self.buildkite_unit, self.github_unit = clock, buildkite_unit, github_unit
        # in_charge() -> True/False/None (module function `in_charge`), asked once per pass.
        self.in_charge, self.standing_down = in_charge, False

    def run(self):
        """{minion_id: state after this pass} ("withdrawn" for a request removed)."""
        requests = self.requests.list()   # SsmError: nothing changes, markers included
        self.standing_down = self.in_charge() is False
        if self.standing_down and requests:
            log.warning("drain: the control-plane name resolves to another Salt master: this one "
                        "writes nothing for a minion it cannot reach")
        # Markers first: no just-in-time config may be minted while this pass drains.
        self.markers.sync(requests)
        summary = {}
        for minion_id in sorted(requests):
            before = requests[minion_id]
            try:
                after = self.advance(minion_id, copy.deepcopy(before))
                if after is None:
                    self.requests.delete(minion_id)
                    summary[minion_id] = "withdrawn"
                    continue
                if after != before:
                    self.requests.put(minion_id, after)
                summary[minion_id] = after.get("state")
            except Exception:  # noqa: BLE001 - one request must not stop the others
                log.exception("drain of %s: this pass failed, the next one retries", minion_id)
                summary[minion_id] = before.get("state")
        self.markers.sync([m for m, state in summary.items() if state != "withdrawn"])
        return summary

    # -- one request ----------------------------------------------------------------------
    def advance(self, minion_id, request):
        """The request after one step, or None when it is to be withdrawn."""
        now = self.clock()
        deadline = request.get("deadline")
        if not isinstance(deadline, (int, float)) or not isinstance(request.get("requested_at"), (int, float)):
            log.error("drain request of %s has no deadline: left alone", minion_id)
            return request
        state = request.get("state", "requested")
        if state in FINAL_STATES:
            if now > deadline + REQUEST_TTL_SECONDS:
                # Its machine was not deleted (an aborted `pulumi up`): put it back to work.
                self._undrain(minion_id, request)
                return None
            if (request.get("machine") or {}).get("private_ipv4") and self._where(minion_id, request) == "elsewhere":
                # Another machine answers by that name: the drained one is gone (replaced) and the
                # hook's own removal did not happen. The new machine may take jobs.
                return None
            return request
        spec = self.minions.get(minion_id) or {}
        if spec.get("role") != "runner" or spec.get("agent") not in AGENTS:
            return self._finish(request, "not managed",
                                "%s is not a runner of this Salt master (no pillar document for it)" % minion_id)
        if now >= deadline:
            return self._finish(request, "timed out",
                                "%s was still running a job at the deadline" % minion_id)
        where = self._where(minion_id, request)
        if where == "elsewhere" and state != "requested":
            return request   # another master (the machine's own) has taken it on
        if where != "here":
            if self.standing_down:
                # The minions follow the name to another master: it answers this request.
                return request
            since = request.setdefault("unanswered_since", now)
            if now - since >= UNREACHABLE_GRACE_SECONDS:
                why = ("did not answer the Salt master" if where is None else
                       "answered the Salt master only from another machine of that name (not %s)"
                       % request["machine"]["private_ipv4"])
                return self._finish(request, "unreachable", "%s %s for %d s" % (minion_id, why, now - since))
            return request
        request.pop("unanswered_since", None)
        if spec["agent"] == "buildkite":
            return self._drain_buildkite(minion_id, request, now)
        return self._drain_github(minion_id, request, now)

    def _finish(self, request, state, message):
        request.pop("unanswered_since", None)
        request.update(state=state, message=message, finished_at=self.clock())
        log.info("drain of %s: %s (%s)", request.get("minion_id"), state, message)
        return request

    def _where(self, minion_id, request):
        """"here" when the minion answering is the machine of the request, "elsewhere" when it
        is another machine of that name, None when no minion answers."""
        addresses = self.local(minion_id, "grains.get", arg=["ipv4"]).get(minion_id)
        if addresses is None:
            return None
        want = (request.get("machine") or {}).get("private_ipv4")
        if want and isinstance(addresses, list) and want not in addresses:
            log.info("drain of %s: the minion answering is not %s: another master's", minion_id, want)
            return "elsewhere"
        return "here"

    def _drain_buildkite(self, minion_id, request, now):
        unit = self.buildkite_unit
        path = DRAIN_DROPIN % unit
        shown = self.local(minion_id, "service.show", arg=[unit]).get(minion_id)
        if not _drain_loaded(shown, path):
            # First pass, or /run was emptied (a reboot) or the file removed: write it again.
            if request.get("state") == "draining":
                log.warning("drain of %s: %s is not loaded any more; writing it again", minion_id, path)
            self.local(minion_id, "file.mkdir", arg=[os.path.dirname(path)])
            self.local(minion_id, "file.write", arg=[path], kwarg={"args": drain_dropin_lines(unit)})
            self.local(minion_id, "service.systemctl_reload")
            shown = self.local(minion_id, "service.show", arg=[unit]).get(minion_id)
            if not _drain_loaded(shown, path):
                log.warning("drain of %s: systemd did not load %s; next pass", minion_id, path)
                return request
        try:
            pid = int(shown.get("MainPID", ""))
        except (TypeError, ValueError):
            log.warning("drain of %s: no MainPID of %s; next pass", minion_id, unit)
            return request
        request.update(state="draining", started_at=request.get("started_at", now))
        signalled = list(request.get("signalled_pids") or [])
        if pid > 0 and pid not in signalled:
            # Any agent not yet told (the first, one after a reboot, one an auto-restart already
            # queued before the reload started). Written before the signal: a second SIGTERM to
            # one pid would cancel its job.
            request["signalled_pids"] = signalled + [pid]
            self.requests.put(minion_id, request)
            self.local(minion_id, "ps.kill_pid", kwarg={"pid": pid, "signal": SIGTERM})
            return request
        if shown.get("ActiveState") in ("inactive", "failed"):
            return self._finish(request, "drained",
                                "%s finished its job and stays stopped (Restart=no from %s until reboot)" % (unit, path))
        return request

    def _drain_github(self, minion_id, request, now):
        org = (self.runner_pillar.get(minion_id) or {}).get("github_organization")
        if self.github is None or not org:
            log.error("drain of %s: no GitHub App or organisation on this master; next pass", minion_id)
            return request
        request.update(state="draining", started_at=request.get("started_at", now))
        for runner in self.github.runners(org):
            if runner.get("name") != minion_id:
                continue
            if runner.get("busy"):
                return request   # its one job runs; GitHub removes the ephemeral runner after it
            try:
                # Idle: it takes no job from now on. GitHub refuses (422) a runner that is busy by now.
                self.github.delete_runner(org, runner["id"])
            except RuntimeError as error:
                log.info("drain of %s: GitHub kept the runner (%s): it runs a job", minion_id, error)
            return request
        if self.local(minion_id, "service.status", arg=[self.github_unit]).get(minion_id) is False:
            return self._finish(request, "drained",
                                "GitHub lists no runner %s and %s is down; no new just-in-time config while the request stands"
                                % (minion_id, self.github_unit))
        return request

    def _undrain(self, minion_id, request):
        """Put a drained runner back to work: remove the drain drop-in, reload, start the Buildkite
        agent (a GitHub runner only needs its marker gone: the next reconcile mints a config)."""
        spec = self.minions.get(minion_id) or {}
        if spec.get("agent") != "buildkite" or self._where(minion_id, request) != "here":
            return
        unit = self.buildkite_unit
        self.local(minion_id, "file.remove", arg=[DRAIN_DROPIN % unit])
        self.local(minion_id, "service.systemctl_reload")
        self.local(minion_id, "service.start", arg=[unit])

    def cancel(self, minion_id):
        """Withdraw a request now and put the runner back to work."""
        requests = self.requests.list()
        request = requests.get(minion_id)
        if request is None:
            return False
        self._undrain(minion_id, request)
        self.requests.delete(minion_id)
        self.markers.sync([m for m in requests if m != minion_id])
        return True


# --- Salt entry points (need a running master: __opts__, __salt__) ---------------------

def _drainer():
    import salt.client  # noqa: only on the master

    ci_fleet = _load_ci_fleet()
    master_id = __opts__["ci_fleet"]["master_minion_id"]  # noqa: F821 (Salt loader global)
    stack = master_id[: -len("-salt-master")]
    master_pillar = __salt__["pillar.show_pillar"](master_id)  # noqa: F821
    minions = master_pillar.get("ci_fleet_master", {}).get("minions", {})
    runner_pillar = {}
    for minion_id, spec in minions.items():
        if spec.get("agent") == "github-actions":
            pillar = __salt__["pillar.show_pillar"](minion_id)  # noqa: F821
            runner_pillar[minion_id] = pillar.get("ci_fleet", {}).get("runner", {})
    region = master_pillar.get("ci_fleet", {}).get("aws", {}).get("region")
    name = control_plane_name(stack, master_pillar.get("ci_fleet", {}).get("teleport", {}).get("auth_address"))
    app = master_pillar.get("ci_fleet_master", {}).get("github_app")
    # A short timeout: a silent minion costs each pass this long (UNREACHABLE_GRACE_SECONDS counts the passes).
    local = ci_fleet.salt_local(salt.client.LocalClient(mopts=__opts__), timeout=30)  # noqa: F821
    return Drainer(stack, minions, runner_pillar, local, DrainRequests(stack, region), DrainMarkers(),
                   github=ci_fleet.GitHub(app) if app else None,
                   buildkite_unit=ci_fleet._formula_defaults("buildkite")["unit"],
                   github_unit=ci_fleet.RUNNER_UNIT, in_charge=lambda: in_charge(name))


def run():
    try:
        return _drainer().run()
    except SsmError as error:
        log.error("drain requests unreadable (%s): nothing changed this pass", error)
        return {}


def cancel(minion):
    return _drainer().cancel(minion)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    sys.exit(_main())
