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
    import tempfile
    with tempfile.TemporaryDirectory() as pillar_dir:
        os.makedirs(os.path.join(pillar_dir, "minions"))
        for minion_id, doc in docs.items():
            with open(os.path.join(pillar_dir, "minions", minion_id + ".json"), "w") as handle:
                json.dump(doc, handle)
        env = render.make_env([root])
        for minion_id in sorted(docs):
            pillar, _, _ = render.compile_pillar(root, pillar_dir, minion_id, render.Recorder())
            grains = render.grains_for(minion_id)
            extra = {"salt": render.salt_functions(pillar, grains, render.Recorder())}
            top = render.parse_rendered(render.render_file(env, "top.sls", pillar, grains, minion_id, extra))
            names, _ = render.top_sls_for(top, minion_id)
            highstate = render.Highstate(root, env, pillar, grains, minion_id, extra)
            for sls in names:
                highstate.add(sls)
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
