"""ci_fleet_pki runner module: the fleet's own Roles Anywhere PKI (equinix-metal).

  salt-run ci_fleet_pki.sign minion=ID request='{csr, ts, sig}'   (the reactor, per request)

Every machine makes its own key pair (root-only, never leaves it) and, once its certificate
has passed half its lifetime, sends a certificate request to the master as the event
`ci-fleet/roles-anywhere/csr` (salt/aws_credentials/files/ci_fleet_roles_anywhere.py). The
reactor (salt/orch/reactor/roles_anywhere_csr.sls) calls `sign` here. The certificate's
subject is the MASTER's choice, from the minion id and the master's own pillar (the minion
index the pillar sync builds from the documents `pulumi up` wrote): CN the minion id, OU its
queue (runners), `salt-master` (the master) or `teleport`, O `ci-fleet-<stack>`. Nothing in
the CSR's subject or extensions is copied.

Who sent the request is decided by a signature, not by the event: the request is signed
with the sender's Salt minion key (RSA, /etc/salt/pki/minion/minion.pem, root-only) over
`MESSAGE_PREFIX`, the minion id, a timestamp and the CSR's sha256, and verified here with
the public key the master's pillar index holds for that id. The reactor's `data['id']` is the
authenticated sender only for a single event; Salt also accepts a batch (`events: [...]`)
whose data it fires as the minion wrote it (salt/daemons/masterapi.py `_minion_event`), so
`data['id']` alone could name any minion. The CSR is also checked for proof of possession
(its own signature) and for a key type Roles Anywhere accepts.

The certificate is public: it reaches the minion as inline pillar of a `state.apply
aws_credentials.roles_anywhere_install` publication (the publication carries nothing else),
and the minion installs it only if it matches the key it is waiting with. The CA key stays
on the master (root-only file written from the master's own pillar). The logic is in
`Issuer` with the clock and the store injected, so test/identity/test_pki.py drives it
with real python3-cryptography and a fake clock; the master's own certificate is issued by
the same `Issuer`, locally (`ci-fleet-roles-anywhere renew --local-issuer`).
"""
import base64
import binascii
import datetime
import hashlib
import json
import logging
import os
import re
import time

log = logging.getLogger(__name__)

EVENT_TAG = "ci-fleet/roles-anywhere/csr"
MESSAGE_PREFIX = b"ci-fleet-roles-anywhere-csr/v1"
CA_DIR = "/etc/ci-fleet/pki/ca"
ISSUED_DIR = "/var/lib/ci-fleet/pki/issued"
INSTALL_SLS = "aws_credentials.roles_anywhere_install"
INSTALL_PILLAR_KEY = "ci_fleet_roles_anywhere_issued"
# OUs only the control plane may carry; a queue can never be named so (infra/identity/names.ts
# RESERVED_QUEUE_NAMES), and a runner is never given one whatever its pillar says.
CONTROL_OUS = ("salt-master", "teleport")
RESERVED_QUEUES = ("salt", "teleport", "salt-master", "pillar")
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
B64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
# A P-384 CSR is ~500 bytes of DER; anything much larger is not one of ours.
MAX_CSR_B64 = 4096
MAX_SIG_B64 = 1024
# A request is fresh only within this many seconds of the master's clock, either way: from the
# future (clock skew between NTP-synchronised machines) and from the past (replay of a captured
# request). The reactor handles a request within seconds of the minion signing it.
REQUEST_MAX_FUTURE_SECONDS = 60
REQUEST_MAX_AGE_SECONDS = 60
# One certificate per minion per this long, whatever else holds (state kept by the master).
MIN_REISSUE_SECONDS = 3600
# No stockpiling: a minion that already holds a certificate from the master gets a new one only
# once that one is past half its lifetime (when the machine itself asks, renew at half-life), so a
# rooted machine holds at most two valid certificates at any time.
REISSUE_AT_REMAINING = 0.5
# Runners of an untrusted queue get at most this lifetime (infra/identity/lifetimes.ts
# UNTRUSTED_CERTIFICATE_MAX_HOURS): a certificate copied off a rooted runner is worth less.
UNTRUSTED_MAX_LIFETIME_HOURS = 72
# Backdating absorbs small clock differences between the master and AWS.
BACKDATE_SECONDS = 300
MIN_LIFETIME_HOURS, MAX_LIFETIME_HOURS = 24, 720


class Refused(Exception):
    """The request is not signed: the reason is logged, never the request's content."""


def _crypto():
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    return x509, InvalidSignature, hashes, serialization, ec, padding, rsa, ExtendedKeyUsageOID, NameOID


