#!/bin/sh
# ci-fleet: first boot of the Salt master, after ci-fleet-install-salt.
# Clone the Salt tree at the pinned ref, sync the pillar, start the master, then let
# Salt own the master too (it is its own minion).
# Usage: ci-fleet-bootstrap-salt-master REPOSITORY_URL REF
set -eu
url=$1 ref=$2
deploy_key=/etc/ci-fleet/salt-repo-deploy-key
if [ -e "$deploy_key" ]; then
  GIT_SSH_COMMAND="ssh -i $deploy_key -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/ci-fleet/salt-repo-known-hosts"
  export GIT_SSH_COMMAND
fi
install -d -m 0755 /srv/ci-fleet
install -d -m 0700 /srv/ci-fleet/pillar
rm -rf /srv/ci-fleet/repo
git init --quiet /srv/ci-fleet/repo
git -C /srv/ci-fleet/repo fetch --quiet --depth 1 -- "$url" "$ref"
git -C /srv/ci-fleet/repo checkout --quiet --detach FETCH_HEAD
# Installing the packages may have handed the PKI to the `salt` user; the master runs as root.
chown -R root:root /etc/salt/pki
chmod 0400 /etc/salt/pki/master/master.pem /etc/salt/pki/minion/minion.pem
set -a; . /etc/ci-fleet/aws/environment; set +a
# The first pillar sync, before the master starts: every minion's pillar, and every
# minion's key accepted from the authoritative list in SSM (user-data pre-seeded those it
# could fit). The stack is the second path element of /ci-fleet/<stack>/pillar/.
stack=$(printf '%s' "$CI_FLEET_SSM_PILLAR_PREFIX" | cut -d/ -f3)
python3 /srv/ci-fleet/repo/salt/salt_master/files/ci_fleet_pillar_sync.py \
  --stack "$stack" --region "$AWS_REGION" --output "$CI_FLEET_PILLAR_DIR/minions" \
  --bootstrap-accept-keys /etc/salt/pki/master/minions
systemctl enable --now salt-master
systemctl enable --now salt-minion
exec /usr/local/sbin/ci-fleet-wait-for-master-and-highstate
