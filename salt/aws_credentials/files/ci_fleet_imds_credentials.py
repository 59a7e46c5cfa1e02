#!/usr/bin/python3
"""Copy the instance role's temporary credentials from the metadata service (IMDSv2)
to a credential_process JSON file readable by one group. Runs as root, the only uid
the firewall lets reach the metadata service. Reads only the role credentials, never
user-data. Never prints a credential.
"""
import argparse
import grp
import json
import os
import sys
import tempfile
import urllib.request

IMDS = "http://169.254.169.254"


def imds_get(path, token, opener):
    request = urllib.request.Request(IMDS + path, headers={"X-aws-ec2-metadata-token": token})
    with opener(request, timeout=5) as response:
        return response.read().decode()


def fetch_credentials(opener=urllib.request.urlopen):
    token_request = urllib.request.Request(
        IMDS + "/latest/api/token", method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
    with opener(token_request, timeout=5) as response:
        token = response.read().decode()
    base = "/latest/meta-data/iam/security-credentials/"
    role = imds_get(base, token, opener).split()[0]
    document = json.loads(imds_get(base + role, token, opener))
    if document.get("Code") != "Success":
        raise SystemExit("metadata service did not return credentials")
    # The credential_process output format (Version 1).
    return {
        "Version": 1,
        "AccessKeyId": document["AccessKeyId"],
        "SecretAccessKey": document["SecretAccessKey"],
        "SessionToken": document["Token"],
        "Expiration": document["Expiration"],
    }


def write_private(path, data, gid):
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o750, exist_ok=True)
    os.chown(directory, 0, gid)
    os.chmod(directory, 0o750)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.chown(tmp, 0, gid)
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args(argv)
    write_private(args.output, fetch_credentials(), grp.getgrnam(args.group).gr_gid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
