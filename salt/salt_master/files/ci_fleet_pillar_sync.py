#!/usr/bin/python3
"""ci-fleet-pillar-sync: copy every /ci-fleet/<stack>/pillar/<minion-id> SecureString
from SSM to <output>/<minion-id>.json (0600, directory 0700), atomically; delete the
files of minions no longer present; refresh and re-apply the minions that changed.

Runs on the Salt master with the master's own AWS role (instance profile on aws,
Roles Anywhere credential_process on equinix-metal). Fails closed: any read error
leaves every existing file in place and exits non-zero. Never prints a value.
"""
import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time

LOG = logging.getLogger("ci-fleet-pillar-sync")
# Minion ids are DNS labels built from config keys (docs/contracts.md).
MINION_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class SyncError(Exception):
    """A problem that must stop the sync before it deletes anything."""


def pillar_prefix(stack):
    return "/ci-fleet/%s/pillar/" % stack


def fetch_documents(ssm, stack):
    """Read every pillar document of the stack: {minion_id: document}.

    Raises SyncError on a bad name or document, so nothing is deleted on partial data.
    """
    prefix = pillar_prefix(stack)
    documents = {}
    kwargs = {"Path": prefix, "Recursive": False, "WithDecryption": True, "MaxResults": 10}
    while True:
        page = ssm.get_parameters_by_path(**kwargs)
        for parameter in page.get("Parameters", []):
            name = parameter["Name"]
            minion_id = name[len(prefix):]
            if not name.startswith(prefix) or not MINION_ID.match(minion_id):
                raise SyncError("unexpected parameter name %r" % name)
            try:
                document = json.loads(parameter["Value"])
            except ValueError:
                raise SyncError("parameter %s is not JSON" % name) from None
            if not isinstance(document, dict):
                raise SyncError("parameter %s is not a JSON object" % name)
            # A document cannot speak for another minion.
            claimed = document.get("ci_fleet", {}).get("minion_id")
            if claimed != minion_id:
                raise SyncError("parameter %s names minion %r" % (name, claimed))
            documents[minion_id] = document
        token = page.get("NextToken")
        if not token:
            return documents
        kwargs["NextToken"] = token


def with_minion_index(documents):
    """Give the master's document the index of every minion (role, queue, agent, public key).

    The index is derived here, from the documents themselves, rather than written by
    `pulumi up` into the master's own parameter: listing every minion's key there would
    outgrow SSM's 8 KiB parameter limit at a few dozen machines. A minion exists in the
    fleet exactly when its pillar document does.
    """
    index = {}
    for minion_id, document in sorted(documents.items()):
        fleet = document.get("ci_fleet", {})
        entry = {"role": fleet.get("role"), "public_key_pem": fleet.get("salt", {}).get("minion_public_key_pem")}
        if not entry["public_key_pem"]:
            raise SyncError("pillar document of %s has no ci_fleet:salt:minion_public_key_pem" % minion_id)
        runner = fleet.get("runner")
        if runner:
            entry["queue"] = runner.get("queue")
            entry["agent"] = runner.get("agent")
        index[minion_id] = entry
    out = {}
    for minion_id, document in documents.items():
        if document.get("ci_fleet", {}).get("role") == "salt-master":
            document = dict(document)
            document["ci_fleet_master"] = dict(document.get("ci_fleet_master") or {}, minions=index)
        out[minion_id] = document
    return out


def render(document):
    return (json.dumps(document, sort_keys=True, indent=2) + "\n").encode()


def write_atomically(path, data):
    directory = os.path.dirname(path)
    # mkstemp creates the file 0600; os.replace makes the new content appear at once.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_documents(output_dir, documents):
    """Write changed documents, delete stale ones. Returns (changed_ids, removed_ids)."""
    if not documents:
        # An empty answer is far more likely a permission problem than an empty fleet.
        raise SyncError("no pillar documents found; refusing to delete the existing ones")
    os.makedirs(output_dir, mode=0o700, exist_ok=True)
    os.chmod(output_dir, 0o700)
    changed, removed = [], []
    for minion_id in sorted(documents):
        path = os.path.join(output_dir, minion_id + ".json")
        data = render(documents[minion_id])
        try:
            with open(path, "rb") as handle:
                current = handle.read()
        except FileNotFoundError:
            current = None
        if current != data:
            write_atomically(path, data)
            changed.append(minion_id)
        elif os.stat(path).st_mode & 0o777 != 0o600:
            os.chmod(path, 0o600)
    for name in sorted(os.listdir(output_dir)):
        if name.startswith(".tmp-"):
            os.unlink(os.path.join(output_dir, name))
        elif name.endswith(".json") and name[: -len(".json")] not in documents:
            os.unlink(os.path.join(output_dir, name))
            removed.append(name[: -len(".json")])
    return changed, removed


