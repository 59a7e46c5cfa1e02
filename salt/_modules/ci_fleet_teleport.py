"""Execution module for the Teleport machine, called by the master's orchestration
(salt/_runners/ci_fleet.py). A module of its own because the master's publisher_acl
blocks cmd.* for everyone. Tokens are returned to the master only, never logged.

A publication reaches every minion, so no argument may carry a token: a minted token is
kept here (root-only, one file per token, named by its sha256) and revoked by that hash.
Host ids, label maps and lock messages are not secret.

Every answer the master acts on is signed here (issue 12). A publication reaches every minion,
so every minion sees each job the master sends this one, and a return for it can be put on the
master's event bus under any id (batched events, CVE-2025-22239 before its fix). The master
therefore passes a fresh random `nonce` with each call, and every function given one answers
{"result": <its result>, "sig": <base64>}: an RSA PKCS#1 v1.5 SHA-256 signature, made with this
minion's own Salt key (<pki_dir>/minion.pem, root-only, read where Salt's minion reads it:
salt/crypt.py `AsyncAuth.rsa_path`), over `answer_message` (a fixed prefix, this minion's id,
the function's full name, the nonce and the sha256 of the result's canonical JSON). The master
(salt/_runners/ci_fleet.py `_teleport_call`) verifies it with the key it accepted for this
minion (<master pki_dir>/minions/<id>) and believes nothing else. Without a nonce (a human's
`salt-call`) a function answers its plain result, which the master never accepts.
"""
import base64
import hashlib
import json
import os
import re
import time

__virtualname__ = "ci_fleet_teleport"

TOKEN_DIR = "/var/lib/ci-fleet/teleport-join-tokens"
# The Teleport process's own host id (lib/utils ReadHostUUID: <data_dir>/host_uuid).
HOST_UUID_FILE = "/var/lib/teleport/host_uuid"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# A node's host id as this module writes it into a server_info name (`si-<host id>`): a UUID
# (token/iam joins) or <account>-<instance id> (ec2 joins). Labels are only ever assigned to a
# host id a machine itself reported (own_host_id), so this stays strict.
HOST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,127}\Z")
# Any host id Teleport can hold (the legacy join RPCs take the client's: any string) can be
# locked: it goes to tctl as ONE argv element (`--server-id=<id>`, no shell), so all that is
# refused is what no argv element can carry (NUL) or a log line should not (other controls).
LOCKABLE_HOST_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,4096}\Z")
# Labels the master assigns: `dynamic/<name>` (api/types/server_info.go fixLabels gives every
# label of an `si-` server_info this prefix), plain values.
ASSIGNED_LABEL_KEY = re.compile(r"^dynamic/[a-z0-9][a-z0-9_.-]{0,62}$")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Longer than any token's ttl: a file this old names a token Teleport has expired already.
STALE_SECONDS = 24 * 3600
# What the signature of an answer covers (answer_message); the master builds the same bytes.
ANSWER_PREFIX = b"ci-fleet-teleport-answer/v1"
# The master's nonce: secrets.token_hex(32). Anything else is refused (it is part of the message).
NONCE = re.compile(r"^[0-9a-f]{32,128}$")


def __virtual__():
    return __virtualname__


def canonical_json(value):
    """The bytes whose sha256 a signature covers: sorted keys, no spaces, ASCII, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def answer_message(minion_id, fun, nonce, result):
    """What this minion signs and the master verifies: prefix, minion id, function, nonce and
    sha256(canonical JSON of the result), one per line (none of them can hold a newline)."""
    for field in (minion_id, fun, nonce):
        if not isinstance(field, str) or not field or "\n" in field:
            raise ValueError("answer fields are one-line strings")
    return b"\n".join([ANSWER_PREFIX, minion_id.encode(), fun.encode(), nonce.encode(),
                       hashlib.sha256(canonical_json(result)).hexdigest().encode()])


def _sign(message):
    """RSA PKCS#1 v1.5 SHA-256 with this minion's Salt key (pki_dir/minion.pem, as Salt keeps it)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    with open(os.path.join(__opts__["pki_dir"], "minion.pem"), "rb") as handle:  # noqa: F821 (Salt loader global)
        key = serialization.load_pem_private_key(handle.read(), password=None)
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def _answer(name, nonce, result):
    """`result` signed for the master's call `nonce` (see the module's docstring), or plain
    without a nonce."""
    if nonce is None:
        return result
    if not isinstance(nonce, str) or not NONCE.match(nonce):
        raise ValueError("nonce must be 32..128 lower-case hex digits")
    message = answer_message(__opts__["id"], "%s.%s" % (__virtualname__, name), nonce, result)  # noqa: F821
    return {"result": result, "sig": base64.b64encode(_sign(message)).decode()}


