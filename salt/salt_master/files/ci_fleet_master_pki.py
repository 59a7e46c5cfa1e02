#!/usr/bin/python3
"""ci-fleet-master-pki: write the Salt master's key pairs from SSM, once, at its first boot.

The program (infra/fleet/salt-master-pki.ts) keeps the master's key pair and its own minion's
in Pulumi state and writes them as one JSON SecureString under the master's own path
(/ci-fleet/<stack>/pillar/bootstrap/salt-master-pki). Run by ci-fleet-bootstrap-salt-master
before salt-master starts, with the master's own AWS role; writes
<pki-dir>/master/master.pem (0400), master.pub (0644), <pki-dir>/minion/minion.pem (0400) and
minion.pub (0644). The same pair on every replacement of the machine, so every minion's
master_finger still matches. Key material never passes through user-data (16 KiB, readable
from the metadata service). Fails closed; never prints a value.
"""
import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time

LOG = logging.getLogger("ci-fleet-master-pki")

# (document key, path under the pki dir, mode, PEM shape)
PRIVATE = re.compile(r"^-----BEGIN (RSA )?PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+\n-----END (RSA )?PRIVATE KEY-----\n$")
PUBLIC = re.compile(r"^-----BEGIN PUBLIC KEY-----\n[A-Za-z0-9+/=\n]+\n-----END PUBLIC KEY-----\n$")
FILES = (
    ("master_private_key_pem", "master/master.pem", 0o400, PRIVATE),
    ("master_public_key_pem", "master/master.pub", 0o644, PUBLIC),
    ("minion_private_key_pem", "minion/minion.pem", 0o400, PRIVATE),
    ("minion_public_key_pem", "minion/minion.pub", 0o644, PUBLIC),
)
# How often the first boot looks again while the parameter or the credentials are not there
# (the environment variable is the one cloud-init/scripts/wait-for-master-and-highstate.sh reads).
WAIT_INTERVAL_SECONDS = int(os.environ.get("CI_FLEET_RETRY_SECONDS", "30"))


class PkiError(Exception):
    """A problem that must stop the first boot before salt-master starts."""


def parse(value):
    """The document, checked: every key present and shaped like its PEM (values never echoed)."""
    try:
        document = json.loads(value)
    except ValueError:
        raise PkiError("the parameter is not JSON") from None
    if not isinstance(document, dict):
        raise PkiError("the parameter is not a JSON object")
    problems = []
    for key, _path, _mode, shape in FILES:
        if not isinstance(document.get(key), str) or not shape.match(document[key]):
            problems.append(key)
    if problems:
        raise PkiError("missing or malformed: %s" % ", ".join(problems))
    return document


def fetch(ssm, name, wait_seconds, sleep=time.sleep, clock=time.monotonic):
    """The parameter's document; AWS errors (no credentials yet, no parameter yet) are retried until the deadline."""
    deadline = clock() + wait_seconds
    while True:
        try:
            value = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
            return parse(value)
        except PkiError:
            raise
        except Exception as error:  # noqa: BLE001 - AWS errors are retried until the deadline
            reason = "%s unreadable (%s)" % (name, type(error).__name__)
        if clock() >= deadline:
            raise PkiError("%s after %d s" % (reason, wait_seconds))
        LOG.info("%s; looking again in %d s", reason, WAIT_INTERVAL_SECONDS)
        sleep(WAIT_INTERVAL_SECONDS)


def write(pki_dir, document):
    """Write each file atomically with its mode, its directory root-only."""
    written = []
    for key, relpath, mode, _shape in FILES:
        path = os.path.join(pki_dir, relpath)
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(document[key].encode())
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        written.append(relpath)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parameter", required=True, help="the SSM SecureString (JSON) to read")
    parser.add_argument("--region", required=True)
    parser.add_argument("--pki-dir", required=True, help="Salt's pki directory, e.g. /etc/salt/pki")
    parser.add_argument("--wait-seconds", type=int, default=0, metavar="SECONDS")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    import boto3  # Debian python3-boto3; imported here so tests need no AWS SDK.

    ssm = boto3.client("ssm", region_name=args.region)
    try:
        written = write(args.pki_dir, fetch(ssm, args.parameter, args.wait_seconds))
    except PkiError as error:
        LOG.error("%s", error)
        return 1
    LOG.info("written: %s", ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
