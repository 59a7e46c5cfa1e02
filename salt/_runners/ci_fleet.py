"""ci_fleet runner module: the master's orchestration (loaded through runner_dirs).

  salt-run ci_fleet.reconcile                      all of the below (master schedule, 5 min)
  salt-run ci_fleet.refresh_teleport_ca_pins       record the cluster's CA pins (nodes' pillar)
  salt-run ci_fleet.join_teleport_nodes            one join token per minion, ever (equinix-metal)
  salt-run ci_fleet.assign_teleport_labels         give each joined node its labels; lock impostors
  salt-run ci_fleet.forget_teleport_host <minion>  lock + unlabel its host id; allow one new token
  salt-run ci_fleet.register_github_runners [minion=ID]   (also the reactor, per runner)
  salt-run ci_fleet.deregister_stale               remove GitHub runners that are no minion

Short-lived secrets (Teleport node join token, 15 min; a GitHub just-in-time runner
config, single use, bound to one runner name, group and labels) reach one minion only, through that minion's pillar: the master writes the token to a root-only
file under INLINE_PILLAR_DIR that salt/pillar/minion.sls merges into `ci_fleet_inline`
of that minion alone, publishes `state.apply <sls>` WITHOUT the token, and removes the
file right after. Never as inline pillar (`state.apply pillar=...`): that is an argument
of the publication, and Salt sends every publication to every minion under one shared
key (ZeroMQ publishes unfiltered by default; design.md, "How a secret travels" 6);
pillar is compiled per minion and encrypted for that minion alone.
The GitHub App key stays on the master. The logic is in `Orchestrator` with every
dependency injected (Salt's local client, HTTP, clock, JWT signer, the pillar files),
so test/orchestration/test_orchestration.py runs it with fakes.
"""
import base64
import calendar
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import secrets
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

log = logging.getLogger(__name__)

GITHUB_API = "https://api.github.com"
TELEPORT_TOKEN_FILE = "/var/lib/teleport/join-token"
# Labels of a server_info named si-<host id> (api/types/server_info.go fixLabels); the only
# labels the fleet's Teleport roles select on (infra/teleport/roles.ts).
ASSIGNED_LABEL_PREFIX = "dynamic/"
# Under the generated pillar root (infra/bootstrap/salt-config.ts SALT_PATHS.generatedPillar,
# a pillar_roots entry); the pillar sync only ever touches its minions/ sibling.
INLINE_PILLAR_DIR = "/srv/ci-fleet/pillar/inline"
# One marker per runner under drain, written by ci_fleet_drain.py (its DRAIN_DIR): no new JIT config.
DRAIN_DIR = "/var/lib/ci-fleet/drain"
# The keys salt/pillar/minion.sls reads into ci_fleet_inline (one file each, so two
# concurrent orchestrations for one minion never overwrite each other's token).
INLINE_KEYS = ("teleport_join_token", "github_jit_config")
# How long each file may be served (Teleport node token --ttl=15m; a GitHub JIT config, like
# the registration token it replaces, 1 h). A file older than that is removed: a killed run
# (master restart) never reached its `finally`, so every run sweeps such files first.
INLINE_LIFETIME_SECONDS = {"teleport_join_token": 15 * 60, "github_jit_config": 3600}


def _formula_defaults(formula):
    """<formula> of a formula's defaults, beside this module in the checkout
    (salt/_runners/ -> salt/<formula>/parameters/defaults.yaml): one place for each path."""
    import yaml  # PyYAML: a dependency of Salt itself
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                        formula, "parameters", "defaults.yaml")
    with open(path) as handle:
        return yaml.safe_load(handle)[formula]


def _runner_refresh_defaults():
    """salt_master:runner_refresh: the one place the lock and marker paths are written down,
    read by salt_master/service.sls too."""
    return _formula_defaults("salt_master")["runner_refresh"]


_REFRESH = _runner_refresh_defaults()
# The runner unit (its status gates a JIT config: no job running) and the runner's work
# directory (the JIT config's work_folder), as the formulas write them.
RUNNER_UNIT = _formula_defaults("github_runner")["unit"]
RUNNER_WORK_FOLDER = _formula_defaults("runner")["work_dir"]
# isolation vm (issue 15, docs/job-vm.md): no runner on the host; one just-in-time config per job
# slot, runner name <minion>-s<N> (N = 1..ci_fleet:runner:job_vm:slots of the master-compiled
# pillar), delivered into that slot's inbox by the state SLOT_STATE as a `kind: github` job input.
_JOB_VM = _formula_defaults("runner")["job_vm"]
SLOT_RUN_DIR = _JOB_VM["run_dir"]
SLOT_STATE = "runner.job_vm_github"
# The slot number travels in the publication (`state.apply ... pillar={SLOT_PILLAR_KEY: N}`):
# not secret, and the state refuses a slot its own pillar does not have. The config never does.
SLOT_PILLAR_KEY = "ci_fleet_job_slot"
MAX_SLOTS = 256
SLOT_NAME_PATTERN = re.compile(r"^(?P<minion>[a-z0-9][a-z0-9-]*)-s(?P<slot>[1-9][0-9]{0,2})$")
# The job user's home in the golden image (runner.job_vm.image.guest_user): the runner there is
# unprivileged and writes its work folder under it.
SLOT_WORK_FOLDER = "/home/%s/_work" % _JOB_VM["image"]["guest_user"]
# Held (shared) by every entry point while it runs; salt_master.service takes it exclusively
# (flock(1)) to restart the master (config, unit drop-in or runner modules changed), so no run
# is killed.
ORCHESTRATION_LOCK = _REFRESH["lock"]
# Created by that restart before it waits for the lock, removed after (trap). flock(2) has no
# writer preference: overlapping shared holders would starve the exclusive request forever, so
# while the marker exists no entry point starts (or, inside a run, no new join/registration).
RESTART_PENDING = _REFRESH["pending"]
# A marker older than the restart's longest wait (plus a margin) was left by a killed restart.
RESTART_PENDING_STALE_SECONDS = int(_REFRESH["lock_wait_seconds"]) + 60
# One registration at a time per minion: `<dir>/<minion>.lock` (flock), <dir> beside INLINE_PILLAR_DIR
# in the master's own state (as CA_PINS_RELATIVE; the pillar sync only touches minions/). The
# reactor runs for every event a slot's launcher sends (ci-job-slot InputRequester, one per slot)
# and the 5-minute round runs too; two runs for one minion would both see a slot idle and
# unlisted, mint twice for one name and race on its one inline pillar file (shared by its
# slots). A run that finds the lock held asks the holder for one more pass (Orchestrator._coalesced).
REGISTRATION_LOCK_DIRNAME = "registration-locks"
# Passes one run makes over a minion while other runs keep asking for one (Orchestrator._coalesced).
REGISTRATION_PASSES = 3
# One run stops starting new Teleport joins / registrations after this long (each join may wait
# join_timeout), so a run the restart waits for ends within about this plus one join.
RUN_BUDGET_SECONDS = 300
_clock = time.time
# The master's own orchestration state (root-only, 0700; beside ci_fleet_converge.py's STATE_DIR):
# the reactor gate's buckets, each GitHub minion's lookup bucket, the cached installation token.
STATE_DIR = "/var/lib/ci-fleet/orchestration"
GATE_FILE = "reactor-gate.json"
GITHUB_BUDGET_FILE = "github-budget.json"
GITHUB_TOKEN_FILE = "github-installation-token.json"
# The master's own record of Teleport enrolment (issue 12, review of 3876af1), never taken from
# what a node announces: {"hosts": {minion id: host id}, "minted": {minion id: unix time},
# "retired": [host id, ...]}.
# - hosts: the host id the machine ITSELF reported (ci_fleet_teleport.own_host_id, its
#   <data_dir>/host_uuid, the answer signed with its own accepted Salt key), recorded once a node
#   under that id is listed with the machine's hostname AND pillar address. Teleport 18's legacy
#   join RPCs sign a host certificate for any host id the client asks for (`token`, `iam`), so a
#   node's announced id, name or address proves nothing by itself.
# - minted: a join token was minted for that minion at that time (equinix-metal): one token per
#   minion, ever, until a human runs forget_teleport_host.
# - retired: host ids forget_teleport_host locked; never recorded again, locked when listed.
# A record written before this format ({minion id: host id}) is read as its `hosts`.
TELEPORT_HOSTS_FILE = "teleport_hosts.json"
# The reactor (ci-fleet/github-runner/unregistered, any minion can send it as often as it likes)
# builds no orchestrator (pillar of the master and every GitHub minion) and asks nobody anything
# beyond: one run per minion id per REACTOR_MINION_INTERVAL_SECONDS and REACTOR_RUNS_PER_MINUTE
# runs for the whole fleet (a bucket). Anything over that returns at once (one log line a minute);
# the 5-minute round still looks at every minion.
REACTOR_MINION_INTERVAL_SECONDS = 10
REACTOR_RUNS_PER_MINUTE = 60
GATE_LOG_INTERVAL_SECONDS = 60
# GitHub lookups (runner_listed: one REST call each) a minion may cost: a bucket of as many as it
# has runner names (its slot count, 1 on the host), refilled at that many per
# GITHUB_LOOKUP_REFILL_SECONDS. A minion answering "idle" for every slot forever costs at most
# slots * 3600 / GITHUB_LOOKUP_REFILL_SECONDS calls an hour (12 per slot), never the App's 5,000.
GITHUB_LOOKUP_REFILL_SECONDS = 300
# An installation token (1 h, expires_at) is reused until this long before it expires.
GITHUB_TOKEN_MARGIN_SECONDS = 300
# Installation tokens: ghs_<40 chars>, and since 2026-04-27 (staged) the stateless ghs_<app id>_<JWT>
# format (GitHub docs, "Generating an installation access token"): no fixed length.
INSTALLATION_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{8,8192}$")
# Each call to a minion: the answers that came in by this deadline (this run's monotonic clock: never
# extended by a minion answering saltutil.find_job that the job still runs), else "no answer".
MINION_CALL_DEADLINE_SECONDS = 60
_wall_clock = time.time
_monotonic = time.monotonic
# Tokens are opaque ASCII (GitHub: base32-like; Teleport: hex). Anything else is refused:
# the value is read back by a Jinja include and parsed as JSON.
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{8,512}$")
# A GitHub encoded_jit_config: standard base64 (of a JSON map of runner files).
JIT_CONFIG_PATTERN = re.compile(r"^[A-Za-z0-9+/]{16,65536}={0,2}$")
INLINE_PATTERNS = {"teleport_join_token": TOKEN_PATTERN, "github_jit_config": JIT_CONFIG_PATTERN}
MINION_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# The Teleport cluster's CA pins, in the master's own state under the generated pillar root
# (beside inline/; the pillar sync only touches minions/): salt/pillar/minion.sls serves them to
# every machine but the Teleport machine as ci_fleet_teleport_ca:pins. Relative to
# INLINE_PILLAR_DIR's parent, resolved when the orchestration is built.
CA_PINS_RELATIVE = os.path.join("teleport", "ca_pins.json")
CA_PIN_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----")
# The master's pki_dir (salt_master defaults.yaml `pki_dir`; __opts__["pki_dir"] wins): minions/<id>
# is the key the master accepted for each minion (salt_master.minion_keys, from the pillar index).
MASTER_PKI_DIR = "/etc/salt/pki/master"
_SIBLINGS = {}


