#!/bin/sh
# ci-fleet: install pinned Salt from the Salt project's repository.
# The signing key is downloaded, checked against the pinned fingerprint and only then
# trusted, for this one repository (signed-by). Nothing is piped into a shell.
# Usage: ci-fleet-install-salt PACKAGE...   (pins come from the environment, see cloud-config.ts)
set -eu
: "${SALT_VERSION:?}" "${SALT_REPOSITORY:?}" "${SALT_KEY_URL:?}" "${SALT_KEY_FINGERPRINT:?}"
keyring=${SALT_KEYRING:-/etc/apt/keyrings/salt-archive-keyring.gpg}
sources=${SALT_APT_SOURCES:-/etc/apt/sources.list.d/salt.sources}
preferences=${SALT_APT_PREFERENCES:-/etc/apt/preferences.d/salt-pin}
work=${CI_FLEET_WORK_DIR:-/var/lib/ci-fleet/bootstrap}/salt-key
rm -rf "$work" && install -d -m 0700 "$work" "$work/gnupg"
curl --fail --silent --show-error --location --proto '=https,file' --max-time 120 \
  --output "$work/key" "$SALT_KEY_URL"
# Exactly one primary key, and it is the pinned one.
fingerprints=$(gpg --batch --quiet --homedir "$work/gnupg" --show-keys --with-colons "$work/key" \
  | awk -F: '$1 == "pub" { want = 1; next } want && $1 == "fpr" { print $10; want = 0 }')
if [ "$fingerprints" != "$SALT_KEY_FINGERPRINT" ]; then
  echo "ci-fleet-install-salt: signing key fingerprint is not the pinned $SALT_KEY_FINGERPRINT" >&2
  exit 1
fi
gpg --batch --quiet --homedir "$work/gnupg" --import "$work/key"
install -d -m 0755 "$(dirname "$keyring")"
gpg --batch --quiet --homedir "$work/gnupg" --export "$SALT_KEY_FINGERPRINT" > "$work/keyring.gpg"
install -m 0644 "$work/keyring.gpg" "$keyring"
cat > "$sources" <<SOURCES
Types: deb
URIs: $SALT_REPOSITORY
Suites: stable
Components: main
Architectures: amd64
Signed-By: $keyring
SOURCES
cat > "$preferences" <<PREFERENCES
Package: salt-*
Pin: version $SALT_VERSION
Pin-Priority: 1001
PREFERENCES
# Daemons start only when the bootstrap says so (Debian's policy-rc.d convention).
policy=${SALT_POLICY_RC_D:-/usr/sbin/policy-rc.d}
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 0755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
packages="salt-common=$SALT_VERSION"
for p in "$@"; do packages="$packages $p=$SALT_VERSION"; done
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages
rm -rf "$work"
