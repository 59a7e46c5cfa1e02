"""Execution module for the Teleport machine, called by the master's orchestration
(salt/_runners/ci_fleet.py). A module of its own because the master's publisher_acl
blocks cmd.* for everyone. Tokens are returned to the master only, never logged.

A publication reaches every minion, so no argument may carry a token: a minted token is
kept here (root-only, one file per token, named by its sha256) and revoked by that hash.
Host ids, label maps and lock messages are not secret.
"""
import hashlib
import json
import os
import re
import time

__virtualname__ = "ci_fleet_teleport"

TOKEN_DIR = "/var/lib/ci-fleet/teleport-join-tokens"
# Nodes this module has locked (one empty file per host id), so a lock is created once.
LOCK_DIR = "/var/lib/ci-fleet/teleport-locks"
# The Teleport process's own host id (lib/utils ReadHostUUID: <data_dir>/host_uuid).
HOST_UUID_FILE = "/var/lib/teleport/host_uuid"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# A node's host id: a UUID (token/iam joins) or <account>-<instance id> (ec2 joins).
HOST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,127}$")
# Labels the master assigns: `dynamic/<name>` (api/types/server_info.go fixLabels gives every
# label of an `si-` server_info this prefix), plain values.
ASSIGNED_LABEL_KEY = re.compile(r"^dynamic/[a-z0-9][a-z0-9_.-]{0,62}$")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Longer than any token's ttl: a file this old names a token Teleport has expired already.
STALE_SECONDS = 24 * 3600


def __virtual__():
    return __virtualname__


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


def host_ca_certificates():
    """The cluster's host CA TLS certificates, PEM (`tctl auth export --type=tls-host`:
    tool/tctl/common/auth_command.go exportTLSAuthority(HostCA)). Public. The master computes
    the nodes' CA pins from them (SPKI sha256, as `tctl status` shows them)."""
    text = _tctl("auth", "export", "--type=tls-host")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise RuntimeError("tctl auth export --type=tls-host printed no certificate")
    return text


def node_names():
    """Hostnames of the SSH nodes joined to the cluster."""
    return sorted(node["spec"]["hostname"] for node in json.loads(_tctl("nodes", "ls", "--format=json")))


def nodes():
    """The SSH nodes as the auth service lists them (`tctl nodes ls --format=json`, ServerV2):
    host id (metadata.name, bound to the node's certificate), the hostname, address and
    labels the node announced, and `self`: this Teleport process's own SSH service."""
    own = _own_host_id()
    out = []
    for node in json.loads(_tctl("nodes", "ls", "--format=json") or "[]"):
        metadata, spec = node.get("metadata", {}), node.get("spec", {})
        out.append({"name": metadata.get("name"), "hostname": spec.get("hostname"), "addr": spec.get("addr"),
                    "labels": dict(metadata.get("labels") or {}), "self": bool(own) and metadata.get("name") == own})
    return sorted(out, key=lambda n: n["name"] or "")


def server_infos():
    """host id -> the labels its `si-<host id>` server_info assigns (as RBAC sees them)."""
    out = {}
    for info in json.loads(_tctl("get", "server_info", "--format=json") or "[]"):
        name = info.get("metadata", {}).get("name", "")
        if name.startswith("si-"):
            out[name[len("si-"):]] = dict(info.get("spec", {}).get("new_labels") or {})
    return out


def assign_labels(host_id, labels):
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
    return True


def lock_node(host_id, message):
    """Lock the Teleport server `host_id` (`tctl lock --server-id`): the auth service refuses
    its certificates from then on. Once per host id; a human removes the lock."""
    if not HOST_ID.match(str(host_id)):
        raise ValueError("lock_node takes a Teleport host id")
    if host_id == _own_host_id():
        raise ValueError("refusing to lock the auth service's own host")
    os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    marker = os.path.join(LOCK_DIR, host_id)
    if os.path.exists(marker):
        return False
    _tctl("lock", "--server-id=%s" % host_id, "--message=%s" % str(message)[:200])
    with open(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w"):
        pass
    return True


def node_token(ttl="15m"):
    """A new node join token that expires after ttl (kept here until revoked by its hash).
    A `token`-method token stays valid until its ttl or its deletion, however often it is
    used: the master revokes it as soon as it sees the join (ci_fleet.join_teleport_nodes)."""
    token = json.loads(_tctl("tokens", "add", "--type=node", "--ttl=%s" % ttl, "--format=json"))["token"]
    path = os.path.join(_token_dir(), hashlib.sha256(token.encode()).hexdigest())
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(token)
    return token


def remove_token(token_sha256):
    """Revoke the token this module minted whose sha256 is token_sha256."""
    if not SHA256_HEX.match(str(token_sha256)):
        raise ValueError("remove_token takes the token's sha256 (64 hex digits)")
    path = os.path.join(_token_dir(), token_sha256)
    if not os.path.exists(path):
        return False
    with open(path) as handle:
        token = handle.read()
    try:
        _tctl("tokens", "rm", token)
    finally:
        os.remove(path)
    return True
