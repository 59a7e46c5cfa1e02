#!/usr/bin/python3
"""A model of each machine of a stack, as the program and the Salt tree render it.

  machine_model.py --salt-root salt --documents docs.json --user-data user-data.json

Reuses test/salt/render.py (imported as a module, never changed) to compile each minion's
pillar from the program's own pillar documents and to render its highstate, then builds,
per minion, a JSON model of what ends up on the disk and what runs:

- states: every state with its function and arguments (secrets dropped);
- files: path -> owner, group, mode, kind, content (when known), writer. Writers apply in
  the order a machine sees them: the OS and packages (a small, cited baseline), cloud-init's
  write_files and the shell commands of its bootstrap scripts (install -d, chown, chmod),
  then Salt's states (they overwrite), then what the fleet's own programs write at run
  time (their real write functions, executed in a sandbox);
- users and groups (user.present, the packages' system users);
- units: systemd units written by any part (drop-ins merged) and the packages' own units;
- processes: every command a unit, a hook or the Salt master runs, with its uid, groups,
  environment (systemd's Environment=/EnvironmentFile= semantics) and the AWS credentials
  it resolves (AWS_CONFIG_FILE, else $HOME/.aws/config -> credential_process; IMDS on aws
  for uid 0 only, as the metadata guard in user-data allows); the CI agents' own processes
  (runs_jobs: their environment is every job's) resolve credentials too;
- job VMs (isolation vm): for each runner whose launcher (`ci-job-slot run --config X`) has
  its rendered X, a machine `<minion id>/vm` (role job-vm): the golden image as the rendered
  build script's virt-customize operations make it, the files the real ci-job-guest
  `aws_files` writes for the session, and the one job its real `job_command` starts (as the
  image's job user), whose session is minted for that VM alone by the HOST launcher (root) with
  the command its real `aws_mint_argv` builds from X's aws.command (--stdout: no file on the host)
  - the host timer's own command without its file, or no session when the two differ. A Buildkite
  VM's job input is what the host's real ci-job-handoff builds from the job's environment.

The seam tests (test/seams/*.test.ts) judge the model.
"""
import argparse
import copy
import fnmatch
import importlib.util
import inspect
import ipaddress
import json
import os
import posixpath
import re
import shlex
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "salt"))
import render  # noqa: E402  (test/salt/render.py, shared with the Salt tests)
import yaml  # noqa: E402

# --- The OS and package baseline (what no part of ci-fleet writes) ---------------------------
# Ubuntu 24.04 base-passwd / adduser: /root is 0700; home directories made by useradd -m
# are 0750 (HOME_MODE in /etc/login.defs since Ubuntu 21.04).
OS_DIRS = {
    "/": ("root", "root", 0o755), "/root": ("root", "root", 0o700), "/etc": ("root", "root", 0o755),
    "/run": ("root", "root", 0o755), "/var": ("root", "root", 0o755), "/var/lib": ("root", "root", 0o755),
    "/srv": ("root", "root", 0o755), "/usr": ("root", "root", 0o755), "/usr/local": ("root", "root", 0o755),
    "/usr/local/bin": ("root", "root", 0o755), "/usr/local/sbin": ("root", "root", 0o755),
    "/opt": ("root", "root", 0o755), "/tmp": ("root", "root", 0o1777),
    "/etc/systemd/system": ("root", "root", 0o755),
}
HOME_MODE = 0o750
# Salt 3006.0 and later (3007 included): the salt-master Debian package creates the system
# user `salt` and writes `user: salt` into /etc/salt/master, so the master runs as `salt`
# unless a later config file says otherwise (saltstack/salt#64037, release note in #64084:
# "The packages will add the `user: salt` config option to the Salt Master config. The
# Salt Master service will run as this user"; saltstack/salt#64347: "since 3006.x it is
# salt"). The package's salt-master.service starts as root and the daemon drops to `user`.
SALT_MASTER_PACKAGE_FILES = {
    "/etc/salt/master": {"owner": "root", "group": "root", "mode": 0o644, "content": "user: salt\n"},
}
SALT_MASTER_PACKAGE_USER = {"name": "salt", "home": "/opt/saltstack/salt", "groups": [], "system": True}
# Teleport's Debian package ships teleport.service running `teleport start` as root with
# --config /etc/teleport.yaml (gravitational/teleport examples/systemd/teleport.service).
TELEPORT_PACKAGE_UNIT = {
    "Unit": {"Description": ["Teleport Service"]},
    "Service": {"ExecStart": ["/usr/local/bin/teleport start --config /etc/teleport.yaml --pid-file=/run/teleport.pid"]},
}
# Buildkite's deb (buildkite/agent@v3.123.1 scripts/build-debian-package.sh and
# packaging/linux/scripts/after-install-and-upgrade.sh): /usr/bin/buildkite-agent; on install
# the postinst adds the system user `buildkite-agent`, creates /etc/buildkite-agent and runs
# `chown -R buildkite-agent:buildkite-agent /etc/buildkite-agent` (its unit goes to
# /lib/systemd/system, which ci-fleet's /etc/systemd/system unit of the same name overrides).
# Modelled before Salt's states, which require the package and write /etc/buildkite-agent after it.
BUILDKITE_PACKAGE_FILES = {
    "/usr/bin/buildkite-agent": {"kind": "file", "owner": "root", "group": "root", "mode": 0o755},
    "/etc/buildkite-agent": {"kind": "dir", "owner": "buildkite-agent", "group": "buildkite-agent", "mode": 0o755},
}
BUILDKITE_PACKAGE_USER = {"name": "buildkite-agent", "home": "/var/lib/buildkite-agent", "groups": [], "system": True}
# Executables that come from distribution or vendor packages, not from a part of ci-fleet.
PACKAGED_EXECUTABLES = ("/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/", "/usr/local/bin/teleport",
                        "/usr/local/bin/tctl", "/opt/actions-runner/")


def dirs_of(path):
    out = []
    while path not in ("/", ""):
        path = posixpath.dirname(path)
        out.append(path)
    return list(reversed(out))


def mode_int(value, default=None):
    if value is None or value == "":
        return default
    return int(str(value), 8)


def with_x(mode):
    """Salt: directories made for a file get the file's mode plus x wherever r is set."""
    out = mode
    for r, x in ((0o400, 0o100), (0o040, 0o010), (0o004, 0o001)):
        if mode & r:
            out |= x
    return out


def owner_group(value):
    if not value:
        return "root", "root"
    owner, _, group = str(value).partition(":")
    return owner, group or owner


class Machine:
    def __init__(self, minion_id, pillar):
        self.id = minion_id
        self.pillar = pillar
        self.files = {}
        self.users = {"root": {"name": "root", "uid": 0, "home": "/root", "groups": [], "system": True}}
        self.groups = {}
        self.units = {}
        self.states = []
        self.notes = []
        for path, (owner, group, mode) in OS_DIRS.items():
            self.files[path] = {"kind": "dir", "owner": owner, "group": group, "mode": mode, "writer": "os"}

    # -- files ---------------------------------------------------------------------------
    def ensure_parents(self, path, owner="root", group="root", mode=0o755, writer="?"):
        for d in dirs_of(path):
            if d not in self.files:
                self.files[d] = {"kind": "dir", "owner": owner, "group": group, "mode": mode, "writer": writer + " (parent)"}

    def put(self, path, kind, owner, group, mode, writer, content=None, parents=None):
        path = posixpath.normpath(path)
        if parents:
            self.ensure_parents(path, *parents, writer=writer)
        else:
            self.ensure_parents(path, writer=writer)
        old = self.files.get(path, {})
        entry = {"kind": kind, "owner": owner if owner is not None else old.get("owner", "root"),
                 "group": group if group is not None else old.get("group", "root"),
                 "mode": mode if mode is not None else old.get("mode", 0o755 if kind == "dir" else 0o644),
                 "writer": writer}
        if content is not None:
            entry["content"] = content
        elif kind == "file" and "content" in old and old.get("kind") == "file":
            entry["content"] = old["content"]
        self.files[path] = entry

    def remove(self, path):
        path = posixpath.normpath(path)
        for p in [p for p in self.files if p == path or p.startswith(path + "/")]:
            del self.files[p]

    def to_json(self):
        files = {}
        for path, f in sorted(self.files.items()):
            out = dict(f)
            out["mode"] = "%04o" % f["mode"]
            files[path] = out
        return {"id": self.id, "states": self.states, "files": files, "users": self.users,
                "groups": self.groups, "units": self.units, "notes": self.notes}


# --- cloud-init ------------------------------------------------------------------------------

SHELL_INSTALL_D = re.compile(r"install\s+-d\s+-m\s+(\d+)\s+(.+)$")
SHELL_CHOWN_R = re.compile(r"chown\s+(-R\s+)?([a-z_][a-z0-9_-]*):([a-z_][a-z0-9_-]*)\s+(/\S+)")
SHELL_CHMOD = re.compile(r"chmod\s+(\d{3,4})\s+((?:/\S+\s*)+)$")


def _master_pki_files():
    """(relative path, mode) of what salt_master/files/ci_fleet_master_pki.py writes (its FILES)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "salt", "salt_master", "files", "ci_fleet_master_pki.py")
    spec = importlib.util.spec_from_file_location("ci_fleet_master_pki", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [(rel, mode) for _key, rel, mode, _shape in module.FILES]


def apply_shell_effects(machine, script, writer):
    """The file effects of a bootstrap script's simple lines (install -d -m, chown, chmod)."""
    # The master's first boot writes its key pairs from SSM before the lines below touch them.
    for m in re.finditer(r"ci_fleet_master_pki\.py\b[^\n]*?--pki-dir (/\S+)", script.replace("\\\n", " ")):
        for rel, mode in _master_pki_files():
            path = posixpath.join(m.group(1), rel)
            machine.put(posixpath.dirname(path), "dir", "root", "root", 0o700, writer + " (ci_fleet_master_pki.py)")
            machine.put(path, "file", "root", "root", mode, writer + " (ci_fleet_master_pki.py)")
    for raw in script.splitlines():
        line = raw.strip()
        m = SHELL_INSTALL_D.search(line)
        if m and "$" not in m.group(2):
            for path in shlex.split(m.group(2)):
                if path.startswith("/"):
                    machine.put(path, "dir", "root", "root", int(m.group(1), 8), writer)
            continue
        m = SHELL_CHOWN_R.search(line)
        if m and "$" not in line:
            base = posixpath.normpath(m.group(4))
            for path, f in machine.files.items():
                if path == base or (m.group(1) and path.startswith(base + "/")):
                    f["owner"], f["group"] = m.group(2), m.group(3)
            continue
        m = SHELL_CHMOD.search(line)
        if m and "$" not in line:
            for path in m.group(2).split():
                if path in machine.files:
                    machine.files[path]["mode"] = int(m.group(1), 8)


def apply_cloud_init(machine, user_data):
    """cloud-init first: write_files (parents 0755 root), then runcmd's bootstrap scripts."""
    doc = yaml.safe_load(user_data) or {}
    written = []
    for f in doc.get("write_files", []) or []:
        owner, group = owner_group(f.get("owner", "root:root"))
        content = f.get("content", "")
        if f.get("encoding") in ("b64", "base64", "gzip", "gz+b64", "gz+base64"):
            content = None
        machine.put(f["path"], "file", owner, group, mode_int(f.get("permissions"), 0o644), "cloud-init", content)
        written.append(f["path"])
    commands = []
    for key in ("bootcmd", "runcmd"):
        for cmd in doc.get(key, []) or []:
            argv = cmd if isinstance(cmd, list) else ["sh", "-c", cmd]
            commands.append({"phase": key, "argv": [str(a) for a in argv]})
    # The effects of bootstrap scripts cloud-init wrote and runcmd runs (in order).
    for c in commands:
        for arg in c["argv"]:
            f = machine.files.get(arg)
            if f and f.get("content") and arg in written:
                apply_shell_effects(machine, f["content"], "cloud-init runcmd " + arg)
            elif "\n" in arg:
                apply_shell_effects(machine, arg, "cloud-init " + c["phase"])
    return {"write_files": written, "commands": commands,
            "imds_root_only": any("skuid != 0" in " ".join(c["argv"]) for c in commands)}


