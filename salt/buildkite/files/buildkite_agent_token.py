#!/usr/bin/python3
"""Read the queue's Buildkite agent token from SSM (with the queue's role, as the CI
user) and write it as a systemd EnvironmentFile (0600) for the agent's ExecStart.
The token never passes through pillar, user-data or a command line; never printed.
"""
import argparse
import os
import sys
import tempfile


def fetch_token(ssm, parameter):
    value = ssm.get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"]
    token = value.strip()
    if not token or any(c in token for c in "\n\r\"'\\$ "):
        raise SystemExit("parameter %s does not hold a usable agent token" % parameter)
    return token


def write_environment_file(path, token):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "w") as handle:
        handle.write("BUILDKITE_AGENT_TOKEN=%s\n" % token)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def main(argv=None, ssm=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--parameter", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    if ssm is None:
        import boto3  # Debian python3-boto3

        ssm = boto3.client("ssm", region_name=args.region)
    write_environment_file(args.output, fetch_token(ssm, args.parameter))
    return 0


if __name__ == "__main__":
    sys.exit(main())
