#!/usr/bin/python3
"""Render each minion's highstate with the program's pillar documents and print, per
minion, every state's function and arguments (JSON). Reuses test/salt/render.py (real
Jinja2, the master's pillar top file and pillar sync) without changing its output.

  highstate.py --salt-root salt [--documents documents.json]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "salt"))
import render  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--salt-root", required=True)
    parser.add_argument("--documents", help="JSON {minion_id: pillar document}; default: test/salt/fixtures.py")
    args = parser.parse_args()
    root = os.path.abspath(args.salt_root)
    docs = render.program_documents(args.documents, root) if args.documents else render.fixtures.documents()
    out = {}
    for minion_id, pillar, _top_sls, highstate in render.highstates(root, docs):
        states = {}
        for state_id, (sls, body) in highstate.states.items():
            functions = render.state_function(state_id, body) if isinstance(body, dict) else []
            states[state_id] = {"sls": sls, "functions": [{"function": f, "args": a} for f, a in functions]}
        out[minion_id] = {
            "labels": render.traverse(pillar, "ci_fleet:teleport:labels", None),
            "errors": highstate.errors,
            "states": states,
        }
    print(json.dumps(out, indent=1, sort_keys=True, default=str))


if __name__ == "__main__":
    main()