# --- Salt ------------------------------------------------------------------------------------

SECRET_ARGS = ("contents", "contents_pillar", "env")


def tree_file(root, source):
    path = os.path.join(root, source[len("salt://"):])
    if os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    return None


def apply_salt(machine, highstate, root, rendered_files):
    for state_id, (sls, body) in highstate.states.items():
        if not isinstance(body, dict):
            continue
        for function, args in render.state_function(state_id, body):
            name = str(args.get("name", state_id))
            machine.states.append({"id": state_id, "sls": sls, "function": function,
                                   "args": {k: v for k, v in args.items() if k not in SECRET_ARGS}})
            writer = "salt %s (%s)" % (state_id, function)
            user, group = args.get("user"), args.get("group")
            if function == "file.managed":
                mode = mode_int(args.get("mode"), 0o644)
                content = None
                if isinstance(args.get("contents"), str):
                    content = args["contents"]
                elif isinstance(args.get("contents"), list):
                    content = "\n".join(str(x) for x in args["contents"]) + "\n"
                elif args.get("contents_pillar"):
                    content = render.traverse(machine.pillar, args["contents_pillar"], None)
                elif name in rendered_files:
                    content = rendered_files[name]
                elif isinstance(args.get("source"), str) and args["source"].startswith("salt://"):
                    content = tree_file(root, args["source"])
                # A program's JSON config naming where it installs at run time (e.g. the
                # Actions runner updater): those trees exist, root-owned; contents not modelled.
                if isinstance(content, str) and content.lstrip().startswith("{"):
                    try:
                        conf = json.loads(content)
                    except ValueError:
                        conf = None
                    if isinstance(conf, dict):
                        for key in ("install_dir", "releases_dir"):
                            d = conf.get(key)
                            if isinstance(d, str) and d.startswith("/") and d not in machine.files:
                                machine.put(d, "dir", "root", "root", 0o755, "run time: installer configured by " + name)
                                machine.files[posixpath.normpath(d)]["archive"] = "installed at run time (%s in %s)" % (key, name)
                parents = None
                if args.get("makedirs"):
                    parents = (user or "root", group or "root", mode_int(args.get("dir_mode"), with_x(mode)))
                machine.put(name, "file", user or "root", group or "root", mode, writer,
                            content if isinstance(content, str) else None, parents)
            elif function == "file.directory":
                machine.put(name, "dir", user or "root", group or "root", mode_int(args.get("mode"), 0o755), writer,
                            parents=(user or "root", group or "root", mode_int(args.get("mode"), 0o755)) if args.get("makedirs") else None)
            elif function == "file.recurse":
                src = os.path.join(root, str(args.get("source", ""))[len("salt://"):])
                dmode = mode_int(args.get("dir_mode"), 0o755)
                fmode = mode_int(args.get("file_mode"), 0o644)
                machine.put(name, "dir", user or "root", group or "root", dmode, writer)
                for directory, dirs, files in os.walk(src):
                    rel = os.path.relpath(directory, src)
                    base = name if rel == "." else posixpath.join(name, rel)
                    for d in dirs:
                        machine.put(posixpath.join(base, d), "dir", user or "root", group or "root", dmode, writer)
                    for fname in files:
                        with open(os.path.join(directory, fname), encoding="utf-8", errors="replace") as handle:
                            text = handle.read()
                        machine.put(posixpath.join(base, fname), "file", user or "root", group or "root", fmode, writer, text)
            elif function == "file.symlink":
                machine.put(name, "symlink", "root", "root", 0o777, writer)
                machine.files[posixpath.normpath(name)]["target"] = args.get("target")
            elif function == "archive.extracted":
                if name not in machine.files:
                    machine.put(name, "dir", user or "root", group or "root", 0o755, writer)
                machine.files[posixpath.normpath(name)]["archive"] = args.get("source")
            elif function == "git.latest":
                target = str(args.get("target"))
                machine.put(target, "dir", args.get("user") or "root", args.get("user") or "root", 0o755, writer)
                machine.files[posixpath.normpath(target)]["archive"] = "git checkout of %s (umask 022)" % args.get("name")
            elif function == "file.absent":
                machine.remove(name)
            elif function == "user.present":
                machine.users[name] = {"name": name, "home": args.get("home", "/home/" + name),
                                       "groups": list(args.get("groups") or []), "system": bool(args.get("system")),
                                       "shell": args.get("shell")}
                machine.groups.setdefault(name, {"name": name})
                for g in args.get("groups") or []:
                    machine.groups.setdefault(g, {"name": g})
                home = args.get("home", "/home/" + name)
                if args.get("createhome", True) and home not in machine.files:
                    machine.put(home, "dir", name, name, HOME_MODE, writer + " createhome")
            elif function == "group.present":
                machine.groups.setdefault(name, {"name": name})


# --- systemd -------------------------------------------------------------------------------

def parse_unit(text):
    sections, current = {}, None
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if value == "" and key.startswith("Exec"):
            current[key] = []          # an empty assignment resets the list
            continue
        current.setdefault(key, []).append(value)
    return sections


def merge_unit(base, dropin):
    out = copy.deepcopy(base)
    for section, keys in dropin.items():
        target = out.setdefault(section, {})
        for key, values in keys.items():
            if values == [] or key in ("User", "Group", "UMask", "WorkingDirectory", "Type"):
                target[key] = list(values)
            else:
                target.setdefault(key, []).extend(values)
    return out


def collect_units(machine, packages):
    units = {}
    if "teleport" in packages:
        units["teleport.service"] = {"path": "(package teleport)", "sections": copy.deepcopy(TELEPORT_PACKAGE_UNIT), "dropins": []}
    for path, f in sorted(machine.files.items()):
        m = re.match(r"^/etc/systemd/system/([^/]+\.(service|timer))$", path)
        if m and f.get("kind") == "file":
            units[m.group(1)] = {"path": path, "sections": parse_unit(f.get("content")), "dropins": []}
    for path, f in sorted(machine.files.items()):
        m = re.match(r"^/etc/systemd/system/([^/]+\.service)\.d/[^/]+\.conf$", path)
        if m and f.get("kind") == "file":
            unit = units.setdefault(m.group(1), {"path": "(package)", "sections": {}, "dropins": []})
            unit["sections"] = merge_unit(unit["sections"], parse_unit(f.get("content")))
            unit["dropins"].append(path)
    return units


def parse_env_text(text):
    env = {}
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export "):].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key] = value
    return env


SYSTEMD_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


# --- the programs' own run-time writes, executed for real in a sandbox -----------------------

def load_script(text, name):
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(text, name, "exec"), module.__dict__)  # noqa: S102 - the tree's own script
    return module


class Sandbox:
    """Runs one write function of a fleet script against a temp root: directories the
    model already has exist there; what the function creates is read back (mode from the
    real syscalls under the unit's umask, owner from the chown calls it makes, else the
    process's user)."""

    def __init__(self, machine, user, umask):
        self.machine, self.user, self.umask = machine, user, umask

    def run(self, path, call):
        root = tempfile.mkdtemp(prefix="ci-fleet-seam-")
        chowns = {}
        gid_names = {}
        existing = {}
        for d in dirs_of(path):
            if d in self.machine.files and d != "/":
                os.makedirs(root + d, exist_ok=True)
                os.chmod(root + d, self.machine.files[d]["mode"] & 0o777)
                existing[root + d] = d
        real_chown, real_umask = os.chown, os.umask(self.umask)

        def fake_chown(p, uid, gid, *a, **k):
            chowns[os.path.normpath(str(p))] = (uid, gid)

        real_replace, real_rename = os.replace, os.rename

        def moving(real):
            def move(src, dst, *a, **k):
                src_n, dst_n = os.path.normpath(str(src)), os.path.normpath(str(dst))
                if src_n in chowns:
                    chowns[dst_n] = chowns.pop(src_n)
                return real(src, dst, *a, **k)
            return move

        os.chown, os.replace, os.rename = fake_chown, moving(real_replace), moving(real_rename)
        try:
            call(root, gid_names)
        finally:
            os.chown, os.replace, os.rename = real_chown, real_replace, real_rename
            os.umask(real_umask)
        for directory, dirs, files in os.walk(root):
            for x in sorted(dirs + files):
                full = os.path.join(directory, x)
                rel = "/" + os.path.relpath(full, root)
                st = os.lstat(full)
                mode = st.st_mode & 0o7777
                if full in existing:
                    entry = self.machine.files[rel]
                    if (entry["mode"] & 0o777) != (mode & 0o777):
                        entry["mode"] = mode
                        entry["writer"] += "; chmod at run time by " + self.describe
                    if full in chowns:
                        uid, gid = chowns[full]
                        entry["owner"] = "root" if uid == 0 else self.user
                        entry["group"] = gid_names.get(gid, "root" if gid == 0 else self.user)
                    continue
                owner, group = self.user, self.user
                if full in chowns:
                    uid, gid = chowns[full]
                    owner = "root" if uid == 0 else self.user
                    group = gid_names.get(gid, "root" if gid == 0 else self.user)
                kind = "dir" if os.path.isdir(full) else "file"
                self.machine.put(rel, kind, owner, group, mode, "run time: " + self.describe)
        import shutil
        shutil.rmtree(root, ignore_errors=True)


