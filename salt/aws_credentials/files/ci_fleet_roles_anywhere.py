#!/usr/bin/python3
"""ci-fleet-roles-anywhere: this machine's IAM Roles Anywhere certificate (equinix-metal).

  ci-fleet-roles-anywhere run --cert-dir DIR --minion-id ID --alarm-dir DIR
        [--salt-key /etc/salt/pki/minion/minion.pem]                   (every minion: ask the master)
        [--local-issuer MODULE --ca-dir DIR --master-document FILE]    (the master: sign itself)
  ci-fleet-roles-anywhere install --cert-dir DIR --incoming FILE      (aws_credentials.roles_anywhere_install)

Runs as root (a systemd timer, hourly). The key pair is made here and never leaves the
machine: DIR is root 0700, every key 0600. Once the current certificate has passed
RENEW_AT_REMAINING of its lifetime (or there is none), `run` makes a NEW key (kept under
DIR/pending until a certificate for it arrives; the same pending key is reused by later
attempts), and a CSR for it, and sends the CSR to the master as the event
`ci-fleet/roles-anywhere/csr`, signed with this minion's Salt key (salt/_runners/ci_fleet_pki.py
says why). The master answers with `state.apply aws_credentials.roles_anywhere_install`,
which calls `install`: the certificate is installed only if its public key is the pending
key's, by one atomic rename of DIR/current (a symlink to a generation directory holding the
certificate and its key), so a reader never sees a certificate with another key.

Alarm: when the current certificate has less than ALARM_AT_REMAINING of its lifetime left (the
renewal has been failing for a quarter of it), or there is none, `run` logs at warning
(`<4>`, journald's level prefix; `<3>` once expired), writes ALARM_NAME under --alarm-dir with
the reason, and exits 1 (the unit shows failed); the file is removed when all is well again.
Every time value comes from `clock` so test/identity/test_pki.py drives it over 90 days.
"""
import argparse
import base64
import calendar
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

EVENT_TAG = "ci-fleet/roles-anywhere/csr"
MESSAGE_PREFIX = b"ci-fleet-roles-anywhere-csr/v1"
# Renew once half the lifetime is gone; alarm once three quarters are (infra/identity/lifetimes.ts).
RENEW_AT_REMAINING = 0.5
ALARM_AT_REMAINING = 0.25
ALARM_NAME = "roles-anywhere-certificate.alarm"
CURRENT = "current"
PENDING = "pending"
clock = time.time


def openssl(args, data=None):
    return subprocess.run(["openssl"] + args, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          check=True).stdout


def _openssl_time(text):
    # "Jan  1 00:00:00 2026 GMT" (openssl x509 -startdate/-enddate, always GMT)
    return calendar.timegm(time.strptime(" ".join(text.split()), "%b %d %H:%M:%S %Y %Z"))


_parsed = {}


def certificate_info(path):
    """(not_before, not_after, public key PEM) of a PEM certificate file. One openssl call per
    file version (generations are never rewritten in place, so the cache key is exact)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_ino, st.st_mtime_ns, st.st_size)
    if key not in _parsed:
        out = openssl(["x509", "-in", path, "-noout", "-startdate", "-enddate", "-pubkey"]).decode()
        lines = out.splitlines(keepends=True)
        fields = dict(line.strip().split("=", 1) for line in lines if line.startswith("not"))
        public = "".join(line for line in lines if not line.startswith("not")).encode()
        if len(_parsed) > 64:
            _parsed.clear()
        _parsed[key] = (_openssl_time(fields["notBefore"]), _openssl_time(fields["notAfter"]), public)
    return _parsed[key]


def key_public(path):
    return openssl(["pkey", "-in", path, "-pubout"])


def private_dir(path):
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chown(path, 0, 0)
    os.chmod(path, 0o700)


def new_key(path):
    """A P-256 key (SEC1 PEM, which the signing helper reads), created 0600."""
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path + ".tmp"])
    os.chmod(path + ".tmp", 0o600)
    os.replace(path + ".tmp", path)


def csr_der(key_path, minion_id):
    # The subject is a label only: the master chooses the certificate's subject itself.
    return openssl(["req", "-new", "-key", key_path, "-subj", "/CN=%s" % minion_id, "-outform", "DER"])


def request_message(minion_id, ts, der):
    import hashlib
    return b"\n".join([MESSAGE_PREFIX, minion_id.encode(), str(int(ts)).encode(), hashlib.sha256(der).hexdigest().encode()])


def signed_request(salt_key, minion_id, der, now):
    ts = int(now)
    signature = openssl(["dgst", "-sha256", "-sign", salt_key], request_message(minion_id, ts, der))
    return {"csr": base64.b64encode(der).decode(), "ts": ts, "sig": base64.b64encode(signature).decode()}


def salt_call_send(request):
    """`salt-call event.send <tag> data=<json>`: the minion's own authenticated channel."""
    subprocess.run(["salt-call", "--out=quiet", "event.send", EVENT_TAG, "data=" + json.dumps(request, sort_keys=True)],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)


