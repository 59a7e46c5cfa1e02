"""Grain ci_fleet_toolchain: the runner toolchain versions recorded by
runner.toolchain_versions (/etc/ci-fleet/toolchain-versions.json), so an operator sees
them with `salt '*' grains.get ci_fleet_toolchain`. Reporting only: grains are written
by the minion and never decide who receives a secret.
"""
import json

VERSIONS_FILE = "/etc/ci-fleet/toolchain-versions.json"


def ci_fleet_toolchain():
    try:
        with open(VERSIONS_FILE) as handle:
            return {"ci_fleet_toolchain": json.load(handle)}
    except (OSError, ValueError):
        return {}
