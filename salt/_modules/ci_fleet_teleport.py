"""Execution module for the Teleport machine, called by the master's orchestration
(salt/_runners/ci_fleet.py). A module of its own because the master's publisher_acl
blocks cmd.* for everyone. Tokens are returned to the master only, never logged.

A publication reaches every minion, so no argument may carry a token: a minted token is
kept here (root-only, one file per token, named by its sha256) and revoked by that hash.
"""
import hashlib
import json
import os
import re
import time

__virtualname__ = "ci_fleet_teleport"

TOKEN_DIR = "/var/lib/ci-fleet/teleport-join-tokens"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# Longer than any token's ttl: a file this old names a token Teleport has expired already.
STALE_SECONDS = 24 * 3600


def __virtual__():
    return __virtualname__


def _tctl(*args):
    result = __salt__["cmd.run_all"](["tctl"] + list(args), python_shell=False,
                                     output_loglevel="quiet", hide_output=True)
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


def node_names():
    """Hostnames of the SSH nodes joined to the cluster."""
    return sorted(node["spec"]["hostname"] for node in json.loads(_tctl("nodes", "ls", "--format=json")))


def node_token(ttl="15m"):
    """A new node join token that expires after ttl (kept here until revoked by its hash)."""
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
