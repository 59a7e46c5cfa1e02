#!/bin/sh
# ci-fleet: hand the machine to Salt. The master may still be booting, so wait for it
# (bounded), then apply the highstate once; Salt owns the machine from here on.
set -eu
tries=${1:-90}
until salt-call --out=quiet test.ping >/dev/null 2>&1; do
  tries=$((tries - 1))
  [ "$tries" -gt 0 ] || { echo "ci-fleet: the Salt master never answered" >&2; exit 1; }
  sleep 20
done
salt-call --retcode-passthrough state.highstate
