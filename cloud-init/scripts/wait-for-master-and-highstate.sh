#!/bin/sh
# ci-fleet: hand the machine to Salt. The master may still be booting, or may not serve this
# minion's pillar yet (pulumi up writes the pillar documents once every machine exists, and
# a minion's key may be accepted later), so keep trying, bounded, until a highstate succeeds
# or has installed Salt's own highstate schedule, which re-applies it from then on.
set -eu
tries=${1:-90}
interval=${CI_FLEET_RETRY_SECONDS:-20}
# base.schedule persists the schedule (persist: True) into the minion's include directory.
schedule=${CI_FLEET_SCHEDULE_FILE:-/etc/salt/minion.d/_schedule.conf}
owned() { grep -qs 'ci-fleet-highstate:' "$schedule"; }
until salt-call --out=quiet test.ping >/dev/null 2>&1 &&
  { salt-call --retcode-passthrough state.highstate || owned; }; do
  tries=$((tries - 1))
  [ "$tries" -gt 0 ] || { echo "ci-fleet: no highstate from the Salt master succeeded" >&2; exit 1; }
  sleep "$interval"
done
