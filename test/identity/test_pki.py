#!/usr/bin/python3
"""The fleet's own Roles Anywhere PKI, with real OpenSSL and python3-cryptography:

- salt/_runners/ci_fleet_pki.py (the master's signer, called by the reactor);
- salt/aws_credentials/files/ci_fleet_roles_anywhere.py (every machine: key, CSR, install, alarm);
- salt/aws_credentials/files/ci_fleet_aws_session.py (the CI user's one-hour session).

A fake clock drives 90 days of a fleet with no `pulumi up`.

  python3 test/identity/test_pki.py        (run by test/identity/pki.test.ts)
"""
import argparse
import base64
import datetime
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from load_script import ROOT, SALT, load  # noqa: E402


sys.path.insert(0, os.path.join(ROOT, "test", "salt"))
import render  # noqa: E402  (test/salt/render.py: Salt's Jinja extensions over real Jinja2)
import yaml  # noqa: E402

pki = load("ci_fleet_pki_under_test", os.path.join(SALT, "_runners", "ci_fleet_pki.py"))
machine = load("ci_fleet_roles_anywhere_under_test", os.path.join(SALT, "aws_credentials", "files", "ci_fleet_roles_anywhere.py"))
session = load("ci_fleet_aws_session_under_test", os.path.join(SALT, "aws_credentials", "files", "ci_fleet_aws_session.py"))

STACK = "prod"
MASTER = "prod-salt-master"
TELEPORT = "prod-teleport"
DEFAULT_R1 = "prod-default-r1"
RELEASE_R1 = "prod-release-r1"
INFRA_R1 = "prod-infra-r1"
HOUR, DAY = 3600, 86400
T0 = 1_900_000_000  # 2030-03-17
LIFETIME_HOURS = 720
# The queues the runners' own pillar documents call trusted (release, infra); default is not.
TRUSTED_QUEUES = ("release", "infra")


def pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def public_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def make_ca():
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ci-fleet-prod Roles Anywhere CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ci-fleet-prod")])
    start = datetime.datetime.fromtimestamp(T0 - DAY, datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(start).not_valid_after(start + datetime.timedelta(days=5 * 365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode(), pem(key)


CA_CERT, CA_KEY = make_ca()
SALT_KEYS = {m: rsa.generate_private_key(public_exponent=65537, key_size=2048)
             for m in (MASTER, TELEPORT, DEFAULT_R1, RELEASE_R1, INFRA_R1)}


def index():
    """The master's pillar index as the pillar sync builds it from the program's documents."""
    return {
        MASTER: {"role": "salt-master", "public_key_pem": public_pem(SALT_KEYS[MASTER])},
        TELEPORT: {"role": "teleport", "public_key_pem": public_pem(SALT_KEYS[TELEPORT])},
        DEFAULT_R1: {"role": "runner", "queue": "default", "agent": "github-actions", "public_key_pem": public_pem(SALT_KEYS[DEFAULT_R1])},
        RELEASE_R1: {"role": "runner", "queue": "release", "agent": "buildkite", "public_key_pem": public_pem(SALT_KEYS[RELEASE_R1])},
        INFRA_R1: {"role": "runner", "queue": "infra", "agent": "buildkite", "public_key_pem": public_pem(SALT_KEYS[INFRA_R1])},
    }


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def csr_of(key, subject=None, extra=None):
    name = subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whatever")])
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    for ext in extra or []:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def signed(sender, claimed_id, der, ts):
    sig = SALT_KEYS[sender].sign(pki.request_message(claimed_id, ts, der), padding.PKCS1v15(), hashes.SHA256())
    return {"csr": base64.b64encode(der).decode(), "ts": ts, "sig": base64.b64encode(sig).decode()}


def subject_of(cert_pem):
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    get = lambda oid: [a.value for a in cert.subject.get_attributes_for_oid(oid)]  # noqa: E731
    return {"CN": get(NameOID.COMMON_NAME), "OU": get(NameOID.ORGANIZATIONAL_UNIT_NAME), "O": get(NameOID.ORGANIZATION_NAME)}


def issuer(clock, minions=None, store=None):
    return pki.Issuer(STACK, MASTER, minions if minions is not None else index(), CA_CERT, CA_KEY, LIFETIME_HOURS,
                      clock=clock, store=store or pki.MemoryStore(), trusted_queues=TRUSTED_QUEUES)


def lifetime_of(cert_pem):
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return int((cert.not_valid_after - cert.not_valid_before).total_seconds()) - pki.BACKDATE_SECONDS


class SignerTest(unittest.TestCase):
    def setUp(self):
        self.clock = Clock(T0)
        self.issuer = issuer(self.clock)

    def test_the_subject_is_the_masters_choice_whatever_the_csr_says(self):
        forged = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, RELEASE_R1),
                            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "release"),
                            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "someone-else")])
        key = ec.generate_private_key(ec.SECP256R1())
        der = csr_of(key, forged, [x509.BasicConstraints(ca=True, path_length=None)])
        cert_pem = self.issuer.handle(DEFAULT_R1, signed(DEFAULT_R1, DEFAULT_R1, der, T0))
        self.assertEqual(subject_of(cert_pem), {"CN": [DEFAULT_R1], "OU": ["default"], "O": ["ci-fleet-prod"]})
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        self.assertFalse(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        self.assertEqual(cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
                         key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
        # Signed by the CA, valid for the configured lifetime from now.
        ca = x509.load_pem_x509_certificate(CA_CERT.encode())
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        # An untrusted queue's runner: the shorter lifetime.
        self.assertEqual(int(cert.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp()), T0 + pki.UNTRUSTED_MAX_LIFETIME_HOURS * HOUR)
        for minion, ou in ((MASTER, "salt-master"), (TELEPORT, "teleport"), (RELEASE_R1, "release"), (INFRA_R1, "infra")):
            self.clock.now += 1
            der = csr_of(ec.generate_private_key(ec.SECP256R1()))
            self.assertEqual(subject_of(self.issuer.handle(minion, signed(minion, minion, der, self.clock.now)))["OU"], [ou])

    def test_a_default_runner_can_never_get_a_trusted_or_control_plane_ou(self):
        der = csr_of(ec.generate_private_key(ec.SECP256R1()))
        # Naming another minion in the event (Salt's batched events fire minion-written data,
        # so data['id'] can be anything): its own Salt key does not sign for that id.
        for victim in (RELEASE_R1, INFRA_R1, MASTER, TELEPORT):
            with self.assertRaisesRegex(pki.Refused, "not signed by the Salt key of %s" % victim):
                self.issuer.handle(victim, signed(DEFAULT_R1, victim, der, T0))
            with self.assertRaisesRegex(pki.Refused, "not signed by the Salt key"):
                self.issuer.handle(victim, signed(DEFAULT_R1, DEFAULT_R1, der, T0))
        # Its own id, whatever the CSR asks for: always OU default.
        for ou in ("infra", "release", "salt-master", "teleport"):
            self.clock.now += pki.MIN_REISSUE_SECONDS
            subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou)])
            cert_pem = issuer(self.clock).handle(DEFAULT_R1, signed(DEFAULT_R1, DEFAULT_R1, csr_of(ec.generate_private_key(ec.SECP256R1()), subject), self.clock.now))
            self.assertEqual(subject_of(cert_pem)["OU"], ["default"])
        # An index that would hand a runner a control-plane or reserved OU is refused outright.
        for queue in ("salt-master", "teleport", "salt", "pillar", "Default", ""):
            minions = index()
            minions[DEFAULT_R1]["queue"] = queue
            with self.assertRaises(pki.Refused):
                pki.subject_for(STACK, MASTER, minions, DEFAULT_R1)
        minions = index()
        minions["prod-teleport-x"] = dict(minions[TELEPORT])
        with self.assertRaisesRegex(pki.Refused, "teleport role under another name"):
            pki.subject_for(STACK, MASTER, minions, "prod-teleport-x")
        minions = index()
        minions[DEFAULT_R1]["queue"] = "release"   # the runner's name says default
        with self.assertRaisesRegex(pki.Refused, "not named after its queue"):
            pki.subject_for(STACK, MASTER, minions, DEFAULT_R1)
        with self.assertRaisesRegex(pki.Refused, "not in the master's minion index"):
            pki.subject_for(STACK, MASTER, index(), "prod-default-r9")

    def test_malformed_requests_are_refused(self):
        key = ec.generate_private_key(ec.SECP256R1())
        der = csr_of(key)
        good = signed(DEFAULT_R1, DEFAULT_R1, der, T0)
        tampered = bytearray(der)
        tampered[-5] ^= 0xFF
        cases = {
            "not a mapping": "csr please",
            "no csr": {k: v for k, v in good.items() if k != "csr"},
            "csr not base64": dict(good, csr="-----BEGIN CERTIFICATE REQUEST-----"),
            "csr garbage": signed(DEFAULT_R1, DEFAULT_R1, b"\x30\x03\x02\x01\x00", T0),
            "csr too large": dict(good, csr="A" * (pki.MAX_CSR_B64 + 4)),
            "csr signature broken": signed(DEFAULT_R1, DEFAULT_R1, bytes(tampered), T0),
            "P-521 key": signed(DEFAULT_R1, DEFAULT_R1, csr_of(ec.generate_private_key(ec.SECP521R1())), T0),
            "RSA-1024 key": signed(DEFAULT_R1, DEFAULT_R1, csr_of(rsa.generate_private_key(public_exponent=65537, key_size=1024)), T0),
            "old request": signed(DEFAULT_R1, DEFAULT_R1, der, T0 - pki.REQUEST_MAX_AGE_SECONDS - 1),
            "ts not a number": dict(good, ts="%d" % T0),
            "ts a bool": dict(good, ts=True),
            "sig of other content": dict(good, sig=signed(DEFAULT_R1, DEFAULT_R1, csr_of(key), T0)["sig"]),
            "no sig": dict(good, sig=""),
        }
        for what, request in cases.items():
            with self.subTest(what):
                with self.assertRaises(pki.Refused):
                    self.issuer.handle(DEFAULT_R1, request)
        for bad_id in (None, "", "PROD", "prod-default-r1; rm -rf /", 7):
            with self.assertRaises(pki.Refused):
                self.issuer.handle(bad_id, good)
        self.assertIsInstance(self.issuer.handle(DEFAULT_R1, good), str)

    def test_requests_are_fresh_within_a_minute_either_way_and_never_replayed(self):
        key = ec.generate_private_key(ec.SECP256R1())
        der = csr_of(key)
        for ts in (T0 + pki.REQUEST_MAX_FUTURE_SECONDS + 1, T0 + 600, T0 - pki.REQUEST_MAX_AGE_SECONDS - 1, T0 - 600):
            with self.subTest(ts - T0):
                with self.assertRaisesRegex(pki.Refused, r"ahead of the master's clock|old \(a late or replayed"):
                    issuer(self.clock).handle(DEFAULT_R1, signed(DEFAULT_R1, DEFAULT_R1, der, ts))
        self.assertLessEqual(pki.REQUEST_MAX_FUTURE_SECONDS, 60)
        self.assertLessEqual(pki.REQUEST_MAX_AGE_SECONDS, 60)
        for ts in (T0 + pki.REQUEST_MAX_FUTURE_SECONDS, T0 - pki.REQUEST_MAX_AGE_SECONDS):
            self.assertIsInstance(issuer(self.clock).handle(DEFAULT_R1, signed(DEFAULT_R1, DEFAULT_R1, der, ts)), str)
        # The same signed request again, within its minute: refused (the master remembers the last one).
        store = pki.MemoryStore()
        request = signed(RELEASE_R1, RELEASE_R1, der, T0)
        issuer(self.clock, store=store).handle(RELEASE_R1, request)
        self.clock.now += 30
        with self.assertRaisesRegex(pki.Refused, "replay"):
            issuer(self.clock, store=store).handle(RELEASE_R1, request)

    def test_no_stockpiling_a_new_certificate_only_past_half_life_and_one_per_hour(self):
        store = pki.MemoryStore()
        signer = issuer(self.clock, store=store)
        first_key = ec.generate_private_key(ec.SECP256R1())
        first = signer.handle(RELEASE_R1, signed(RELEASE_R1, RELEASE_R1, csr_of(first_key), self.clock.now))
        lifetime = LIFETIME_HOURS * HOUR
        # A rooted machine asking with new keys before half-life gets nothing, however often.
        for step in (pki.MIN_REISSUE_SECONDS, lifetime // 4, lifetime // 2 - pki.REQUEST_MAX_FUTURE_SECONDS - pki.BACKDATE_SECONDS):
            self.clock.now = T0 + step
            with self.assertRaisesRegex(pki.Refused, "not yet past half its lifetime"):
                signer.handle(RELEASE_R1, signed(RELEASE_R1, RELEASE_R1, csr_of(ec.generate_private_key(ec.SECP256R1())), self.clock.now))
        # The same key asking again (its delivery was lost) gets the same certificate, nothing new.
        self.clock.now += 5
        self.assertEqual(signer.handle(RELEASE_R1, signed(RELEASE_R1, RELEASE_R1, csr_of(first_key), self.clock.now)), first)
        # Past half-life, when the machine's own `due` says so: a new one.
        self.clock.now = T0 + lifetime // 2
        self.assertTrue(machine.due((T0 - pki.BACKDATE_SECONDS, T0 + lifetime, "k"), self.clock.now))
        second = signer.handle(RELEASE_R1, signed(RELEASE_R1, RELEASE_R1, csr_of(ec.generate_private_key(ec.SECP256R1())), self.clock.now))
        self.assertNotEqual(second, first)
        # And then nothing again until that one is past half-life: at most two valid at a time.
        self.clock.now += pki.MIN_REISSUE_SECONDS + 1
        with self.assertRaisesRegex(pki.Refused, "not yet past half its lifetime"):
            signer.handle(RELEASE_R1, signed(RELEASE_R1, RELEASE_R1, csr_of(ec.generate_private_key(ec.SECP256R1())), self.clock.now))
        # With the last one expired on record, one signing per MIN_REISSUE_SECONDS still holds.
        self.clock.now = store.entries[RELEASE_R1]["issued_at"] + pki.MIN_REISSUE_SECONDS - 1
        store.entries[RELEASE_R1]["not_after"] = self.clock.now - 1
        with self.assertRaisesRegex(pki.Refused, "issued a certificate"):
            signer.handle(RELEASE_R1, signed(RELEASE_R1, RELEASE_R1, csr_of(ec.generate_private_key(ec.SECP256R1())), self.clock.now))
        self.assertGreaterEqual(pki.MIN_REISSUE_SECONDS, 3600)
        self.assertEqual(sorted(store.entries), [RELEASE_R1])

    def test_untrusted_queues_get_the_shorter_lifetime_and_an_unknown_queue_counts_as_untrusted(self):
        self.assertEqual(pki.UNTRUSTED_MAX_LIFETIME_HOURS, 72)
        for minion, hours in ((DEFAULT_R1, pki.UNTRUSTED_MAX_LIFETIME_HOURS), (RELEASE_R1, LIFETIME_HOURS),
                              (INFRA_R1, LIFETIME_HOURS), (TELEPORT, LIFETIME_HOURS), (MASTER, LIFETIME_HOURS)):
            der = csr_of(ec.generate_private_key(ec.SECP256R1()))
            self.assertEqual((minion, lifetime_of(issuer(self.clock).handle(minion, signed(minion, minion, der, T0)))), (minion, hours * HOUR))
        # No trusted queue known (its pillar could not be read): every runner is short-lived.
        bare = pki.Issuer(STACK, MASTER, index(), CA_CERT, CA_KEY, LIFETIME_HOURS, clock=self.clock)
        self.assertEqual(bare.lifetime_for(RELEASE_R1), pki.UNTRUSTED_MAX_LIFETIME_HOURS * HOUR)
        # A configured lifetime below the cap is kept.
        short = pki.Issuer(STACK, MASTER, index(), CA_CERT, CA_KEY, 48, clock=self.clock, trusted_queues=TRUSTED_QUEUES)
        self.assertEqual(short.lifetime_for(DEFAULT_R1), 48 * HOUR)

    def test_the_lifetime_range_is_enforced(self):
        for hours in (23, 721, 168.5):
            with self.assertRaises(ValueError):
                pki.Issuer(STACK, MASTER, index(), CA_CERT, CA_KEY, hours)

    def test_delivery_is_one_publication_carrying_only_the_certificate(self):
        calls = []
        pki.deliver(lambda *a, **k: calls.append((a, k)) or {}, DEFAULT_R1, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
        self.assertEqual(calls, [((DEFAULT_R1, "state.apply"), {"arg": ["aws_credentials.roles_anywhere_install"], "kwarg": {
            "queue": True, "pillar": {"ci_fleet_roles_anywhere_issued": {"certificate_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}}}})])
        self.assertNotIn("PRIVATE", json.dumps(calls))


class FleetMachine:
    """One machine's Roles Anywhere directory, driven like its timer would."""

    def __init__(self, root, minion_id, fleet):
        self.id, self.fleet = minion_id, fleet
        self.cert_dir = os.path.join(root, minion_id, "roles-anywhere")
        self.alarm_dir = os.path.join(root, minion_id, "alarms")
        self.salt_key = os.path.join(root, minion_id, "minion.pem")
        os.makedirs(os.path.dirname(self.salt_key), exist_ok=True)
        with open(os.open(self.salt_key, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            handle.write(pem(SALT_KEYS[minion_id]))
        self.log = []

    def args(self):
        local = self.id == MASTER
        return argparse.Namespace(cert_dir=self.cert_dir, minion_id=self.id, alarm_dir=self.alarm_dir, salt_key=self.salt_key,
                                  local_issuer=os.path.join(SALT, "_runners", "ci_fleet_pki.py") if local else None,
                                  ca_dir=self.fleet.ca_dir if local else None,
                                  master_document=self.fleet.master_document if local else None)

    def run(self):
        return machine.run(self.args(), now=self.fleet.clock.now, send=self.fleet.send_from(self), log=self.log.append)

    def current(self):
        return machine.CertDir(self.cert_dir).current()


class Fleet:
    """The master's side as the reactor runs it: the event's id, Issuer.handle, delivery."""

    def __init__(self, root):
        self.clock = Clock(T0)
        self.ca_dir = os.path.join(root, "ca")
        os.makedirs(self.ca_dir, mode=0o700)
        for name, text, mode in (("certificate.pem", CA_CERT, 0o644), ("private-key.pem", CA_KEY, 0o600)):
            with open(os.open(os.path.join(self.ca_dir, name), os.O_WRONLY | os.O_CREAT, mode), "w") as handle:
                handle.write(text)
        self.master_document = os.path.join(root, "master.json")
        with open(self.master_document, "w") as handle:
            json.dump({"ci_fleet_master": {"minions": index(), "roles_anywhere_ca": {"certificate_hours": LIFETIME_HOURS}}}, handle)
        self.store = pki.MemoryStore()
        self.broken = False
        self.issued = []
        self.machines = [FleetMachine(root, m, self) for m in (MASTER, TELEPORT, DEFAULT_R1, RELEASE_R1)]

    def send_from(self, m):
        def send(request):
            if self.broken:
                raise RuntimeError("the master does not answer")
            with open(self.master_document) as handle:
                document = json.load(handle)
            pem_text = pki.issuer_from_master(document, MASTER, ca_dir=self.ca_dir, store=self.store, clock=self.clock,
                                              trusted_queues=TRUSTED_QUEUES).handle(m.id, request)
            self.issued.append(m.id)
            incoming = os.path.join(m.cert_dir, "incoming.pem")
            with open(incoming, "w") as handle:
                handle.write(pem_text)
            machine.CertDir(m.cert_dir).install(incoming, self.clock.now)
        return send


class RenewalTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="ci-fleet-pki-")
        self.fleet = Fleet(self.root)

    def tearDown(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def step(self, hours):
        self.fleet.clock.now += hours * HOUR
        return {m.id: m.run() for m in self.fleet.machines}

    def test_ninety_days_without_pulumi_up_nothing_expires_and_every_renewal_has_a_new_key(self):
        self.assertEqual(set(self.step(0).values()), {0})
        keys = {m.id: [] for m in self.fleet.machines}
        for _ in range(90 * 24 // 6):
            codes = self.step(6)
            now = self.fleet.clock.now
            for m in self.fleet.machines:
                not_before, not_after, public = m.current()
                self.assertLess(now, not_after, m.id)
                self.assertGreater(not_after - now, (not_after - not_before) * machine.ALARM_AT_REMAINING, m.id)
                if not keys[m.id] or keys[m.id][-1] != public:
                    keys[m.id].append(public)
                self.assertFalse(os.path.exists(os.path.join(m.alarm_dir, machine.ALARM_NAME)), m.id)
                # Root-only: the directory, every generation and every key.
                self.assertEqual(stat.S_IMODE(os.stat(m.cert_dir).st_mode), 0o700)
                key = os.path.join(m.cert_dir, "current", "private-key.pem")
                self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
                self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(os.path.realpath(key))).st_mode), 0o700)
                self.assertTrue(os.path.islink(os.path.join(m.cert_dir, "current")))
            self.assertEqual(set(codes.values()), {0})
        for m in self.fleet.machines:
            # 90 days of 30-day certificates renewed at half-life: the first and six renewals.
            self.assertGreaterEqual(len(keys[m.id]), 6, m.id)
            self.assertEqual(len(set(keys[m.id])), len(keys[m.id]), "a key was reused on %s" % m.id)
            self.assertEqual(len([n for n in os.listdir(m.cert_dir) if n.startswith("gen-")]), 1)
            self.assertFalse(os.path.exists(os.path.join(m.cert_dir, "pending")))
        self.assertNotIn(MASTER, self.fleet.issued)   # the master signs its own, locally

    def test_a_broken_renewal_raises_the_alarm_days_before_expiry_and_clears_when_fixed(self):
        self.step(0)
        # The minions' channel to the master breaks (the master renews its own, locally).
        self.fleet.broken = True
        runner = next(m for m in self.fleet.machines if m.id == RELEASE_R1)
        _, expiry, _ = runner.current()
        lifetime = LIFETIME_HOURS * HOUR
        # Past half-life every hourly attempt fails; no alarm while more than a quarter is left.
        self.fleet.clock.now = T0 + lifetime // 2 - HOUR
        for _ in range(3):
            self.assertEqual(self.step(1)[RELEASE_R1], 0)
        self.assertTrue(any(line.startswith("<4>") and "renewal failed" in line for line in runner.log))
        self.fleet.clock.now = expiry - int(lifetime * machine.ALARM_AT_REMAINING) - 4 * HOUR
        first_alarm = None
        while first_alarm is None and self.fleet.clock.now < expiry:
            if self.step(1)[RELEASE_R1] == 1:
                first_alarm = self.fleet.clock.now
        self.assertIsNotNone(first_alarm)
        with open(os.path.join(runner.alarm_dir, machine.ALARM_NAME)) as handle:
            self.assertRegex(handle.read(), r"expires in [0-9.]+ hours and has not been renewed")
        self.assertTrue(any(line.startswith("<4>") and "ALARM" in line for line in runner.log))
        days_ahead = (expiry - first_alarm) / DAY
        self.assertGreaterEqual(days_ahead, 7.0)
        self.assertLessEqual(days_ahead, 7.6)
        # The master (its own CA) never alarms; nor does anything but the broken channel's minions.
        self.assertFalse(os.path.exists(os.path.join(self.fleet.machines[0].alarm_dir, machine.ALARM_NAME)))
        self.fleet.clock.now = expiry
        self.assertEqual(self.step(1)[RELEASE_R1], 1)
        self.assertTrue(any(line.startswith("<3>") and "expired" in line for line in runner.log))
        self.fleet.broken = False
        self.assertEqual(self.step(1)[RELEASE_R1], 0)
        self.assertFalse(os.path.exists(os.path.join(runner.alarm_dir, machine.ALARM_NAME)))

    def test_a_certificate_is_installed_only_for_the_pending_key(self):
        self.step(0)
        runner = next(m for m in self.fleet.machines if m.id == DEFAULT_R1)
        before = runner.current()
        other = ec.generate_private_key(ec.SECP256R1())
        self.fleet.clock.now += pki.MIN_REISSUE_SECONDS
        pem_text = issuer(self.fleet.clock).handle(DEFAULT_R1, signed(DEFAULT_R1, DEFAULT_R1, csr_of(other), self.fleet.clock.now))
        incoming = os.path.join(self.root, "incoming.pem")
        with open(incoming, "w") as handle:
            handle.write(pem_text)
        os.makedirs(os.path.join(runner.cert_dir, "pending"), mode=0o700)
        machine.new_key(os.path.join(runner.cert_dir, "pending", "private-key.pem"))
        with self.assertRaisesRegex(ValueError, "not for the pending key"):
            machine.CertDir(runner.cert_dir).install(incoming, self.fleet.clock.now)
        self.assertEqual(runner.current(), before)
        self.assertEqual(machine.main(["install", "--cert-dir", runner.cert_dir, "--incoming", incoming]), 1)

    def test_the_request_a_machine_sends_is_what_the_signer_verifies(self):
        sent = []
        m = FleetMachine(self.root, INFRA_R1, self.fleet)
        machine.run(m.args(), now=T0, send=sent.append, log=m.log.append)
        self.assertEqual(len(sent), 1)
        self.assertEqual(sorted(sent[0]), ["csr", "sig", "ts"])
        self.assertEqual(json.loads(json.dumps(sent[0])), sent[0])
        cert_pem = issuer(self.fleet.clock).handle(INFRA_R1, sent[0])
        self.assertEqual(subject_of(cert_pem)["OU"], ["infra"])
        pending = os.path.join(m.cert_dir, "pending", "private-key.pem")
        self.assertEqual(stat.S_IMODE(os.stat(pending).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(pending)).st_mode), 0o700)
        # A second attempt before the answer reuses the pending key (a late answer still fits).
        machine.run(m.args(), now=T0 + HOUR, send=sent.append, log=m.log.append)
        csr = lambda r: x509.load_der_x509_csr(base64.b64decode(r["csr"]))  # noqa: E731
        self.assertEqual(csr(sent[0]).public_key().public_numbers(), csr(sent[1]).public_key().public_numbers())


class ReactorTest(unittest.TestCase):
    """salt/orch/reactor/roles_anywhere_csr.sls with real Jinja2: whatever a minion puts in the
    event, the runner is called as sign(minion=<str>, request=<the data mapping or {}>)."""

    def reaction(self, data):
        text = render.render_file(render.make_env([SALT]), "orch/reactor/roles_anywhere_csr.sls", {}, {}, MASTER,
                                  {"data": data, "tag": pki.EVENT_TAG})
        return yaml.safe_load(text)

    def test_the_reactor_passes_the_id_and_the_request_as_data_never_as_yaml(self):
        request = {"csr": "MIIB", "ts": T0, "sig": "c2ln"}
        self.assertEqual(self.reaction({"id": DEFAULT_R1, "data": request}), {
            "orch-reactor-roles-anywhere-csr": {"runner.ci_fleet_pki.sign": [{"args": [{"minion": DEFAULT_R1}, {"request": request}]}]}})
        hostile = 'x"\n  - minion: prod-release-r1\n{{ 7 }}: [\\'
        for data in ({"id": hostile, "data": {"csr": hostile}}, {"id": DEFAULT_R1, "data": "just a string"},
                     {"id": 7, "data": ["a", "list"]}, {}):
            args = self.reaction(data)["orch-reactor-roles-anywhere-csr"]["runner.ci_fleet_pki.sign"][0]["args"]
            self.assertEqual(args[0], {"minion": str(data.get("id", ""))})
            self.assertEqual(args[1], {"request": data["data"] if isinstance(data.get("data"), dict) else {}})


class SessionTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="ci-fleet-session-")
        self.args = argparse.Namespace(source="roles-anywhere", role_arn="arn:aws:iam::111111111111:role/ci-fleet-prod-agent-default",
                                       output=os.path.join(self.root, "run", "ci-fleet", "aws", "credentials.json"),
                                       alarm_dir=os.path.join(self.root, "run", "ci-fleet", "alarms"))
        os.makedirs(os.path.join(self.root, "run"))

    def tearDown(self):
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def iso(t):
        return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def test_sessions_last_an_hour_are_refreshed_early_and_alarm_when_stale(self):
        fetched = []

        def fetch(lasts):
            def f(_args):
                fetched.append(lasts)
                return session.session_document("AKIA", "secret", "token", self.iso(now[0] + lasts))
            return f
        now = [T0]
        self.assertEqual(session.refresh(self.args, os.getgid(), now=now[0], fetch=fetch(3600), log=lambda _m: None), 0)
        st = os.stat(self.args.output)
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid), (0o640, 0))
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.args.output)).st_mode), 0o750)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(os.path.dirname(self.args.output))).st_mode), 0o755)
        # Still 45 min left: no new session; 35 min left: a new one.
        now[0] += 15 * 60
        session.refresh(self.args, os.getgid(), now=now[0], fetch=fetch(3600), log=lambda _m: None)
        self.assertEqual(len(fetched), 1)
        now[0] += 10 * 60
        session.refresh(self.args, os.getgid(), now=now[0], fetch=fetch(3600), log=lambda _m: None)
        self.assertEqual(len(fetched), 2)
        # A session longer than an hour is never written.
        now[0] += 30 * 60
        logs = []
        session.refresh(self.args, os.getgid(), now=now[0], fetch=fetch(12 * 3600), log=logs.append)
        self.assertLessEqual(session.remaining(self.args.output, now[0]), 3600)
        self.assertTrue(any("ValueError" in line for line in logs))
        # The source is broken: the alarm comes with 15 min left, before the session expires.

        def broken(_args):
            raise RuntimeError("AccessDenied AKIA-should-not-be-printed")
        codes = []
        while session.remaining(self.args.output, now[0]) > -300:
            now[0] += 60
            logs = []
            codes.append((session.remaining(self.args.output, now[0]), session.refresh(self.args, os.getgid(), now=now[0], fetch=broken, log=logs.append)))
            self.assertFalse(any("AKIA" in line for line in logs))
        first_alarm = next(left for left, code in codes if code == 1)
        self.assertGreaterEqual(first_alarm, session.ALARM_BEFORE_SECONDS - 60)
        self.assertLess(first_alarm, session.ALARM_BEFORE_SECONDS)
        self.assertTrue(os.path.exists(os.path.join(self.args.alarm_dir, session.ALARM_NAME)))
        session.refresh(self.args, os.getgid(), now=now[0], fetch=fetch(3600), log=lambda _m: None)
        self.assertFalse(os.path.exists(os.path.join(self.args.alarm_dir, session.ALARM_NAME)))

    def test_the_signing_helper_is_asked_for_one_hour_with_the_root_only_key(self):
        seen = []

        def run(argv, **kwargs):
            seen.append(argv)
            return subprocess.CompletedProcess(argv, 0, json.dumps({"Version": 1, "AccessKeyId": "A", "SecretAccessKey": "S",
                                                                    "SessionToken": "T", "Expiration": self.iso(T0 + 3600)}).encode(), b"")
        args = argparse.Namespace(signing_helper="/usr/local/bin/aws_signing_helper", certificate="/etc/ci-fleet/roles-anywhere/current/certificate.pem",
                                  private_key="/etc/ci-fleet/roles-anywhere/current/private-key.pem", trust_anchor_arn="arn:ta",
                                  profile_arn="arn:p", role_arn="arn:r")
        self.assertEqual(session.from_signing_helper(args, run=run)["Expiration"], self.iso(T0 + 3600))
        self.assertEqual(seen[0][seen[0].index("--session-duration") + 1], "3600")

    def test_assume_role_asks_for_one_hour(self):
        calls = []

        class Sts:
            def assume_role(self, **kwargs):
                calls.append(kwargs)
                return {"Credentials": {"AccessKeyId": "A", "SecretAccessKey": "S", "SessionToken": "T",
                                        "Expiration": datetime.datetime.fromtimestamp(T0 + 3600, datetime.timezone.utc)}}
        args = argparse.Namespace(role_arn="arn:aws:iam::111111111111:role/ci-fleet-prod-agent-default", session_name=DEFAULT_R1)
        document = session.from_assume_role(args, client=Sts())
        self.assertEqual(calls, [{"RoleArn": args.role_arn, "RoleSessionName": DEFAULT_R1, "DurationSeconds": 3600}])
        self.assertEqual(document["Expiration"], self.iso(T0 + 3600))
        self.assertEqual(document["Version"], 1)


if __name__ == "__main__":
    unittest.main(verbosity=1)