def _sibling(name, *relative):
    """A module of this Salt tree loaded by path (runner_dirs holds only salt/_runners): the one
    definition of the Teleport minion's signed message (salt/_modules/ci_fleet_teleport.py) and
    of the Salt-key signature check (ci_fleet_pki.py `verify_salt_signature`)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), *relative)
    # Reloaded when the checkout changes it: the master restarts only for salt/_runners changes.
    stamp = os.stat(path).st_mtime_ns
    if _SIBLINGS.get(name, (None,))[0] != stamp:
        spec = importlib.util.spec_from_file_location("ci_fleet_sibling_" + name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _SIBLINGS[name] = (stamp, module)
    return _SIBLINGS[name][1]


def accepted_minion_key(pki_dir, minion_id):
    """The public key (PEM text) the master accepted for minion_id, or None."""
    if not isinstance(minion_id, str) or not MINION_ID_PATTERN.match(minion_id):
        return None
    try:
        with open(os.path.join(pki_dir, "minions", minion_id)) as handle:
            return handle.read()
    except OSError:
        return None


def teleport_record(raw):
    """TELEPORT_HOSTS_FILE as {"hosts", "minted", "retired"} (see there), or None when it is
    unreadable or malformed (callers fail closed). {} (no file yet) is an empty record."""
    if raw is None or not isinstance(raw, dict):
        return None
    if raw and not any(k in raw for k in ("hosts", "minted", "retired")):
        raw = {"hosts": raw}    # the flat {minion id: host id} of the previous release
    record = {"hosts": raw.get("hosts") or {}, "minted": raw.get("minted") or {}, "retired": raw.get("retired") or []}
    if not (isinstance(record["hosts"], dict) and all(isinstance(v, str) for v in record["hosts"].values())
            and isinstance(record["minted"], dict) and isinstance(record["retired"], list)):
        return None
    return record


def verified_teleport_answer(public_key_pem, minion_id, fun, nonce, answer):
    """The result in `answer` if it is signed by minion_id's Salt key for exactly this call
    (function and nonce), else raises ValueError with the reason."""
    if not isinstance(answer, dict) or not isinstance(answer.get("sig"), str) or "result" not in answer:
        raise ValueError("not a signed answer")
    if not public_key_pem:
        raise ValueError("the master has no accepted key for %s" % minion_id)
    try:
        signature = base64.b64decode(answer["sig"], validate=True)
        message = _sibling("teleport", os.pardir, "_modules", "ci_fleet_teleport.py").answer_message(
            minion_id, fun, nonce, answer["result"])
    except (ValueError, TypeError) as error:
        raise ValueError("unreadable signed answer (%s)" % str(error)[:100])
    if not _sibling("pki", "ci_fleet_pki.py").verify_salt_signature(public_key_pem, message, signature):
        raise ValueError("signature does not verify with the accepted key of %s for this call" % minion_id)
    return answer["result"]


def _der_element(data, offset):
    """(tag, content start, content end) of the DER element at offset (definite lengths only)."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[offset], data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or start + count > len(data):
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    if start + length > len(data):
        raise ValueError("truncated DER")
    return tag, start, start + length


def certificate_spki(der):
    """The DER SubjectPublicKeyInfo of an X.509 certificate (RFC 5280 4.1: tbsCertificate =
    [0] version?, serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo):
    Go's x509.Certificate.RawSubjectPublicKeyInfo."""
    tag, start, end = _der_element(der, 0)
    if tag != 0x30 or end != len(der):
        raise ValueError("not a DER certificate")
    tag, position, tbs_end = _der_element(der, start)
    if tag != 0x30:
        raise ValueError("no tbsCertificate")
    fields = []
    while position < tbs_end and len(fields) < 8:
        tag, _, following = _der_element(der, position)
        fields.append((tag, position, following))
        position = following
    if fields and fields[0][0] == 0xA0:
        fields = fields[1:]
    if len(fields) < 6 or fields[0][0] != 0x02 or any(f[0] != 0x30 for f in fields[1:6]):
        raise ValueError("unexpected tbsCertificate layout")
    _, spki_start, spki_end = fields[5]
    return der[spki_start:spki_end]


def teleport_ca_pin(der):
    """Teleport's CA pin of a certificate (lib/utils CalculateSPKI: "sha256:" + hex of
    sha256(cert.RawSubjectPublicKeyInfo))."""
    return "sha256:" + hashlib.sha256(certificate_spki(der)).hexdigest()


def teleport_ca_pins(pem_text):
    """The sorted pins of every certificate in a PEM text (tlsca.CalculatePins); ValueError for
    anything else, or for no certificate at all."""
    if not isinstance(pem_text, str):
        raise ValueError("no PEM text")
    pins = set()
    for body in PEM_CERTIFICATE.findall(pem_text):
        pins.add(teleport_ca_pin(base64.b64decode("".join(body.split()), validate=True)))
    if not pins:
        raise ValueError("no certificate in the host CA export")
    return sorted(pins)


class CaPinStore:
    """The master's record of the Teleport cluster's CA pins (one JSON list, root-only), read
    back by salt/pillar/minion.sls. Written only from the Teleport minion's own answer."""

    def __init__(self, path):
        self.path = path

    def get(self):
        try:
            with open(self.path) as handle:
                pins = json.load(handle)
        except (FileNotFoundError, ValueError):
            return []
        return pins if isinstance(pins, list) and pins and all(
            isinstance(p, str) and CA_PIN_PATTERN.match(p) for p in pins) else []

    def put(self, pins):
        """Record pins (sorted, each checked); True when they changed."""
        pins = sorted(set(pins))
        if not pins or not all(isinstance(p, str) and CA_PIN_PATTERN.match(p) for p in pins):
            raise ValueError("refusing malformed Teleport CA pins")
        if pins == self.get():
            return False
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        tmp = self.path + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            handle.write(json.dumps(pins))
        os.rename(tmp, self.path)
        return True


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl_rs256(private_key_pem, message):
    """RS256 with Debian's openssl CLI; the key lives in a 0600 file for one call."""
    with tempfile.TemporaryDirectory() as directory:
        key_file = os.path.join(directory, "key.pem")
        with open(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(private_key_pem)
        return subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_file], input=message,
                              stdout=subprocess.PIPE, check=True).stdout


def github_app_jwt(app_id, private_key_pem, now, sign=openssl_rs256):
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}, separators=(",", ":")).encode())
    # iat 60 s in the past allows for clock drift; GitHub accepts at most 10 min.
    claims = {"iat": int(now) - 60, "exp": int(now) + 540, "iss": str(app_id)}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = ("%s.%s" % (header, payload)).encode()
    return "%s.%s" % (signing_input.decode(), _b64(sign(private_key_pem, signing_input)))


