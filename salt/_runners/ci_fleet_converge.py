"""Convergence that does not depend on first-boot timing (issue 13).

A machine's first highstate used to come only from its own first boot
(cloud-init/scripts/wait-for-master-and-highstate.sh), which waits a bounded time for the
master. A runner that booted before the control plane answered (the zone not delegated yet,
the master being replaced) and whose wait ran out was never highstated: nothing else asked.

Here the master asks. It keeps its own record, per minion, of

- `started`: when the minion last (re)started: the `salt/minion/<id>/start` event, through the
  reactor salt/orch/reactor/minion_start.sls, or the first time this master sees its accepted key;
- `converged`: the publish time of the last highstate this master published to it that came back
  with every state successful and none pending (a state whose comment starts with
  `ci-fleet pending:`, e.g. base.credentials_pending while the Roles Anywhere certificate has
  not arrived).

A minion is converged when a highstate published after its last start came back complete. Every
accepted minion that is not gets `state.apply` (queue=True: it waits for a run in progress
instead of failing) from `run` (the master's schedule, every minute); a failed or pending one
again after RETRY_SECONDS, a job that never answers after INFLIGHT_SECONDS.

Publishing is rate limited as a whole: every publish takes a token from one bucket,
MAX_PUBLISH_PER_MINUTE a minute (burst of as many), kept in the master's record (Budget, under a
lock), so no path and no number of concurrent callers publishes faster. A start event publishes
nothing: `minion_start` only marks the minion due (the next round publishes, within a minute).
After a master replacement every minion reconnects and fires its start event (salt/minion.py
fires `_fire_master_minion_start` after a failover reconnect): that is MAX_PUBLISH_PER_MINUTE
highstates a minute, never the whole fleet at once.

The start event is only a hint of which minion to look at: its `id` is checked against the tag
and against the accepted keys, and batched minion events carry the sender's data as is
(salt/daemons/masterapi.py `_minion_event`), so any minion can forge one for any id. What a
start event can do, forged or not: mark an accepted minion due, at most once every
START_INTERVAL_SECONDS; it never replaces a job in flight (a job published before the start
that died with the old process is published again after INFLIGHT_SECONDS, when it counts as
unanswered). So a forger gets an accepted minion one extra highstate per START_INTERVAL_SECONDS
at most, one at a time, with that minion's own pillar, and the fleet-wide bucket bounds the sum.

A round looks up at most MAX_LOOKUPS_PER_ROUND jobs in flight in the job cache (the ones looked
at longest ago first), through one MasterMinion per round: Salt's `jobs.lookup_jid` builds a
MasterMinion in itself and again in `list_job` on every call, which with a thousand jobs in
flight made a round take minutes.

Once a minion's highstate returns (whatever the outcome: on equinix-metal its Teleport agent is
then installed and waits for its join), the same round calls `ci_fleet.reconcile` once, which
joins Teleport agents and assigns their labels: a replaced runner gets its labels about a minute
after its first highstate, not at the next 5-minute reconcile. That schedule stays the backstop.

A replaced master starts with an empty record: it highstates every minion once, at most
MAX_PUBLISH_PER_MINUTE a minute.
"""
import fcntl
import json
import logging
import os
import re
import time

log = logging.getLogger(__name__)

# The runner functions (Salt's loader reads __load__ first): nothing else here is callable by salt-run.
__load__ = ["run", "minion_start"]

# Root-only: one JSON record per minion, and the publish budget (BUDGET_FILE: not a minion id).
STATE_DIR = "/var/lib/ci-fleet/converge"
BUDGET_FILE = "_budget.json"
PENDING_PREFIX = "ci-fleet pending:"
START_TAG = re.compile(r"^salt/minion/([a-z0-9][a-z0-9-]{0,62})/start$")
MINION_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Every highstate this master publishes, from any caller: a bucket of this many tokens,
# refilled at this many a minute.
MAX_PUBLISH_PER_MINUTE = 25
# Job-cache reads per round (the jobs in flight looked at longest ago first).
MAX_LOOKUPS_PER_ROUND = 100
RETRY_SECONDS = 300
INFLIGHT_SECONDS = 2 * 3600
# A start event marks a minion due at most once in this long (forged ones included).
START_INTERVAL_SECONDS = 300
# A highstate installs toolchains on a fresh runner: the job cache keeps returns an hour
# (keep_jobs_seconds); with MAX_LOOKUPS_PER_ROUND a job is looked up at least every
# ceil(jobs in flight / MAX_LOOKUPS_PER_ROUND) rounds, well within that hour.


def judge(ret):
    """`converged`, `pending` or `failed` for one minion's state.apply return."""
    if not isinstance(ret, dict) or not ret:
        return "failed"  # render errors come back as a list of strings
    pending = False
    for state in ret.values():
        if not isinstance(state, dict) or state.get("result") is not True:
            return "failed"
        if str(state.get("comment", "")).startswith(PENDING_PREFIX):
            pending = True
    return "pending" if pending else "converged"


