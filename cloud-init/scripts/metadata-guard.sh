# ci-fleet: only root may reach the metadata service (user-data holds the minion key).
# Runs from bootcmd on every boot: idempotent, one atomic nft transaction.
# Arguments: the metadata service addresses (IPv4 or IPv6).
set -eu
v4=; v6=
for a in "$@"; do
  case "$a" in *:*) v6="$v6${v6:+, }$a" ;; *) v4="$v4${v4:+, }$a" ;; esac
done
if ! command -v nft >/dev/null 2>&1; then
  # Fail closed: nobody, root included, reaches the service until nftables is here.
  for a in "$@"; do ip route replace prohibit "$a"; done
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables
fi
{
  echo 'table inet ci_fleet_metadata'
  echo 'delete table inet ci_fleet_metadata'
  echo 'table inet ci_fleet_metadata {'
  echo ' chain output { type filter hook output priority 0; policy accept;'
  [ -z "$v4" ] || echo "  ip daddr { $v4 } meta skuid != 0 counter reject"
  [ -z "$v6" ] || echo "  ip6 daddr { $v6 } meta skuid != 0 counter reject"
  echo ' }'
  # Forwarded packets (containers, VMs) have no owner: always dropped.
  echo ' chain forward { type filter hook forward priority 0; policy accept;'
  [ -z "$v4" ] || echo "  ip daddr { $v4 } counter drop"
  [ -z "$v6" ] || echo "  ip6 daddr { $v6 } counter drop"
  echo ' }'
  echo '}'
} | nft -f -
for a in "$@"; do ip route del prohibit "$a" 2>/dev/null || true; done