def roles_anywhere_writes(machine, process, module, exe):
    """ci-fleet-roles-anywhere: the real key/certificate layout it leaves under --cert-dir
    (a key made with openssl, a throwaway certificate for it installed by the real install()),
    and the alarm directory; `current` becomes a symlink whose files the kernel resolves."""
    argv = process["argv"]
    cert_dir = arg_after(argv, "--cert-dir")
    if not cert_dir or "$" in cert_dir:
        return
    sandbox = Sandbox(machine, process["user"], process.get("umask", 0o022))
    sandbox.describe = "%s (%s)" % (exe, process["source"])
    created = {}

    def call(root, _gids):
        import subprocess
        import time as _time
        certs = module.CertDir(root + cert_dir)
        key = certs.ensure_pending_key()
        incoming = os.path.join(root + cert_dir, "incoming-model.pem")
        subprocess.run(["openssl", "req", "-x509", "-key", key, "-subj", "/CN=model", "-days", "30", "-out", incoming],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        certs.install(incoming, _time.time())
        os.unlink(incoming)
        created["generation"] = os.readlink(os.path.join(root + cert_dir, module.CURRENT))
    sandbox.run(cert_dir + "/x", call)
    generation = posixpath.join(cert_dir, created["generation"])
    current = posixpath.join(cert_dir, module.CURRENT)
    machine.files[current] = {"kind": "symlink", "owner": "root", "group": "root", "mode": 0o777,
                              "writer": "run time: " + sandbox.describe, "target": generation}
    for path in [p for p in list(machine.files) if p.startswith(generation + "/")]:
        machine.files[current + path[len(generation):]] = dict(machine.files[path])


def runtime_writes(machine, process, scripts):
    """What a fleet program writes when it runs: --output of the pillar sync, the CI user's
    session file, the Buildkite token environment file, the Roles Anywhere key directory."""
    argv = process["argv"]
    exe = argv[0] if argv else ""
    text = scripts.get(exe)
    if not text or not text.startswith("#!/usr/bin/python3"):
        return
    if "class CertDir" in text and argv[1:2] == ["run"]:
        roles_anywhere_writes(machine, process, load_script(text, os.path.basename(exe).replace("-", "_")), exe)
        return
    out = arg_after(argv, "--output")
    if not out or "$" in out:
        return
    module = load_script(text, os.path.basename(exe).replace("-", "_"))
    sandbox = Sandbox(machine, process["user"], process.get("umask", 0o022))
    sandbox.describe = "%s (%s)" % (exe, process["source"])
    if hasattr(module, "write_documents"):                     # ci_fleet_pillar_sync.py
        sandbox.run(out, lambda root, _g: module.write_documents(root + out, {machine.id: {"ci_fleet": {"minion_id": machine.id}}}))
    elif hasattr(module, "write_private"):                     # ci_fleet_aws_session.py
        group = arg_after(argv, "--group")

        def call(root, gids):
            gids[4242] = group
            module.write_private(root + out, {"Version": 1}, 4242)
        sandbox.run(out, call)
    elif hasattr(module, "write_environment_file"):            # buildkite_agent_token.py
        if posixpath.dirname(out) not in machine.files:
            machine.notes.append("%s writes %s but its directory does not exist" % (exe, out))
            return
        sandbox.run(out, lambda root, _g: module.write_environment_file(root + out, "token"))


def arg_after(argv, flag):
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


# --- processes ---------------------------------------------------------------------------------

def exec_prefix(cmd):
    flags = ""
    while cmd and cmd[0] in "-+!@:":
        flags += cmd[0]
        cmd = cmd[1:]
    return flags, cmd


def unit_processes(machine, units):
    processes = []
    for name, unit in sorted(units.items()):
        svc = unit["sections"].get("Service")
        if not svc:
            continue
        user = (svc.get("User") or ["root"])[-1]
        group = (svc.get("Group") or [user])[-1]
        env = {}
        env_files = []
        for value in svc.get("Environment", []):
            for item in shlex.split(value):
                k, _, v = item.partition("=")
                env[k] = v
        runtime_env_files = []
        for value in svc.get("EnvironmentFile", []):
            optional = value.startswith("-")
            path = value.lstrip("-")
            f = machine.files.get(path)
            env_files.append({"path": path, "optional": optional, "exists": f is not None})
            if f and isinstance(f.get("content"), str):
                env.update(parse_env_text(f["content"]))
            else:
                runtime_env_files.append(path)
        umask = int((svc.get("UMask") or ["0022"])[-1], 8)
        home = None
        if user in machine.users:
            home = machine.users[user]["home"]
        systemd_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        if svc.get("User"):
            # systemd.exec(5): $USER, $LOGNAME, $HOME, $SHELL are set for units with User=.
            systemd_env.update({"USER": user, "LOGNAME": user, "HOME": home or "/"})
        if svc.get("RuntimeDirectory"):
            # systemd.exec(5): space-separated, each /run/<name> (parents too) owned by User=/Group=.
            dirs = [d for value in svc["RuntimeDirectory"] for d in value.split()]
            systemd_env["RUNTIME_DIRECTORY"] = ":".join("/run/" + d for d in dirs)
            rmode = int((svc.get("RuntimeDirectoryMode") or ["0755"])[-1], 8)
            for d in dirs:
                parts = d.split("/")
                for i in range(1, len(parts) + 1):
                    machine.put("/run/" + "/".join(parts[:i]), "dir", user, group, rmode,
                                "systemd RuntimeDirectory= of " + name)
        credentials = {}
        for value in svc.get("LoadCredential", []):
            # systemd.exec(5) LoadCredential=ID:PATH: PID 1 (root) reads PATH at start and puts a
            # copy in the unit's credentials directory, "only accessible to the user associated
            # with the unit ... (as well as the superuser)": owned by (or ACL'd to) User=, dir
            # 0500, file 0400 (src/core/execute.c setup_credentials, systemd 252).
            cred_id, _, source = value.partition(":")
            cred_dir = "/run/credentials/" + name
            src = machine.files.get(source)
            machine.put(cred_dir, "dir", user, group, 0o500, "systemd LoadCredential= of " + name)
            machine.put(cred_dir + "/" + cred_id, "file", user, group, 0o400, "systemd LoadCredential= of %s (from %s)" % (name, source),
                        src.get("content") if src else None)
            credentials[cred_id] = {"source": source, "path": cred_dir + "/" + cred_id}
            systemd_env["CREDENTIALS_DIRECTORY"] = cred_dir
        for key in ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecStop", "ExecStopPost", "ExecReload"):
            for raw in svc.get(key, []):
                flags, cmd = exec_prefix(raw)
                runs_as = "root" if "+" in flags or not svc.get("User") else user
                processes.append({
                    "source": "%s %s" % (name, key), "unit": name, "kind": "unit",
                    "user": runs_as, "group": "root" if runs_as == "root" else group,
                    "command": cmd, "argv": shlex.split(cmd), "ignore_failure": "-" in flags,
                    "env": dict(systemd_env, **env), "unit_env_keys": sorted(env),
                    "env_files": env_files, "runtime_env_files": runtime_env_files,
                    "umask": umask, "credentials_loaded": credentials,
                })
    return processes


CRED_PATH_VAR = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)="\$\{CREDENTIALS_DIRECTORY(?::?[?-][^}]*)?\}/([A-Za-z0-9_.-]+)"$')
CRED_READ = re.compile(r'^([A-Z_][A-Z0-9_]*)=\$\(cat (?:-- )?"(?:\$([A-Za-z_][A-Za-z0-9_]*)|\$\{CREDENTIALS_DIRECTORY\}/([A-Za-z0-9_.-]+))"\)$')


def credential_exports(machine, process, text):
    """Variables a shell start script fills from the unit's credentials and exports
    (`NAME=$(cat -- "$CREDENTIALS_DIRECTORY/ID")` + `export NAME`): name -> credential file."""
    paths, read, exported = {}, {}, set()
    for raw in (text or "").splitlines():
        line = raw.strip()
        m = CRED_PATH_VAR.match(line)
        if m:
            paths[m.group(1)] = m.group(2)
            continue
        m = CRED_READ.match(line)
        if m:
            cred = paths.get(m.group(2)) if m.group(2) else m.group(3)
            if cred in process.get("credentials_loaded", {}):
                read[m.group(1)] = process["credentials_loaded"][cred]["path"]
            continue
        if line.startswith("export "):
            exported.update(line.split()[1:])
    return {k: v for k, v in read.items() if k in exported}


def substitute(process):
    """systemd substitutes ${VAR} and $VAR in command lines from Environment=/EnvironmentFile= only."""
    missing = []

    def sub(m):
        var = m.group(1) or m.group(2)
        if var in process["env"] and var in process["unit_env_keys"] + process.get("runtime_env_keys", []):
            return process["env"][var]
        missing.append(var)
        return m.group(0)
    process["argv_resolved"] = [SYSTEMD_VAR.sub(sub, a) for a in process["argv"]]
    process["unresolved_command_vars"] = sorted(set(missing))


def master_process(machine):
    """The Salt master: master.d/*.conf after /etc/salt/master, later files win."""
    config_files = ["/etc/salt/master"] + sorted(p for p in machine.files if fnmatch.fnmatch(p, "/etc/salt/master.d/*.conf"))
    merged, writers = {}, {}
    for path in config_files:
        f = machine.files.get(path)
        if not f or not isinstance(f.get("content"), str):
            continue
        try:
            data = yaml.safe_load(f["content"]) or {}
        except yaml.YAMLError as error:
            machine.notes.append("%s is not YAML: %s" % (path, error))
            continue
        for k, v in data.items():
            merged[k] = v
            writers[k] = "%s (%s)" % (path, f["writer"])
    user = merged.get("user", "root")
    needs = []
    for root in (merged.get("pillar_roots") or {}).get("base", []):
        needs.append({"path": root, "access": "list"})
    for root in (merged.get("file_roots") or {}).get("base", []):
        needs.append({"path": root, "access": "list"})
    pki = merged.get("pki_dir", "/etc/salt/pki/master")
    needs += [{"path": pki, "access": "list"}, {"path": pki + "/master.pem", "access": "read"},
              {"path": pki + "/minions", "access": "list"}]
    return {"source": "salt-master (package unit; user from %s)" % writers.get("user", "the built-in default root"),
            "unit": "salt-master.service", "kind": "salt-master", "user": user, "group": user,
            "command": "/usr/bin/salt-master", "argv": ["/usr/bin/salt-master"], "env": {"HOME": "/root"},
            "unit_env_keys": [], "env_files": [], "runtime_env_files": [], "umask": 0o022,
            "needs": needs, "config": {k: merged[k] for k in ("user", "pillar_roots", "file_roots", "pki_dir") if k in merged},
            "config_writers": writers}



# --- what root's ExecStartPre=+ scripts leave on the disk (the CI user's reset) ---------------

SHELL_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\S+)$")


def apply_root_script(machine, text, writer):
    """The file effects of a root shell script a unit runs before it starts (ci-agent-reset):
    its simple literal assignments (`home=/var/lib/ci-agent`) substituted, then `mkdir [-m M]`,
    `chown [-h] U:G`, `chmod M`, `rm -rf [--]` and `find DIR -mindepth 1 -maxdepth 1 -exec rm
    -rf` applied in order. A line still holding an unresolved `$` is skipped (loops, $(...))."""
    values = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = SHELL_ASSIGN.match(line)
        if m and "$" not in m.group(2) and "`" not in m.group(2):
            values[m.group(1)] = m.group(2).strip("\"'")
            continue
        line = SYSTEMD_VAR.sub(lambda v: values.get(v.group(1) or v.group(2), v.group(0)), line)
        if "$" in line or "`" in line or "|" in line or ";" in line:
            continue
        try:
            argv = shlex.split(line)
        except ValueError:
            continue
        if not argv:
            continue
        cmd, args = argv[0], argv[1:]
        if cmd == "mkdir":
            mode = 0o755   # 0777 under the script's umask 022
            paths = []
            i = 0
            while i < len(args):
                if args[i] == "-m" and i + 1 < len(args):
                    mode = int(args[i + 1], 8)
                    i += 2
                    continue
                if not args[i].startswith("-"):
                    paths.append(args[i])
                i += 1
            for path in paths:
                machine.put(path, "dir", "root", "root", mode, writer)
        elif cmd == "chown":
            rest = [a for a in args if a not in ("-h", "--")]
            if len(rest) >= 2 and ":" in rest[0]:
                owner, group = rest[0].split(":", 1)
                for path in rest[1:]:
                    f = machine.files.get(posixpath.normpath(path))
                    if f:
                        f["owner"], f["group"] = owner, group
                        f["writer"] = writer
        elif cmd == "chmod" and len(args) >= 2 and re.match(r"^[0-7]{3,4}$", args[0]):
            for path in args[1:]:
                f = machine.files.get(posixpath.normpath(path))
                if f:
                    f["mode"] = int(args[0], 8)
                    f["writer"] = writer
        elif cmd == "rm" and "-rf" in args:
            for path in [a for a in args if not a.startswith("-")]:
                machine.remove(path)
        elif cmd == "find" and args[1:5] == ["-mindepth", "1", "-maxdepth", "1"] and "-exec" in args and "rm" in args:
            base = posixpath.normpath(args[0])
            for path in [q for q in machine.files if q.startswith(base + "/")]:
                del machine.files[path]


# --- the Buildkite job process (bootstrap-script), and who it runs as -------------------------