class Records:
    """The master's record, one root-only JSON file per minion."""

    def __init__(self, directory=STATE_DIR):
        self.directory = directory

    def _path(self, minion_id):
        return os.path.join(self.directory, minion_id + ".json")

    def _mkdir(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)

    def get(self, minion_id):
        try:
            with open(self._path(minion_id)) as handle:
                data = json.load(handle)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def put(self, minion_id, record):
        self._mkdir()
        _write_json(self._path(minion_id), record)

    def forget(self, minion_id):
        try:
            os.unlink(self._path(minion_id))
        except FileNotFoundError:
            pass


def _write_json(path, value):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(value, handle, sort_keys=True)
    os.replace(tmp, path)


class Budget:
    """The one publish budget of this master, kept beside the records: a bucket of
    MAX_PUBLISH_PER_MINUTE tokens refilled at MAX_PUBLISH_PER_MINUTE a minute. Taken under an
    exclusive lock, so concurrent callers (the schedule, a reactor, a maintainer's salt-run)
    share it; unreadable state counts as an empty bucket (fail closed: publish later)."""

    def __init__(self, records, clock=time.time, per_minute=MAX_PUBLISH_PER_MINUTE):
        self.records, self.clock, self.per_minute = records, clock, per_minute

    def take(self):
        """True when a publish may go out now (one token taken)."""
        self.records._mkdir()
        path = os.path.join(self.records.directory, BUDGET_FILE)
        fd = os.open(path + ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            now = self.clock()
            try:
                with open(path) as handle:
                    state = json.load(handle)
                tokens, at = float(state["tokens"]), float(state["at"])
            except FileNotFoundError:
                tokens, at = float(self.per_minute), now
            except (OSError, ValueError, KeyError, TypeError):
                tokens, at = 0.0, now
            tokens = min(float(self.per_minute), tokens + max(0.0, now - at) * self.per_minute / 60.0)
            granted = tokens >= 1.0
            if granted:
                tokens -= 1.0
            _write_json(path, {"tokens": tokens, "at": now})
            return granted
        finally:
            os.close(fd)  # releases the lock


def is_converged(record):
    return "converged" in record and record["converged"] >= record.get("started", 0)


class Converger:
    """`accepted()`: accepted minion ids; `publish(minion) -> jid or None`;
    `lookup(jid) -> {minion: return}`; `reconcile()`: ci_fleet.reconcile; `clock()`: seconds."""

    def __init__(self, records, accepted, publish, lookup, reconcile, clock=time.time, budget=None):
        self.records, self.accepted, self.publish = records, accepted, publish
        self.lookup, self.reconcile, self.clock = lookup, reconcile, clock
        self.budget = budget or Budget(records, clock)

    def _collect(self, minion_id, record, now):
        """Reads the answer of the job in flight, if any: `answered`, `expired` or None."""
        jid = record.get("jid")
        if not jid:
            return None
        record["checked"] = now
        try:
            returns = self.lookup(jid) or {}
        except Exception as error:  # noqa: BLE001 - the job cache may not have it yet
            log.warning("ci_fleet_converge: job %s of %s unreadable: %s", jid, minion_id, error)
            returns = {}
        if isinstance(returns, dict) and "outputter" in returns and isinstance(returns.get("data"), dict):
            returns = returns["data"]
        if isinstance(returns, dict) and minion_id in returns:
            outcome = judge(returns[minion_id])
            record.pop("jid", None)
            record["outcome"] = outcome
            record["answered"] = now
            if outcome == "converged":
                record["converged"] = record.get("published", now)
            log.info("ci_fleet_converge: %s highstate %s (job %s)", minion_id, outcome, jid)
            return "answered"
        if now - record.get("published", now) > INFLIGHT_SECONDS:
            log.warning("ci_fleet_converge: %s never answered job %s; publishing again", minion_id, jid)
            record.pop("jid", None)
            record["outcome"] = "no answer"
            record["answered"] = now
            return "expired"
        return "checked"

    def _due(self, record, now):
        if is_converged(record) or record.get("jid"):
            return False
        answered = record.get("answered")
        # A failed or pending highstate is tried again after a while, not every minute, unless
        # the minion started since the last attempt (a restart asks for a new highstate; a start
        # event marks a minion at most once every START_INTERVAL_SECONDS).
        return answered is None or now - answered >= RETRY_SECONDS or record.get("started", 0) > record.get("attempted", 0)

    def _publish(self, minion_id, record, now):
        jid = self.publish(minion_id)
        record["attempted"] = now
        if jid:
            record["jid"] = str(jid)
            record["published"] = now
            record.pop("checked", None)
            log.info("ci_fleet_converge: highstate of %s published (job %s)", minion_id, jid)
        else:
            record["answered"] = now
            record["outcome"] = "not published"

    def started(self, minion_id):
        """The minion (re)started: its highstate is due again, published by the next round.
        Publishes nothing, never touches a job in flight, and marks a minion due at most once
        every START_INTERVAL_SECONDS."""
        now = self.clock()
        if minion_id not in set(self.accepted()):
            log.warning("ci_fleet_converge: start event of %s, which has no accepted key: ignored", minion_id)
            return {"minion": minion_id, "action": "ignored"}
        record = self.records.get(minion_id)
        last = record.get("start_marked")
        if isinstance(last, (int, float)) and 0 <= now - last < START_INTERVAL_SECONDS:
            return {"minion": minion_id, "action": "too soon"}
        record["started"] = now
        record["start_marked"] = now
        record["labels_due"] = True
        self.records.put(minion_id, record)
        # A job in flight stays: its answer is read as usual, and (published before this
        # start) does not count as convergence, so the minion is due again after it.
        return {"minion": minion_id, "action": "in flight" if record.get("jid") else "due"}

    def round(self):
        """One pass over every accepted minion. Returns what it did."""
        now = self.clock()
        done = {"published": [], "answered": {}, "converged": 0, "reconciled": False, "looked_up": 0}
        labels_due = []
        minions = []
        for minion_id in sorted(set(self.accepted())):
            if MINION_ID.match(minion_id):
                minions.append((minion_id, self.records.get(minion_id)))
        # The jobs in flight read this round: the ones looked at longest ago (or never) first.
        in_flight = [(r.get("checked", 0), m) for m, r in minions if r.get("jid")]
        look = {m for _, m in sorted(in_flight)[:MAX_LOOKUPS_PER_ROUND]}
        budget_left = True
        for minion_id, record in minions:
            changed = False
            if not record:
                record = {"started": now}  # first sight of this key on this master
                changed = True
            if minion_id in look:
                collected = self._collect(minion_id, record, now)
                done["looked_up"] += 1
                changed = True
                if collected == "answered":
                    done["answered"][minion_id] = record["outcome"]
                    record["labels_due"] = True
            if budget_left and self._due(record, now):
                if self.budget.take():
                    self._publish(minion_id, record, now)
                    if record.get("jid"):
                        done["published"].append(minion_id)
                    changed = True
                else:
                    budget_left = False  # the bucket is empty: the next round goes on
            if record.get("labels_due"):
                labels_due.append((minion_id, record))
            if is_converged(record):
                done["converged"] += 1
            if changed:
                self.records.put(minion_id, record)
        if labels_due:
            try:
                self.reconcile()
                done["reconciled"] = True
                for minion_id, record in labels_due:
                    record.pop("labels_due", None)
                    self.records.put(minion_id, record)
            except Exception as error:  # noqa: BLE001 - the 5-minute reconcile is the backstop
                log.warning("ci_fleet_converge: reconcile failed (%s); next round tries again", error)
        return done


def _accepted_keys():
    directory = os.path.join(__opts__["pki_dir"], "minions")  # noqa: F821 (Salt loader global)
    try:
        return [name for name in os.listdir(directory) if MINION_ID.match(name)]
    except FileNotFoundError:
        return []


def _converger():
    import salt.client  # noqa: only on the master

    client = salt.client.LocalClient(mopts=__opts__)  # noqa: F821

    def publish(minion_id):
        return client.cmd_async(minion_id, "state.apply", kwarg={"queue": True})

    # What salt/runners/jobs.py lookup_jid reads (the job cache's get_jid: {minion: {"return":
    # ..., "out": ...}}), through ONE MasterMinion for the whole round: lookup_jid builds two
    # per call (its own and list_job's), each loading every returner module.
    cache = {}

    def lookup(jid):
        if "get_jid" not in cache:
            import salt.minion  # noqa: only on the master

            returner = __opts__.get("ext_job_cache") or __opts__["master_job_cache"]  # noqa: F821
            cache["get_jid"] = salt.minion.MasterMinion(__opts__).returners["%s.get_jid" % returner]  # noqa: F821
        data = cache["get_jid"](jid) or {}
        return {minion: ret.get("return") for minion, ret in data.items() if isinstance(ret, dict)}

    def reconcile():
        return __salt__["ci_fleet.reconcile"]()  # noqa: F821

    return Converger(Records(), _accepted_keys, publish, lookup, reconcile)


def run():
    """The master's schedule (every minute): highstate every accepted minion not converged."""
    return _converger().round()


def minion_start(tag="", minion=""):
    """The reactor on `salt/minion/<id>/start`: the id must be the tag's and an accepted key's."""
    match = START_TAG.match(str(tag))
    if not match or match.group(1) != str(minion):
        log.warning("ci_fleet_converge: start event %r with id %r: ignored", tag, minion)
        return {"minion": str(minion), "action": "ignored"}
    return _converger().started(match.group(1))
