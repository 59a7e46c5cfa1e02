# ci-fleet: cloud-init's copies of user-data (and the caches `cloud-init query` reads)
# hold the minion key: root only.
# Runs from bootcmd on every boot, before any service: cloud-init has written its copies by then.
set -eu
for f in /var/lib/cloud/instances/*/user-data.txt* /var/lib/cloud/instances/*/cloud-config.txt \
  /var/lib/cloud/instances/*/vendor-data*.txt* /var/lib/cloud/instances/*/obj.pkl \
  /run/cloud-init/instance-data-sensitive.json /run/cloud-init/combined-cloud-config.json; do
  [ ! -e "$f" ] || chmod 0600 "$f"
done
