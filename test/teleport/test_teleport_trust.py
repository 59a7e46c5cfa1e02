#!/usr/bin/python3
"""Issue 12, the Teleport trust the master keeps (salt/_runners/ci_fleet.py,
salt/_modules/ci_fleet_teleport.py, salt/pillar/minion.sls), against a rooted runner:

- CA pins: computed by the master from the Teleport minion's host CA export exactly as Teleport
  does (lib/utils CalculateSPKI: sha256 of the certificate's SubjectPublicKeyInfo DER), checked
  here against real OpenSSL certificates; recorded in the master's own state and served through
  pillar to every node, never to the Teleport machine, never taken from a runner; no join
  without them.
- Impostor nodes: a node whose hostname is no machine of the stack, that claims the Teleport
  machine's name, or that announces a machine's name at another address, is locked.
- Forgeable returns: only the Teleport minion's answer signed with its accepted Salt key for the
  call's nonce is believed (a return under another id is ignored, never a veto; one under the
  Teleport id signed by another key, replayed from an earlier call or tampered with is refused).

Runs with the fakes of test/orchestration/test_orchestration.py (LocalClient, the Salt loader
globals, the real Jinja2 pillar render).

  python3 test/teleport/test_teleport_trust.py        (run by test/teleport/ca-pin.test.ts)
  CI_FLEET_SALT_ROOT=DIR runs the same tests against another copy of the salt/ tree.
"""
import base64
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fleet = _load("ci_fleet_orchestration_tests", os.path.join(ROOT, "test", "orchestration", "test_orchestration.py"))
orchestration = fleet.orchestration
render = fleet.render
SALT = fleet.SALT
signed_answers = fleet.signed_answers
TELEPORT = "prod-teleport"
ROOTED = "prod-default-r1"


def openssl(*args, data=None):
    return subprocess.run(["openssl"] + list(args), input=data, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, check=True).stdout


def make_certificate(directory, name, key_args):
    """A self-signed CA certificate made by OpenSSL; returns (PEM text, OpenSSL's own pin)."""
    key, cert = os.path.join(directory, name + ".key"), os.path.join(directory, name + ".pem")
    openssl("req", "-x509", "-newkey", *key_args, "-nodes", "-keyout", key, "-out", cert,
            "-subj", "/O=prod.example.org/CN=%s" % name, "-days", "2",
            "-addext", "basicConstraints=critical,CA:TRUE")
    spki = openssl("pkey", "-pubin", "-outform", "DER", data=openssl("x509", "-in", cert, "-pubkey", "-noout"))
    with open(cert) as handle:
        return handle.read(), "sha256:" + hashlib.sha256(spki).hexdigest()


class TeleportCaPinTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.inline_dir = os.path.join(self.dir, "inline")
        self.pins_file = os.path.join(self.dir, "teleport", "ca_pins.json")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def test_the_pin_is_the_sha256_of_the_certificates_spki_as_openssl_computes_it(self):
        rsa, rsa_pin = make_certificate(self.dir, "rsa", ["rsa:2048"])
        ec, ec_pin = make_certificate(self.dir, "ec", ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
        self.assertEqual(orchestration.teleport_ca_pins(rsa), [rsa_pin])
        self.assertEqual(orchestration.teleport_ca_pins(ec), [ec_pin])
        # A CA in rotation exports two certificates: both pins, sorted, each once.
        self.assertEqual(orchestration.teleport_ca_pins(ec + "\n" + rsa + rsa), sorted([rsa_pin, ec_pin]))
        # The committed fixture (the fake Teleport machine's host CA) too.
        fixture = os.path.join(ROOT, "test", "teleport", "fixtures", "teleport-host-ca.pem")
        spki = openssl("pkey", "-pubin", "-outform", "DER", data=openssl("x509", "-in", fixture, "-pubkey", "-noout"))
        with open(fixture) as handle:
            self.assertEqual(orchestration.teleport_ca_pins(handle.read()), ["sha256:" + hashlib.sha256(spki).hexdigest()])

    def test_anything_but_certificates_gives_no_pin(self):
        for junk in ("", "True", "sha256:" + "a" * 64, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
                     "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----", None, True, ["x"]):
            with self.assertRaises((ValueError, TypeError), msg=repr(junk)):
                orchestration.teleport_ca_pins(junk)

    def recorded(self):
        with open(self.pins_file) as handle:
            return json.load(handle)

    def test_the_master_records_the_teleport_minions_pins_root_only_and_only_asks_the_teleport_minion(self):
        client = fleet.FakeLocalClient()
        with fleet.Harness(client, fleet.FakeGitHubHTTP(), self.inline_dir):
            pins = orchestration.refresh_teleport_ca_pins()
        fixture = os.path.join(ROOT, "test", "teleport", "fixtures", "teleport-host-ca.pem")
        with open(fixture) as handle:
            self.assertEqual(pins, orchestration.teleport_ca_pins(handle.read()))
        self.assertEqual(self.recorded(), pins)
        self.assertEqual(os.stat(self.pins_file).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.dirname(self.pins_file)).st_mode & 0o777, 0o700)
        asked = [p for p in client.publications if p["fun"] == "ci_fleet_teleport.host_ca_certificates"]
        self.assertEqual([p["tgt"] for p in asked], [TELEPORT])

    def test_pins_stay_as_they_are_when_the_teleport_machine_is_down_or_answers_junk(self):
        client = fleet.FakeLocalClient()
        with fleet.Harness(client, fleet.FakeGitHubHTTP(), self.inline_dir):
            before = orchestration.refresh_teleport_ca_pins()
        for broken in (fleet.FakeLocalClient(teleport_down=True), JunkExport()):
            with fleet.Harness(broken, fleet.FakeGitHubHTTP(), self.inline_dir):
                with self.assertLogs(orchestration.log, "WARNING"):
                    self.assertEqual(orchestration.refresh_teleport_ca_pins(), before)
            self.assertEqual(self.recorded(), before)

    def test_no_join_token_is_minted_while_no_pin_is_known(self):
        client = JunkExport(joined=["prod-default-r2", "prod-release-r1", "prod-salt-master"])
        with fleet.Harness(client, fleet.FakeGitHubHTTP(), self.inline_dir):
            with self.assertLogs(orchestration.log, "WARNING"):
                self.assertEqual(orchestration.join_teleport_nodes(), [])
        self.assertEqual(client.tokens, 0)
        self.assertEqual([p for p in client.publications if p["fun"] in ("state.apply", "ci_fleet_teleport.node_token")], [])
        self.assertFalse(os.path.exists(self.pins_file))

    def test_the_pillar_serves_the_pins_to_every_node_and_not_to_the_teleport_machine(self):
        pins = ["sha256:" + "1" * 64, "sha256:" + "2" * 64]
        pillar_dir = os.path.join(self.dir, "pillar")
        os.makedirs(os.path.join(pillar_dir, "minions"))
        os.makedirs(os.path.join(pillar_dir, "teleport"))
        orchestration.CaPinStore(os.path.join(pillar_dir, "teleport", "ca_pins.json")).put(pins)
        for minion_id, spec in fleet.MINIONS.items():
            with open(os.path.join(pillar_dir, "minions", minion_id + ".json"), "w") as handle:
                json.dump({"ci_fleet": {"minion_id": minion_id, "role": spec["role"]}}, handle)
        served = {}
        for minion_id in fleet.MINIONS:
            pillar, _, _ = render.compile_pillar(SALT, pillar_dir, minion_id, render.Recorder())
            served[minion_id] = pillar.get("ci_fleet_teleport_ca")
        self.assertEqual(served, {m: (None if s["role"] == "teleport" else {"pins": pins}) for m, s in fleet.MINIONS.items()})
        # Not known yet: nobody gets the key (node.sls then waits with a pending comment).
        os.remove(os.path.join(pillar_dir, "teleport", "ca_pins.json"))
        pillar, _, _ = render.compile_pillar(SALT, pillar_dir, ROOTED, render.Recorder())
        self.assertNotIn("ci_fleet_teleport_ca", pillar)

    def test_the_store_refuses_anything_but_sha256_pins(self):
        store = orchestration.CaPinStore(self.pins_file)
        for bad in ([], ["md5:00"], ["sha256:" + "A" * 64], ["sha256:" + "a" * 63], [None]):
            with self.assertRaises(ValueError):
                store.put(bad)
        self.assertEqual(store.get(), [])
        self.assertTrue(store.put(["sha256:" + "b" * 64, "sha256:" + "a" * 64]))
        self.assertFalse(store.put(["sha256:" + "a" * 64, "sha256:" + "b" * 64]))   # unchanged
        self.assertEqual(store.get(), ["sha256:" + "a" * 64, "sha256:" + "b" * 64])


