#!/bin/sh
# ci-fleet: first boot of the Salt master.
# Clone the Salt tree at the pinned ref, install the pinned Salt (this checkout's
# cloud-init/scripts/install-salt.sh; the pins come from user-data, in the environment), write
# the master's key pairs from SSM, sync the pillar, start the master, then let Salt own the
# master too (it is its own minion).
# Usage: env SALT_VERSION=... SALT_REPOSITORY=... SALT_KEY_URL=... SALT_KEY_FINGERPRINT=... \
#          ci-fleet-bootstrap-salt-master REPOSITORY_URL REF PILLAR_WAIT_SECONDS
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
sh /srv/ci-fleet/repo/cloud-init/scripts/install-salt.sh salt-master salt-minion
set -a; . /etc/ci-fleet/aws/environment; set +a
# The master's key pairs (master.pem/master.pub and its own minion's) are not in user-data:
# they come from SSM, under the master's own path, read with its own credentials (the program
# writes the parameter before it creates the machine; the same pair on every replacement, so
# every minion's master_finger still matches). Retried as long as the pillar is waited for.
python3 /srv/ci-fleet/repo/salt/salt_master/files/ci_fleet_master_pki.py \
  --parameter "${CI_FLEET_SSM_PILLAR_PREFIX}bootstrap/salt-master-pki" --region "$AWS_REGION" \
  --pki-dir /etc/salt/pki --wait-seconds "$pillar_wait"
# Installing the packages may have handed the PKI to the `salt` user; the master runs as root.
chown -R root:root /etc/salt/pki
chmod 0400 /etc/salt/pki/master/master.pem /etc/salt/pki/minion/minion.pem
# The first pillar sync, before the master starts: every minion's pillar, and every
# minion's key (its own minion's included) accepted from the authoritative list in SSM.
# The stack is the second path element of /ci-fleet/<stack>/pillar/.
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
exec sh /srv/ci-fleet/repo/cloud-init/scripts/wait-for-master-and-highstate.sh
