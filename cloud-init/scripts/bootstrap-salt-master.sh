#!/bin/sh
# ci-fleet: first boot of the Salt master, after ci-fleet-install-salt.
# Clone the Salt tree at the pinned ref, sync the pillar, start the master, then let
# Salt own the master too (it is its own minion).
# Usage: ci-fleet-bootstrap-salt-master REPOSITORY_URL REF PILLAR_WAIT_SECONDS
set -eu
url=$1 ref=$2 pillar_wait=$3
# A private repository: git reaches it with the ssh command in /etc/gitconfig (written by
# cloud-init, kept by salt_master.repository from the same builder): the deploy key, and only
# the pinned host keys. No GIT_SSH_COMMAND here: it would override that one command.
if [ -e /etc/ci-fleet/salt-repo-deploy-key ]; then
  case $(git config --system --get core.sshCommand || true) in
    *"-o StrictHostKeyChecking=yes"*) ;;
    *) echo "ci-fleet-bootstrap-salt-master: deploy key without a strict core.sshCommand in /etc/gitconfig" >&2; exit 1 ;;
  esac
fi
unset GIT_SSH_COMMAND GIT_SSH
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
# `pulumi up` writes the documents only once every machine exists: wait for the master's own.
stack=$(printf '%s' "$CI_FLEET_SSM_PILLAR_PREFIX" | cut -d/ -f3)
python3 /srv/ci-fleet/repo/salt/salt_master/files/ci_fleet_pillar_sync.py \
  --stack "$stack" --region "$AWS_REGION" --output "$CI_FLEET_PILLAR_DIR/minions" \
  --bootstrap-accept-keys /etc/salt/pki/master/minions \
  --wait-for "$stack-salt-master" --wait-seconds "$pillar_wait"
# The unit and its drop-in (User=root, written before the package) are loaded afresh.
systemctl daemon-reload
systemctl enable --now salt-master
systemctl enable --now salt-minion
exec /usr/local/sbin/ci-fleet-wait-for-master-and-highstate