BUILDKITE_CFG = "/etc/buildkite-agent/buildkite-agent.cfg"
# `buildkite-agent start` unsets the env vars of its own flags before any job starts
# (buildkite/agent@v3.123.1 clicommand/agent_start.go:830 UnsetConfigFromEnvironment,
# clicommand/global.go:435-452): the agent token (BUILDKITE_AGENT_TOKEN, global.go:33-38)
# and the config path (BUILDKITE_AGENT_CONFIG) among them; createEnvironment also deletes the
# token from the job's Buildkite env (agent/job_runner.go:391).
AGENT_UNSETS = ("BUILDKITE_AGENT_TOKEN", "BUILDKITE_AGENT_CONFIG")
# What the agent adds for every job (agent/job_runner.go:511-513): the job's own API token
# (Buildkite's job token when the accept response carries one, :155-160).
AGENT_JOB_ENV = {"BUILDKITE_AGENT_ACCESS_TOKEN": "<the job's token>", "BUILDKITE_AGENT_ENDPOINT": "<endpoint>"}
# glibc removes these from the environment of every set-uid program (sysdeps/generic/unsecvars.h,
# secure mode): sudo never sees them, so neither does the command it runs (checked with
# Debian 12's sudo 1.9.13: LD_PRELOAD, TMPDIR, LOCPATH, GCONV_PATH, MALLOC_TRACE, TZDIR,
# HOSTALIASES all gone even with env_delete emptied).
GLIBC_UNSECURE = ("LD_", "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH",
                  "MALLOC_", "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR", "TZDIR")
# sudo's env_delete when sudoers does not replace it (sudo -V, 1.9.13).
SUDO_ENV_DELETE = ["*=()*", "RUBYOPT", "RUBYLIB", "PYTHONUSERBASE", "PYTHONINSPECT", "PYTHONPATH", "PYTHONHOME",
                   "TMPPREFIX", "ZDOTDIR", "READNULLCMD", "NULLCMD", "FPATH", "PERL5DB", "PERL5OPT", "PERL5LIB",
                   "PERLLIB", "PERLIO_DEBUG", "JAVA_TOOL_OPTIONS", "SHELLOPTS", "BASHOPTS", "GLOBIGNORE", "PS4",
                   "BASH_ENV", "ENV", "TERMCAP", "TERMPATH", "TERMINFO_DIRS", "TERMINFO", "_RLD*", "LD_*",
                   "PATH_LOCALE", "NLSPATH", "HOSTALIASES", "RES_OPTIONS", "LOCALDOMAIN", "CDPATH", "IFS"]
SUDOERS_RULE = re.compile(r"^(\S+)\s+ALL\s*=\s*\(\s*([^\s:)]+)\s*(?::\s*([^\s)]+)\s*)?\)\s*((?:[A-Z_]+:\s*)*)(\S+)(?:\s+(.*))?$")


def sudoers_lines(machine):
    out = []
    for path, f in sorted(machine.files.items()):
        if (path == "/etc/sudoers" or path.startswith("/etc/sudoers.d/")) and f["kind"] == "file" and isinstance(f.get("content"), str):
            for raw in f["content"].splitlines():
                line = raw.strip()
                if line and not line.startswith("#"):
                    out.append((path, line))
    return out


def sudo_run(machine, caller, argv):
    """What `sudo` does for `caller` with argv: the rule that allows it (or none), the target
    user and group, and how the environment passes."""
    opts = {"user": "root", "group": None, "preserve_env": False, "command": []}
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--":
            opts["command"] = argv[i + 1:]
            break
        if a in ("-u", "-g") and i + 1 < len(argv):
            opts["user" if a == "-u" else "group"] = argv[i + 1]
            i += 2
            continue
        if a in ("-E", "--preserve-env"):
            opts["preserve_env"] = True
        elif not a.startswith("-"):
            opts["command"] = argv[i:]
            break
        i += 1
    group = opts["group"] or opts["user"]
    rule, defaults = None, []
    for path, line in sudoers_lines(machine):
        d = re.match(r"^Defaults:(\S+)\s+(.*)$", line)
        if d and d.group(1) == caller:
            defaults.append(d.group(2))
            continue
        m = SUDOERS_RULE.match(line)
        if not m or m.group(1) != caller:
            continue
        tags = set(t.strip() for t in m.group(4).split(":") if t.strip())
        args = (m.group(6) or "").strip()
        command = opts["command"]
        wants_args = command[1:]
        # sudoers(5): `""` allows no arguments, no arguments listed allows any, else exactly these.
        args_ok = (not wants_args) if args == '""' else (True if args == "" else shlex.split(args) == wants_args)
        if (m.group(2) == opts["user"] and (m.group(3) or m.group(2)) == group and command and m.group(5) == command[0]
                and args_ok and "NOPASSWD" in tags and (not opts["preserve_env"] or "SETENV" in tags)):
            rule = {"file": path, "line": line, "exact_args": args == '""'}
    env_delete = list(SUDO_ENV_DELETE)
    for d in defaults:
        m = re.search(r'env_delete\s*=\s*"([^"]*)"', d)
        if m:
            env_delete = m.group(1).split()
        m = re.search(r'env_delete\s*\+=\s*"([^"]*)"', d)
        if m:
            env_delete += m.group(1).split()
    # `Defaults!<command> env_keep = "..."`: with env_reset (no -E) sudo keeps these names
    # (shell wildcards) and drops the rest; env_delete does not apply to them.
    env_keep = []
    for _path, line in sudoers_lines(machine):
        k = re.match(r'^Defaults!(\S+)\s+env_keep\s*(\+?=)\s*"([^"]*)"$', line)
        if k and opts["command"] and k.group(1) == opts["command"][0]:
            env_keep = (env_keep if k.group(2) == "+=" else []) + k.group(3).split()
    return dict(opts, group=group, rule=rule, env_delete=env_delete, defaults=defaults, env_keep=env_keep)


def buildkite_job_process(machine, agent, scripts):
    """The process the agent starts for each job (bootstrap-script; default `buildkite-agent
    bootstrap` as the agent itself, agent_start.go:863-869). The job inherits the agent's
    environment minus what the agent unsets, plus what it adds (job_runner.go:317
    processEnv := append(os.Environ(), env...)); through sudo it becomes the target user.
    The hooks run inside this process (internal/job/executor.go)."""
    cfg = machine.files.get(BUILDKITE_CFG)
    text = cfg.get("content") if cfg else None
    if not isinstance(text, str):
        return None
    conf = {k: v for k, v in (re.match(r'^([a-z-]+)="?([^"\n]*)"?\s*$', l).groups() for l in text.splitlines()
                              if re.match(r'^([a-z-]+)="?([^"\n]*)"?\s*$', l))}
    env = {k: v for k, v in agent["env"].items() if k not in AGENT_UNSETS}
    env.update(AGENT_JOB_ENV)
    agent_needs = [{"path": BUILDKITE_CFG, "access": "read"}]
    build = conf.get("build-path")
    if build:
        # The agent stats it (agent_start.go:1242-1247) and starts the job there (process.Dir).
        agent_needs.append({"path": build, "access": "exec"})
    agent["needs"] = agent.get("needs", []) + agent_needs
    script = conf.get("bootstrap-script")
    user, group, drop = agent["user"], agent["group"], None
    command = [agent["argv"][0] if agent["argv"] else "/usr/bin/buildkite-agent", "bootstrap"]
    if script:
        argv = shlex.split(script)
        if posixpath.basename(argv[0]) == "sudo":
            run = sudo_run(machine, agent["user"], argv)
            drop = {"via": argv[0], "rule": run["rule"], "user": run["user"], "group": run["group"],
                    "preserve_env": run["preserve_env"], "env_delete": run["env_delete"]}
            agent["needs"].append({"path": argv[0], "access": "exec"})
            if run["rule"]:
                user, group = run["user"], run["group"]
                command = run["command"]
                if run["preserve_env"]:
                    deleted = [k for k in env if any(fnmatch.fnmatch(k, pat) or fnmatch.fnmatch("%s=%s" % (k, env[k]), pat) for pat in run["env_delete"])]
                    for k in deleted + [k for k in env if k.startswith(GLIBC_UNSECURE)]:
                        env.pop(k, None)
                else:
                    env = {k: v for k, v in env.items() if k in ("TERM", "PATH") or any(fnmatch.fnmatch(k, pat) for pat in run["env_keep"])}
                target = machine.users.get(user) or {}
                env.update({"USER": user, "LOGNAME": user, "HOME": env.get("HOME", target.get("home", "/")),
                            "SHELL": target.get("shell") or "/bin/sh", "SUDO_USER": agent["user"], "SUDO_COMMAND": " ".join(command)})
            else:
                command = []
        else:
            command = argv
    # The executor's own literal `unset NAME...` and `export NAME=VALUE...` lines.
    exe_text = scripts.get(command[0], "") if command else ""
    if exe_text.startswith("#!/bin/sh") or exe_text.startswith("#!/bin/bash"):
        for raw in exe_text.splitlines():
            line = raw.strip()
            if line.startswith("unset "):
                for k in line.split()[1:]:
                    env.pop(k, None)
            elif line.startswith("export ") and "$" not in line:
                for item in shlex.split(line)[1:]:
                    k, _, v = item.partition("=")
                    env[k] = v
    # isolation vm: the bootstrap-script hands the job to a job VM (runner.job_vm_host_agent);
    # no job code and no hook runs on the host. The handoff itself is the host-side process.
    handoff = bool(command) and posixpath.basename(command[0]) == "ci-job-handoff"
    job = dict(copy.deepcopy(agent), source="buildkite job handoff to a VM (bootstrap-script)" if handoff else "buildkite job (bootstrap-script)",
               kind="unit", user=user, group=group,
               command=" ".join(command), argv=list(command), argv_resolved=list(command), env=env, unit_env_keys=[],
               env_files=[], runtime_env_files=[], runtime_env_keys=[], unresolved_command_vars=[], job_drop=drop)
    job["needs"] = []
    if build:
        job["needs"].append({"path": build, "access": "write"})
    if env.get("CI_FLEET_STATE_DIR"):
        job["needs"].append({"path": env["CI_FLEET_STATE_DIR"], "access": "write"})
    agent["job_user"] = user
    job["hands_off_to_vm"] = handoff
    return job

def hook_processes(machine, agent_process):
    """Buildkite agent hooks (run by the agent, as its user, with its environment plus the
    job environment the agent exports) and GitHub runner job hooks."""
    out = []
    cfg = machine.files.get("/etc/buildkite-agent/buildkite-agent.cfg")
    hooks_dir = None
    if cfg and isinstance(cfg.get("content"), str):
        m = re.search(r'^hooks-path="?([^"\n]+)"?', cfg["content"], re.M)
        hooks_dir = m.group(1) if m else None
    if hooks_dir and agent_process:
        for path, f in sorted(machine.files.items()):
            if posixpath.dirname(path) == hooks_dir and f["kind"] == "file" and not path.endswith(".js"):
                # The agent runs a hook by sourcing it from a bash wrapper (read, not exec).
                hook = dict(copy.deepcopy(agent_process), source="buildkite hook " + posixpath.basename(path),
                            kind="buildkite-hook", command=path, argv=[path], argv_resolved=[path],
                            hook=posixpath.basename(path), unresolved_command_vars=[])
                hook["needs"] = [{"path": path, "access": "read"}]
                for m in re.finditer(r"/([A-Za-z0-9_.-]+\.js)", f.get("content") or ""):
                    hook["needs"].append({"path": posixpath.join(hooks_dir, m.group(1)), "access": "read"})
                out.append(hook)
    return out