def _tctl(*args, **kwargs):
    options = {"python_shell": False, "output_loglevel": "quiet", "hide_output": True}
    if "stdin" in kwargs:
        options["stdin"] = kwargs["stdin"]
    result = __salt__["cmd.run_all"](["tctl"] + list(args), **options)
    if result["retcode"] != 0:
        raise RuntimeError("tctl %s failed: %s" % (args[0], result["stderr"][-500:]))
    return result["stdout"]


def _token_dir():
    os.makedirs(TOKEN_DIR, mode=0o700, exist_ok=True)
    os.chmod(TOKEN_DIR, 0o700)
    now = time.time()
    for name in os.listdir(TOKEN_DIR):
        path = os.path.join(TOKEN_DIR, name)
        if now - os.stat(path).st_mtime > STALE_SECONDS:
            os.remove(path)
    return TOKEN_DIR


def _own_host_id():
    try:
        with open(HOST_UUID_FILE) as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return None


def host_ca_certificates(nonce=None):
    """The cluster's host CA TLS certificates, PEM (`tctl auth export --type=tls-host`:
    tool/tctl/common/auth_command.go exportTLSAuthority(HostCA)). Public. The master computes
    the nodes' CA pins from them (SPKI sha256, as `tctl status` shows them)."""
    text = _tctl("auth", "export", "--type=tls-host")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise RuntimeError("tctl auth export --type=tls-host printed no certificate")
    return _answer("host_ca_certificates", nonce, text)


def own_host_id(nonce=None):
    """This machine's own Teleport host id: the content of <data_dir>/host_uuid (Teleport 18
    lib/utils/hostid: FileName = "host_uuid", GetPath(dataDir)), or None when this machine's
    Teleport never joined. Called by the master on every machine (targeted by minion id, the
    answer signed with that minion's own Salt key): the master records a machine's node only
    from the machine's own answer, never from what a node announces."""
    return _answer("own_host_id", nonce, {"host_id": _own_host_id() or None})


def nodes(nonce=None):
    """The SSH nodes as the auth service lists them (`tctl nodes ls --format=json`, ServerV2):
    host id (metadata.name, bound to the node's certificate), the hostname, address and
    labels the node announced, and `self`: this Teleport process's own SSH service."""
    own = _own_host_id()
    out = []
    for node in json.loads(_tctl("nodes", "ls", "--format=json") or "[]"):
        metadata, spec = node.get("metadata", {}), node.get("spec", {})
        # spec.cmd_labels: the node's ssh_service.commands (api/types/server.go GetAllLabels =
        # CombineLabels(metadata.labels, spec.cmd_labels), a command label winning): RBAC matches
        # on them as on any label, so the master must see them (it configures no commands).
        commands = spec.get("cmd_labels") or {}
        cmd_labels = {str(k): str((v or {}).get("result", "")) if isinstance(v, dict) else str(v)
                      for k, v in (commands.items() if isinstance(commands, dict) else [])}
        out.append({"name": metadata.get("name"), "hostname": spec.get("hostname"), "addr": spec.get("addr"),
                    "labels": dict(metadata.get("labels") or {}), "cmd_labels": cmd_labels,
                    "self": bool(own) and metadata.get("name") == own})
    return _answer("nodes", nonce, sorted(out, key=lambda n: n["name"] or ""))


def server_infos(nonce=None):
    """host id -> the labels its `si-<host id>` server_info assigns (as RBAC sees them)."""
    out = {}
    for info in json.loads(_tctl("get", "server_info", "--format=json") or "[]"):
        name = info.get("metadata", {}).get("name", "")
        if name.startswith("si-"):
            out[name[len("si-"):]] = dict(info.get("spec", {}).get("new_labels") or {})
    return _answer("server_infos", nonce, out)