def urllib_http(method, url, headers, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return error.code, None


class InlinePillar:
    """Per-minion token files under a pillar root, read by salt/pillar/minion.sls."""

    clock = staticmethod(time.time)

    def __init__(self, directory=INLINE_PILLAR_DIR):
        self.directory = directory

    def _path(self, minion_id, key):
        if key not in INLINE_KEYS or not MINION_ID_PATTERN.match(minion_id or ""):
            raise ValueError("refusing inline pillar %r for minion %r" % (key, minion_id))
        return os.path.join(self.directory, minion_id, key + ".json")

    def put(self, minion_id, key, token):
        if not isinstance(token, str) or not INLINE_PATTERNS.get(key, TOKEN_PATTERN).match(token):
            raise ValueError("refusing a malformed %s for %s" % (key, minion_id))
        path = self._path(minion_id, key)
        for directory in (self.directory, os.path.dirname(path)):
            os.makedirs(directory, mode=0o700, exist_ok=True)
            os.chmod(directory, 0o700)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w") as handle:
            handle.write(json.dumps(token))
        os.rename(tmp, path)

    def remove(self, minion_id, key):
        try:
            os.unlink(self._path(minion_id, key))
        except FileNotFoundError:
            pass

    def sweep(self):
        """Remove token files (and half-written .tmp files) older than their token's lifetime."""
        removed = []
        now = self.clock()
        try:
            minion_dirs = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return removed
        for minion_id in minion_dirs:
            directory = os.path.join(self.directory, minion_id)
            if not os.path.isdir(directory):
                continue
            for name in sorted(os.listdir(directory)):
                key = name[: -len(".tmp")] if name.endswith(".tmp") else name
                key = key[: -len(".json")] if key.endswith(".json") else key
                lifetime = INLINE_LIFETIME_SECONDS.get(key, 0)
                path = os.path.join(directory, name)
                try:
                    if now - os.lstat(path).st_mtime > lifetime:
                        os.unlink(path)
                        removed.append(path)
                except FileNotFoundError:
                    pass
        return removed


def jit_config_without_updates(encoded):
    """The encoded JIT config with `disableUpdate: true` in its `.runner` settings.

    The runner writes each entry of the decoded JSON map (file name -> base64 content) into
    its root and reads `.runner` as RunnerSettings; the listener sends its DisableUpdate with
    every message request, as `config.sh --disableupdate` would have set it (actions/runner
    v2.336.0 Runner.cs, ConfigurationStore.cs, MessageListener.cs). The root-run updater, not
    the runner, replaces releases. Anything not shaped like that is refused."""
    files = json.loads(base64.b64decode(encoded, validate=True).decode("utf-8"))
    if not isinstance(files, dict) or not isinstance(files.get(".runner"), str):
        raise ValueError("a JIT config without .runner settings")
    settings = json.loads(base64.b64decode(files[".runner"], validate=True).decode("utf-8-sig"))
    if not isinstance(settings, dict):
        raise ValueError("JIT config .runner settings are not an object")
    settings["disableUpdate"] = True
    files[".runner"] = base64.b64encode(json.dumps(settings).encode()).decode()
    return base64.b64encode(json.dumps(files).encode()).decode()


def _private_dir(directory):
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)


