"""Execution module for the Teleport machine, called by the master's orchestration
(salt/_runners/ci_fleet.py). A module of its own because the master's publisher_acl
blocks cmd.* for everyone. Tokens are returned to the master only, never logged.
"""
import json

__virtualname__ = "ci_fleet_teleport"


def __virtual__():
    return __virtualname__


def _tctl(*args):
    result = __salt__["cmd.run_all"](["tctl"] + list(args), python_shell=False,
                                     output_loglevel="quiet", hide_output=True)
    if result["retcode"] != 0:
        raise RuntimeError("tctl %s failed: %s" % (args[0], result["stderr"][-500:]))
    return result["stdout"]


def node_names():
    """Hostnames of the SSH nodes joined to the cluster."""
    return sorted(node["spec"]["hostname"] for node in json.loads(_tctl("nodes", "ls", "--format=json")))


def node_token(ttl="15m"):
    """A new node join token that expires after ttl."""
    return json.loads(_tctl("tokens", "add", "--type=node", "--ttl=%s" % ttl, "--format=json"))["token"]


def remove_token(token):
    _tctl("tokens", "rm", token)
    return True