class CertDir:
    def __init__(self, path):
        self.path = path

    @property
    def certificate(self):
        return os.path.join(self.path, CURRENT, "certificate.pem")

    @property
    def private_key(self):
        return os.path.join(self.path, CURRENT, "private-key.pem")

    @property
    def pending_key(self):
        return os.path.join(self.path, PENDING, "private-key.pem")

    def current(self):
        """(not_before, not_after, public) of the installed certificate, or None."""
        try:
            return certificate_info(self.certificate)
        except (OSError, subprocess.CalledProcessError, KeyError, ValueError):
            return None

    def ensure_pending_key(self):
        private_dir(self.path)
        private_dir(os.path.join(self.path, PENDING))
        if not os.path.exists(self.pending_key):
            new_key(self.pending_key)
        return self.pending_key

    def install(self, incoming_pem_path, now):
        """Install the certificate if it is for the pending key and valid now: True when
        installed (or already current), else ValueError."""
        not_before, not_after, public = certificate_info(incoming_pem_path)
        current = self.current()
        if current and current[2] == public and current[1] == not_after:
            return True
        if not os.path.exists(self.pending_key):
            raise ValueError("no pending key: this certificate was not asked for")
        if key_public(self.pending_key) != public:
            raise ValueError("the certificate is not for the pending key")
        if not_before > now + 600 or not_after <= now + 3600:
            raise ValueError("the certificate is not valid now")
        private_dir(self.path)
        generation = tempfile.mkdtemp(dir=self.path, prefix="gen-")
        os.chmod(generation, 0o700)
        with open(incoming_pem_path, "rb") as handle:
            pem = handle.read()
        fd = os.open(os.path.join(generation, "certificate.pem"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with open(fd, "wb") as handle:
            handle.write(pem)
        os.rename(self.pending_key, os.path.join(generation, "private-key.pem"))
        link = os.path.join(self.path, CURRENT + ".tmp")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.basename(generation), link)
        os.replace(link, os.path.join(self.path, CURRENT))
        for name in os.listdir(self.path):
            if name.startswith("gen-") and name != os.path.basename(generation):
                shutil.rmtree(os.path.join(self.path, name), ignore_errors=True)
        shutil.rmtree(os.path.join(self.path, PENDING), ignore_errors=True)
        return True


def due(info, now):
    if info is None:
        return True
    not_before, not_after, _ = info
    return not_after - now <= (not_after - not_before) * RENEW_AT_REMAINING


def alarm(info, now):
    """(level, message) or None: level 4 (warning) or 3 (expired or none)."""
    if info is None:
        return 3, "no Roles Anywhere certificate is installed"
    not_before, not_after, _ = info
    left = not_after - now
    if left <= 0:
        return 3, "the Roles Anywhere certificate expired %.1f hours ago" % (-left / 3600)
    if left <= (not_after - not_before) * ALARM_AT_REMAINING:
        return 4, "the Roles Anywhere certificate expires in %.1f hours and has not been renewed" % (left / 3600)
    return None


def write_alarm(alarm_dir, name, finding):
    path = os.path.join(alarm_dir, name)
    if finding is None:
        if os.path.exists(path):
            os.unlink(path)
        return
    parent = os.path.dirname(alarm_dir)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755, exist_ok=True)
        os.chmod(parent, 0o755)
    os.makedirs(alarm_dir, mode=0o755, exist_ok=True)
    os.chmod(alarm_dir, 0o755)
    fd, tmp = tempfile.mkstemp(dir=alarm_dir, prefix=".tmp-")
    with os.fdopen(fd, "w") as handle:
        handle.write(finding[1] + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def local_issue(module_path, ca_dir, master_document, minion_id, public_pem, now):
    """The master's own certificate, signed here with the CA key by salt/_runners/ci_fleet_pki.py's Issuer."""
    spec = importlib.util.spec_from_file_location("ci_fleet_pki_local", module_path)
    pki = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pki)
    with open(master_document) as handle:
        pillar = json.load(handle)
    issuer = pki.issuer_from_master(pillar, minion_id, ca_dir=ca_dir, store=pki.MemoryStore(), clock=lambda: now)
    from cryptography.hazmat.primitives import serialization
    pem, _ = issuer.issue(minion_id, serialization.load_pem_public_key(public_pem), now)
    return pem