def github_hook_processes(machine, runner_process):
    out = []
    env_file = machine.files.get("/opt/actions-runner/.env")
    if env_file and runner_process and isinstance(env_file.get("content"), str):
        for key, value in parse_env_text(env_file["content"]).items():
            if key.startswith("ACTIONS_RUNNER_HOOK_"):
                out.append(dict(copy.deepcopy(runner_process), source="github runner " + key, kind="github-hook",
                                command=value, argv=[value], argv_resolved=[value], unresolved_command_vars=[],
                                needs=[{"path": value, "access": "read"}]))
    return out


# --- what a process needs to read, and its AWS credentials --------------------------------------

def needs_of(machine, process):
    needs = list(process.get("needs", []))
    argv = process.get("argv_resolved", process["argv"])
    if process["kind"] in ("buildkite-hook", "github-hook"):
        return needs
    if process["kind"] == "salt-master":
        roots = [n["path"] for n in needs if n["access"] == "list"]
        for path, f in sorted(machine.files.items()):
            if f["kind"] == "file" and any(path.startswith(r + "/") for r in roots):
                needs.append({"path": path, "access": "read"})
        return needs
    if argv:
        needs.append({"path": argv[0], "access": "exec"})
        for i, a in enumerate(argv[1:], 1):
            if not a.startswith("/"):
                continue
            if argv[i - 1] == "--output":
                needs.append({"path": posixpath.dirname(a), "access": "write"})
            elif a in machine.files and machine.files[a]["kind"] == "file":
                needs.append({"path": a, "access": "read"})
            elif a in machine.files and machine.files[a]["kind"] == "dir":
                needs.append({"path": a, "access": "list"})
    for ef in process["env_files"]:
        # systemd reads EnvironmentFile= itself (as root), before it drops to User=.
        needs.append({"path": ef["path"], "access": "read", "as_root": True, "optional": ef["optional"]})
    for key in ("ACTIONS_RUNNER_HOOK_JOB_STARTED",):
        pass
    if process.get("unit") and process["unit"] in machine.units:
        svc = machine.units[process["unit"]]["sections"].get("Service", {})
        for wd in svc.get("WorkingDirectory", []):
            needs.append({"path": wd.lstrip("-"), "access": "list"})
    return needs


def aws_config_of(machine, process):
    env = process["env"]
    path = env.get("AWS_CONFIG_FILE")
    how = "AWS_CONFIG_FILE"
    if not path:
        home = env.get("HOME")
        how = "$HOME/.aws/config (HOME=%s)"
        if not home:
            # botocore (os.path.expanduser) and the Go SDK v2 fall back to the passwd entry.
            home = (machine.users.get(process["user"]) or {}).get("home")
            how = "~/.aws/config (no $HOME; the passwd home %s)"
        if not home:
            return {"path": None, "how": "no HOME and no AWS_CONFIG_FILE in the environment"}
        path, how = posixpath.join(home, ".aws/config"), how % home
    return {"path": path, "how": how}


def parse_ini_default(text):
    out, section = {}, None
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]").strip()
            continue
        if section in ("default", "profile default") and "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def credentials_of(machine, process, cloud):
    cfg = aws_config_of(machine, process)
    result = {"config": cfg, "kind": "none", "files": []}
    f = machine.files.get(cfg["path"]) if cfg["path"] else None
    settings = parse_ini_default(f.get("content")) if f and isinstance(f.get("content"), str) else {}
    result["region"] = process["env"].get("AWS_REGION") or process["env"].get("AWS_DEFAULT_REGION") or settings.get("region")
    if cfg["path"]:
        result["files"].append({"path": cfg["path"], "access": "read", "optional": True})
    cp = settings.get("credential_process")
    if cp:
        argv = shlex.split(cp)
        result["credential_process"] = argv
        result["files"].append({"path": argv[0], "access": "exec"})
        if argv[0].endswith("aws_signing_helper"):
            result.update(kind="roles-anywhere", role_arn=arg_after(argv, "--role-arn"),
                          profile_arn=arg_after(argv, "--profile-arn"), trust_anchor_arn=arg_after(argv, "--trust-anchor-arn"),
                          certificate=arg_after(argv, "--certificate"), private_key=arg_after(argv, "--private-key"))
            for flag in ("--certificate", "--private-key"):
                if arg_after(argv, flag):
                    result["files"].append({"path": arg_after(argv, flag), "access": "read"})
        else:
            result["kind"] = "credential-process"
            for a in argv[1:]:
                if a.startswith("/"):
                    result["files"].append({"path": a, "access": "read"})
                    imds_copy = a
                    result["imds_copy"] = imds_copy
            result["role_arn"] = "instance-profile"
    elif cloud.get("imds_blocked"):
        # A job VM: the host's nftables drop every packet from the VM to the metadata address.
        result["imds"] = "blocked by the host's firewall (job-vm.json network.blockedCidrs)"
    elif process["user"] == "root" and machine.pillar.get("ci_fleet", {}).get("provider") == "aws":
        result["kind"] = "imds"
        result["role_arn"] = "instance-profile"
    elif process["user"] != "root" and machine.pillar.get("ci_fleet", {}).get("provider") == "aws" and not cloud["imds_root_only"]:
        result["kind"] = "imds"
        result["role_arn"] = "instance-profile"
    return result


# AWS-calling programs: how to recognise them in a process and what they call, from their source.
def aws_calls(machine, process, scripts, hooks_src):
    argv = process.get("argv_resolved", process["argv"])
    exe = argv[0] if argv else ""
    text = scripts.get(exe) or ""
    calls = []
    if process["kind"] == "buildkite-hook":
        if process.get("hook") == "environment":
            for m in re.finditer(r"new (\w+)Command\(", hooks_src.get("aws.ts", "")):
                calls.append({"api": "ssm:" + m.group(1), "via": "hooks/buildkite/src/aws.ts",
                              "ssm_path": process["env"].get("CI_FLEET_SSM_PREFIX")})
        return calls
    if exe.endswith("/teleport") and "start" in argv:
        conf = machine.files.get(arg_after(argv, "--config") or "/etc/teleport.yaml")
        if conf and isinstance(conf.get("content"), str):
            storage = (yaml.safe_load(conf["content"]) or {}).get("teleport", {}).get("storage", {}) or {}
            for uri in storage.get("audit_events_uri", []) or []:
                if uri.startswith("dynamodb://"):
                    table = uri[len("dynamodb://"):].split("?")[0]
                    for api in ("dynamodb:PutItem", "dynamodb:Query", "dynamodb:DescribeTable"):
                        calls.append({"api": api, "via": "teleport audit_events_uri", "dynamodb_table": table})
            uri = storage.get("audit_sessions_uri") or ""
            if uri.startswith("s3://"):
                bucket = uri[len("s3://"):].split("/")[0].split("?")[0]
                for api in ("s3:PutObject", "s3:GetObject"):
                    calls.append({"api": api, "via": "teleport audit_sessions_uri", "s3_bucket": bucket})
        return calls
    for m in re.finditer(r"\.(get_parameters_by_path|get_parameter)\(", text):
        api = "ssm:" + "".join(p.capitalize() for p in m.group(1).split("_")).replace("Parameters", "Parameters")
        api = {"ssm:GetParametersByPath": "ssm:GetParametersByPath", "ssm:GetParameter": "ssm:GetParameter"}.get(
            api.replace("Getparametersbypath", "GetParametersByPath"), api)
        entry = {"api": "ssm:GetParametersByPath" if "by_path" in m.group(1) else "ssm:GetParameter", "via": exe}
        if arg_after(argv, "--parameter"):
            entry["ssm_parameter"] = arg_after(argv, "--parameter")
        if arg_after(argv, "--stack"):
            entry["ssm_path"] = "/ci-fleet/%s/pillar/" % arg_after(argv, "--stack")
        entry["with_decryption"] = "WithDecryption=True" in text or '"WithDecryption": True' in text
        calls.append(entry)
    if "169.254.169.254" in text:
        calls.append({"api": "imds:security-credentials", "via": exe})
    return calls


# --- shell requirements ------------------------------------------------------------------------

def shell_required(text):
    """Variables a shell script cannot run without: ${VAR:?...}, and under `set -u` every
    $VAR it reads without a default and never assigns itself."""
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", text))
    if re.search(r"^\s*set\s+-[a-z]*u", text, re.M):
        assigned = set(re.findall(r"(?:^|[\s;(])([A-Za-z_][A-Za-z0-9_]*)=", text))
        assigned |= set(re.findall(r"\bfor\s+([A-Za-z_][A-Za-z0-9_]*)\s+in", text))
        assigned |= set(re.findall(r"\bread\s+(?:-r\s+)?([A-Za-z_][A-Za-z0-9_]*)", text))
        body = re.sub(r"<<'?(\w+)'?\n.*?\n\1\n", "", text, flags=re.S)
        body = "\n".join(l for l in body.splitlines() if not l.lstrip().startswith("#"))
        defaulted = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?[-=+]", body))
        for m in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-=+?][^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)", body):
            var = m.group(1) or m.group(3)
            # A variable the script reads with a default anywhere is one it handles when unset.
            if var in assigned or var in defaulted:
                continue
            required.add(var)
    return sorted(required)


def python_required(text):
    return sorted(set(re.findall(r"os\.environ\[\s*[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']\s*\]", text)))


def sourced_env(machine, text):
    env = {}
    for m in re.finditer(r"(?:^|[;\s])\.\s+(/[^\s;]+)", text):
        f = machine.files.get(m.group(1))
        if f and isinstance(f.get("content"), str):
            env.update(parse_env_text(f["content"]))
    return env


def bootstrap_runs(machine, cloud):
    """cloud-init's runcmd/bootcmd entries that run a script cloud-init wrote: env prefix + script."""
    runs = []
    for c in cloud["commands"]:
        argv = list(c["argv"])
        env = {}
        if argv and argv[0] == "env":
            argv = argv[1:]
            while argv and "=" in argv[0] and not argv[0].startswith("/"):
                k, _, v = argv.pop(0).partition("=")
                env[k] = v
        if argv and argv[0] in machine.files and isinstance(machine.files[argv[0]].get("content"), str):
            runs.append({"source": "cloud-init %s %s" % (c["phase"], argv[0]), "kind": "cloud-init", "user": "root",
                         "group": "root", "argv": argv, "command": " ".join(argv), "env": env})
    return runs


# --- isolation vm: the job VM a slot boots, and the job in it -----------------------------------

JOB_VM_JOB_SOURCE = "job in a slot's VM (ci-job-guest)"
# A representative GitHub job input (ci-job-guest's contract: one per VM, on its virtio port);
# a Buildkite VM gets the input the host's real handoff builds (handoff_input).
GITHUB_JOB_INPUT = {"kind": "github", "jitconfig": "x"}
# virt-customize options that take no value (virt-customize(1)); every other option takes one.
VIRT_CUSTOMIZE_FLAGS = ("--update", "--selinux-relabel", "--no-selinux-relabel", "--network", "--no-network",
                        "-v", "--verbose", "-x", "-q", "--quiet", "--dry-run", "-n")


# What only the host's session timer gives ci-fleet-aws-session (its file, the file's group, its alarm).
SESSION_FILE_OPTIONS = ("--output", "--group", "--alarm-dir")


