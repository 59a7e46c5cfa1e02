#!/bin/sh
# ci-fleet: hand the machine to Salt. The master may still be booting, or may not serve this
# minion's pillar yet (pulumi up writes the pillar documents once every machine exists, and
# a minion's key may be accepted later), so keep trying, until a wall-clock deadline, until a
# highstate succeeds or has installed Salt's own highstate schedule, which re-applies it from
# then on.
# This wait is only the fast path: convergence does not depend on it. The master applies the
# highstate to every accepted minion it has no completed highstate on record for, every minute
# (salt/_runners/ci_fleet_converge.py), so a machine whose wait here ran out before the control
# plane answered still converges.
#
# $1: how long to wait, in 20-second steps (user-data passes 7 h = 1260; the master's own
# bootstrap passes nothing: 30 min). The wait ends at that deadline whatever each try costs: a
# name that resolves to a master that does not answer costs a ping its whole bound, and a
# count of tries would then stretch 7 h to ~49 h.
#
# Only the ping (is the master there and does it answer this minion?) is bounded, with
# timeout(1): the minion config says `master_tries: -1`, and salt-call builds an SMinion whose
# eval_master(failed=True) then never gives up while the master is unreachable (salt/minion.py).
# The highstate is NOT bounded: timeout(1) signals the whole process group on expiry (TERM, then
# KILL), dpkg included, and a dpkg killed mid-install leaves the package database "interrupted",
# which fails every later pkg state until `dpkg --configure -a` (salt/base/dpkg_recovery.sls does
# that, but nothing should cause it). A highstate that ends after the deadline still counts.
set -eu
steps=${1:-90}
wait_seconds=${CI_FLEET_WAIT_SECONDS:-$((steps * 20))}
interval=${CI_FLEET_RETRY_SECONDS:-20}
# Bound, in seconds, of one ping (connect + authenticate + answer).
ping_bound=${CI_FLEET_PING_TIMEOUT_SECONDS:-120}
# base.schedule persists the schedule (persist: True) into the minion's include directory.
schedule=${CI_FLEET_SCHEDULE_FILE:-/etc/salt/minion.d/_schedule.conf}
owned() { grep -qs 'ci-fleet-highstate:' "$schedule"; }
log() { echo "ci-fleet: $*" >&2; }
now() { date +%s; }
deadline=$(($(now) + wait_seconds))
left() { echo $((deadline - $(now))); }
give_up() {
  log "no highstate from the Salt master succeeded within ${wait_seconds} s; the master applies it once this minion connects (ci_fleet_converge)"
  exit 1
}
# ping: test.ping bounded by ping_bound, and by the time left before the deadline.
ping() {
  bound=$ping_bound
  [ "$(left)" -ge "$bound" ] || bound=$(left)
  [ "$bound" -ge 1 ] || bound=1
  status=0
  timeout --kill-after=30 "$bound" salt-call --out=quiet test.ping >/dev/null || status=$?
  case $status in
    0) ;;
    124 | 137) log "test.ping: no answer within ${bound} s (salt-call stopped; the master is unreachable or busy)" ;;
    *) log "test.ping: salt-call exited $status" ;;
  esac
  return "$status"
}
# highstate: runs to its end (no timeout: see above); its exit status is logged.
highstate() {
  status=0
  salt-call --retcode-passthrough state.highstate || status=$?
  [ "$status" -eq 0 ] || log "state.highstate: salt-call exited $status"
  return "$status"
}
while :; do
  if ping; then
    if highstate || owned; then exit 0; fi
  fi
  [ "$(left)" -gt 0 ] || give_up
  pause=$interval
  [ "$(left)" -ge "$pause" ] || pause=$(left)
  sleep "$pause"
  [ "$(left)" -gt 0 ] || give_up
done
