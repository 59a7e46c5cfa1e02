# ci-fleet: the master listens on 0.0.0.0; only loopback (its own minion) and the fleet's
# private networks reach ports 4505/4506. Runs from bootcmd on every boot: idempotent.
# Arguments: the allowed IPv4 CIDRs.
set -eu
nets=
for n in "$@"; do nets="$nets${nets:+, }$n"; done
{
  echo 'table inet ci_fleet_salt_master'
  echo 'delete table inet ci_fleet_salt_master'
  echo 'table inet ci_fleet_salt_master {'
  echo ' chain input { type filter hook input priority 0; policy accept;'
  echo '  iif "lo" tcp dport { 4505, 4506 } accept'
  echo "  ip saddr { $nets } tcp dport { 4505, 4506 } accept"
  echo '  tcp dport { 4505, 4506 } counter drop'
  echo ' }'
  echo '}'
} | nft -f -
