"""A Teleport minion's Salt key pair for the tests' fake Salt clients (issue 12).

The master believes only answers the Teleport minion signed with its Salt key for the call's
nonce (salt/_runners/ci_fleet.py `_teleport_call`). Fakes that stand in for the Teleport minion
sign with the REAL execution module (salt/_modules/ci_fleet_teleport.py `_answer`), given a real
RSA key where Salt keeps it (<pki_dir>/minion.pem, TraditionalOpenSSL PEM as salt/crypt.py
`gen_keys` writes it); the master reads the accepted copy from <master pki_dir>/minions/<id>.
"""
import atexit
import importlib.util
import os
import shutil
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def rsa_key_pair():
    """(private PEM bytes, public PEM bytes) of a fresh 2048-bit RSA key, as Salt writes them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


class TeleportKeys:
    """The Teleport minion's key (minion side) and the master's accepted copy, in a temp dir."""

    def __init__(self, minion_id="prod-teleport", salt_root=None, master_pki_dir=None):
        self.minion_id = minion_id
        self.dir = tempfile.mkdtemp(prefix="ci-fleet-teleport-keys-")
        atexit.register(shutil.rmtree, self.dir, True)
        self.minion_pki_dir = os.path.join(self.dir, "minion")
        self.master_pki_dir = master_pki_dir or os.path.join(self.dir, "master")
        os.makedirs(self.minion_pki_dir, mode=0o700)
        os.makedirs(os.path.join(self.master_pki_dir, "minions"), mode=0o700, exist_ok=True)
        private, public = rsa_key_pair()
        with open(os.open(os.path.join(self.minion_pki_dir, "minion.pem"), os.O_WRONLY | os.O_CREAT, 0o400), "wb") as handle:
            handle.write(private)
        with open(os.path.join(self.master_pki_dir, "minions", minion_id), "wb") as handle:
            handle.write(public)
        self.public_pem = public.decode()
        salt_root = salt_root or os.environ.get("CI_FLEET_SALT_ROOT") or os.path.join(ROOT, "salt")
        spec = importlib.util.spec_from_file_location("ci_fleet_teleport_signer_%d" % id(self),
                                                      os.path.join(salt_root, "_modules", "ci_fleet_teleport.py"))
        self.module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.module)
        self.module.__opts__ = {"id": minion_id, "pki_dir": self.minion_pki_dir}

    def sign(self, fun, kwarg, value):
        """What the real module answers for `fun` when the master passed a nonce: `value` signed."""
        nonce = (kwarg or {}).get("nonce")
        if not fun.startswith("ci_fleet_teleport.") or nonce is None:
            return value
        return self.module._answer(fun.split(".", 1)[1], nonce, value)


class FleetKeys:
    """Every minion's key pair, made on first use, all accepted in one master pki_dir (the one of
    `teleport`): each minion signs its answers to ci_fleet_teleport.* as the real module does
    (a machine's own Teleport host id is believed only signed with its own key)."""

    def __init__(self, teleport, salt_root=None):
        self.keys = {teleport.minion_id: teleport}
        self.master_pki_dir, self.salt_root = teleport.master_pki_dir, salt_root

    def __getitem__(self, minion_id):
        if minion_id not in self.keys:
            self.keys[minion_id] = TeleportKeys(minion_id, self.salt_root, self.master_pki_dir)
        return self.keys[minion_id]

    def sign(self, minion_id, fun, kwarg, value):
        return self[minion_id].sign(fun, kwarg, value)