def verify_salt_signature(public_key_pem, message, signature):
    """True only if `signature` is an RSA PKCS#1 v1.5 SHA-256 signature of `message` made with the
    private half of `public_key_pem` (a minion's accepted Salt key, PEM text). Anything else
    (another key, tampered bytes, a key that does not parse or is not RSA) is False. Shared with
    salt/_runners/ci_fleet.py (the Teleport minion's signed answers)."""
    _, InvalidSignature, hashes, serialization, _, padding, _, _, _ = _crypto()
    try:
        salt_key = serialization.load_pem_public_key(public_key_pem.encode())
        salt_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError, TypeError, AttributeError):
        return False
    return True


def request_message(minion_id, ts, csr_der):
    """The bytes a minion signs with its Salt key (and the master verifies)."""
    return b"\n".join([MESSAGE_PREFIX, minion_id.encode(), str(int(ts)).encode(),
                       hashlib.sha256(csr_der).hexdigest().encode()])


def subject_for(stack, master_id, minions, minion_id):
    """(CN, OU, O) the master gives `minion_id`, from its own pillar index only.

    The master itself gets `salt-master`, `<stack>-teleport` (role teleport) `teleport`, a
    runner its queue. Anything else (unknown id, a runner whose queue is reserved or not a DNS
    label, a teleport-named runner) is refused."""
    if not isinstance(minion_id, str) or not DNS_LABEL.match(minion_id):
        raise Refused("minion id is not a DNS label")
    entry = minions.get(minion_id)
    if not isinstance(entry, dict):
        raise Refused("%s is not in the master's minion index" % minion_id)
    role = entry.get("role")
    organization = "ci-fleet-%s" % stack
    if minion_id == master_id:
        if role != "salt-master":
            raise Refused("the master's own index entry does not say salt-master")
        return minion_id, "salt-master", organization
    if role == "teleport":
        if minion_id != "%s-teleport" % stack:
            raise Refused("%s claims the teleport role under another name" % minion_id)
        return minion_id, "teleport", organization
    if role == "runner":
        queue = entry.get("queue")
        if not isinstance(queue, str) or not DNS_LABEL.match(queue) or queue in RESERVED_QUEUES or queue in CONTROL_OUS:
            raise Refused("%s has no usable queue in the master's index" % minion_id)
        if not minion_id.startswith("%s-%s-" % (stack, queue)):
            raise Refused("%s is not named after its queue %s" % (minion_id, queue))
        return minion_id, queue, organization
    raise Refused("%s has role %r: no certificate" % (minion_id, role))


class FileStore:
    """When each minion was last issued a certificate (and its serial), root-only."""

    def __init__(self, directory=ISSUED_DIR):
        self.directory = directory

    def _path(self, minion_id):
        return os.path.join(self.directory, minion_id + ".json")

    def last(self, minion_id):
        try:
            with open(self._path(minion_id)) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    def record(self, minion_id, entry):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)
        tmp = self._path(minion_id) + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w") as handle:
            json.dump(entry, handle, sort_keys=True)
        os.replace(tmp, self._path(minion_id))


class MemoryStore:
    def __init__(self):
        self.entries = {}

    def last(self, minion_id):
        return self.entries.get(minion_id)

    def record(self, minion_id, entry):
        self.entries[minion_id] = dict(entry)