class JunkExport(fleet.FakeLocalClient):
    """A Teleport machine whose host CA export is no certificate."""

    def execute(self, tgt, fun, arg, kwarg):
        if fun == "ci_fleet_teleport.host_ca_certificates":
            return "not a certificate"
        return super().execute(tgt, fun, arg, kwarg)


class ForgedReturns(fleet.FakeLocalClient):
    """Root on prod-default-r1 sees every publication (every minion does) and, through batched
    events (CVE-2025-22239 before its fix), adds a return of its own to each job meant for the
    Teleport minion: LocalClient then hands the master answers under two minion ids."""

    def cmd(self, tgt, fun, arg=(), timeout=None, tgt_type="glob", ret="", jid="", full_return=False,
            kwarg=None, **kwargs):
        answers = super().cmd(tgt, fun, arg=arg, timeout=timeout, tgt_type=tgt_type, ret=ret, jid=jid,
                              full_return=full_return, kwarg=kwarg, **kwargs)
        if tgt == TELEPORT:
            forged = {"ret": [], "retcode": 0, "jid": "1"} if full_return else []
            answers = dict(answers, **{ROOTED: forged})
        return answers


class ForgedUnderTeleportId(fleet.FakeLocalClient):
    """The real forgery: a return put on the bus under the Teleport minion's own id that arrives
    first (LocalClient keeps it and stops waiting). `forge(fun, kwarg, genuine)` is what the
    forger answers instead of the Teleport minion's genuine (signed) answer."""

    def __init__(self, forge, **kwargs):
        super().__init__(**kwargs)
        self.forge = forge

    def cmd(self, tgt, fun, arg=(), timeout=None, tgt_type="glob", ret="", jid="", full_return=False,
            kwarg=None, **kwargs):
        answers = super().cmd(tgt, fun, arg=arg, timeout=timeout, tgt_type=tgt_type, ret=ret, jid=jid,
                              full_return=full_return, kwarg=kwarg, **kwargs)
        if tgt == TELEPORT and answers.get(TELEPORT) is not False:
            genuine = answers[TELEPORT]["ret"] if full_return else answers[TELEPORT]
            forged = self.forge(fun, dict(kwarg or {}), genuine)
            answers = {TELEPORT: {"ret": forged, "retcode": 0, "jid": "1"} if full_return else forged}
        return answers


def rogue_certificate():
    directory = tempfile.mkdtemp()
    try:
        return make_certificate(directory, "rogue", ["rsa:2048"])
    finally:
        shutil.rmtree(directory)


