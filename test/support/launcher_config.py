"""A minimal job-vm.json for the launcher's Python tests (TCG, one small VM, no AWS): each call
writes a new file in `tmp` (so a test may keep several) with `extra` on top, and returns its path."""
import json
import os


def base_config(tmp, **extra):
    cfg = {"image": "/var/lib/ci-fleet/golden.qcow2", "cpus": 1, "memoryMiB": 128, "diskGiB": 1,
           "maxJobSeconds": 60, "accel": "tcg", "stateDir": os.path.join(tmp, "state"),
           "runDir": os.path.join(tmp, "run"), "network": {"base": "10.213.0.0/16", "blockedCidrs": [], "dns": []}}
    cfg.update(extra)
    path = os.path.join(tmp, "job-vm-%d.json" % len(os.listdir(tmp)))
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path