class Issuer:
    """Signs fleet certificates. `minions`: the master's pillar index (minion id -> role,
    queue, public_key_pem); `clock`: seconds since the epoch."""

    def __init__(self, stack, master_id, minions, ca_cert_pem, ca_key_pem, lifetime_hours,
                 clock=time.time, store=None, trusted_queues=None):
        if not (isinstance(lifetime_hours, int) and MIN_LIFETIME_HOURS <= lifetime_hours <= MAX_LIFETIME_HOURS):
            raise ValueError("certificate lifetime must be %d..%d hours" % (MIN_LIFETIME_HOURS, MAX_LIFETIME_HOURS))
        x509, _, _, serialization, _, _, _, _, _ = _crypto()
        self.stack, self.master_id, self.minions = stack, master_id, minions or {}
        self.ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
        self.ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
        self.lifetime_seconds = lifetime_hours * 3600
        # Queues known trusted (from the runners' own pillar documents); any other queue, an
        # unknown one included, gets the untrusted lifetime: fail closed.
        self.trusted_queues = frozenset(trusted_queues or ())
        self.clock = clock
        self.store = store if store is not None else MemoryStore()

    def lifetime_for(self, minion_id):
        """Seconds a certificate for `minion_id` lives: the configured lifetime, capped at
        UNTRUSTED_MAX_LIFETIME_HOURS for a runner whose queue is not known trusted."""
        entry = self.minions.get(minion_id) or {}
        if entry.get("role") == "runner" and entry.get("queue") not in self.trusted_queues:
            return min(self.lifetime_seconds, UNTRUSTED_MAX_LIFETIME_HOURS * 3600)
        return self.lifetime_seconds

    # -- requests ------------------------------------------------------------------------
    def verify_request(self, minion_id, request):
        """The CSR of a well-formed request signed by `minion_id`'s Salt key, or Refused."""
        x509, InvalidSignature, hashes, serialization, ec, padding, rsa, _, _ = _crypto()
        if not isinstance(request, dict):
            raise Refused("request is not a mapping")
        csr_b64, sig_b64, ts = request.get("csr"), request.get("sig"), request.get("ts")
        if not isinstance(csr_b64, str) or not B64.match(csr_b64) or len(csr_b64) > MAX_CSR_B64:
            raise Refused("csr is not base64 DER of a plausible size")
        if not isinstance(sig_b64, str) or not B64.match(sig_b64) or len(sig_b64) > MAX_SIG_B64:
            raise Refused("sig is not base64 of a plausible size")
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise Refused("ts is missing or not an integer")
        if ts - self.clock() > REQUEST_MAX_FUTURE_SECONDS:
            raise Refused("ts is more than %ds ahead of the master's clock" % REQUEST_MAX_FUTURE_SECONDS)
        if self.clock() - ts > REQUEST_MAX_AGE_SECONDS:
            raise Refused("ts is more than %ds old (a late or replayed request)" % REQUEST_MAX_AGE_SECONDS)
        try:
            csr_der, signature = base64.b64decode(csr_b64, validate=True), base64.b64decode(sig_b64, validate=True)
        except (binascii.Error, ValueError):
            raise Refused("request is not base64")
        entry = self.minions.get(minion_id) if isinstance(minion_id, str) else None
        public_pem = entry.get("public_key_pem") if isinstance(entry, dict) else None
        if not public_pem:
            raise Refused("no Salt public key for %s in the master's index" % minion_id)
        if not verify_salt_signature(public_pem, request_message(minion_id, ts, csr_der), signature):
            raise Refused("request is not signed by the Salt key of %s" % minion_id)
        try:
            csr = x509.load_der_x509_csr(csr_der)
        except ValueError:
            raise Refused("csr does not parse")
        if not csr.is_signature_valid:
            raise Refused("csr signature does not verify (no proof of possession)")
        key = csr.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in ("secp256r1", "secp384r1"):
                raise Refused("csr key curve %s is not P-256 or P-384" % key.curve.name)
        elif isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                raise Refused("csr RSA key is shorter than 2048 bits")
        else:
            raise Refused("csr key type is not EC or RSA")
        return csr

    # -- certificates ----------------------------------------------------------------------
    def issue(self, minion_id, public_key, now=None):
        """A certificate for `public_key` with the subject the master chooses for `minion_id`."""
        x509, _, hashes, serialization, _, _, _, ExtendedKeyUsageOID, NameOID = _crypto()
        cn, ou, o = subject_for(self.stack, self.master_id, self.minions, minion_id)
        now = self.clock() if now is None else now
        utc = datetime.timezone.utc
        start = datetime.datetime.fromtimestamp(int(now) - BACKDATE_SECONDS, utc)
        end = datetime.datetime.fromtimestamp(int(now) + self.lifetime_for(minion_id), utc)
        subject = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
        ])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False)
        )
        certificate = builder.sign(self.ca_key, hashes.SHA256())
        return certificate.public_bytes(serialization.Encoding.PEM).decode(), certificate.serial_number

    def handle(self, minion_id, request):
        """Verify, rate-limit, issue and record: the certificate PEM, or Refused.

        Refused, in this order, after the request is proven to come from `minion_id`'s Salt key:
        - a request not newer than the last one accepted from that minion (a replay);
        - while the certificate the master last issued to that minion is not past half its
          lifetime (no stockpiling), except that the SAME key asking again gets the SAME
          certificate back (its delivery was lost; nothing new is issued);
        - within MIN_REISSUE_SECONDS of the last issue."""
        subject_for(self.stack, self.master_id, self.minions, minion_id)
        csr = self.verify_request(minion_id, request)
        _, _, _, serialization, _, _, _, _, _ = _crypto()
        now = self.clock()
        last = self.store.last(minion_id) or {}
        ts = int(request["ts"])
        if ts <= int(last.get("last_request_ts", -1)):
            raise Refused("%s sent a request not newer than its last one (a replay)" % minion_id)
        key_sha256 = hashlib.sha256(csr.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()
        not_before, not_after = last.get("not_before"), last.get("not_after")
        if isinstance(not_before, (int, float)) and isinstance(not_after, (int, float)) and now < not_after:
            # The machine renews when `not_after - now <= lifetime * 0.5` (ci_fleet_roles_anywhere.py
            # `due`); a request up to REQUEST_MAX_FUTURE_SECONDS early is still that.
            if not_after - now - REQUEST_MAX_FUTURE_SECONDS > (not_after - not_before) * REISSUE_AT_REMAINING:
                if last.get("key_sha256") == key_sha256 and last.get("certificate_pem"):
                    self.store.record(minion_id, dict(last, last_request_ts=ts))
                    return last["certificate_pem"]
                raise Refused("%s holds a certificate not yet past half its lifetime" % minion_id)
        if last.get("issued_at") is not None and now - float(last["issued_at"]) < MIN_REISSUE_SECONDS:
            raise Refused("%s was issued a certificate %ds ago" % (minion_id, now - float(last["issued_at"])))
        pem, serial = self.issue(minion_id, csr.public_key(), now)
        self.store.record(minion_id, {"issued_at": now, "serial": "%x" % serial,
                                      "not_before": int(now) - BACKDATE_SECONDS,
                                      "not_after": int(now) + self.lifetime_for(minion_id),
                                      "key_sha256": key_sha256, "certificate_pem": pem, "last_request_ts": ts})
        return pem


# --- Salt entry point (needs a running master: __opts__, __salt__) -------------------------

def _read(path):
    with open(path) as handle:
        return handle.read()


def issuer_from_master(master_pillar, master_id, ca_dir=CA_DIR, store=None, clock=time.time, trusted_queues=None):
    ca = (master_pillar.get("ci_fleet_master") or {}).get("roles_anywhere_ca") or {}
    minions = (master_pillar.get("ci_fleet_master") or {}).get("minions") or {}
    stack = master_id[: -len("-salt-master")]
    return Issuer(stack, master_id, minions, _read(os.path.join(ca_dir, "certificate.pem")),
                  _read(os.path.join(ca_dir, "private-key.pem")), int(ca.get("certificate_hours", 0)),
                  clock=clock, store=store if store is not None else FileStore(), trusted_queues=trusted_queues)


def deliver(local, minion_id, certificate_pem):
    """Publish `state.apply <INSTALL_SLS>` to that minion with the certificate (public) as its
    only inline pillar; `queue=True` waits for a running highstate instead of failing."""
    return local(minion_id, "state.apply", arg=[INSTALL_SLS],
                 kwarg={"queue": True, "pillar": {INSTALL_PILLAR_KEY: {"certificate_pem": certificate_pem}}})


def _salt_local(client, timeout=300):
    """LocalClient.cmd as {minion_id: return} of the minions that answered without error
    (the same reading as salt/_runners/ci_fleet.py salt_local)."""

    def local(tgt, fun, arg=(), kwarg=None):
        returns = client.cmd(tgt, fun, arg=list(arg), kwarg=kwarg or {}, timeout=timeout, full_return=True)
        return {m: d["ret"] for m, d in (returns or {}).items()
                if isinstance(d, dict) and "ret" in d and not d.get("retcode")}

    return local


def _trusted_queues(minion_id):
    """The queue of `minion_id` if its own pillar document (written by `pulumi up`) says the
    queue is trusted; nothing otherwise (untrusted lifetime)."""
    if not isinstance(minion_id, str) or not DNS_LABEL.match(minion_id):
        return ()
    runner = (__salt__["pillar.show_pillar"](minion_id).get("ci_fleet") or {}).get("runner") or {}  # noqa: F821
    return (runner["queue"],) if runner.get("trusted") is True and isinstance(runner.get("queue"), str) else ()


def sign(minion=None, request=None):
    """The reactor's entry: `minion` is the event's `data['id']`, `request` its `data['data']`."""
    import salt.client  # noqa: only on the master

    master_id = __opts__["ci_fleet"]["master_minion_id"]  # noqa: F821 (Salt loader global)
    master_pillar = __salt__["pillar.show_pillar"](master_id)  # noqa: F821
    try:
        if isinstance(request, str):
            request = json.loads(request)
        pem = issuer_from_master(master_pillar, master_id, trusted_queues=_trusted_queues(minion)).handle(minion, request)
    except (Refused, ValueError, OSError) as error:
        log.warning("ci_fleet_pki: not signing for %r: %s", minion, error)
        return {"signed": False, "minion": minion, "reason": str(error)}
    local = _salt_local(salt.client.LocalClient(mopts=__opts__))  # noqa: F821
    deliver(local, minion, pem)
    log.info("ci_fleet_pki: issued a Roles Anywhere certificate to %s", minion)
    return {"signed": True, "minion": minion}