class ForgedReturnsTest(unittest.TestCase):
    """Issue 12, the review's finding: only the Teleport minion's answer signed with its accepted
    Salt key for this call's nonce is believed; other ids veto nothing."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.inline_dir = os.path.join(self.dir, "inline")
        self.pins_file = os.path.join(self.dir, "teleport", "ca_pins.json")
        with open(os.path.join(ROOT, "test", "teleport", "fixtures", "teleport-host-ca.pem")) as handle:
            self.genuine_pins = orchestration.teleport_ca_pins(handle.read())

    def tearDown(self):
        shutil.rmtree(self.dir)

    def orchestrator(self, client):
        return orchestration.Orchestrator("prod", {"ci_fleet": {"provider": "equinix-metal"},
                                                   "ci_fleet_master": {"minions": fleet.MINIONS}},
                                          {}, orchestration.salt_local(client), sleep=lambda s: None,
                                          inline=orchestration.InlinePillar(self.inline_dir),
                                          ca_pins=orchestration.CaPinStore(self.pins_file),
                                          state_dir=os.path.join(self.dir, "state"))

    def test_a_strangers_extra_return_no_longer_vetoes_labels_locks_joins_or_pins(self):
        # prod-default-r1 has not joined yet (its own host_uuid: none); one consistent model.
        nodes = [n for n in TeleportImpostorTest.honest_nodes() if n["name"] != "h-d1"] + [fleet.node("h-rogue", "prod-rogue")]
        client = ForgedReturns(nodes=nodes)
        with fleet.Harness(client, fleet.FakeGitHubHTTP(), self.inline_dir):
            with self.assertLogs(orchestration.log, "WARNING") as logs:
                self.assertEqual(orchestration.refresh_teleport_ca_pins(), self.genuine_pins)
                self.assertEqual(orchestration.join_teleport_nodes(), ["prod-default-r1"])
                result = orchestration.assign_teleport_labels()
        self.assertEqual(sorted(result["assigned"]), sorted(fleet.MINIONS))
        self.assertEqual(client.server_infos["h-prod-default-r1"], fleet.assigned_labels("prod-default-r1"))
        self.assertEqual(result["locked"], ["h-rogue"])
        self.assertEqual(client.locks, ["h-rogue"])
        self.assertEqual(client.server_infos["h-r1"], fleet.assigned_labels("prod-release-r1"))
        # Each stranger is named once per call, at warning: never a veto, never an error about it.
        ignored = [r for r in logs.records if "also answered by %s" % ROOTED in r.getMessage()]
        self.assertTrue(ignored)
        self.assertTrue(all(r.levelname == "WARNING" for r in ignored))
        self.assertFalse([r for r in logs.records if r.levelname == "ERROR" and ROOTED in r.getMessage()])

    def test_an_answer_under_the_teleport_id_signed_by_another_minions_key_is_refused(self):
        rogue_pem, rogue_pin = rogue_certificate()
        # The rooted runner signs with its own Salt key, naming the Teleport minion in the message.
        rooted_keys = signed_answers.TeleportKeys(TELEPORT, SALT)
        store = orchestration.CaPinStore(self.pins_file)
        store.put(self.genuine_pins)

        def forge(fun, kwarg, genuine):
            value = rogue_pem if fun == "ci_fleet_teleport.host_ca_certificates" else []
            return rooted_keys.sign(fun, kwarg, value)

        client = ForgedUnderTeleportId(forge, nodes=TeleportImpostorTest.honest_nodes())
        orchestrator = self.orchestrator(client)
        with self.assertLogs(orchestration.log, "ERROR") as logs:
            self.assertEqual(orchestrator.refresh_teleport_ca_pins(), self.genuine_pins)
            self.assertEqual(orchestrator.assign_teleport_labels(), {"assigned": [], "locked": [], "lock_failed": [], "control_plane": [], "errors": []})
        self.assertEqual(store.get(), self.genuine_pins)
        self.assertNotIn(rogue_pin, store.get())
        refusals = [line for line in logs.output if "refusing %s's answer" % TELEPORT in line]
        self.assertEqual(len(refusals), 3, logs.output)     # host CA, nodes, server infos
        self.assertTrue(all("signature does not verify" in line for line in refusals))
        # An unsigned forgery (a plain answer, as the old module gave) is refused the same way.
        client = ForgedUnderTeleportId(lambda fun, kwarg, genuine: rogue_pem)
        with self.assertLogs(orchestration.log, "ERROR") as logs:
            self.assertEqual(self.orchestrator(client).refresh_teleport_ca_pins(), self.genuine_pins)
        self.assertTrue(any("not a signed answer" in line for line in logs.output))
        self.assertEqual(store.get(), self.genuine_pins)

    def test_a_replayed_signed_answer_from_an_earlier_nonce_is_refused(self):
        # Round 1: nothing is listed yet; the forger keeps the Teleport minion's signed answers.
        recorded = {}

        def record(fun, kwarg, genuine):
            recorded.setdefault(fun, genuine)
            return genuine

        first = ForgedUnderTeleportId(record, nodes=[])
        self.assertEqual(self.orchestrator(first).assign_teleport_labels()["assigned"], [])
        self.assertIn("ci_fleet_teleport.nodes", recorded)
        # Round 2: every machine has joined (plus a rogue), and the forger replays round 1's
        # genuine, validly signed "no nodes" to hide them all (no labels, no lock).
        nodes = TeleportImpostorTest.honest_nodes() + [fleet.node("h-rogue", "prod-rogue")]
        client = ForgedUnderTeleportId(lambda fun, kwarg, genuine: recorded.get(fun, genuine), nodes=nodes)
        with self.assertLogs(orchestration.log, "ERROR") as logs:
            result = self.orchestrator(client).assign_teleport_labels()
        self.assertEqual(result, {"assigned": [], "locked": [], "lock_failed": [], "control_plane": [], "errors": []})
        refusals = [line for line in logs.output if "refusing %s's answer to ci_fleet_teleport.nodes" % TELEPORT in line]
        self.assertEqual(len(refusals), 1, logs.output)
        # The nonce is the master's: fresh for every call, never reused.
        nonces = [p["kwarg"]["nonce"] for c in (first, client) for p in c.publications]
        self.assertEqual(len(set(nonces)), len(nonces))
        self.assertTrue(all(len(n) == 64 and int(n, 16) >= 0 for n in nonces))

    def test_a_tampered_result_is_refused(self):
        rogue_pem, rogue_pin = rogue_certificate()

        def tamper(fun, kwarg, genuine):
            signed = isinstance(genuine, dict) and "sig" in genuine
            result = genuine["result"] if signed else genuine
            if fun == "ci_fleet_teleport.host_ca_certificates":
                result = result + rogue_pem      # one more "host CA"
            elif fun == "ci_fleet_teleport.server_infos":
                result = {"h-d1": fleet.assigned_labels("prod-release-r1")}   # "already assigned"
            return dict(genuine, result=result) if signed else result

        client = ForgedUnderTeleportId(tamper, nodes=TeleportImpostorTest.honest_nodes())
        orchestrator = self.orchestrator(client)
        with self.assertLogs(orchestration.log, "ERROR") as logs:
            self.assertEqual(orchestrator.refresh_teleport_ca_pins(), [])
            self.assertEqual(orchestrator.assign_teleport_labels()["assigned"], [])
        self.assertFalse(os.path.exists(self.pins_file))
        self.assertEqual(client.server_infos, {})
        self.assertEqual(len([line for line in logs.output if "signature does not verify" in line]), 2, logs.output)

    def test_the_teleport_minions_genuine_signed_answer_is_believed(self):
        client = fleet.FakeLocalClient(nodes=TeleportImpostorTest.honest_nodes())
        with fleet.Harness(client, fleet.FakeGitHubHTTP(), self.inline_dir):
            self.assertEqual(orchestration.refresh_teleport_ca_pins(), self.genuine_pins)
            self.assertEqual(len(orchestration.assign_teleport_labels()["assigned"]), len(fleet.MINIONS))
        # Each call carried its own nonce, and the answers came back signed, not plain.
        asked = [p for p in client.publications if p["tgt"] == TELEPORT]
        self.assertTrue(asked and all(orchestration.re.match(r"^[0-9a-f]{64}$", p["kwarg"]["nonce"]) for p in asked))

    def test_no_accepted_key_for_the_teleport_minion_believes_nothing(self):
        client = fleet.FakeLocalClient(nodes=TeleportImpostorTest.honest_nodes())
        orchestrator = self.orchestrator(client)
        orchestrator.teleport_key = lambda: orchestration.accepted_minion_key(self.dir, TELEPORT)   # none there
        with self.assertLogs(orchestration.log, "ERROR") as logs:
            self.assertEqual(orchestrator.assign_teleport_labels()["assigned"], [])
        self.assertTrue(any("no accepted key for %s" % TELEPORT in line for line in logs.output))


class SignedAnswerModuleTest(unittest.TestCase):
    """The execution module's side: what Salt passes and where the key is."""

    def setUp(self):
        self.keys = signed_answers.TeleportKeys(TELEPORT, SALT)
        self.module = self.keys.module

    def test_every_function_the_master_calls_takes_the_nonce_salt_passes_as_a_keyword(self):
        # salt/minion.py load_args_and_kwargs: a publication's kwarg reaches the function only if
        # it is named in the function's arguments (or it takes **kwargs); otherwise the call fails.
        import inspect
        with open(os.path.join(SALT, "_runners", "ci_fleet.py")) as handle:
            called = sorted(set(orchestration.re.findall(r'"ci_fleet_teleport\.([a-z_]+)"', handle.read())) - {"py"})
        self.assertIn("nodes", called)
        for name in called:
            self.assertIn("nonce", inspect.signature(getattr(self.module, name)).parameters, name)

    def test_the_signature_is_rsa_pkcs1_sha256_by_the_minion_pem_over_the_documented_message(self):
        nonce = "ab" * 32
        answer = self.module._answer("nodes", nonce, [{"name": "h-1", "self": False}])
        message = self.module.answer_message(TELEPORT, "ci_fleet_teleport.nodes", nonce, [{"self": False, "name": "h-1"}])
        self.assertEqual(message.split(b"\n")[:4], [b"ci-fleet-teleport-answer/v1", TELEPORT.encode(),
                                                    b"ci_fleet_teleport.nodes", nonce.encode()])
        directory = tempfile.mkdtemp()
        try:
            for name, data in (("msg", message), ("sig", base64.b64decode(answer["sig"])),
                               ("pub", self.keys.public_pem.encode())):
                with open(os.path.join(directory, name), "wb") as handle:
                    handle.write(data)
            verified = subprocess.run(["openssl", "dgst", "-sha256", "-verify", os.path.join(directory, "pub"),
                                       "-signature", os.path.join(directory, "sig"), os.path.join(directory, "msg")],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        finally:
            shutil.rmtree(directory)
        self.assertEqual(verified.returncode, 0, verified.stderr)
        # The master's own check agrees, and only for this function and nonce.
        verify = orchestration.verified_teleport_answer
        self.assertEqual(verify(self.keys.public_pem, TELEPORT, "ci_fleet_teleport.nodes", nonce, answer), answer["result"])
        for fun, other_nonce in (("ci_fleet_teleport.server_infos", nonce), ("ci_fleet_teleport.nodes", "cd" * 32)):
            with self.assertRaises(ValueError):
                verify(self.keys.public_pem, TELEPORT, fun, other_nonce, answer)

    def test_without_a_nonce_the_answer_is_plain_and_a_malformed_nonce_is_refused(self):
        self.assertEqual(self.module._answer("nodes", None, []), [])
        for bad in ("", "AB" * 32, "ab\n" * 20, 7, "ab" * 100):
            with self.assertRaises(ValueError):
                self.module._answer("nodes", bad, [])


class TeleportRoundCase(unittest.TestCase):
    """A master's state directory of its own per test, and the stack's honest nodes."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.inline_dir = os.path.join(self.dir, "inline")
        self.hosts_file = os.path.join(self.dir, "state", "teleport_hosts.json")

    def tearDown(self):
        shutil.rmtree(self.dir)

    @staticmethod
    def honest_nodes():
        return [fleet.node("h-master", "prod-salt-master"), fleet.node("h-teleport", TELEPORT, own=True),
                fleet.node("h-d1", "prod-default-r1"), fleet.node("h-d2", "prod-default-r2"),
                fleet.node("h-r1", "prod-release-r1")]


class TeleportImpostorTest(TeleportRoundCase):
    """A node with a valid host certificate (a rooted runner re-joining with its own `iam` token
    under new host ids, or anyone with a join token) that is not the machine it claims."""

    def run_round(self, nodes, server_infos=None):
        client = fleet.FakeLocalClient(nodes=nodes, server_infos=server_infos)
        with fleet.Harness(client, fleet.FakeGitHubHTTP(), self.inline_dir):
            result = orchestration.assign_teleport_labels()
        messages = {p["arg"][0]: p["arg"][1] for p in client.publications if p["fun"] == "ci_fleet_teleport.lock_node"}
        return client, result, messages

    def test_honest_nodes_are_never_locked(self):
        client, result, _ = self.run_round(self.honest_nodes())
        self.assertEqual(client.locks, [])
        # Assigned in an earlier round: still not locked.
        infos = dict(client.server_infos)
        client, _, _ = self.run_round(self.honest_nodes(), infos)
        self.assertEqual(client.locks, [])

    def test_a_node_whose_hostname_is_no_machine_of_the_stack_is_locked_with_a_reason(self):
        for hostname in ("prod-default-r9", "staging-default-r1", "", None, "prod-default-r1.evil"):
            nodes = self.honest_nodes() + [fleet.node("h-rogue", hostname, addr="10.0.1.10:3022")]
            with self.assertLogs(orchestration.log, "ERROR"):
                client, result, messages = self.run_round(nodes)
            self.assertEqual(client.locks, ["h-rogue"], hostname)
            self.assertEqual(result["locked"], ["h-rogue"])
            self.assertIn("is no machine of stack prod", messages["h-rogue"])
            self.assertTrue(messages["h-rogue"].startswith("ci-fleet: "))
            self.assertNotIn("h-rogue", client.server_infos)

    def test_a_node_announcing_a_machines_name_at_another_address_is_locked_and_the_machine_is_not(self):
        nodes = self.honest_nodes() + [fleet.node("h-impostor", "prod-release-r1", addr="10.0.1.10:3022")]
        with self.assertLogs(orchestration.log, "ERROR"):
            client, result, messages = self.run_round(nodes)
        self.assertEqual(client.locks, ["h-impostor"])
        self.assertIn("that machine's host id is h-r1", messages["h-impostor"])
        self.assertEqual(client.server_infos["h-r1"], fleet.assigned_labels("prod-release-r1"))

    def test_a_node_claiming_the_teleport_machines_name_is_locked(self):
        nodes = self.honest_nodes() + [fleet.node("h-fake-teleport", TELEPORT, addr="10.0.0.6:3022")]
        with self.assertLogs(orchestration.log, "ERROR"):
            client, _, messages = self.run_round(nodes)
        self.assertEqual(client.locks, ["h-fake-teleport"])
        self.assertIn("Teleport machine's", messages["h-fake-teleport"])

    def test_the_auth_services_own_node_is_never_locked(self):
        nodes = [fleet.node("h-teleport", "whatever-name", own=True, labels={"dynamic/role": "salt-master"})]
        client, _, _ = self.run_round(nodes)
        self.assertEqual(client.locks, [])

    def test_two_nodes_at_the_machines_name_and_address_the_one_the_machine_does_not_report_is_locked(self):
        # Both pass every check on what they announce; the machine itself (its host_uuid, signed
        # with its own Salt key) names its node: h-r1 is labelled, the twin locked. On 3876af1
        # neither got labels and neither was locked ("ambiguous").
        nodes = self.honest_nodes() + [fleet.node("h-twin", "prod-release-r1")]
        with self.assertLogs(orchestration.log, "ERROR"):
            client, result, messages = self.run_round(nodes)
        self.assertEqual(client.locks, ["h-twin"])
        self.assertIn("that machine's host id is h-r1", messages["h-twin"])
        self.assertEqual(client.server_infos["h-r1"], fleet.assigned_labels("prod-release-r1"))


class TeleportHostIdTakeoverTest(TeleportRoundCase):
    """Issue 12.3 (independent review, finding A): with the `token` and `iam` join methods
    Teleport 18's legacy join RPCs sign a host certificate for whatever host id the client asks
    for (lib/auth/join.go `generateCerts`: `HostID: req.HostID`; only the new join service and
    the `ec2` method bind it). A rooted runner holding a valid join can therefore join under
    another machine's host id. The master records, at a machine's first join, the host id its
    node was matched by (hostname AND the address from its pillar), and from then on:
    - locks any node listed under a recorded host id that announces another hostname or
      address (the victim's record is locked with it: fail closed, a human re-enrols it);
    - locks any other host id announcing a recorded machine's hostname while the recorded
      node is listed;
    - reports (cannot lock: that would lock the auth service itself) the auth service's own
      host id announced under another hostname or address;
    - on equinix-metal mints no second join token for a machine whose host id it recorded, so
      a runner rooted after its join has no token to join with at all."""

    def run_round(self, nodes, server_infos=None, provider="equinix-metal", host_uuids=None):
        client = fleet.FakeLocalClient(nodes=nodes, server_infos=server_infos,
                                       host_uuids=dict(fleet.HOST_UUIDS, **(host_uuids or {})))
        with fleet.Harness(client, fleet.FakeGitHubHTTP(), self.inline_dir, provider=provider):
            result = orchestration.assign_teleport_labels()
        messages = {p["arg"][0]: p["arg"][1] for p in client.publications if p["fun"] == "ci_fleet_teleport.lock_node"}
        return client, result, messages

    def first_join(self):
        client, _, _ = self.run_round(self.honest_nodes())
        self.assertEqual(client.locks, [])
        return dict(client.server_infos)

    def recorded(self):
        with open(self.hosts_file) as handle:
            return json.load(handle)["hosts"]

    def test_the_master_records_each_machines_host_id_at_its_first_join_root_only(self):
        self.first_join()
        self.assertEqual(self.recorded(), {"prod-salt-master": "h-master", "prod-default-r1": "h-d1",
                                           "prod-default-r2": "h-d2", "prod-release-r1": "h-r1"})
        self.assertEqual(os.stat(self.hosts_file).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.dirname(self.hosts_file)).st_mode & 0o777, 0o700)

    def test_nodes_assigned_before_the_record_existed_are_recorded_by_the_same_match(self):
        infos = self.first_join()
        os.remove(self.hosts_file)
        client, _, _ = self.run_round(self.honest_nodes(), infos)
        self.assertEqual(client.locks, [])
        self.assertEqual(self.recorded()["prod-release-r1"], "h-r1")

    def test_a_node_under_a_recorded_host_id_at_another_address_is_locked(self):
        # The rooted prod-default-r1 joins (legacy RegisterUsingToken) under prod-release-r1's
        # host id and announces that machine's name at its own address: the proxy would dial it.
        infos = self.first_join()
        nodes = [n for n in self.honest_nodes() if n["name"] != "h-r1"]
        nodes.append(fleet.node("h-r1", "prod-release-r1", addr="10.0.1.10:3022"))
        with self.assertLogs(orchestration.log, "ERROR"):
            client, result, messages = self.run_round(nodes, infos)
        self.assertEqual(client.locks, ["h-r1"])
        self.assertEqual(result["locked"], ["h-r1"])
        self.assertIn("host id h-r1 is prod-release-r1's at 10.0.1.12:3022", messages["h-r1"])

    def test_a_node_under_the_salt_masters_host_id_with_another_hostname_is_locked(self):
        infos = self.first_join()
        nodes = [n for n in self.honest_nodes() if n["name"] != "h-master"]
        nodes.append(fleet.node("h-master", "prod-default-r1"))
        with self.assertLogs(orchestration.log, "ERROR"):
            client, _, messages = self.run_round(nodes, infos)
        self.assertEqual(client.locks, ["h-master"])
        self.assertIn("host id h-master is prod-salt-master's", messages["h-master"])

    def test_another_host_id_under_a_recorded_machines_name_and_address_is_locked(self):
        # Before the record this was "ambiguous" (a human decides); now the master knows which
        # host id joined as prod-release-r1, and that node is still listed.
        infos = self.first_join()
        nodes = self.honest_nodes() + [fleet.node("h-twin", "prod-release-r1")]
        with self.assertLogs(orchestration.log, "ERROR"):
            client, result, messages = self.run_round(nodes, infos)
        self.assertEqual(client.locks, ["h-twin"])
        self.assertIn("that machine's host id is h-r1", messages["h-twin"])

    def test_while_the_recorded_node_is_listed_no_other_host_id_is_given_the_machines_labels(self):
        # Even with its server_info gone (a human removed it), the record keeps prod-release-r1
        # bound to h-r1: a newcomer at its name and address is not labelled nor recorded.
        infos = self.first_join()
        del infos["h-r1"]
        nodes = [n for n in self.honest_nodes() if n["name"] != "h-r1"]
        nodes += [fleet.node("h-r1", "prod-release-r1", addr="10.0.1.10:3022"), fleet.node("h-new", "prod-release-r1")]
        with self.assertLogs(orchestration.log, "ERROR"):
            client, result, _ = self.run_round(nodes, infos)
        self.assertNotIn("h-new", client.server_infos)
        self.assertEqual(self.recorded()["prod-release-r1"], "h-r1")
        # h-r1 now announces another address: locked. h-new sits at the machine's own name and
        # address, but the machine itself reports h-r1: h-new is no one's, locked too.
        self.assertEqual(client.locks, ["h-r1", "h-new"])

    def test_a_replaced_machine_is_recorded_anew_once_its_old_node_is_gone(self):
        # aws: a replaced instance joins by `ec2` under a new host id (<account>-<instance id>).
        infos = self.first_join()
        nodes = [n for n in self.honest_nodes() if n["name"] != "h-r1"] + [fleet.node("h-r1-new", "prod-release-r1")]
        with self.assertLogs(orchestration.log, "WARNING"):
            client, result, _ = self.run_round(nodes, infos, provider="aws", host_uuids={"prod-release-r1": "h-r1-new"})
        self.assertEqual(client.locks, [])
        self.assertEqual(self.recorded()["prod-release-r1"], "h-r1-new")
        self.assertEqual(client.server_infos["h-r1-new"], fleet.assigned_labels("prod-release-r1"))

    def test_a_replacement_is_not_locked_while_the_old_node_at_the_old_address_is_still_listed(self):
        # aws: the new instance (pillar: the machine's address) joins while the old instance's
        # node (old address) has not expired yet: the machine reports its new host id, so the
        # old one is locked, the new one labelled and recorded at once.
        infos = self.first_join()
        nodes = [n for n in self.honest_nodes() if n["name"] != "h-r1"]
        nodes += [fleet.node("h-r1", "prod-release-r1", addr="10.0.1.99:3022"), fleet.node("h-r1-new", "prod-release-r1")]
        with self.assertLogs(orchestration.log, "ERROR"):
            client, _, _ = self.run_round(nodes, infos, provider="aws", host_uuids={"prod-release-r1": "h-r1-new"})
        self.assertEqual(client.locks, ["h-r1"])
        nodes = [n for n in nodes if n["name"] != "h-r1"]
        client, _, _ = self.run_round(nodes, dict(client.server_infos), provider="aws", host_uuids={"prod-release-r1": "h-r1-new"})
        self.assertEqual(client.locks, [])
        self.assertEqual(self.recorded()["prod-release-r1"], "h-r1-new")
        self.assertEqual(client.server_infos["h-r1-new"], fleet.assigned_labels("prod-release-r1"))

    def test_the_auth_services_own_host_id_announced_by_another_machine_is_reported_not_locked(self):
        infos = self.first_join()
        nodes = [n for n in self.honest_nodes() if not n["self"]]
        nodes.append(fleet.node("h-teleport", "prod-default-r1", own=True))
        with self.assertLogs(orchestration.log, "ERROR") as logs:
            client, result, _ = self.run_round(nodes, infos)
        self.assertEqual(client.locks, [])
        self.assertIn("the auth service's own host id", "\n".join(logs.output))
        self.assertEqual(len(result["control_plane"]), 1)

    def test_a_machine_whose_host_id_is_recorded_gets_no_second_join_token(self):
        # A rooted runner stops its agent: its node leaves the list; on the old code the master
        # minted it a fresh token (good for any host id on the legacy join RPC).
        self.first_join()
        client = fleet.FakeLocalClient(joined=["prod-salt-master", "prod-default-r2", "prod-release-r1"])
        with fleet.Harness(client, fleet.FakeGitHubHTTP(), self.inline_dir):
            with self.assertLogs(orchestration.log, "WARNING") as logs:
                self.assertEqual(orchestration.join_teleport_nodes(), [])
        self.assertEqual(client.tokens, 0)
        self.assertIn("forget_teleport_host", "\n".join(logs.output))
        # A human who checked the machine forgets its record: the next round enrols it again.
        with fleet.Harness(client, fleet.FakeGitHubHTTP(), self.inline_dir):
            self.assertTrue(orchestration.forget_teleport_host("prod-default-r1"))
            self.assertFalse(orchestration.forget_teleport_host("prod-default-r1"))
            self.assertEqual(orchestration.join_teleport_nodes(), ["prod-default-r1"])
        self.assertEqual(client.tokens, 1)
        self.assertNotIn("prod-default-r1", self.recorded())

    def test_an_unreadable_record_assigns_nothing_and_mints_nothing(self):
        os.makedirs(os.path.dirname(self.hosts_file), mode=0o700)
        with open(self.hosts_file, "w") as handle:
            handle.write("{not json")
        with self.assertLogs(orchestration.log, "ERROR"):
            client, result, _ = self.run_round(self.honest_nodes())
        self.assertEqual((client.server_infos, client.locks, result["assigned"]), ({}, [], []))
        client = fleet.FakeLocalClient(joined=[])
        with fleet.Harness(client, fleet.FakeGitHubHTTP(), self.inline_dir):
            with self.assertLogs(orchestration.log, "ERROR"):
                self.assertEqual(orchestration.join_teleport_nodes(), [])
        self.assertEqual(client.tokens, 0)


class HiddenJoin(fleet.FakeLocalClient):
    """The rooted runner joins with the token it is given but announces another hostname (its
    node is never listed under its own name)."""

    def execute(self, tgt, fun, arg, kwarg):
        if fun == "state.apply" and arg == ["teleport.node"] and tgt == ROOTED:
            self.nodes.append(fleet.node("h-hidden-%d" % len(self.nodes), "not-%s" % tgt, addr="10.0.1.10:3022"))
            return True
        return super().execute(tgt, fun, arg, kwarg)


class TeleportReviewFindingsTest(TeleportRoundCase):
    """The independent review of 3876af1 (issue 12): its probe scenarios S1..S5
    (/tmp/rev12t-probe/probe.py) and findings 3, 4 and 6, each failing on 3876af1. The decision
    to mint rests on the master's own record (one token per minion until forget_teleport_host);
    a machine's node is the one under the host id the machine ITSELF reports (own_host_id,
    signed with its own Salt key); command labels are locked; a lock is verified and a failed
    one reported."""

    def recorded(self):
        with open(self.hosts_file) as handle:
            raw = json.load(handle)
        return raw.get("hosts", raw)    # 3876af1 wrote the flat {minion: host id}

    def round(self, client, provider="equinix-metal"):
        with fleet.Harness(client, fleet.FakeGitHubHTTP(), self.inline_dir, provider=provider):
            joined = orchestration.join_teleport_nodes()
            result = orchestration.assign_teleport_labels()
        return joined, result

    def test_s1_a_runner_that_hides_its_hostname_gets_one_join_token_ever(self):
        nodes = [n for n in self.honest_nodes() if n["name"] != "h-d1"]
        client = HiddenJoin(nodes=nodes, host_uuids=dict(fleet.HOST_UUIDS, **{"prod-default-r1": None}))
        with self.assertLogs(orchestration.log, "WARNING"):
            for _ in range(4):
                self.round(client)
        self.assertEqual(client.tokens, 1)     # 3876af1: 4 (one each 5-minute round)
        # the node it joined under another name is no machine of the stack: locked.
        self.assertEqual(client.locks, ["h-hidden-4"])

    def test_s2_a_node_announcing_an_unjoined_machines_name_and_address_is_locked_and_the_machine_joins(self):
        # prod-release-r1 has not joined (its host_uuid: none); the rooted runner, token in hand,
        # registers a node announcing prod-release-r1's hostname at its pillar address.
        nodes = [n for n in self.honest_nodes() if n["name"] != "h-r1"] + [fleet.node("h-evil", "prod-release-r1")]
        client = fleet.FakeLocalClient(nodes=nodes, host_uuids=dict(fleet.HOST_UUIDS, **{"prod-release-r1": None}))
        with self.assertLogs(orchestration.log, "ERROR"):
            joined, result = self.round(client)
        self.assertEqual(joined, ["prod-release-r1"])       # 3876af1: [] (its name was "joined")
        self.assertEqual(client.tokens, 1)
        self.assertNotIn("h-evil", client.server_infos)     # 3876af1: the release labels
        self.assertIn("h-evil", client.locks)
        self.assertEqual(self.recorded()["prod-release-r1"], "h-prod-release-r1")
        self.assertEqual(client.server_infos["h-prod-release-r1"], fleet.assigned_labels("prod-release-r1"))

    def test_s3_a_host_id_with_an_underscore_is_locked_and_a_refused_lock_is_an_error_in_the_result(self):
        forged = fleet.node("evil_1", "prod-salt-master", addr="10.0.1.10:3022",
                            labels={"dynamic/role": "salt-master", "dynamic/stack": "prod"})
        client = fleet.FakeLocalClient(nodes=self.honest_nodes() + [forged], host_uuids=fleet.HOST_UUIDS)
        with self.assertLogs(orchestration.log, "ERROR"):
            _, result = self.round(client)
        self.assertEqual(client.locks, ["evil_1"])          # 3876af1: the module refused it, silently
        self.assertEqual(result["locked"], ["evil_1"])
        # Teleport refuses the lock (tctl fails, or lists no lock afterwards): an error, not "locked".
        client = fleet.FakeLocalClient(nodes=self.honest_nodes() + [forged], host_uuids=fleet.HOST_UUIDS,
                                       refuse_locks={"evil_1"})
        with self.assertLogs(orchestration.log, "ERROR") as logs:
            _, result = self.round(client)
        self.assertEqual((result["locked"], result["lock_failed"]), ([], ["evil_1"]))
        self.assertIn("was NOT locked", result["errors"][0])
        self.assertIn("NOT locked", "\n".join(logs.output))

    def test_s4_upgrade_day_a_labelled_runner_renamed_to_another_runner_is_locked_and_gets_no_token(self):
        # Nodes labelled by the previous release (server_info present), no record yet; the rooted
        # prod-default-r1 (h-d1) now announces prod-release-r1's name at that machine's address.
        infos = {h: fleet.assigned_labels(m) for m, h in fleet.HOST_UUIDS.items()}
        infos["h-teleport"] = fleet.assigned_labels(TELEPORT)
        nodes = [n for n in self.honest_nodes() if n["name"] != "h-d1"] + [fleet.node("h-d1", "prod-release-r1")]
        client = fleet.FakeLocalClient(nodes=nodes, server_infos=infos, host_uuids=fleet.HOST_UUIDS)
        with self.assertLogs(orchestration.log, "ERROR"):
            for _ in range(3):
                self.round(client)
        self.assertIn("h-d1", client.locks)                 # 3876af1: never locked
        self.assertEqual(client.tokens, 0)                  # 3876af1: 3 (its own name is not listed)
        self.assertNotEqual(self.recorded().get("prod-default-r1"), "h-d1")
        self.assertEqual(self.recorded()["prod-release-r1"], "h-r1")

    def test_s5_forget_locks_the_old_host_id_deletes_its_labels_and_allows_one_new_token(self):
        client = fleet.FakeLocalClient(nodes=self.honest_nodes(), host_uuids=fleet.HOST_UUIDS)
        self.round(client)
        self.assertEqual(self.recorded()["prod-release-r1"], "h-r1")
        with fleet.Harness(client, fleet.FakeGitHubHTTP(), self.inline_dir):
            with self.assertLogs(orchestration.log, "WARNING"):
                self.assertTrue(orchestration.forget_teleport_host("prod-release-r1"))
        self.assertEqual(client.locks, ["h-r1"])            # 3876af1: not locked
        self.assertNotIn("h-r1", client.server_infos)       # 3876af1: si-h-r1 kept
        # The old node is still listed at the machine's name and address, and the machine (not
        # wiped) still reports it: never recorded again. The machine may get one token.
        with self.assertLogs(orchestration.log, "ERROR"):
            self.round(client)
            self.round(client)
        self.assertNotEqual(self.recorded().get("prod-release-r1"), "h-r1")   # 3876af1: recorded again
        self.assertNotIn("h-r1", client.server_infos)
        self.assertEqual(client.tokens, 1)

    def test_a_failed_lock_keeps_forget_from_forgetting(self):
        client = fleet.FakeLocalClient(nodes=self.honest_nodes(), host_uuids=fleet.HOST_UUIDS)
        self.round(client)
        client.refuse_locks.add("h-r1")
        with fleet.Harness(client, fleet.FakeGitHubHTTP(), self.inline_dir):
            with self.assertLogs(orchestration.log, "ERROR"):
                self.assertFalse(orchestration.forget_teleport_host("prod-release-r1"))
        self.assertEqual(self.recorded()["prod-release-r1"], "h-r1")
        self.assertIn("h-r1", client.server_infos)

    def test_command_labels_on_any_node_are_locked(self):
        # ssh_service.commands named dynamic/queue echoing `release`: RBAC sees GetAllLabels
        # (CombineLabels: the command label wins), so the node would pass the release roles.
        for key in ("dynamic/queue", "queue", "anything"):
            nodes = [n for n in self.honest_nodes() if n["name"] != "h-d1"]
            nodes.append(dict(fleet.node("h-d1", "prod-default-r1"), cmd_labels={key: "release"}))
            client = fleet.FakeLocalClient(nodes=nodes, host_uuids=fleet.HOST_UUIDS)
            with self.assertLogs(orchestration.log, "ERROR"):
                _, result = self.round(client)
            self.assertEqual(client.locks, ["h-d1"], key)   # 3876af1: not locked
            self.assertNotIn("h-d1", client.server_infos)

    def test_aws_a_machine_that_never_joined_is_named_in_the_rounds_errors(self):
        # An ec2 join more than 6 h (aws_iid_ttl) after launch is refused; nothing else tells.
        nodes = [n for n in self.honest_nodes() if n["name"] != "h-d1"]
        client = fleet.FakeLocalClient(nodes=nodes, host_uuids=dict(fleet.HOST_UUIDS, **{"prod-default-r1": None}))
        with self.assertLogs(orchestration.log, "ERROR"):
            _, result = self.round(client, provider="aws")
        self.assertEqual(len(result["errors"]), 1)
        self.assertIn("prod-default-r1", result["errors"][0])
        self.assertIn("stop and start the instance", result["errors"][0])
        self.assertEqual(client.tokens, 0)
        # a non-fleet instance joining with the stack's ec2 token: no machine of the stack, locked.
        client = fleet.FakeLocalClient(nodes=self.honest_nodes() + [fleet.node("123-i-0other", "ip-10-0-9-9")],
                                       host_uuids=fleet.HOST_UUIDS)
        with self.assertLogs(orchestration.log, "ERROR"):
            _, result = self.round(client, provider="aws")
        self.assertEqual(client.locks, ["123-i-0other"])

    def test_a_record_of_the_previous_release_is_read_as_its_hosts(self):
        os.makedirs(os.path.dirname(self.hosts_file), mode=0o700)
        with open(self.hosts_file, "w") as handle:
            json.dump({"prod-default-r1": "h-d1"}, handle)
        client = fleet.FakeLocalClient(nodes=[n for n in self.honest_nodes() if n["name"] != "h-d1"],
                                       host_uuids=dict(fleet.HOST_UUIDS, **{"prod-default-r1": None}))
        with self.assertLogs(orchestration.log, "WARNING"):
            self.round(client)
        self.assertEqual(client.tokens, 0)
        self.assertEqual(self.recorded()["prod-default-r1"], "h-d1")


class TeleportModuleTest(unittest.TestCase):
    def test_host_ca_certificates_is_tctl_auth_export_of_the_tls_host_ca(self):
        module = _load("ci_fleet_teleport_under_test", os.path.join(SALT, "_modules", "ci_fleet_teleport.py"))
        fixture = os.path.join(ROOT, "test", "teleport", "fixtures", "teleport-host-ca.pem")
        with open(fixture) as handle:
            pem = handle.read()
        calls = []

        def run_all(argv, **kwargs):
            calls.append((argv, kwargs))
            return {"retcode": 0, "stdout": pem if argv[1:] == ["auth", "export", "--type=tls-host"] else "", "stderr": ""}

        module.__salt__ = {"cmd.run_all": run_all}
        self.assertEqual(module.host_ca_certificates(), pem)
        self.assertEqual(calls[0][0], ["tctl", "auth", "export", "--type=tls-host"])
        self.assertFalse(calls[0][1]["python_shell"])
        module.__salt__ = {"cmd.run_all": lambda argv, **kw: {"retcode": 0, "stdout": "", "stderr": ""}}
        with self.assertRaises(RuntimeError):
            module.host_ca_certificates()


if __name__ == "__main__":
    result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
    sys.exit(0 if result.wasSuccessful() else 1)
