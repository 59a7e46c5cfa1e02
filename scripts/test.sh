#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need on a fresh
# Debian machine, then runs every test. Fails loudly; skips nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=$(grep -vE '^\s*(#|$)' scripts/debian-packages.txt | tr '\n' ' ')
missing=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $packages 2>/dev/null | awk '$1 != "ii" {print $2}' || true)
# dpkg-query prints nothing for packages it has never heard of: count those too.
for p in $packages; do dpkg-query -W "$p" >/dev/null 2>&1 || missing="$missing $p"; done
missing=$(echo $missing | tr ' ' '\n' | sort -u | tr '\n' ' ')
if [ -n "${missing// /}" ]; then
  echo "==> installing Debian packages: $missing"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

echo "==> npm ci"
npm ci --no-audit --no-fund --loglevel=error

echo "==> type check"
npx tsc --noEmit -p .

echo "==> unit and integration tests"
npx jest --ci

echo "==> netboot self-test (real dnsmasq + iPXE + QEMU)"
bash salt/runner/files/ci-netboot-selftest