def strip_options(argv, options):
    """argv without each of `options` and its value."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in options:
            skip = True
        else:
            out.append(a)
    return out


def session_writer(writer):
    """What the writer of a session file (ci-fleet-aws-session, root's timer) says of the session."""
    wargv = writer["argv_resolved"]
    return {"source": writer["source"], "user": writer["user"], "via": arg_after(wargv, "--source"),
            "role_arn": arg_after(wargv, "--role-arn"), "profile_arn": arg_after(wargv, "--profile-arn"),
            "trust_anchor_arn": arg_after(wargv, "--trust-anchor-arn"),
            "certificate": arg_after(wargv, "--certificate"), "private_key": arg_after(wargv, "--private-key")}


def image_build_steps(text):
    """The golden image's build script (runner.job_vm_image, rendered): the files it writes with
    heredocs ("$work/NAME" -> text) and virt-customize's operations, in order ((option, value))."""
    heredocs = {}
    for m in re.finditer(r"^cat > \"?(\$work/[^\s\"]+)\"? <<'?(\w+)'?\n(.*?)\n\2$", text, re.M | re.S):
        heredocs[m.group(1)] = m.group(3) + "\n"
    line = next((l for l in text.replace("\\\n", " ").splitlines()
                 if not l.lstrip().startswith("#") and re.search(r"\bvirt-customize\b", l)), "")
    argv = shlex.split(line)
    ops, i = [], (argv.index("virt-customize") + 1 if "virt-customize" in argv else len(argv))
    while i < len(argv):
        if argv[i] in VIRT_CUSTOMIZE_FLAGS or i + 1 >= len(argv):
            ops.append((argv[i], None))
            i += 1
        else:
            ops.append((argv[i], argv[i + 1]))
            i += 2
    return heredocs, ops


def useradd_user(command):
    """useradd's effect (Ubuntu 24.04 login.defs: USERGROUPS_ENAB yes, a group named like the
    user; HOME_MODE 0750): (name, home, shell, supplementary groups) or None."""
    argv = shlex.split(command.split("&&")[0])
    if not argv or argv[0] != "useradd":
        return None
    home, shell, groups, create, name = None, "/bin/sh", [], False, None
    i = 1
    while i < len(argv):
        a = argv[i]
        if a in ("-m", "--create-home"):
            create = True
        elif a in ("-s", "--shell", "-d", "--home-dir", "-G", "--groups") and i + 1 < len(argv):
            v = argv[i + 1]
            if a in ("-s", "--shell"):
                shell = v
            elif a in ("-d", "--home-dir"):
                home = v
            else:
                groups = v.split(",")
            i += 1
        elif not a.startswith("-"):
            name = a
        i += 1
    return name and {"name": name, "home": home or "/home/" + name, "shell": shell, "groups": groups, "create_home": create}


class FakeGrp:
    """grp for the guest's own functions: each user's own group (useradd's USERGROUPS_ENAB), gid = uid."""

    def __init__(self, users):
        self.users = users

    def getgrgid(self, gid):
        import types
        name = next(n for n, u in self.users.items() if u["uid"] == gid)
        return types.SimpleNamespace(gr_name=name, gr_gid=gid)

    def getgrnam(self, name):
        import types
        return types.SimpleNamespace(gr_name=name, gr_gid=self.users[name]["uid"])


class FakePwd:
    """pwd for the guest's own functions: the users the image build made."""

    def __init__(self, users):
        self.users = users

    def getpwnam(self, name):
        import types
        u = self.users[name]
        return types.SimpleNamespace(pw_name=name, pw_dir=u["home"], pw_shell=u.get("shell") or "/bin/sh",
                                     pw_uid=u["uid"], pw_gid=u["uid"])


# What Buildkite puts in every job's environment besides the agent's own (the job's fields from
# the accept response: buildkite/agent agent/job_runner.go createEnvironment, docs "Buildkite
# environment variables"); the job's token is job-scoped (bkaj_, see AGENT_JOB_ENV).
BUILDKITE_JOB_FIELDS = {"BUILDKITE_JOB_ID": "<the job's id>", "BUILDKITE_BUILD_ID": "<the build's id>",
                        "BUILDKITE_PIPELINE_SLUG": "<pipeline>", "BUILDKITE_REPO": "<repository>",
                        "BUILDKITE_COMMIT": "<commit>", "BUILDKITE_BRANCH": "<branch>", "BUILDKITE": "true", "CI": "true"}


def handoff_input(job_proc, scripts):
    """The job input the host's real ci-job-handoff (the Buildkite bootstrap-script with
    isolation vm) sends the launcher, from the job process's modelled environment plus what
    Buildkite gives every job: its script run with stand-ins for the modules it imports (its
    environment, a no-op lock, the launcher call recorded). Returns (input, None) or (None, why)."""
    import types
    exe = job_proc["argv"][0] if job_proc and job_proc["argv"] else ""
    text = scripts.get(exe)
    if not isinstance(text, str):
        return None, "the handoff %s is written by no part" % exe
    env = dict(job_proc["env"], **BUILDKITE_JOB_FIELDS)
    env["BUILDKITE_AGENT_ACCESS_TOKEN"] = "bkaj_<the job's token>"
    sent = {}

    def run(argv, input=None, env=None, **_kw):  # noqa: A002 - subprocess.run's own name
        sent.update(argv=list(argv), input=input)
        return types.SimpleNamespace(returncode=0)

    # The job's env JSON file as the agent writes it (agent/job_runner.go createJobEnvFiles: 0600,
    # the agent's user; here the current user stands in for it), read with the real file calls.
    env_file = tempfile.NamedTemporaryFile("w", prefix="job-env-json-", suffix=".json", delete=False)
    with env_file:
        json.dump(BUILDKITE_JOB_FIELDS, env_file)
    os.chmod(env_file.name, 0o600)
    env["BUILDKITE_ENV_JSON_FILE"] = env_file.name
    fake_os = types.SimpleNamespace(environ=env, path=posixpath, makedirs=lambda *a, **k: None,
                                    **{k: getattr(os, k) for k in ("open", "fstat", "read", "close", "O_RDONLY", "O_NOFOLLOW", "O_NONBLOCK", "O_CLOEXEC")})
    class Popen:  # subprocess.Popen as the handoff uses it: started, fed the input, waited for
        def __init__(self, argv, stdin=None, env=None, **_kw):
            self.argv, self.returncode = list(argv), None

        def send_signal(self, _signum):
            pass

        def communicate(self, input=None):  # noqa: A002 - Popen.communicate's own name
            sent.update(argv=self.argv, input=input)
            self.returncode = 0
            return None, None

    fakes = {"os": fake_os, "subprocess": types.SimpleNamespace(run=run, Popen=Popen, PIPE=-1),
             "signal": types.SimpleNamespace(SIGTERM=15, SIGINT=2, SIGHUP=1, signal=lambda *a: None),
             "pwd": types.SimpleNamespace(getpwnam=lambda name: types.SimpleNamespace(pw_uid=os.getuid())),
             "fcntl": types.SimpleNamespace(flock=lambda *a: None, LOCK_EX=2, LOCK_NB=4),
             "sys": types.SimpleNamespace(exit=sys.exit), "json": json}
    real_import = __builtins__["__import__"] if isinstance(__builtins__, dict) else __builtins__.__import__

    def fake_import(name, *args, **kwargs):
        return fakes[name] if name in fakes else real_import(name, *args, **kwargs)
    builtins = dict(__builtins__ if isinstance(__builtins__, dict) else vars(__builtins__))
    builtins.update(__import__=fake_import, open=lambda *a, **k: types.SimpleNamespace(close=lambda: None))
    try:
        exec(compile(text, exe, "exec"), {"__builtins__": builtins, "__name__": "__main__"})  # noqa: S102 - the tree's own script
    except SystemExit as stop:
        if not sent:
            return None, "%s hands nothing to a slot: %s" % (exe, stop.code)
    finally:
        os.unlink(env_file.name)
    if not sent:
        return None, "%s hands nothing to a slot" % exe
    return json.loads(sent["input"]), None


def guest_hook_processes(guest, job, hooks_src):
    """The agent hooks the guest's `buildkite-agent bootstrap` runs: the files in its
    BUILDKITE_HOOKS_PATH (buildkite/agent v3.123.1 clicommand/global.go HooksPathFlag; the executor's
    executeGlobalHook finds each hook there, internal/job/hook/hook.go Find), sourced in the job
    process: the job's user, environment and AWS credentials (the queue role's session)."""
    hooks_dir = job["env"].get("BUILDKITE_HOOKS_PATH")
    out = []
    for path, f in sorted(guest.files.items()):
        if not hooks_dir or posixpath.dirname(path) != hooks_dir or f["kind"] != "file" or path.endswith(".js"):
            continue
        name = posixpath.basename(path)
        hook = dict(copy.deepcopy(job), source="buildkite hook " + name, kind="buildkite-hook", command=path, argv=[path],
                    argv_resolved=[path], hook=name, runs_jobs=False, unresolved_command_vars=[], requires_env=[])
        hook["needs"] = [{"path": path, "access": "read"}]
        if hook["env"].get("CI_FLEET_STATE_DIR"):
            # The hooks make their state directory (mkdir -p, 0700) in the job user's own tree.
            hook["needs"].append({"path": posixpath.dirname(hook["env"]["CI_FLEET_STATE_DIR"]), "access": "write"})
        for m in re.finditer(r"/([A-Za-z0-9_.-]+\.js)", f.get("content") or ""):
            hook["needs"].append({"path": posixpath.join(hooks_dir, m.group(1)), "access": "read"})
        if name == "environment":
            for m in re.finditer(r"required\(env, \"([A-Z_][A-Z0-9_]*)\"", "".join(hooks_src.values())):
                hook["requires_env"].append({"var": m.group(1), "by": "hooks/buildkite/src (required(env, ...))"})
        hook["aws_calls"] = aws_calls(guest, hook, {}, hooks_src)
        out.append(hook)
    return out


def job_vm_guest(host, processes, writers, handoff=None, hooks_src=None):
    """The guest machine of an isolation-vm runner: what the golden image's build script puts in
    it (the job user, the guest agent and its unit, the CI agent), what the guest agent writes for
    the queue role's session (its real aws_files), and the job it starts (its real job_command),
    with the AWS credentials that job resolves and who, on the HOST, writes the session the
    launcher copies in (the --output of the host process whose file job-vm.json names)."""
    launcher = next((p for p in processes if p["argv_resolved"] and posixpath.basename(p["argv_resolved"][0]) == "ci-job-slot"
                     and p["argv_resolved"][1:2] == ["run"] and arg_after(p["argv_resolved"], "--config")), None)
    if launcher is None:
        return None
    config_path = arg_after(launcher["argv_resolved"], "--config")
    config_file = host.files.get(config_path)
    if not config_file or not isinstance(config_file.get("content"), str):
        return None
    scripts = {p: f["content"] for p, f in host.files.items() if f["kind"] == "file" and isinstance(f.get("content"), str)}
    provider = host.pillar.get("ci_fleet", {}).get("provider")
    guest = Machine(host.id + "/vm", {"ci_fleet": {"provider": provider}})
    info = {"host": host.id, "config": config_path, "launcher": launcher["source"], "aws": None, "problems": []}
    # The launcher's own reading of its config (load_config) and the seed it gives each VM (render_seed).
    cfg = json.loads(config_file["content"])
    launcher_text = scripts.get(launcher["argv_resolved"][0], "")
    seed = {}
    slot_module = None
    if launcher_text:
        slot_module = load_script(launcher_text, "ci_job_slot_model")
        with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
            handle.write(config_file["content"])
            handle.flush()
            try:
                cfg = slot_module.load_config(handle.name)
            except Exception as error:  # noqa: BLE001 - reported to the test
                info["problems"].append("the launcher refuses %s: %s" % (config_path, error))
        if hasattr(slot_module, "render_seed") and "_base" in cfg:
            text = slot_module.render_seed(cfg, slot_module.Slot(cfg, 0), 1, False)
            seed = dict(l.split("=", 1) for l in text.splitlines() if "=" in l)
    info["aws"] = cfg.get("aws")
    info["seed"] = seed
    blocked = []
    for cidr in (cfg.get("network") or {}).get("blockedCidrs", []):
        try:
            blocked.append(ipaddress.ip_network(cidr))
        except ValueError:
            pass
    imds_blocked = any(ipaddress.ip_address("169.254.169.254") in net for net in blocked)
    cloud = {"write_files": [], "commands": [], "imds_root_only": imds_blocked, "imds_blocked": imds_blocked}
    # The golden image as its build script makes it (after the OS baseline).
    build = next(((p, t) for p, t in sorted(scripts.items()) if t.startswith("#!/bin/sh") and re.search(r"^[^#\n]*\bvirt-customize\b", t, re.M)), None)
    if build is None:
        info["problems"].append("no golden image build script (virt-customize) on %s" % host.id)
        return guest_json(guest, provider, host, info, cloud, [])
    info["image_build"] = build[0]
    heredocs, ops = image_build_steps(build[1])
    writer = "image build %s (virt-customize %%s)" % build[0]
    uid = 1000
    for op, value in ops:
        if op == "--run-command" and value:
            user = useradd_user(value)
            if user:
                guest.users[user["name"]] = {"name": user["name"], "uid": uid, "home": user["home"], "groups": user["groups"],
                                             "system": False, "shell": user["shell"]}
                uid += 1
                guest.groups.setdefault(user["name"], {"name": user["name"]})
                for g in user["groups"]:
                    guest.groups.setdefault(g, {"name": g})
                if user["create_home"]:
                    guest.put(user["home"], "dir", user["name"], user["name"], HOME_MODE, writer % "--run-command useradd")
            apply_shell_effects(guest, value, writer % "--run-command")
        elif op == "--copy-in" and value:
            src, _, dest_dir = value.rpartition(":")
            dest = posixpath.join(dest_dir, posixpath.basename(src))
            if src in heredocs:
                guest.put(dest, "file", "root", "root", 0o644, writer % "--copy-in (a heredoc of the build)", heredocs[src])
            else:
                f = host.files.get(src)
                guest.put(dest, "file", "root", "root", f["mode"] if f else 0o644, writer % ("--copy-in " + src),
                          f.get("content") if f else None)
                if f is None and not src.startswith(PACKAGED_EXECUTABLES):
                    info["problems"].append("the image build copies in %s, which nothing writes on %s" % (src, host.id))
        elif op == "--chmod" and value:
            mode, _, path = value.partition(":")
            if path in guest.files:
                guest.files[path]["mode"] = int(mode, 8)
        elif op == "--mkdir" and value:
            guest.put(value, "dir", "root", "root", 0o755, writer % "--mkdir")
        elif op == "--upload" and value:
            src, _, dest = value.rpartition(":")
            if dest.endswith((".tar.gz", ".tgz")):
                # The runner tarball (pinned sha256, checked by the build) is extracted in place.
                guest.files[posixpath.dirname(dest)]["archive"] = "%s (sha256-checked by %s)" % (src, build[0])
    guest.units = collect_units(guest, set())
    unit_procs = unit_processes(guest, guest.units)
    agent_proc = next((p for p in unit_procs if p["source"].endswith(" ExecStart")), None)
    agent_path = agent_proc["argv"][0] if agent_proc and agent_proc["argv"] else None
    agent_text = (guest.files.get(agent_path) or {}).get("content") if agent_path else None
    if not isinstance(agent_text, str):
        info["problems"].append("the guest's unit starts %s, which the image does not carry" % agent_path)
        return guest_json(guest, provider, host, info, cloud, [])
    info["guest_agent"] = agent_path
    module = load_script(agent_text, "ci_job_guest_model")
    job_user = module.JOB_USER
    if job_user not in guest.users:
        info["problems"].append("ci-job-guest runs jobs as %s, which the image build does not create" % job_user)
    # The session the launcher copies in: what the guest agent writes for it.
    aws = info["aws"] if isinstance(info["aws"], dict) else None
    region = seed.get("aws_region") if seed else (aws or {}).get("region")
    guest.users["root"]["uid"] = 0
    module.pwd, module.grp = FakePwd(guest.users), FakeGrp(guest.users)
    # The group the guest gives the session to: its own job_group() when it has one (the job user's primary group).
    job_group = module.job_group() if hasattr(module, "job_group") and job_user in guest.users else job_user
    if aws:
        if hasattr(module, "aws_files"):
            for f in module.aws_files(region, job_group):
                guest.put(f["path"], f["kind"], f["owner"], f["group"], f["mode"] if isinstance(f["mode"], int) else int(str(f["mode"]), 8),
                          "run time: %s aws_files (root, from the session the host's launcher mints for this VM)" % agent_path,
                          f.get("content") if isinstance(f.get("content"), str) else None)
        else:
            info["problems"].append("%s has no aws_files: it writes no session or AWS config in the VM" % agent_path)
    processes_out = []
    for p in unit_procs:
        p["argv_resolved"] = p["argv"]
        p["needs"] = needs_of(guest, p)
        text = (guest.files.get(p["argv"][0] if p["argv"] else "") or {}).get("content") or ""
        p["requires_env"] = [{"var": v, "by": p["argv"][0] + " (python os.environ)"} for v in python_required(text)] if text.startswith("#!/usr/bin/python3") else []
        p["aws_calls"], p["runs_jobs"] = [], False
        processes_out.append(p)
    # The job: ci-job-guest's real job_user() environment and job_command(), as the job user.
    agent_kind = "buildkite" if host.pillar.get("ci_fleet", {}).get("runner", {}).get("agent") == "buildkite" else "github"
    env, _drop = module.job_user()
    kwargs = {"runner_dir": module.RUNNER_DIR}
    if "aws_region" in inspect.signature(module.job_command).parameters:
        kwargs["aws_region"] = region if aws else None
    elif aws:
        info["problems"].append("%s job_command takes no aws_region: the job gets no AWS config" % agent_path)
    # The queue's SSM namespace for the job-secrets hooks: the seed's ssm_prefix, as main() passes it.
    if "ssm_prefix" in inspect.signature(module.job_command).parameters:
        kwargs["ssm_prefix"] = seed.get("ssm_prefix") or None
    # The job input: Buildkite's from the host's real handoff; GitHub's a representative one
    # (its just-in-time config comes from the master through the slot's inbox).
    job_input = copy.deepcopy(GITHUB_JOB_INPUT)
    if agent_kind == "buildkite":
        job_input, why = handoff_input(handoff, scripts) if handoff else (None, "no Buildkite job handoff on the host")
        if why:
            info["problems"].append(why)
            return guest_json(guest, provider, host, info, cloud, processes_out)
    try:
        argv, env = module.job_command(job_input, env, **kwargs)
    except RuntimeError as error:
        info["problems"].append("ci-job-guest refuses the job input: %s" % error)
        return guest_json(guest, provider, host, info, cloud, processes_out)
    exe = argv[0]
    if not exe.startswith("/"):
        exe = next((posixpath.join(d, exe) for d in env.get("PATH", "").split(":") if posixpath.join(d, exe) in guest.files), exe)
    user = guest.users.get(job_user) or {}
    job = {"source": JOB_VM_JOB_SOURCE, "unit": agent_proc["unit"], "kind": "job-vm", "user": job_user, "group": job_group,
           "command": " ".join(argv), "argv": list(argv), "argv_resolved": [exe] + list(argv[1:]), "env": env,
           "unit_env_keys": [], "env_files": [], "runtime_env_files": [], "unresolved_command_vars": [], "umask": 0o022,
           "job_input": job_input["kind"], "runs_jobs": True, "requires_env": [], "aws_calls": []}
    job["needs"] = [{"path": exe, "access": "exec"}, {"path": user.get("home", "/"), "access": "write"}]
    if agent_kind == "github":
        # run --jitconfig writes .runner and .credentials into the runner's root (actions/runner Runner.cs).
        job["needs"].append({"path": module.RUNNER_DIR, "access": "write"})
    job["credentials"] = credentials_of(guest, job, cloud)
    # The seam: the session file in the VM holds what the HOST launcher (root) minted for this VM
    # alone: the command the launcher's real aws_mint_argv builds from job-vm.json aws.command,
    # which must be the host timer's own command (the root process with an --output) without
    # the timer's file options. Never a copy of a host file.
    c = job["credentials"]
    if aws and c["kind"] == "credential-process":
        mint = {}
        if launcher_text and hasattr(slot_module, "aws_mint_argv") and isinstance(aws.get("command"), list):
            mint_slot = slot_module.Slot(cfg, 0)
            argv = slot_module.aws_mint_argv(cfg, mint_slot, 1)
            timer = next((w for w in writers.values() if strip_options(w["argv_resolved"], SESSION_FILE_OPTIONS) == aws["command"]), None)
            helper_text = scripts.get(argv[0], "")
            mint = {"minted_by": launcher["source"], "user": launcher["user"], "argv": argv,
                    "argv_vm2": slot_module.aws_mint_argv(cfg, mint_slot, 2),
                    "duration": arg_after(argv, "--duration"), "stdout": "--stdout" in argv,
                    "session_name": arg_after(argv, "--session-name"),
                    "helper": argv[0], "helper_owner": (host.files.get(argv[0]) or {}).get("owner"),
                    "helper_has_stdout_mode": "def to_stdout" in helper_text,
                    "timer": timer["source"] if timer else None,
                    "timer_output": arg_after(timer["argv_resolved"], "--output") if timer else None,
                    "config_names_timer_output": bool(timer) and arg_after(timer["argv_resolved"], "--output") in config_file["content"]}
            if timer is None:
                info["problems"].append("job-vm.json aws.command is not the command of any session timer on %s (without its file)" % host.id)
            c["session_writer"] = session_writer({"source": launcher["source"], "user": launcher["user"], "argv_resolved": argv})
            if c["session_writer"]["role_arn"]:
                c["role_arn"] = c["session_writer"]["role_arn"]
        else:
            info["problems"].append("job-vm.json's aws has no command the launcher mints a VM's session with (%s)" % sorted(aws))
        mint["guest_file"] = c.get("imds_copy")
        c["session_mint"] = mint
    processes_out.append(job)
    if agent_kind == "buildkite":
        processes_out += guest_hook_processes(guest, job, hooks_src or {})
    return guest_json(guest, provider, host, info, cloud, processes_out)


def guest_json(guest, provider, host, info, cloud, processes):
    out = guest.to_json()
    out.update({"role": "job-vm", "provider": provider, "host": host.id, "job_vm": info, "cloud_init": cloud,
                "processes": processes, "packages": [], "top_sls": [], "highstate_problems": []})
    return out


# --- one machine ---------------------------------------------------------------------------------

def model(root, minion_id, pillar, highstate, rendered_files, user_data, hooks_src):
    machine = Machine(minion_id, pillar)
    packages = set()
    roles = pillar.get("ci_fleet", {}).get("role")
    if roles == "salt-master":
        # The package's files (installed by cloud-init's runcmd); cloud-init's write_files
        # never write /etc/salt/master itself, so the order between the two does not matter.
        for path, f in SALT_MASTER_PACKAGE_FILES.items():
            machine.put(path, "file", f["owner"], f["group"], f["mode"], "package salt-master (3007)", f["content"])
        machine.users["salt"] = dict(SALT_MASTER_PACKAGE_USER)
        machine.groups["salt"] = {"name": "salt"}
    cloud = apply_cloud_init(machine, user_data or "")
    # cloud-init's bootstrap commands run before any highstate: judge them on this disk.
    at_boot = copy.copy(machine)
    at_boot.files = copy.deepcopy(machine.files)
    for sid, (sls, body) in highstate.states.items():
        for function, args in render.state_function(sid, body) if isinstance(body, dict) else []:
            if function == "pkg.installed":
                names = args.get("pkgs") or [args.get("name", sid)]
                packages.update(str(n) for n in names)
    if "buildkite-agent" in packages:
        for path, f in BUILDKITE_PACKAGE_FILES.items():
            machine.put(path, f["kind"], f["owner"], f["group"], f["mode"], "package buildkite-agent (postinst)")
        machine.users["buildkite-agent"] = dict(BUILDKITE_PACKAGE_USER)
        machine.groups["buildkite-agent"] = {"name": "buildkite-agent"}
    apply_salt(machine, highstate, root, rendered_files)
    machine.units = collect_units(machine, packages)
    scripts = {p: f["content"] for p, f in machine.files.items() if f["kind"] == "file" and isinstance(f.get("content"), str)}
    processes = unit_processes(machine, machine.units)
    # What root's ExecStartPre=+ scripts (the CI user's reset) leave on the disk at every start.
    for p in processes:
        exe = p["argv"][0] if p["argv"] else ""
        if p["source"].endswith(" ExecStartPre") and p["user"] == "root" and scripts.get(exe, "").startswith("#!/bin/sh"):
            apply_root_script(machine, scripts[exe], "run time: %s (%s)" % (exe, p["source"]))
    # Runtime env files written by an ExecStartPre (e.g. the Buildkite token) define variables too.
    for p in processes:
        written = []
        for q in processes:
            if q["unit"] == p["unit"] and q["source"].endswith("ExecStartPre"):
                exe = q["argv"][0] if q["argv"] else ""
                out = arg_after(q["argv"], "--output")
                if out in p["runtime_env_files"] and exe in scripts:
                    written += re.findall(r"[\"']([A-Z_][A-Z0-9_]*)=%s", scripts[exe])
        p["runtime_env_keys"] = sorted(set(written))
        for k in written:
            p["env"].setdefault(k, "<written at start>")
        # A start script that hands a credential to its program in the environment.
        exe = p["argv"][0] if p["argv"] else ""
        for k, path in credential_exports(machine, p, scripts.get(exe, "")).items():
            f = machine.files.get(path) or {}
            p["env"][k] = f.get("content") if isinstance(f.get("content"), str) else "<credential %s>" % path
        substitute(p)
    for p in processes:
        p["argv_for_writes"] = p["argv_resolved"]
        runtime_writes(machine, dict(p, argv=p["argv_resolved"]), scripts)
    # Who writes each --output file (the CI user's session file: the root session helper).
    writers = {}
    for p in processes:
        out = arg_after(p["argv_resolved"], "--output")
        if out:
            writers[out] = p
    if roles == "salt-master":
        processes.append(master_process(machine))
    agent = next((p for p in processes if p["unit"] == "buildkite-agent.service" and p["source"].endswith(" ExecStart")), None)
    runner = next((p for p in processes if p["unit"] == "actions-runner.service" and p["source"].endswith(" ExecStart")), None)
    # The job the agent starts (bootstrap-script): its user and environment; the hooks run in it.
    job = buildkite_job_process(machine, agent, scripts) if agent else None
    if job:
        processes.append(job)
    if agent and not (job and job.get("hands_off_to_vm")):
        processes += hook_processes(machine, job or agent)
    if runner:
        processes += github_hook_processes(machine, runner)
    for p in processes:
        p.setdefault("argv_resolved", p["argv"])
        p["needs"] = needs_of(machine, p)
        exe = p["argv_resolved"][0] if p["argv_resolved"] else ""
        text = scripts.get(exe, "")
        p["requires_env"] = []
        if text.startswith("#!/bin/sh") or text.startswith("#!/bin/bash"):
            p["requires_env"] = [{"var": v, "by": exe + " (shell)"} for v in shell_required(text)]
        elif text.startswith("#!/usr/bin/python3"):
            p["requires_env"] = [{"var": v, "by": exe + " (python os.environ)"} for v in python_required(text)]
        if p["kind"] == "buildkite-hook" and p.get("hook") == "environment":
            for m in re.finditer(r"required\(env, \"([A-Z_][A-Z0-9_]*)\"", "".join(hooks_src.values())):
                p["requires_env"].append({"var": m.group(1), "by": "hooks/buildkite/src (required(env, ...))"})
        p["aws_calls"] = aws_calls(machine, p, scripts, hooks_src)
        # The CI agent's own process: its environment is every job's (buildkite/agent
        # agent/job_runner.go processEnv := os.Environ(); actions/runner JobDispatcher.cs starts
        # the worker with environment: null and ProcessInvoker.cs adds to the inherited one),
        # and jobs get the queue role by design.
        # A job handed off to a VM runs there, not here: the handoff runs no job code.
        p["runs_jobs"] = (p is (job or agent) and not (job and job.get("hands_off_to_vm") and p is job)) or p is runner
        if p["aws_calls"] or p["kind"] == "buildkite-hook" or p["runs_jobs"]:
            p["credentials"] = credentials_of(machine, p, cloud)
            copy_path = p["credentials"].get("imds_copy")
            writer = writers.get(copy_path) if copy_path else None
            if writer is not None:
                p["credentials"]["session_writer"] = session_writer(writer)
                if p["credentials"]["session_writer"]["role_arn"]:
                    p["credentials"]["role_arn"] = p["credentials"]["session_writer"]["role_arn"]
    # isolation vm: the guest each slot boots, with the job in it (a machine of its own).
    guest = job_vm_guest(machine, processes, writers, job if job and job.get("hands_off_to_vm") else None, hooks_src)
    runs = bootstrap_runs(at_boot, cloud)
    boot_scripts = {p: f["content"] for p, f in at_boot.files.items() if f["kind"] == "file" and isinstance(f.get("content"), str)}
    for r in runs:
        text = boot_scripts.get(r["argv"][0], "")
        provided = dict(r["env"])
        provided.update(sourced_env(at_boot, text))
        r["env"] = provided
        r["requires_env"] = [{"var": v, "by": r["argv"][0] + " (shell)"} for v in shell_required(text)]
        r["needs"], r["aws_calls"] = [], []
        # The master's first pillar sync, run by its bootstrap script with the environment it sources.
        if re.search(r"ci_fleet_pillar_sync\.py", text):
            r["aws_calls"] = [{"api": "ssm:GetParametersByPath", "via": r["argv"][0] + " (first pillar sync)",
                               "ssm_path": provided.get("CI_FLEET_SSM_PILLAR_PREFIX"), "with_decryption": True}]
            r["credentials"] = credentials_of(at_boot, r, cloud)
        # The master's key pairs from SSM (ci_fleet_master_pki.py), read with the same credentials.
        m = re.search(r'ci_fleet_master_pki\.py[\s\\]+--parameter "\$\{CI_FLEET_SSM_PILLAR_PREFIX\}([^"]+)"', text)
        if m:
            r["aws_calls"].append({"api": "ssm:GetParameter", "via": r["argv"][0] + " (the master's key pairs)",
                                   "ssm_parameter": (provided.get("CI_FLEET_SSM_PILLAR_PREFIX") or "") + m.group(1), "with_decryption": True})
            r["credentials"] = credentials_of(at_boot, r, cloud)
    out = machine.to_json()
    out["cloud_init"] = cloud
    out["processes"] = processes + runs
    out["provider"] = pillar.get("ci_fleet", {}).get("provider")
    out["role"] = roles
    out["packages"] = sorted(packages)
    out["aws_pillar"] = {k: v for k, v in (pillar.get("ci_fleet", {}).get("aws") or {}).items()
                         if k in ("region", "role_arn", "ssm_prefix")}
    ra = (pillar.get("ci_fleet", {}).get("aws") or {}).get("roles_anywhere") or {}
    out["aws_pillar"]["roles_anywhere"] = {k: ra[k] for k in ("trust_anchor_arn", "profile_arn") if k in ra}
    out["highstate_problems"] = highstate.errors
    if guest is not None:
        guest["aws_pillar"] = copy.deepcopy(out["aws_pillar"])
        out["job_vm_guest"] = guest
    return out


def roles_anywhere_subjects(root, docs):
    """The subject the master's signer (salt/_runners/ci_fleet_pki.py subject_for) gives each
    minion, from the index the pillar sync builds out of the program's documents."""
    pki = load_script(open(os.path.join(root, "_runners", "ci_fleet_pki.py")).read(), "ci_fleet_pki_model")
    index = {}
    master = None
    for minion_id, doc in docs.items():
        fleet = doc.get("ci_fleet", {})
        index[minion_id] = {"role": fleet.get("role"), **({"queue": fleet["runner"]["queue"]} if fleet.get("runner") else {})}
        if fleet.get("role") == "salt-master":
            master = minion_id
    out = {}
    for minion_id, doc in docs.items():
        stack = doc.get("ci_fleet", {}).get("stack")
        try:
            cn, ou, o = pki.subject_for(stack, master, index, minion_id)
            out[minion_id] = {"commonName": cn, "organizationalUnit": ou, "organization": o}
        except pki.Refused as error:
            out[minion_id] = {"refused": str(error)}
    return out


def build(root, documents_file, user_data_file, hooks_dir):
    root = os.path.abspath(root)
    docs = render.program_documents(documents_file, root)
    with open(user_data_file) as handle:
        user_data = json.load(handle)
    hooks_src = {}
    if hooks_dir and os.path.isdir(hooks_dir):
        for name in os.listdir(hooks_dir):
            if name.endswith(".ts"):
                with open(os.path.join(hooks_dir, name)) as handle:
                    hooks_src[name] = handle.read()
    result = {"machines": {}, "errors": []}
    subjects = roles_anywhere_subjects(root, docs)
    with tempfile.TemporaryDirectory() as pillar_dir:
        os.makedirs(os.path.join(pillar_dir, "minions"))
        for minion_id, doc in docs.items():
            with open(os.path.join(pillar_dir, "minions", minion_id + ".json"), "w") as handle:
                json.dump(doc, handle)
        env = render.make_env([root])
        for minion_id in sorted(docs):
            try:
                pillar, _names, _m = render.compile_pillar(root, pillar_dir, minion_id, render.Recorder())
                grains = render.grains_for(minion_id)
                extra = {"salt": render.salt_functions(pillar, grains, render.Recorder())}
                top = render.parse_rendered(render.render_file(env, "top.sls", pillar, grains, minion_id, extra))
                top_sls, _ = render.top_sls_for(top, minion_id)
                highstate = render.Highstate(root, env, pillar, grains, minion_id, extra)
                for sls in top_sls:
                    highstate.add(sls)
                problems = render.check_states(highstate, root, render.KNOWN_STATE_FUNCTIONS)
                m = model(root, minion_id, pillar, highstate, highstate.files, user_data.get(minion_id), hooks_src)
                m["top_sls"] = top_sls
                m["roles_anywhere_subject"] = subjects.get(minion_id)
                m["highstate_problems"] = m["highstate_problems"] + problems
                guest = m.pop("job_vm_guest", None)
                result["machines"][minion_id] = m
                if guest is not None:
                    # The VM wears its host's queue role: the host's certificate subject and pillar.
                    guest["roles_anywhere_subject"] = m["roles_anywhere_subject"]
                    result["machines"][guest["id"]] = guest
            except Exception as error:  # noqa: BLE001 - reported to the test
                import traceback
                result["errors"].append("%s: %s: %s\n%s" % (minion_id, type(error).__name__, error, traceback.format_exc()))
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--salt-root", required=True)
    parser.add_argument("--documents", required=True)
    parser.add_argument("--user-data", required=True)
    parser.add_argument("--hooks-src")
    args = parser.parse_args()
    print(json.dumps(build(args.salt_root, args.documents, args.user_data, args.hooks_src), indent=1, sort_keys=True, default=str))


if __name__ == "__main__":
    main()
