#!/usr/bin/python3
"""Facts about the rendered base, runner and aws_credentials formulas, for
test/base-runner/*.test.ts. Uses test/salt/render.py (real Jinja2/PyYAML, the Salt
context fake) and, for unattended-upgrades, the real `unattended-upgrade` program of the
Debian package and python3-apt's apt_pkg (libapt's own apt.conf parser).

  facts.py states --salt-root salt --documents DOCS.json
      {minion: {"states": [{id, sls, function, args}], "files": {path: text}}}
  facts.py origins --apt-conf FILE... --codename noble --distro-id Ubuntu --origins ORIGINS.json
      {"allowed_origins": [...], "matches": [bool per origin]}
"""
import argparse
import importlib.machinery
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "salt"))
import render  # noqa: E402


def states(salt_root, documents_file):
    root = os.path.abspath(salt_root)
    docs = render.program_documents(documents_file, root) if documents_file else render.fixtures.documents()
    out = {}
    for minion_id, _pillar, names, highstate in render.highstates(root, docs):
        problems = highstate.errors + render.check_states(highstate, root, render.KNOWN_STATE_FUNCTIONS)
        listed = []
        for state_id, (sls, body) in sorted(highstate.states.items()):
            for function, args in render.state_function(state_id, body):
                listed.append({"id": state_id, "sls": sls, "function": function, "args": args})
        out[minion_id] = {"top": names, "states": listed, "files": highstate.files,
                          "problems": problems}
    return out


def load_unattended_upgrade():
    path = "/usr/bin/unattended-upgrade"
    if not os.path.exists(path):
        raise SystemExit("unattended-upgrade is missing: apt-get install unattended-upgrades")
    loader = importlib.machinery.SourceFileLoader("unattended_upgrade", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


class Origin:
    """The fields of a python-apt origin that unattended-upgrade matches on."""

    def __init__(self, fields):
        self.origin = fields.get("origin", "")
        self.label = fields.get("label", "")
        self.archive = fields.get("archive", "")
        self.codename = fields.get("codename", "")
        self.component = fields.get("component", "main")
        self.site = fields.get("site", "")


def origins(apt_confs, codename, distro_id, origins_file):
    uu = load_unattended_upgrade()
    import apt_pkg
    # A fresh configuration holding only the given files, read in order like apt.conf.d.
    for key in ("Unattended-Upgrade::Allowed-Origins", "Unattended-Upgrade::Origins-Pattern"):
        apt_pkg.config.clear(key)
    for conf in apt_confs:
        apt_pkg.read_config_file(apt_pkg.config, conf)
    uu.DISTRO_CODENAME = codename
    uu.DISTRO_ID = distro_id
    allowed = uu.get_allowed_origins()
    with open(origins_file) as handle:
        wanted = json.load(handle)
    return {"allowed_origins": allowed,
            "matches": [uu.is_allowed_origin(Origin(o), allowed) for o in wanted]}


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("states")
    s.add_argument("--salt-root", required=True)
    s.add_argument("--documents")
    o = sub.add_parser("origins")
    o.add_argument("--apt-conf", action="append", required=True)
    o.add_argument("--codename", required=True)
    o.add_argument("--distro-id", required=True)
    o.add_argument("--origins", required=True)
    args = parser.parse_args()
    if args.mode == "states":
        result = states(args.salt_root, args.documents)
    else:
        result = origins(args.apt_conf, args.codename, args.distro_id, args.origins)
    print(json.dumps(result, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
