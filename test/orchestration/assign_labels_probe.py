#!/usr/bin/python3
"""Runs the master's Teleport label assignment (salt/_runners/ci_fleet.py
Orchestrator.assign_teleport_labels) on a stack's real pillar documents, with a fake
Teleport machine that lists every machine honestly (its hostname, the SSH address of its
rendered teleport.yaml, no labels). Prints {"assigned": {hostname: labels}, "locked": [...]}.

  python3 test/orchestration/assign_labels_probe.py DOCUMENTS.json STACK   (test/teleport/join.test.ts)
"""
import importlib.util
import json
import os
import shutil
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main(documents_file, stack):
    spec = importlib.util.spec_from_file_location("ci_fleet_probe", os.path.join(ROOT, "salt", "_runners", "ci_fleet.py"))
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    with open(documents_file) as handle:
        documents = json.load(handle)
    # The index ci_fleet_pillar_sync gives the master (role, queue of every minion).
    minions = {}
    for minion_id, document in documents.items():
        fleet = document["ci_fleet"]
        entry = {"role": fleet["role"]}
        if fleet.get("runner"):
            entry["queue"] = fleet["runner"]["queue"]
        minions[minion_id] = entry
    master = next(m for m, e in minions.items() if e["role"] == "salt-master")
    teleport = next(m for m, e in minions.items() if e["role"] == "teleport")
    nodes = []
    for minion_id in sorted(documents):
        expected = runner.teleport_expectation(documents[minion_id])
        nodes.append({"name": "host-" + minion_id, "hostname": minion_id, "addr": expected["addr"],
                      "labels": {}, "self": minion_id == teleport})
    infos, locked = {}, []

    def local(tgt, fun, arg=(), kwarg=None):
        if fun == "ci_fleet_teleport.own_host_id":   # every machine reports its own node's host id
            return {tgt: {"host_id": "host-" + tgt}}
        assert tgt == teleport, tgt
        if fun == "ci_fleet_teleport.nodes":
            return {tgt: nodes}
        if fun == "ci_fleet_teleport.server_infos":
            return {tgt: dict(infos)}
        if fun == "ci_fleet_teleport.assign_labels":
            infos[arg[0]] = dict(arg[1])
            return {tgt: True}
        if fun == "ci_fleet_teleport.lock_node":
            locked.append(arg[0])
            return {tgt: True}
        raise AssertionError("unexpected call %s" % fun)

    master_pillar = dict(documents[master])
    master_pillar["ci_fleet_master"] = {"minions": minions}
    # Issue 12: the Teleport minion signs its answers with its Salt key (the real module, a real key).
    sys.path.insert(0, os.path.join(ROOT, "test", "teleport"))
    import signed_answers
    keys = signed_answers.FleetKeys(signed_answers.TeleportKeys(teleport))

    def signed(tgt, fun, arg=(), kwarg=None):
        return {m: keys.sign(m, fun, kwarg, v) for m, v in local(tgt, fun, arg, kwarg).items()}

    state_dir = tempfile.mkdtemp(prefix="ci-fleet-probe-state-")   # never the master's real state
    try:
        orchestrator = runner.Orchestrator(stack, master_pillar, {}, signed,
                                           expected_of=lambda m: runner.teleport_expectation(documents.get(m)),
                                           teleport_key=lambda: keys[teleport].public_pem,
                                           minion_key=lambda m: keys[m].public_pem, state_dir=state_dir)
        orchestrator.teleport_id = teleport
        orchestrator.assign_teleport_labels()
    finally:
        shutil.rmtree(state_dir, True)
    by_host = {n["name"]: n["hostname"] for n in nodes}
    print(json.dumps({"assigned": {by_host[h]: labels for h, labels in infos.items()}, "locked": locked}, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