def assign_labels(host_id, labels, nonce=None):
    """Create (or overwrite) the server_info `si-<host_id>` that gives that node `labels`.
    The auth service sends them to the node over its inventory control stream."""
    if not HOST_ID.match(str(host_id)):
        raise ValueError("assign_labels takes a Teleport host id")
    if not isinstance(labels, dict) or not labels or not all(
            ASSIGNED_LABEL_KEY.match(str(k)) and LABEL_VALUE.match(str(v)) for k, v in labels.items()):
        raise ValueError("assign_labels takes a map of dynamic/<name> labels with plain values")
    document = {"kind": "server_info", "version": "v1", "sub_kind": "cloud_info",
                "metadata": {"name": "si-%s" % host_id},
                "spec": {"new_labels": {k: labels[k] for k in sorted(labels)}}}
    _tctl("create", "-f", stdin=json.dumps(document))
    return _answer("assign_labels", nonce, True)


def _locks_on(host_id):
    """The names of the locks Teleport holds on server `host_id` (`tctl get locks`: LockV2,
    spec.target.server_id), whatever made them."""
    names = []
    for lock in json.loads(_tctl("get", "locks", "--format=json") or "[]"):
        if ((lock.get("spec") or {}).get("target") or {}).get("server_id") == host_id:
            names.append((lock.get("metadata") or {}).get("name"))
    return names


def lock_node(host_id, message, nonce=None):
    """Lock the Teleport server `host_id` (`tctl lock --server-id`): the auth service refuses
    its certificates from then on. Any host id Teleport can hold (LOCKABLE_HOST_ID); no lock is
    created twice, and no marker is trusted: Teleport's own list of locks says whether one is in
    force (a human's `tctl rm lock/<name>` means the next round locks it again). Answers True only
    when a lock on it is listed afterwards; raises otherwise (the master reports the failure)."""
    if not isinstance(host_id, str) or not LOCKABLE_HOST_ID.match(host_id):
        raise ValueError("lock_node takes a Teleport host id (no control characters)")
    if host_id == _own_host_id():
        raise ValueError("refusing to lock the auth service's own host")
    if not _locks_on(host_id):
        _tctl("lock", "--server-id=" + host_id, "--message=%s" % str(message)[:200].replace("\n", " "))
    if not _locks_on(host_id):
        raise RuntimeError("tctl lock ran but Teleport lists no lock on that server id")
    return _answer("lock_node", nonce, True)


def forget_host(host_id, nonce=None):
    """Delete the server_info `si-<host_id>` (`tctl rm server_info/si-<id>`; tool/tctl/common
    resource_command.go KindServerInfo -> DeleteServerInfo): the labels the master gave that
    node are gone. The caller (the master's forget_teleport_host) has locked it first."""
    if not HOST_ID.match(str(host_id)):
        raise ValueError("forget_host takes a Teleport host id")
    infos = json.loads(_tctl("get", "server_info", "--format=json") or "[]")
    if any((i.get("metadata") or {}).get("name") == "si-%s" % host_id for i in infos):
        _tctl("rm", "server_info/si-%s" % host_id)
    return _answer("forget_host", nonce, True)


def node_token(ttl="15m", nonce=None):
    """A new node join token that expires after ttl (kept here until revoked by its hash).
    A `token`-method token stays valid until its ttl or its deletion, however often it is
    used: the master revokes it as soon as it sees the join (ci_fleet.join_teleport_nodes)."""
    token = json.loads(_tctl("tokens", "add", "--type=node", "--ttl=%s" % ttl, "--format=json"))["token"]
    path = os.path.join(_token_dir(), hashlib.sha256(token.encode()).hexdigest())
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(token)
    return _answer("node_token", nonce, token)


def remove_token(token_sha256, nonce=None):
    """Revoke the token this module minted whose sha256 is token_sha256."""
    if not SHA256_HEX.match(str(token_sha256)):
        raise ValueError("remove_token takes the token's sha256 (64 hex digits)")
    path = os.path.join(_token_dir(), token_sha256)
    if not os.path.exists(path):
        return _answer("remove_token", nonce, False)
    with open(path) as handle:
        token = handle.read()
    try:
        _tctl("tokens", "rm", token)
    finally:
        os.remove(path)
    return _answer("remove_token", nonce, True)