def _write_private_json(path, value):
    """Atomically, 0600 from its creation (in a 0700 directory: _private_dir)."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(value, handle, sort_keys=True)
    os.replace(tmp, path)


def _read_json(path):
    try:
        with open(path) as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else None
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return None     # unreadable: the caller fails closed


@contextlib.contextmanager
def _locked_state(directory, name):
    """(state dict, save) of `<directory>/<name>` under an exclusive flock of `<name>.lock`
    (concurrent reactor threads, the schedule and salt-run share it); an unreadable file is
    None (the caller fails closed)."""
    _private_dir(directory)
    path = os.path.join(directory, name)
    fd = os.open(path + ".lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield _read_json(path), lambda value: _write_private_json(path, value)
    finally:
        os.close(fd)    # releases the lock


def _bucket_take(bucket, now, capacity, per_second):
    """Token bucket in a dict {"tokens", "at"} (updated in place): True when one was taken.
    A new bucket starts full; a malformed one empty (fail closed)."""
    try:
        tokens, at = float(bucket["tokens"]), float(bucket["at"])
    except KeyError:
        tokens, at = float(capacity), now
    except (TypeError, ValueError):
        tokens, at = 0.0, now
    tokens = min(float(capacity), tokens + max(0.0, now - at) * per_second)
    granted = tokens >= 1.0
    bucket["tokens"], bucket["at"] = tokens - 1.0 if granted else tokens, now
    return granted


class TokenCache:
    """The installation token across runs: one root-only file (0600 in a 0700 directory) on the
    master, keyed by app and installation, reused until GITHUB_TOKEN_MARGIN_SECONDS before its
    expires_at. Never logged. Unreadable or malformed: ignored (a new token is minted)."""

    def __init__(self, directory=None):
        self.directory = directory

    def _path(self):
        return os.path.join(self.directory or STATE_DIR, GITHUB_TOKEN_FILE)

    def get(self, key, now):
        data = _read_json(self._path()) or {}
        token, expires = data.get("token"), data.get("expires_at")
        if data.get("key") != key or not isinstance(token, str) or not INSTALLATION_TOKEN_PATTERN.match(token):
            return None
        if not isinstance(expires, (int, float)) or now >= expires - GITHUB_TOKEN_MARGIN_SECONDS:
            return None
        return token

    def put(self, key, token, expires_at):
        _private_dir(os.path.dirname(self._path()))
        _write_private_json(self._path(), {"key": key, "token": token, "expires_at": expires_at})


def _github_time(text):
    """GitHub's `expires_at` ("2026-11-29T23:00:00Z") as epoch seconds, or None."""
    try:
        return calendar.timegm(time.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


class GitHub:
    def __init__(self, app, http=urllib_http, clock=time.time, sign=openssl_rs256, token_cache=None):
        self.app, self.http, self.clock, self.sign = app, http, clock, sign
        self._token = None
        self.token_cache = token_cache

    def _call(self, method, path, token, body=None, expect=(200,)):
        status, data = self.http(method, GITHUB_API + path, {
            "Accept": "application/vnd.github+json",
            "Authorization": "Bearer %s" % token,
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "ci-fleet-salt-master",
        }, body)
        if status not in expect:
            raise RuntimeError("GitHub %s %s: HTTP %s" % (method, path, status))
        return data

    def installation_token(self):
        """One installation token (POST access_tokens, valid 1 h: `expires_at`) for this run, and
        with a token_cache for every run until shortly before it expires: each reactor run would
        otherwise mint one."""
        key = "%s/%s" % (self.app["app_id"], self.app["installation_id"])
        if self._token is None and self.token_cache is not None:
            self._token = self.token_cache.get(key, self.clock())
        if self._token is None:
            jwt = github_app_jwt(self.app["app_id"], self.app["private_key_pem"], self.clock(), self.sign)
            data = self._call("POST", "/app/installations/%s/access_tokens" % self.app["installation_id"],
                              jwt, expect=(201,))
            self._token = data["token"]
            expires = _github_time(data.get("expires_at"))
            if self.token_cache is not None and expires is not None:
                try:
                    self.token_cache.put(key, self._token, expires)
                except OSError as error:
                    log.warning("cannot cache the GitHub installation token (%s): minting one per run", error.strerror)
        return self._token

    def runner_group_id(self, org, name):
        """The id of the organisation's runner group `name`; LookupError when there is none
        (never a fallback to Default)."""
        page, seen = 1, 0
        while True:
            data = self._call("GET", "/orgs/%s/actions/runner-groups?per_page=100&page=%d" % (org, page),
                              self.installation_token())
            groups = data.get("runner_groups") or []
            for group in groups:
                if group.get("name") == name:
                    return group["id"]
            seen += len(groups)
            if not groups or seen >= data.get("total_count", 0):
                raise LookupError("GitHub organisation %s has no runner group %r" % (org, name))
            page += 1

    def generate_jitconfig(self, org, name, runner_group_id, labels, work_folder):
        """A single-use runner config bound to this name, group and labels (201)."""
        data = self._call("POST", "/orgs/%s/actions/runners/generate-jitconfig" % org,
                          self.installation_token(),
                          body={"name": name, "runner_group_id": runner_group_id,
                                "labels": list(labels), "work_folder": work_folder},
                          expect=(201,))
        return data["encoded_jit_config"]

    def runners(self, org):
        runners, page = [], 1
        while True:
            data = self._call("GET", "/orgs/%s/actions/runners?per_page=100&page=%d" % (org, page),
                              self.installation_token())
            runners.extend(data["runners"])
            if len(runners) >= data["total_count"] or not data["runners"]:
                return runners
            page += 1

    def runner_listed(self, org, name):
        """Whether GitHub lists a runner of exactly this name (the list endpoint's `name` filter:
        one request, whatever the size of the organisation's fleet)."""
        data = self._call("GET", "/orgs/%s/actions/runners?name=%s&per_page=100&page=1" % (org, urllib.parse.quote(name, safe="")),
                          self.installation_token())
        return any(runner.get("name") == name for runner in data.get("runners") or [])

    def delete_runner(self, org, runner_id):
        self._call("DELETE", "/orgs/%s/actions/runners/%s" % (org, runner_id),
                   self.installation_token(), expect=(204,))


class Orchestrator:
    """local(tgt, fun, arg=(), kwarg=None) -> {minion_id: return}, like LocalClient.cmd.

    expected_of(minion_id) -> {"labels": {...}, "addr": "<ip>:3022"} or None: what the program
    wrote into that minion's own pillar document (ci_fleet:teleport:labels, and the SSH
    listen address of its teleport.yaml), never anything the minion reports."""

    def __init__(self, stack, master_pillar, runner_pillar, local, github=None,
                 sleep=time.sleep, join_timeout=120, inline=None, clock=lambda: _monotonic(),
                 run_budget_seconds=RUN_BUDGET_SECONDS, stop_requested=lambda: False,
                 expected_of=lambda minion_id: None, ca_pins=None, teleport_key=None,
                 nonce=lambda: secrets.token_hex(32), state_dir=None, wall_clock=lambda: _wall_clock(),
                 minion_key=None):
        self.stack = stack
        # aws: nodes join by the `ec2` method (AWS-attested), no token ever leaves the
        # Teleport machine; equinix-metal: a one-join token through the minion's own pillar.
        self.provider = master_pillar.get("ci_fleet", {}).get("provider")
        self.expected_of = expected_of
        self.inline = inline if inline is not None else InlinePillar()
        self.ca_pins = ca_pins if ca_pins is not None else CaPinStore(
            os.path.join(os.path.dirname(getattr(self.inline, "directory", INLINE_PILLAR_DIR)), CA_PINS_RELATIVE))
        self.registration_lock_dir = os.path.join(
            os.path.dirname(getattr(self.inline, "directory", INLINE_PILLAR_DIR)), REGISTRATION_LOCK_DIRNAME)
        self.minions = master_pillar.get("ci_fleet_master", {}).get("minions", {})
        self.runner_pillar = runner_pillar      # minion_id -> its ci_fleet:runner
        self.local, self.github, self.sleep = local, github, sleep
        self.join_timeout = join_timeout
        self.teleport_id = "%s-teleport" % stack
        # The Teleport minion's accepted Salt key (PEM) or None; read at each call (a replaced
        # Teleport machine's new key is accepted by the next highstate).
        self.teleport_key = teleport_key or (lambda: accepted_minion_key(MASTER_PKI_DIR, self.teleport_id))
        # Any minion's accepted Salt key (PEM) or None: a machine's own Teleport host id is
        # believed only signed with it (own_host_id).
        self.minion_key = minion_key or (lambda minion_id: accepted_minion_key(MASTER_PKI_DIR, minion_id))
        self._own_ids = {}
        self.nonce = nonce
        self.clock, self.run_budget_seconds, self.stop_requested = clock, run_budget_seconds, stop_requested
        self.started = clock()
        self.state_dir, self.wall_clock = state_dir, wall_clock

    def _must_stop(self, what):
        """True (logged) when this run should start no new `what`: a master restart is waiting
        for the orchestration lock, or the run has used its time budget."""
        if self.stop_requested():
            log.info("a salt-master restart is pending: no new %s this round", what)
            return True
        if self.clock() - self.started > self.run_budget_seconds:
            log.warning("run budget of %ss used: no new %s this round", self.run_budget_seconds, what)
            return True
        return False

    # -- Teleport -----------------------------------------------------------------------
    def own_host_id(self, minion_id):
        """(True, host id or None) from the machine's own answer (ci_fleet_teleport.own_host_id:
        its <data_dir>/host_uuid; None: its Teleport never joined), published to that minion
        alone and signed with its accepted Salt key for this call's nonce; (False, None) without
        such an answer. Asked once per run."""
        if minion_id not in self._own_ids:
            answer = self._signed_call(minion_id, lambda: self.minion_key(minion_id), "ci_fleet_teleport.own_host_id")
            host = answer.get("host_id") if isinstance(answer, dict) else None
            if isinstance(answer, dict) and (host is None or (isinstance(host, str) and host)):
                self._own_ids[minion_id] = (True, host)
            else:
                self._own_ids[minion_id] = (False, None)
        return self._own_ids[minion_id]

    def refresh_teleport_ca_pins(self):
        """Record the cluster's CA pins, computed here from the host CA's TLS certificates that
        the Teleport minion exports (`tctl auth export --type=tls-host`), exactly as Teleport
        computes them (SPKI sha256). Only the Teleport minion's answer to this master's own job
        counts (_teleport_call); no runner is ever asked. Without an answer, or with anything but
        certificates, the recorded pins stay as they are. Returns the pins now recorded."""
        pem = self._teleport_call("ci_fleet_teleport.host_ca_certificates")
        if pem is None:
            log.warning("%s did not export its host CA: Teleport CA pins unchanged", self.teleport_id)
            return self.ca_pins.get()
        try:
            pins = teleport_ca_pins(pem)
        except (ValueError, TypeError) as error:
            log.error("%s answered no usable host CA (%s): Teleport CA pins unchanged", self.teleport_id, error)
            return self.ca_pins.get()
        if self.ca_pins.put(pins):
            log.info("Teleport CA pins now %s", ", ".join(pins))
        return pins

    def join_teleport_nodes(self):
        """equinix-metal: ONE node join token per minion, ever, delivered through that minion's
        own pillar only and revoked as soon as the join is seen (a `token`-method token stays
        valid until its ttl or deletion however often it is used). Whether a minion gets one
        rests on the master's own record (TELEPORT_HOSTS_FILE), never on what Teleport's nodes
        announce: a minion with a token minted (`minted`) or a host id recorded (`hosts`) gets
        none until a human runs forget_teleport_host; any other minion is asked for its own host
        id (own_host_id, signed): one that reports one joined already (a machine enrolled by an
        earlier release) gets none, one that reports none gets one, recorded as minted BEFORE it
        is delivered. A rooted runner can so obtain at most the one token its machine was
        always going to get. aws: nothing to mint; nodes join with the stack's `ec2` token,
        each under the host id the auth service derives from its instance. Any other provider:
        fail closed."""
        if self.provider == "aws":
            return []
        if self.provider != "equinix-metal":
            log.warning("unknown provider %r in the master's pillar: no Teleport join tokens", self.provider)
            return []
        if not (self.ca_pins.get() or self.refresh_teleport_ca_pins()):
            # A node without a pin would trust whatever answers at the auth address: no joins.
            log.warning("the Teleport CA pins are not known yet: no Teleport joins this round")
            return []
        nodes = self._teleport_call("ci_fleet_teleport.nodes")
        if not isinstance(nodes, list):
            # The Teleport machine is down or answers junk: no joins (nothing could be seen).
            log.warning("%s did not list its nodes: no Teleport joins this round", self.teleport_id)
            return []
        listed = {n.get("name") for n in nodes if isinstance(n, dict)}
        with self._teleport_hosts() as (record, _):
            pass
        if record is None:
            log.error("the record of Teleport host ids (%s) is unreadable: no Teleport joins this round", TELEPORT_HOSTS_FILE)
            return []
        done = []
        for minion_id in sorted(self.minions):
            if self.minions[minion_id].get("role") == "teleport":
                continue
            if minion_id in record["hosts"] or minion_id in record["minted"]:
                if record["hosts"].get(minion_id) in listed:
                    continue
                log.warning("%s was enrolled in Teleport (host id %s, token minted at %s) and its node is not listed: "
                            "no join token; after a human checked the machine: salt-run ci_fleet.forget_teleport_host %s",
                            minion_id, record["hosts"].get(minion_id), record["minted"].get(minion_id), minion_id)
                continue
            if self._must_stop("Teleport joins"):
                return done
            answered, own = self.own_host_id(minion_id)
            if not answered:
                log.warning("%s did not report its Teleport host id: no join token this round", minion_id)
                continue
            if own is not None and own not in record["retired"]:
                log.info("%s reports Teleport host id %s (joined already): no join token", minion_id, own)
                continue
            if self._must_stop("Teleport joins"):
                return done
            with self._teleport_hosts() as (record, save):
                if record is None or minion_id in record["hosts"] or minion_id in record["minted"]:
                    continue
                record["minted"][minion_id] = int(self.wall_clock())
                save(record)
            token = self._teleport_call("ci_fleet_teleport.node_token", kwarg={"ttl": "15m"})
            if not isinstance(token, str) or not TOKEN_PATTERN.match(token):
                log.warning("%s gave no usable node token: no Teleport joins this round", self.teleport_id)
                with self._teleport_hosts() as (record, save):
                    if record is not None and record["minted"].pop(minion_id, None) is not None:
                        save(record)   # none was minted: the minion may have one later
                return done
            try:
                self.inline.put(minion_id, "teleport_join_token", token)
                self.local(minion_id, "state.apply", arg=["teleport.node"])
                if self._wait_joined(minion_id):
                    done.append(minion_id)
            finally:
                # The token is single-purpose: revoke it and remove every copy either way.
                self.inline.remove(minion_id, "teleport_join_token")
                # By its hash: a publication reaches every minion.
                self._teleport_call("ci_fleet_teleport.remove_token", [hashlib.sha256(token.encode()).hexdigest()])
                self.local(minion_id, "file.remove", arg=[TELEPORT_TOKEN_FILE])
        return done

    @contextlib.contextmanager
    def _teleport_hosts(self):
        """(record, save) of TELEPORT_HOSTS_FILE under its lock, as teleport_record gives it; the
        record is None when the file is unreadable (callers fail closed)."""
        with _locked_state(self.state_dir or STATE_DIR, TELEPORT_HOSTS_FILE) as (raw, save):
            yield teleport_record(raw), save

    def _wait_joined(self, minion_id):
        """True once the machine itself reports a host id (own_host_id, asked afresh) that
        Teleport lists: a node announcing its hostname proves nothing (anyone may)."""
        waited = 0
        while waited <= self.join_timeout:
            self._own_ids.pop(minion_id, None)
            answered, own = self.own_host_id(minion_id)
            nodes = self._teleport_call("ci_fleet_teleport.nodes") if answered and own else None
            if isinstance(nodes, list) and own in {n.get("name") for n in nodes if isinstance(n, dict)}:
                return True
            self.sleep(5)
            waited += 5
        log.warning("%s did not join Teleport within %ss", minion_id, self.join_timeout)
        return False

    def _teleport_call(self, fun, arg=(), kwarg=None):
        """The Teleport machine's answer to a job this master publishes to it alone, or None.

        LocalClient collects the returns of the job id it published (salt/job/<jid>/ret/<id>
        events) and keys them by the minion id each return names; every minion sees the job, and
        a return can be put on the master's event bus under any id (batched events,
        CVE-2025-22239 before its fix). So each call carries a fresh random nonce, and only the
        entry under the Teleport minion's id that is signed with that minion's accepted Salt key
        over this function, this nonce and the sha256 of the result counts
        (salt/_modules/ci_fleet_teleport.py `answer_message`). Returns under other ids are
        ignored (a warning naming them; they veto nothing). An answer under the Teleport id that
        does not verify (another key, an earlier call's nonce, a changed result, unsigned) is
        refused: an error logged and None, so nothing is decided from it. Labels, locks, join
        tokens and CA pins are decided only from answers that pass this."""
        return self._signed_call(self.teleport_id, self.teleport_key, fun, arg, kwarg)

    def _signed_call(self, target, key, fun, arg=(), kwarg=None):
        """`target`'s answer to a job published to it alone, believed only when signed with its
        accepted key (key()) for this call's fresh nonce (see _teleport_call), or None."""
        nonce = self.nonce()
        answers = self.local(target, fun, arg=list(arg), kwarg=dict(kwarg or {}, nonce=nonce)) or {}
        strangers = sorted(str(m) for m in answers if m != target)
        if strangers:
            log.warning("%s job to %s was also answered by %s: ignored (only %s's signed answer counts)",
                        fun, target, ", ".join(strangers)[:300], target)
        if target not in answers:
            return None
        try:
            return verified_teleport_answer(key(), target, fun, nonce, answers[target])
        except ValueError as error:
            log.error("refusing %s's answer to %s: %s (forged return?); nothing decided from it",
                      target, fun, error)
            return None

    def assign_teleport_labels(self):
        """Give every joined machine the labels the roles select on, through the auth service,
        and lock every node that is not the machine it claims to be.

        Teleport 18 lets a node announce any label (its config labels, `dynamic/` ones included,
        and command labels: RBAC matches GetAllLabels = metadata.labels + spec.cmd_labels) and,
        on the legacy join RPCs (`token`, `iam`), any host id. So nothing a node announces is
        believed by itself. A machine M's node is the listed node whose host id is M's TRUTH:
        the host id recorded for M (TELEPORT_HOSTS_FILE `hosts`), else the one M itself reports
        (own_host_id: its <data_dir>/host_uuid, signed with M's own Salt key). That node gets
        M's labels (server_info `si-<host id>`, `dynamic/` keys) and is recorded as M only if it
        announces M's hostname AND M's pillar address (the proxy dials that address and checks
        the host certificate there, proxy_checks_host_keys). An assignment, once made, is never
        changed. Locked (`tctl lock --server-id`, verified by listing Teleport's locks):
        - a node under a retired host id (forget_teleport_host);
        - a node announcing command labels (ci-fleet configures no ssh_service.commands);
        - a node whose hostname is no machine of this stack, or the Teleport machine's name
          without being the auth service's own node;
        - a node announcing machine M's hostname under another host id than M's truth (M told
          the master its own id, or that it never joined), or, while M did not answer, at
          another address than M's pillar names;
        - a node under a recorded host id that announces another hostname or address;
        - a node announcing a `dynamic/` label its assignment does not give it.
        The auth service's own host id misused cannot be locked (that locks the auth service):
        reported in "control_plane", with an error. A lock that fails (or is not listed
        afterwards) is an error in "errors" and "lock_failed". On aws, a machine that reports no
        host id is named in "errors" (an ec2 join is refused more than aws_iid_ttl, 6 h, after
        the instance's launch: stop and start it). An unreadable record: nothing.
        Two nodes at M's name and address are no longer ambiguous: the one under M's truth is M.
        Returns {"assigned", "locked", "lock_failed", "control_plane", "errors"}."""
        result = {"assigned": [], "locked": [], "lock_failed": [], "control_plane": [], "errors": []}
        nodes = self._teleport_call("ci_fleet_teleport.nodes")
        infos = self._teleport_call("ci_fleet_teleport.server_infos")
        if not isinstance(nodes, list) or not isinstance(infos, dict):
            log.warning("%s did not list its nodes and server infos: no Teleport labels this round", self.teleport_id)
            return result
        nodes = [n for n in nodes if isinstance(n, dict)]
        with self._teleport_hosts() as (record, save):
            if record is None:
                log.error("the record of Teleport host ids (%s) is unreadable: no Teleport labels or locks this round",
                          TELEPORT_HOSTS_FILE)
                return result
            self._assign_and_lock(nodes, infos, record, save, result)
        return result

    def _truths(self, record, listed, expected_of):
        """minion id -> the host id its node must have, for every machine but the Teleport one:
        the recorded one while a node under it is listed at the machine's hostname and pillar
        address; otherwise (unrecorded, or a replaced / moved machine) the machine's own signed
        answer (None: it reports it never joined, or reports a retired id). Machines that did not
        answer keep their recorded id; unrecorded ones are left out."""
        truths, asking = {}, True
        for minion_id in sorted(self.minions):
            if self.minions[minion_id].get("role") == "teleport":
                continue
            recorded = record["hosts"].get(minion_id)
            if recorded is not None:
                node = listed.get(recorded)
                expected = expected_of(minion_id)
                if node is not None and expected and node.get("hostname") == minion_id \
                        and node.get("addr") == expected.get("addr"):
                    truths[minion_id] = recorded
                    continue
            # Each question may wait MINION_CALL_DEADLINE_SECONDS for a silent minion: within the
            # run's budget only (those left unasked are "no answer" this round).
            asking = asking and (minion_id in self._own_ids or not self._must_stop("Teleport host id questions"))
            answered, own = self.own_host_id(minion_id) if asking else (False, None)
            if answered:
                truths[minion_id] = None if own in record["retired"] else own
            elif recorded is not None:
                truths[minion_id] = recorded
        return truths

    def _assign_and_lock(self, nodes, infos, record, save, result):
        assignments = {host: dict(labels) for host, labels in infos.items() if isinstance(labels, dict)}
        expectations = {}

        def expected_of(minion_id):
            if minion_id not in expectations:
                expectations[minion_id] = self.expected_of(minion_id)
            return expectations[minion_id]

        def want_of(minion_id):
            expected = expected_of(minion_id)
            if not expected or not expected.get("labels"):
                return None, None
            return ({k: v for k, v in expected["labels"].items() if k.startswith(ASSIGNED_LABEL_PREFIX)},
                    expected.get("addr"))

        listed = {n.get("name"): n for n in nodes if not n.get("self")}
        truths = self._truths(record, listed, expected_of)
        changed = False
        for minion_id in sorted(self.minions):
            if self.minions[minion_id].get("role") == "teleport":
                node = next((n for n in nodes if n.get("self")), None)
                if node is None or node.get("name") in assignments or node.get("cmd_labels"):
                    continue
                want, _ = want_of(minion_id)
                if want and self._teleport_call("ci_fleet_teleport.assign_labels", [node.get("name"), want]) is True:
                    assignments[node.get("name")] = want
                    result["assigned"].append(minion_id)
                continue
            host = truths.get(minion_id)
            if minion_id not in truths:
                continue    # no record and no answer: nothing assigned or recorded this round
            if host is None:
                if self.provider == "aws":
                    message = ("%s has not joined Teleport: an ec2 join is refused more than 6 h (aws_iid_ttl) after "
                               "the instance's launch; if it was launched longer ago, stop and start the instance" % minion_id)
                    log.error(message)
                    result["errors"].append(message)
                continue
            node = listed.get(host)
            if node is None or node.get("cmd_labels"):
                continue
            want, addr = want_of(minion_id)
            if not want or node.get("hostname") != minion_id or node.get("addr") != addr:
                continue    # not (or no longer) the machine's name and address: locked below if recorded
            if host not in assignments:
                if self._teleport_call("ci_fleet_teleport.assign_labels", [host, want]) is not True:
                    continue
                assignments[host] = want
                result["assigned"].append(minion_id)
            if record["hosts"].get(minion_id) != host:
                if minion_id in record["hosts"]:
                    log.warning("%s reports Teleport host id %s (recorded: %s, not listed at its name and address): "
                                "now recorded as %s", minion_id, host, record["hosts"][minion_id], host)
                record["hosts"][minion_id] = host
                changed = True
        if changed:
            save(record)
        owner = {host: minion_id for minion_id, host in record["hosts"].items()}
        for node in nodes:
            host = node.get("name")
            if node.get("self"):
                reason = self._control_plane_reason(node, expected_of)
                if reason is not None:
                    log.error("the auth service's own host id %s: %s (not locked: that would lock the auth "
                              "service; a human must check the runners and the Teleport machine)", host, reason)
                    result["control_plane"].append(host)
                continue
            reason = self._lock_reason(node, owner, truths, record, expected_of)
            announced = {k: v for k, v in (node.get("labels") or {}).items() if k.startswith(ASSIGNED_LABEL_PREFIX)}
            given = assignments.get(host, {})
            if reason is None and not all(given.get(k) == v for k, v in announced.items()):
                reason = "node announced labels the fleet did not assign"
                log.error("Teleport node %s (%r) announces %s; the fleet gave it %s", host, node.get("hostname"), announced, given)
            if reason is None:
                continue
            log.error("locking Teleport node %s: %s", repr(host)[:140], reason)
            if self._teleport_call("ci_fleet_teleport.lock_node", [host, "ci-fleet: " + reason]) is True:
                result["locked"].append(host)
            else:
                message = ("Teleport node %s was NOT locked (%s): lock it by hand (tctl lock --server-id=<id>) "
                           "and check the Teleport machine" % (repr(host)[:140], reason))
                log.error(message)
                result["lock_failed"].append(host)
                result["errors"].append(message)

    def _lock_reason(self, node, owner, truths, record, expected_of):
        """Why a listed node (not the auth service's own) must be locked, or None. Every fact
        compared against is the master's own: its index, the machines' pillar, the record and
        each machine's own signed answer."""
        host, hostname = node.get("name"), node.get("hostname")
        shown = repr(hostname)[:80]
        if host in record["retired"]:
            return "host id %s was retired by forget_teleport_host" % repr(host)[:140]
        if node.get("cmd_labels"):
            # ci-fleet configures no ssh_service.commands; RBAC would match their results.
            return "node announces command labels %s (ci-fleet configures none)" % (
                ", ".join(sorted(str(k) for k in node["cmd_labels"]))[:200])
        spec = self.minions.get(hostname) if isinstance(hostname, str) else None
        if spec is None:
            return "hostname %s is no machine of stack %s" % (shown, self.stack)
        if spec.get("role") == "teleport":
            return "hostname %s is the Teleport machine's, but this node is not its auth service's own" % shown
        machine = owner.get(host)
        if machine is not None:
            expected = expected_of(machine)
            addr = expected.get("addr") if expected else None
            if hostname != machine or addr is None or node.get("addr") != addr:
                return "host id %s is %s's at %s; this node announces hostname %s at %s" % (
                    host, machine, addr, shown, repr(node.get("addr"))[:60])
            return None
        if hostname in truths:
            truth = truths[hostname]
            if truth is None:
                return "hostname %s, but that machine reports it never joined Teleport" % shown
            if truth != host:
                return "hostname %s, but that machine's host id is %s; this node's is %s" % (shown, truth, repr(host)[:140])
        expected = expected_of(hostname)
        if expected and expected.get("addr") and node.get("addr") != expected["addr"]:
            return "hostname %s announced at %s; that machine's address is %s" % (
                shown, repr(node.get("addr"))[:60], expected["addr"])
        return None

    def _control_plane_reason(self, node, expected_of):
        """Why the auth service's own node (its host id) is announced by something else, or None."""
        if node.get("cmd_labels"):
            return "announces command labels %s (ci-fleet configures none)" % (
                ", ".join(sorted(str(k) for k in node["cmd_labels"]))[:200])
        expected = expected_of(self.teleport_id)
        addr = expected.get("addr") if expected else None
        if node.get("hostname") != self.teleport_id or (addr is not None and node.get("addr") != addr):
            return "announced as hostname %s at %s; the Teleport machine is %s at %s" % (
                repr(node.get("hostname"))[:80], repr(node.get("addr"))[:60], self.teleport_id, addr)
        return None

    def forget_teleport_host(self, minion_id):
        """A human checked machine `minion_id` (or rebuilt it with /var/lib/teleport wiped): lock
        its recorded host id (verified), delete its server_info `si-<id>` and retire the id (never
        recorded again, locked whenever listed), then drop the record, so the next round may mint
        it ONE join token. Nothing changes unless the lock and the deletion succeeded. True when
        there was a record."""
        with self._teleport_hosts() as (record, save):
            if record is None:
                log.error("the record of Teleport host ids (%s) is unreadable: nothing forgotten", TELEPORT_HOSTS_FILE)
                return False
            if minion_id not in record["hosts"] and minion_id not in record["minted"]:
                return False
            old = record["hosts"].get(minion_id)
            if old is not None:
                reason = "ci-fleet: forget_teleport_host %s (a human re-enrols the machine)" % minion_id
                if self._teleport_call("ci_fleet_teleport.lock_node", [old, reason]) is not True:
                    log.error("could not lock %s's host id %s: nothing forgotten", minion_id, old)
                    return False
                if self._teleport_call("ci_fleet_teleport.forget_host", [old]) is not True:
                    log.error("could not delete the server_info of %s's host id %s: nothing forgotten", minion_id, old)
                    return False
                if old not in record["retired"]:
                    record["retired"].append(old)
            record["hosts"].pop(minion_id, None)
            record["minted"].pop(minion_id, None)
            save(record)
        log.warning("forgot the Teleport host id %s of %s (locked, labels deleted): it may be given one join token again",
                    old, minion_id)
        return True

    # -- GitHub Actions -------------------------------------------------------------------
    def github_runner_ids(self):
        return sorted(m for m, spec in self.minions.items()
                      if spec.get("role") == "runner" and spec.get("agent") == "github-actions")

    def _runner_spec(self, minion_id):
        """Organisation, runner group and labels of a runner, from the pillar the master
        compiled for it (ci_fleet:runner) and the master's own minion list: never from
        anything the minion says. The `queue-<queue>` label marks this stack's runners
        (deregister_stale_github_runners)."""
        spec = self.runner_pillar.get(minion_id) or {}
        queue = self.minions[minion_id].get("queue") or spec.get("queue")
        org, group = spec.get("github_organization"), spec.get("runner_group")
        if not org or not group or not queue:
            raise LookupError("%s: no github_organization, runner_group or queue in its pillar" % minion_id)
        labels = [label for label in spec.get("labels") or [] if label != "queue-%s" % queue]
        return org, group, labels + ["queue-%s" % queue]

    def _slots(self, minion_id):
        """Job slots of a GitHub runner with isolation vm, from the pillar the master compiled
        for it (ci_fleet:runner:isolation, ci_fleet:runner:job_vm:slots): None with isolation
        host (one runner on the host, named after the minion), 0 when vm but no usable count
        (then nothing is registered: fail closed, never a runner on the host)."""
        spec = self.runner_pillar.get(minion_id) or {}
        if spec.get("isolation", "host") != "vm":
            return None
        slots = (spec.get("job_vm") or {}).get("slots")
        if isinstance(slots, bool) or not isinstance(slots, int) or not 0 < slots <= MAX_SLOTS:
            log.error("%s: isolation vm without a slot count in its pillar: no runner registered", minion_id)
            return 0
        return slots

    def _runner_names(self, minion_id):
        """{runner name: slot} the master mints for a GitHub minion: {minion_id: None} on the host,
        {"<minion_id>-s<N>": N} for N = 1..slots with isolation vm."""
        slots = self._slots(minion_id)
        if slots is None:
            return {minion_id: None}
        return {"%s-s%d" % (minion_id, n): n for n in range(1, slots + 1)}

    def _owner(self, name):
        """(minion_id, slot) of a runner name this master mints for a current GitHub minion
        (slot None: the host runner), or None. The slot is within that minion's pillar count;
        the host name of a vm minion is no runner of it any more."""
        candidates = [(name, None)]
        match = SLOT_NAME_PATTERN.match(name or "")
        if match:
            candidates.append((match.group("minion"), int(match.group("slot"))))
        for minion_id, slot in candidates:
            if minion_id in self.github_runner_ids() and self._runner_names(minion_id).get(name, -1) == slot:
                return minion_id, slot
        return None

    def _github_lookup_allowed(self, minion_id):
        """Take one of minion_id's GitHub lookups (a bucket of its runner-name count, refilled at
        that many per GITHUB_LOOKUP_REFILL_SECONDS, kept across runs): False (logged) when it has
        none left, or the state cannot be read (fail closed: the next round tries again). The
        key is the master's own minion id, never anything a minion sent."""
        size = max(1, len(self._runner_names(minion_id)))
        with _locked_state(self.state_dir or STATE_DIR, GITHUB_BUDGET_FILE) as (state, save):
            if state is None:
                log.error("%s unreadable: no GitHub lookups this run", GITHUB_BUDGET_FILE)
                return False
            current = set(self.github_runner_ids())
            buckets = {m: b for m, b in (state.get("minions") or {}).items() if m in current and isinstance(b, dict)}
            bucket = buckets.setdefault(minion_id, {})
            granted = _bucket_take(bucket, self.wall_clock(), size, size / float(GITHUB_LOOKUP_REFILL_SECONDS))
            save({"minions": buckets})
        if not granted:
            log.warning("%s: its GitHub lookup budget (%d per %ss) is used: no lookups for it until it refills",
                        minion_id, size, GITHUB_LOOKUP_REFILL_SECONDS)
        return granted

    def _slot_paths(self, slot):
        directory = "%s/%d" % (SLOT_RUN_DIR, slot)
        return directory + "/inbox", directory + "/state.json"

    def _runner_idle(self, minion_id, slot):
        """The minion's answer, which only gates (it never names a runner or a slot): True when
        the host runner's unit answers not running (slot None), or when slot N's inbox answers
        empty (`file.readdir`: only . and ..) and its state.json (ci-job-slot: written at each
        VM's start, `job` set once an input is taken) answers with no job: a warm VM waits and
        nothing is queued for it. Anything else, or no answer, is "not idle"."""
        if slot is None:
            return self.local(minion_id, "service.status", arg=[RUNNER_UNIT]).get(minion_id) is False
        inbox, state_file = self._slot_paths(slot)
        entries = self.local(minion_id, "file.readdir", arg=[inbox]).get(minion_id)
        if not isinstance(entries, list) or sorted(entries) != [".", ".."]:
            return False
        text = self.local(minion_id, "file.read", arg=[state_file]).get(minion_id)
        try:
            state = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            state = None
        return isinstance(state, dict) and not state.get("job")

    def _deliver_jit_config(self, minion_id, slot, config):
        """Through the minion's own pillar only; the publication names the state (and the slot
        number, which is not secret), never the config."""
        try:
            self.inline.put(minion_id, "github_jit_config", config)
            if slot is None:
                self.local(minion_id, "state.apply", arg=["github_runner"])
            else:
                self.local(minion_id, "state.apply", arg=[SLOT_STATE], kwarg={"pillar": {SLOT_PILLAR_KEY: slot}})
        finally:
            self.inline.remove(minion_id, "github_jit_config")

    def register_github_runners(self, only=None):
        """Give a just-in-time runner config to each runner GitHub does not list.

        The master decides: a runner needs a config when its name is absent from the
        organisation's runner list (GitHub removes an ephemeral JIT runner after its job). The
        names come from the master's pillar: the minion id (isolation host) or
        `<minion>-s<N>` for each job slot N of ci_fleet:runner:job_vm:slots (isolation vm). The
        minion's answer only gates readiness (_runner_idle): the host unit not running, or the
        slot's inbox empty and no job in it. A minion that says it is unregistered while GitHub
        lists it gets nothing; one answering for a slot its pillar does not have is never asked.
        The config is minted for that name, the runner group (resolved by name) and the labels of
        the master's pillar, and reaches the minion through its pillar only (a slot's config as a
        `kind: github` job input in the slot's inbox: salt/runner/job_vm_github.sls). One run at a
        time per minion (_coalesced: its lock, GitHub's list read under it; a run that finds it held
        asks the holder for one more pass)."""
        registered, groups, listed = [], {}, {}
        for minion_id in self.github_runner_ids():
            if (only and minion_id != only) or os.path.exists(os.path.join(DRAIN_DIR, minion_id)):
                continue
            # Between minions too: a minion whose calls each took their whole deadline must not
            # keep the round (and the orchestration lock a restart waits for) past its budget.
            if self._must_stop("runner registrations"):
                return registered
            try:
                org, group, labels = self._runner_spec(minion_id)
            except LookupError as error:
                log.error("%s", error)
                continue
            # A full round reads the organisation's list once (a big fleet's list is many pages
            # against the App's hourly quota); a run for one minion (a reactor event, one per
            # finished job) asks GitHub only about the names that are idle.
            if not only and org not in listed:
                listed[org] = {runner.get("name") for runner in self.github.runners(org)}
            if not self._coalesced(minion_id, lambda: self._register_minion(minion_id, org, group, labels, groups, registered,
                                                                            listed.get(org))):
                return registered
        return registered

    def _register_minion(self, minion_id, org, group, labels, groups, registered, listed=None):
        """One pass over a minion's runner names, under its registration lock; False when this
        run must stop (a pending restart, its time budget). `listed`: the round's list, or None.
        Every name is looked up by itself just before it is minted, under the lock: a run that
        just ended has its names listed by now, whatever the round's list said."""
        for name, slot in sorted(self._runner_names(minion_id).items(), key=lambda item: item[1] or 0):
            if self._must_stop("runner registrations"):
                return False
            if (listed is not None and name in listed) or not self._runner_idle(minion_id, slot):
                continue    # listed, busy, or the minion did not answer
            if not self._github_lookup_allowed(minion_id):
                break
            if self.github.runner_listed(org, name):
                continue
            try:
                if (org, group) not in groups:
                    groups[(org, group)] = self.github.runner_group_id(org, group)
            except LookupError as error:
                log.error("%s: not registering %s", error, name)
                break
            work_folder = RUNNER_WORK_FOLDER if slot is None else SLOT_WORK_FOLDER
            config = jit_config_without_updates(self.github.generate_jitconfig(
                org, name, groups[(org, group)], labels, work_folder))
            self._deliver_jit_config(minion_id, slot, config)
            registered.append(name)
        return True

    def _coalesced(self, minion_id, work):
        """work() under minion_id's registration lock, never waited for. A run that finds it held
        leaves `<minion>.again` and tries once more (the holder may have just let go); the holder,
        after letting go, takes the lock again while that marker exists and does another pass
        (up to REGISTRATION_PASSES), so the reason a skipped run was started (a slot just ready,
        a host runner just stopped) is never lost and a burst of events costs one more pass, not
        one each. False when work() asked to stop."""
        again = os.path.join(self.registration_lock_dir, "%s.again" % minion_id)
        for attempt in range(REGISTRATION_PASSES):
            with self._registration_lock(minion_id) as mine:
                if mine:
                    try:
                        os.unlink(again)
                    except FileNotFoundError:
                        pass
                    if not work():
                        return False
            if mine:
                if not os.path.exists(again):
                    return True
            elif attempt == 0:
                log.info("%s: another run is registering its runners: asking it for one more pass", minion_id)
                os.close(os.open(again, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
            else:
                return True     # the holder takes the marker after it lets go
        return True

    @contextlib.contextmanager
    def _registration_lock(self, minion_id):
        """Yields True holding `minion_id`'s registration lock (flock, exclusive, never waited
        for), False when another run (another process or thread of the master) holds it."""
        directory = self.registration_lock_dir
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        path = os.path.join(directory, "%s.lock" % minion_id)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600), "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _is_stale(self, runner, queues):
        """A runner named <stack>-<queue>-<name> of one of this stack's queues, carrying that
        queue's `queue-<queue>` label (github_runner.register adds it), that is no runner the
        master mints now (_owner: a current GitHub minion's name, or one of its slots
        <minion>-s<N>, N within its pillar's count). The name alone is ambiguous (stack `prod`
        queue `eu-a` vs stack `prod-eu` queue `a`); with the label it is not. A current
        minion's own name stays unless it became a vm host (its host runner is gone). Busy
        runners are never deleted."""
        name = runner.get("name", "")
        if runner.get("busy") or self._owner(name) is not None:
            return False
        if name in self.minions and self._slots(name) is None:
            return False
        labels = {label.get("name") for label in runner.get("labels") or [] if isinstance(label, dict)}
        return any(name.startswith("%s-%s-" % (self.stack, queue)) and "queue-%s" % queue in labels
                   for queue in queues)

    def _is_dead_jit_runner(self, runner):
        """A runner of a current minion (or of one of its slots) that can never come back:
        GitHub shows it offline and idle, and its minion answers idle (_runner_idle: the unit
        not running; for a slot, an empty inbox and no job, so the slot's VM never received it
        or lost it). Its single-use JIT config is gone (ExecStopPost; a slot's input is read
        once), so it would stay listed (and get no new config) until GitHub drops it; deleting
        it lets the next round mint a new one. The minion's answer can only remove the runner
        of its own name; the new config is bound to the same name, group and labels."""
        name = runner.get("name", "")
        owner = self._owner(name)
        if owner is None or runner.get("busy") or runner.get("status") != "offline":
            return False
        return self._runner_idle(*owner)

    def deregister_stale_github_runners(self):
        """Delete this stack's runners whose name is no current minion (current queues only:
        GitHub itself removes a self-hosted runner that has not connected for 14 days), and
        the runners of current minions whose JIT config is gone (_is_dead_jit_runner). The latter
        under that minion's registration lock, skipped while a registration holds it: a runner just
        minted is listed offline and its slot still answers idle until the delivery lands in the
        inbox, and deleting it then would leave the slot a config for a deleted runner."""
        removed = []
        organizations = sorted({self.runner_pillar[m]["github_organization"] for m in self.github_runner_ids()})
        queues = sorted({spec["queue"] for spec in self.minions.values()
                         if spec.get("role") == "runner" and spec.get("queue")})
        for org in organizations:
            for runner in self.github.runners(org):
                if self._must_stop("runner deregistrations"):
                    return removed
                if self._is_stale(runner, queues):
                    self.github.delete_runner(org, runner["id"])
                    removed.append(runner["name"])
                    continue
                owner = self._owner(runner.get("name", ""))
                if owner is None:
                    continue
                with self._registration_lock(owner[0]) as mine:
                    if mine and self._is_dead_jit_runner(runner):
                        self.github.delete_runner(org, runner["id"])
                        removed.append(runner["name"])
        return removed


# --- Salt entry points (need a running master: __opts__, __salt__) ---------------------

def teleport_expectation(document):
    """From a minion's own pillar document (written by the program): the labels the auth
    service must give its node and the address its SSH service listens on."""
    import yaml  # PyYAML: a dependency of Salt itself
    teleport = (document or {}).get("ci_fleet", {}).get("teleport", {})
    labels = teleport.get("labels")
    config = teleport.get("node_config") or (document or {}).get("ci_fleet_teleport", {}).get("auth_config")
    if not isinstance(labels, dict) or not config:
        return None
    addr = (yaml.safe_load(config) or {}).get("ssh_service", {}).get("listen_addr")
    return {"labels": labels, "addr": addr} if addr else None


def _pillar_teleport_expectation(minion_id):
    return teleport_expectation(__salt__["pillar.show_pillar"](minion_id))  # noqa: F821


def salt_local(client, timeout=MINION_CALL_DEADLINE_SECONDS, clock=None):
    """A LocalClient call as {minion_id: return} of the minions that answered without error by
    `timeout` seconds (wall clock of this run, never extended).

    LocalClient.cmd's `timeout` is no bound: get_iter_returns (salt/client/__init__.py) asks
    saltutil.find_job once it passes and, for every minion that answers the job still runs, sets
    that minion's timeout to now + timeout again, for as long as it keeps answering; a rooted
    minion can so hold any call (and the run, and the orchestration lock) forever.
    cmd_iter_no_block runs the same loop with block=False: it yields each return as it comes and
    None between polls (every 10 ms), so this loop checks its own deadline and closes the
    generator (its `finally` unsubscribes the job's events). A minion that did not answer by then
    is "no answer", never "idle". Returns are {id: {"ret", "retcode", "jid"}} (the shape cmd gives
    with full_return=True); anything else (False, missing, a retcode) is dropped."""

    def local(tgt, fun, arg=(), kwarg=None):
        now = clock or (lambda: _monotonic())
        until = now() + timeout
        answered = {}
        if not hasattr(client, "cmd_iter_no_block"):
            # A client with `cmd` only (test/drain's fake fleet); Salt's LocalClient has both.
            returns = iter([client.cmd(tgt, fun, arg=list(arg), kwarg=kwarg or {}, timeout=timeout, full_return=True)])
        else:
            returns = client.cmd_iter_no_block(tgt, fun, arg=list(arg), kwarg=kwarg or {}, timeout=timeout)
        try:
            for item in returns:
                for minion_id, data in (item or {}).items():
                    if isinstance(data, dict) and "ret" in data and not data.get("retcode"):
                        answered[minion_id] = data["ret"]
                if tgt in answered or now() >= until:
                    break
        finally:
            close = getattr(returns, "close", None)
            if close:
                close()
        if tgt not in answered and now() >= until:
            log.warning("%s: no answer to %s within %ss: taken as no answer", str(tgt)[:80], fun, timeout)
        return answered

    return local


def _restart_pending():
    """Is a salt-master restart waiting for the orchestration lock (a fresh marker)?"""
    try:
        age = _clock() - os.stat(RESTART_PENDING).st_mtime
    except FileNotFoundError:
        return False
    if age > RESTART_PENDING_STALE_SECONDS:
        log.warning("ignoring stale %s (%.0fs old: its restart was killed)", RESTART_PENDING, age)
        return False
    return True


@contextlib.contextmanager
def _orchestration_lock(entry):
    """Shared: runs do not exclude each other, only the master's restart (exclusive) waits.
    Yields False, holding nothing, while a restart is pending: this round does nothing and
    the shared holders drain (flock(2) would otherwise let them starve the restart)."""
    if _restart_pending():
        log.info("ci_fleet.%s: salt-master restart pending (%s): nothing this round", entry, RESTART_PENDING)
        yield False
        return
    with open(ORCHESTRATION_LOCK, "a") as handle:
        os.chmod(ORCHESTRATION_LOCK, 0o600)
        fcntl.flock(handle, fcntl.LOCK_SH)
        try:
            # The restart may have announced itself while this run waited for the lock.
            if _restart_pending():
                log.info("ci_fleet.%s: salt-master restart pending (%s): nothing this round", entry, RESTART_PENDING)
                yield False
            else:
                yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _orchestrator():
    import salt.client  # noqa: only on the master

    # Tokens left behind by a killed run die here, whatever this run does next.
    InlinePillar(INLINE_PILLAR_DIR).sweep()

    master_id = __opts__["ci_fleet"]["master_minion_id"]  # noqa: F821 (Salt loader global)
    stack = master_id[: -len("-salt-master")]
    master_pillar = __salt__["pillar.show_pillar"](master_id)  # noqa: F821
    minions = master_pillar.get("ci_fleet_master", {}).get("minions", {})
    runner_pillar = {}
    for minion_id, spec in minions.items():
        if spec.get("agent") == "github-actions":
            pillar = __salt__["pillar.show_pillar"](minion_id)  # noqa: F821
            runner_pillar[minion_id] = pillar.get("ci_fleet", {}).get("runner", {})
    local = salt_local(salt.client.LocalClient(mopts=__opts__))  # noqa: F821
    app = master_pillar.get("ci_fleet_master", {}).get("github_app")
    github = GitHub(app, token_cache=TokenCache(STATE_DIR)) if app else None
    return Orchestrator(stack, master_pillar, runner_pillar, local, github, state_dir=STATE_DIR,
                        inline=InlinePillar(INLINE_PILLAR_DIR), stop_requested=_restart_pending,
                        expected_of=_pillar_teleport_expectation,
                        teleport_key=lambda: accepted_minion_key(__opts__.get("pki_dir") or MASTER_PKI_DIR,  # noqa: F821
                                                                 "%s-teleport" % stack),
                        minion_key=lambda minion_id: accepted_minion_key(
                            __opts__.get("pki_dir") or MASTER_PKI_DIR, minion_id))  # noqa: F821


def forget_teleport_host(minion_id):
    """salt-run ci_fleet.forget_teleport_host <minion id>: Orchestrator.forget_teleport_host."""
    with _orchestration_lock("forget_teleport_host") as go:
        return _orchestrator().forget_teleport_host(minion_id) if go else False


def join_teleport_nodes():
    with _orchestration_lock("join_teleport_nodes") as go:
        return _orchestrator().join_teleport_nodes() if go else []


def assign_teleport_labels():
    with _orchestration_lock("assign_teleport_labels") as go:
        return _orchestrator().assign_teleport_labels() if go else {}


def refresh_teleport_ca_pins():
    with _orchestration_lock("refresh_teleport_ca_pins") as go:
        return _orchestrator().refresh_teleport_ca_pins() if go else []


def _reactor_gate(minion):
    """Before anything else a reactor run does (no pillar, no orchestrator, no lock waited for
    but this file's): True when `minion` (the event's id; may be any string a minion sent) had no
    run in the last REACTOR_MINION_INTERVAL_SECONDS and the fleet-wide bucket
    (REACTOR_RUNS_PER_MINUTE) has a run left. Over the limit: False and at most one log line a
    minute; if a run for that minion holds its registration lock, it is asked for one more pass
    (the `.again` marker, Orchestrator._coalesced), so an event that came while it ran is not lost.
    Unreadable state: False (fail closed; the 5-minute round covers every minion)."""
    if not isinstance(minion, str) or not MINION_ID_PATTERN.match(minion):
        log.warning("ci_fleet.register_github_runners: reactor event with id %r: ignored", str(minion)[:80])
        return False
    now = _wall_clock()
    with _locked_state(STATE_DIR, GATE_FILE) as (state, save):
        if state is None:
            log.error("%s unreadable: reactor runs refused (the round still runs)", GATE_FILE)
            return False
        recent = {m: at for m, at in (state.get("minions") or {}).items()
                  if isinstance(at, (int, float)) and 0 <= now - at < REACTOR_MINION_INTERVAL_SECONDS}
        fleet = state.get("fleet") if isinstance(state.get("fleet"), dict) else {}
        granted = minion not in recent and _bucket_take(fleet, now, REACTOR_RUNS_PER_MINUTE, REACTOR_RUNS_PER_MINUTE / 60.0)
        if granted:
            recent[minion] = now
        logged = state.get("logged")
        quiet = isinstance(logged, (int, float)) and 0 <= now - logged < GATE_LOG_INTERVAL_SECONDS
        if not granted and not quiet:
            logged = now
        save({"minions": recent, "fleet": fleet, "logged": logged})
    if granted:
        return True
    if not quiet:
        log.warning("ci_fleet.register_github_runners: reactor rate limit (%s: one run per %ss; fleet %s a minute): "
                    "skipped, the round covers it (this line at most once a minute)",
                    minion, REACTOR_MINION_INTERVAL_SECONDS, REACTOR_RUNS_PER_MINUTE)
    lock_dir = os.path.join(os.path.dirname(INLINE_PILLAR_DIR), REGISTRATION_LOCK_DIRNAME)
    if os.path.exists(os.path.join(lock_dir, "%s.lock" % minion)):     # a GitHub minion's, made by a run
        try:
            os.close(os.open(os.path.join(lock_dir, "%s.again" % minion), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        except OSError:
            pass
    return False


def register_github_runners(minion=None):
    if minion is not None and not _reactor_gate(minion):
        return []
    with _orchestration_lock("register_github_runners") as go:
        if not go:
            return []
        orchestrator = _orchestrator()
        return orchestrator.register_github_runners(only=minion) if orchestrator.github else []


def deregister_stale():
    with _orchestration_lock("deregister_stale") as go:
        if not go:
            return []
        orchestrator = _orchestrator()
        return orchestrator.deregister_stale_github_runners() if orchestrator.github else []


def reconcile():
    with _orchestration_lock("reconcile") as go:
        if not go:
            return {}
        orchestrator = _orchestrator()
        result = {"teleport_ca_pins": orchestrator.refresh_teleport_ca_pins(),
                  "teleport_joined": orchestrator.join_teleport_nodes(),
                  "teleport_labels": orchestrator.assign_teleport_labels()}
        if orchestrator.github:
            result["github_registered"] = orchestrator.register_github_runners()
            result["github_removed"] = orchestrator.deregister_stale_github_runners()
        return result
