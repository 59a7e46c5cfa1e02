#!/usr/bin/python3
"""ci-fleet-aws-session: a session of the queue's agent role, for the CI user or one job VM.

  ci-fleet-aws-session --source roles-anywhere --role-arn ARN --signing-helper PATH
        --certificate PEM --private-key PEM --trust-anchor-arn ARN --profile-arn ARN   (equinix-metal)
  ci-fleet-aws-session --source assume-role --role-arn ARN --region R                   (aws)
    and then either  --output FILE --group GROUP --alarm-dir DIR [--session-name NAME]  (the host's timer)
    or               --stdout [--duration S] [--session-name NAME]                       (one job VM)

With --stdout (the slot launcher, root, once per VM and again while that VM lives: docs/job-vm.md
"The AWS session"): one new session, never kept, never compared with a file: the document goes
to stdout and nowhere else, exit 0; on failure nothing on stdout, one line on stderr (the error's
type, never a credential), exit 1. --duration is the session's length (DURATION_MIN..SESSION_SECONDS;
the job VMs ask for the minimum, 900). --session-name (sts:AssumeRole's RoleSessionName, 2-64
characters of [\w+=,.@-]) names the minion on the timer and the minion, slot and VM per VM.

Without --stdout: the host's timer (root, every 5 minutes). Both callers are root, the only one that can use the
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
import re
import subprocess
import sys
import tempfile
import time

SESSION_SECONDS = 3600
# sts:AssumeRole DurationSeconds and Roles Anywhere CreateSession durationSeconds: 900 at least.
DURATION_MIN = 900
# sts:AssumeRole RoleSessionName: 2 to 64 characters of [\w+=,.@-].
SESSION_NAME_RE = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
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


def duration_of(args):
    return getattr(args, "duration", None) or SESSION_SECONDS


def from_signing_helper(args, run=subprocess.run):
    argv = [args.signing_helper, "credential-process",
            "--certificate", args.certificate, "--private-key", args.private_key,
            "--trust-anchor-arn", args.trust_anchor_arn, "--profile-arn", args.profile_arn,
            "--role-arn", args.role_arn, "--session-duration", str(duration_of(args))]
    out = run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True, timeout=60).stdout
    document = json.loads(out)
    return session_document(document["AccessKeyId"], document["SecretAccessKey"], document["SessionToken"], document["Expiration"])


def from_assume_role(args, client=None):
    if client is None:
        import boto3  # python3-boto3; root's default chain ends at IMDS (the host role)
        client = boto3.client("sts", region_name=args.region)
    answer = client.assume_role(RoleArn=args.role_arn, RoleSessionName=args.session_name, DurationSeconds=duration_of(args))
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


def fetch_checked(args, now, fetch=None):
    """A new session from args.source, refused when it lasts longer than asked (+5 min of clock skew)."""
    fetch = fetch or (from_signing_helper if args.source == "roles-anywhere" else from_assume_role)
    document = fetch(args)
    lasts = parse_expiration(document["Expiration"]) - now
    if lasts > duration_of(args) + 300:
        raise ValueError("the session lasts %d s, more than %d s" % (lasts, duration_of(args)))
    return document


def to_stdout(args, now=None, fetch=None, out=None, log=None):
    """--stdout: one new session as a credential_process document on `out`, or exit 1."""
    now = clock() if now is None else now
    out = out if out is not None else sys.stdout
    log = log or (lambda line: print(line, file=sys.stderr))
    try:
        document = fetch_checked(args, now, fetch)
        if parse_expiration(document["Expiration"]) <= now:
            raise ValueError("the session has expired")
    except Exception as error:  # noqa: BLE001 - no credential in the message
        log("<4>ci-fleet-aws-session: no session: %s" % type(error).__name__)
        return 1
    out.write(json.dumps(document))
    out.flush()
    return 0


def refresh(args, gid, now=None, fetch=None, log=print):
    now = clock() if now is None else now
    left = remaining(args.output, now)
    if left is None or left < REFRESH_BEFORE_SECONDS:
        try:
            document = fetch_checked(args, now, fetch)
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
    # No abbreviations (`--dur`, `--out`): the slot launcher refuses options by name in aws.command.
    parser = argparse.ArgumentParser(prog="ci-fleet-aws-session", allow_abbrev=False)
    parser.add_argument("--source", choices=["roles-anywhere", "assume-role"], required=True)
    parser.add_argument("--role-arn", required=True)
    parser.add_argument("--output")
    parser.add_argument("--group")
    parser.add_argument("--alarm-dir")
    parser.add_argument("--stdout", action="store_true")
    parser.add_argument("--duration", type=int)
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
    if args.stdout:
        # One job VM's session: written nowhere but stdout, so never the timer's file.
        if args.output or args.group or args.alarm_dir:
            parser.error("--stdout writes no file: no --output, --group or --alarm-dir")
    else:
        needed += ("output", "group", "alarm_dir")
        if args.duration is not None:
            parser.error("--duration is for --stdout (the timer keeps %d s sessions)" % SESSION_SECONDS)
    missing = [n for n in needed if not getattr(args, n)]
    if missing:
        parser.error("--source %s needs %s" % (args.source, ", ".join("--" + n.replace("_", "-") for n in missing)))
    if args.duration is not None and not DURATION_MIN <= args.duration <= SESSION_SECONDS:
        parser.error("--duration must be %d to %d seconds" % (DURATION_MIN, SESSION_SECONDS))
    if args.session_name is not None and not SESSION_NAME_RE.fullmatch(args.session_name):
        parser.error("--session-name must be 2 to 64 characters of [\\w+=,.@-]")
    if args.stdout:
        return to_stdout(args)
    return refresh(args, grp.getgrnam(args.group).gr_gid)


if __name__ == "__main__":
    sys.exit(main())