def notify_minions(minion_ids, run=subprocess.run, apply_states=True):
    """Refresh the pillar of the changed minions, then re-apply their highstate."""
    if not minion_ids:
        return
    targets = ",".join(sorted(minion_ids))
    run(["salt", "--async", "-L", targets, "saltutil.refresh_pillar"], check=True,
        stdout=subprocess.DEVNULL)
    if apply_states:
        run(["salt", "--async", "-L", targets, "state.apply"], check=True,
            stdout=subprocess.DEVNULL)


def accept_minion_keys(pki_dir, documents):
    """Pre-seed the accepted key of every minion that has a pillar document.

    Used at the master's first boot, before salt-master starts: no user-data carries a
    minion key (it must fit 16 KiB at any fleet size); this accepts every minion, the
    master's own included, from the authoritative list in SSM. Later,
    the salt_master.minion_keys state keeps the directory equal to the index.
    """
    os.makedirs(pki_dir, mode=0o700, exist_ok=True)
    accepted = []
    for minion_id, document in sorted(documents.items()):
        key = document["ci_fleet"]["salt"]["minion_public_key_pem"]  # checked by with_minion_index
        path = os.path.join(pki_dir, minion_id)
        data = key.encode()
        try:
            with open(path, "rb") as handle:
                if handle.read() == data:
                    continue
        except FileNotFoundError:
            pass
        write_atomically(path, data)
        os.chmod(path, 0o644)
        accepted.append(minion_id)
    return accepted


# How often the first sync looks again while `pulumi up` has not written the documents yet.
WAIT_INTERVAL_SECONDS = 30


def fetch_when_present(ssm, stack, wait_for, wait_seconds, sleep=time.sleep, clock=time.monotonic):
    """The documents, once the one of minion `wait_for` is among them.

    `pulumi up` writes the pillar documents only after every machine exists (a document
    holds the machine's own address and the Teleport auth address), so at the master's
    first boot they may not be there yet, and its fresh credentials may not work yet
    either. Until the deadline both are waited for; then the last reason is raised.
    """
    deadline = clock() + wait_seconds
    while True:
        try:
            documents = fetch_documents(ssm, stack)
            if wait_for in documents:
                return documents
            reason = "pillar document of %s is not in SSM" % wait_for
        except SyncError:
            raise
        except Exception as error:  # noqa: BLE001 - AWS errors are retried until the deadline
            reason = "pillar documents unreadable (%s) and %s is not in SSM" % (type(error).__name__, wait_for)
        if clock() >= deadline:
            raise SyncError("%s after %d s" % (reason, wait_seconds))
        LOG.info("%s yet; looking again in %d s", reason, WAIT_INTERVAL_SECONDS)
        sleep(WAIT_INTERVAL_SECONDS)


def sync(ssm, stack, output_dir, run=subprocess.run, apply_states=True, accept_keys_dir=None,
         wait_for=None, wait_seconds=0, sleep=time.sleep, clock=time.monotonic):
    if wait_for:
        documents = with_minion_index(fetch_when_present(ssm, stack, wait_for, wait_seconds, sleep, clock))
    else:
        documents = with_minion_index(fetch_documents(ssm, stack))
    changed, removed = write_documents(output_dir, documents)
    LOG.info("%d documents, changed: %s, removed: %s", len(documents),
             ", ".join(changed) or "none", ", ".join(removed) or "none")
    if accept_keys_dir:
        # First boot: Salt is not running yet, so nobody is notified.
        accepted = accept_minion_keys(accept_keys_dir, documents)
        LOG.info("accepted minion keys written: %s", ", ".join(accepted) or "none")
        return changed, removed
    notify_minions(changed, run=run, apply_states=apply_states)
    return changed, removed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--no-apply", action="store_true",
                        help="only refresh pillar; the scheduled highstate applies it")
    parser.add_argument("--bootstrap-accept-keys", metavar="PKI_DIR",
                        help="first boot: also pre-seed every minion's key into PKI_DIR; notify nobody")
    parser.add_argument("--wait-for", metavar="MINION_ID",
                        help="first boot: wait until this minion's document is in SSM (see --wait-seconds)")
    parser.add_argument("--wait-seconds", type=int, default=0, metavar="SECONDS")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    import boto3  # Debian python3-boto3; imported here so tests need no AWS SDK.

    ssm = boto3.client("ssm", region_name=args.region)
    try:
        sync(ssm, args.stack, args.output, apply_states=not args.no_apply,
             accept_keys_dir=args.bootstrap_accept_keys, wait_for=args.wait_for,
             wait_seconds=args.wait_seconds)
    except SyncError as error:
        LOG.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