def run(args, now=None, send=salt_call_send, log=print):
    """Renew when due, then judge the alarm. Returns the exit code."""
    now = clock() if now is None else now
    certs = CertDir(args.cert_dir)
    info = certs.current()
    if due(info, now):
        try:
            pending = certs.ensure_pending_key()
            if args.local_issuer:
                pem = local_issue(args.local_issuer, args.ca_dir, args.master_document, args.minion_id, key_public(pending), now)
                fd, incoming = tempfile.mkstemp(dir=args.cert_dir, prefix=".incoming-")
                with os.fdopen(fd, "w") as handle:
                    handle.write(pem)
                try:
                    certs.install(incoming, now)
                finally:
                    os.unlink(incoming)
                log("ci-fleet-roles-anywhere: issued and installed a new certificate locally")
            else:
                send(signed_request(args.salt_key, args.minion_id, csr_der(pending, args.minion_id), now))
                log("ci-fleet-roles-anywhere: sent a certificate request for a new key to the master")
        except Exception as error:  # noqa: BLE001 - reported, then judged by the alarm below
            log("<4>ci-fleet-roles-anywhere: renewal failed: %s: %s" % (type(error).__name__, error))
        info = certs.current()
    finding = alarm(info, now)
    write_alarm(args.alarm_dir, ALARM_NAME, finding)
    if finding:
        log("<%d>ci-fleet-roles-anywhere: ALARM: %s" % finding)
        return 1
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ci-fleet-roles-anywhere")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--cert-dir", required=True)
    r.add_argument("--minion-id", required=True)
    r.add_argument("--alarm-dir", required=True)
    r.add_argument("--salt-key", default="/etc/salt/pki/minion/minion.pem")
    r.add_argument("--local-issuer")
    r.add_argument("--ca-dir")
    r.add_argument("--master-document")
    i = sub.add_parser("install")
    i.add_argument("--cert-dir", required=True)
    i.add_argument("--incoming", required=True)
    args = parser.parse_args(argv)
    os.umask(0o077)
    if args.command == "install":
        try:
            CertDir(args.cert_dir).install(args.incoming, clock())
        except (ValueError, OSError, subprocess.CalledProcessError) as error:
            print("<3>ci-fleet-roles-anywhere: refusing the certificate: %s" % error)
            return 1
        print("ci-fleet-roles-anywhere: installed the new certificate")
        return 0
    if args.local_issuer and not (args.ca_dir and args.master_document):
        parser.error("--local-issuer needs --ca-dir and --master-document")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
