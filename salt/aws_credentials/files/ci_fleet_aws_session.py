#!/usr/bin/python3
"""ci-fleet-aws-session: a one-hour session of the queue's agent role for the CI user.

  ci-fleet-aws-session --source roles-anywhere --role-arn ARN --output FILE --group GROUP
        --alarm-dir DIR --signing-helper PATH --certificate PEM --private-key PEM
        --trust-anchor-arn ARN --profile-arn ARN                        (equinix-metal)
  ci-fleet-aws-session --source assume-role --role-arn ARN --session-name NAME --region R
        --output FILE --group GROUP --alarm-dir DIR                      (aws)

Runs as root (a systemd timer, every 5 minutes): the only process that can use the
machine's long-lived material (the root-only Roles Anywhere key; on aws the instance's host
role, which the metadata guard lets only uid 0 reach). It writes a credential_process
document (Version 1) to FILE, root:GROUP 0640 in a root:GROUP 0750 directory, which the CI
user's AWS config prints with /bin/cat. The session lasts SESSION_SECONDS (one hour) at most:
the signing helper's --session-duration, or sts:AssumeRole's DurationSeconds; the agent
role's MaxSessionDuration (3600) and the Roles Anywhere profile's durationSeconds (3600) cap
it on AWS's side too. A new session is fetched when the current one has less than
REFRESH_BEFORE_SECONDS left, so a job always finds one with more than 35 minutes. If that
fails and the file's session has less than ALARM_BEFORE_SECONDS left (or there is none),
ALARM_NAME is written under --alarm-dir, a `<4>` line is logged and the exit status is 1.
Never prints a credential.
"""
import argparse
import calendar
import grp
import json
import os
import subprocess
import sys
import tempfile
import time

SESSION_SECONDS = 3600
REFRESH_BEFORE_SECONDS = 40 * 60
ALARM_BEFORE_SECONDS = 15 * 60
ALARM_NAME = "aws-session.alarm"
clock = time.time


def parse_expiration(text):
    """ISO 8601 UTC (`2026-01-01T00:00:00Z`, also with fractions or +00:00)."""
    text = text.strip().replace("+00:00", "Z")
    if "." in text:
        text = text.split(".")[0] + "Z"
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def session_document(access_key, secret_key, token, expiration):
    return {"Version": 1, "AccessKeyId": access_key, "SecretAccessKey": secret_key,
            "SessionToken": token, "Expiration": expiration}


def from_signing_helper(args, run=subprocess.run):
    argv = [args.signing_helper, "credential-process",
            "--certificate", args.certificate, "--private-key", args.private_key,
            "--trust-anchor-arn", args.trust_anchor_arn, "--profile-arn", args.profile_arn,
            "--role-arn", args.role_arn, "--session-duration", str(SESSION_SECONDS)]
    out = run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True, timeout=60).stdout
    document = json.loads(out)
    return session_document(document["AccessKeyId"], document["SecretAccessKey"], document["SessionToken"], document["Expiration"])


def from_assume_role(args, client=None):
    if client is None:
        import boto3  # python3-boto3; root's default chain ends at IMDS (the host role)
        client = boto3.client("sts", region_name=args.region)
    answer = client.assume_role(RoleArn=args.role_arn, RoleSessionName=args.session_name, DurationSeconds=SESSION_SECONDS)
    c = answer["Credentials"]
    expiration = c["Expiration"]
    if not isinstance(expiration, str):
        expiration = expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
    return session_document(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"], expiration)


def public_parent(directory):
    """/run/ci-fleet itself: 0755 root, whatever the unit's umask (the CI user passes through it)."""
    parent = os.path.dirname(directory)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755, exist_ok=True)
        os.chmod(parent, 0o755)


def write_private(path, data, gid):
    directory = os.path.dirname(path)
    public_parent(directory)
    os.makedirs(directory, mode=0o750, exist_ok=True)
    os.chown(directory, 0, gid)
    os.chmod(directory, 0o750)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.chown(tmp, 0, gid)
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)


def remaining(path, now):
    """Seconds left on the session in `path`, or None when there is no usable one."""
    try:
        with open(path) as handle:
            return parse_expiration(json.load(handle)["Expiration"]) - now
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_alarm(alarm_dir, message):
    path = os.path.join(alarm_dir, ALARM_NAME)
    if message is None:
        if os.path.exists(path):
            os.unlink(path)
        return
    public_parent(alarm_dir)
    os.makedirs(alarm_dir, mode=0o755, exist_ok=True)
    os.chmod(alarm_dir, 0o755)
    fd, tmp = tempfile.mkstemp(dir=alarm_dir, prefix=".tmp-")
    with os.fdopen(fd, "w") as handle:
        handle.write(message + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def refresh(args, gid, now=None, fetch=None, log=print):
    now = clock() if now is None else now
    left = remaining(args.output, now)
    if left is None or left < REFRESH_BEFORE_SECONDS:
        fetch = fetch or (from_signing_helper if args.source == "roles-anywhere" else from_assume_role)
        try:
            document = fetch(args)
            lasts = parse_expiration(document["Expiration"]) - now
            if lasts > SESSION_SECONDS + 300:
                raise ValueError("the session lasts %d s, more than %d s" % (lasts, SESSION_SECONDS))
            write_private(args.output, document, gid)
        except Exception as error:  # noqa: BLE001 - judged by the alarm below; no credential in the message
            log("<4>ci-fleet-aws-session: no new session: %s" % type(error).__name__)
        left = remaining(args.output, now)
    if left is None or left < ALARM_BEFORE_SECONDS:
        message = "the CI user's AWS session %s" % ("is missing" if left is None or left <= 0 else "expires in %d s" % left)
        write_alarm(args.alarm_dir, message)
        log("<4>ci-fleet-aws-session: ALARM: %s" % message)
        return 1
    write_alarm(args.alarm_dir, None)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ci-fleet-aws-session")
    parser.add_argument("--source", choices=["roles-anywhere", "assume-role"], required=True)
    parser.add_argument("--role-arn", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--alarm-dir", required=True)
    parser.add_argument("--session-name")
    parser.add_argument("--region")
    parser.add_argument("--signing-helper")
    parser.add_argument("--certificate")
    parser.add_argument("--private-key")
    parser.add_argument("--trust-anchor-arn")
    parser.add_argument("--profile-arn")
    args = parser.parse_args(argv)
    needed = {"roles-anywhere": ("signing_helper", "certificate", "private_key", "trust_anchor_arn", "profile_arn"),
              "assume-role": ("session_name", "region")}[args.source]
    missing = [n for n in needed if not getattr(args, n)]
    if missing:
        parser.error("--source %s needs %s" % (args.source, ", ".join("--" + n.replace("_", "-") for n in missing)))
    return refresh(args, grp.getgrnam(args.group).gr_gid)


if __name__ == "__main__":
    sys.exit(main())
