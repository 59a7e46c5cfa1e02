#!/usr/bin/python3
"""Record the installed versions of Debian packages as JSON.

  ci-fleet-toolchain-versions --write FILE PKG...   write {package: version} (0644), print it
  ci-fleet-toolchain-versions --check FILE PKG...   exit 0 only if FILE is up to date

A package that is not installed is an error: the toolchain is incomplete.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


def installed_versions(packages, run=subprocess.run):
    result = run(
        ["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Version}\n"] + list(packages),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
    )
    versions = {}
    for line in result.stdout.splitlines():
        name, status, version = line.split("\t")
        if status.strip() == "ii":
            versions[name.split(":")[0]] = version
    missing = sorted(set(packages) - set(versions))
    if missing:
        raise SystemExit("not installed: " + ", ".join(missing))
    return versions


def render(versions):
    return json.dumps(versions, sort_keys=True, indent=2) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser()
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="FILE")
    mode.add_argument("--check", metavar="FILE")
    parser.add_argument("packages", nargs="+")
    args = parser.parse_args(argv)
    text = render(installed_versions(args.packages))
    if args.check:
        try:
            with open(args.check) as handle:
                return 0 if handle.read() == text else 1
        except FileNotFoundError:
            return 1
    directory = os.path.dirname(os.path.abspath(args.write))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".toolchain-")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.write)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
