#!/usr/bin/python3
"""Render the Salt tree the way a Salt master would, for every test minion, and report
problems as JSON (one process for the whole suite; test/salt/salt.test.ts asserts).

  render.py --salt-root salt --contracts docs/contracts.md

Uses the real Jinja2 and PyYAML from Debian (python3-jinja2, python3-yaml) with a small
fake of Salt's template context: grains, pillar, opts, saltenv, sls, slspath, tpldir,
salt['pillar.get'|'grains.get'|'slsutil.merge'], import_yaml/import_json, Salt's
json/yaml_encode/sha256 filters, and a loader rooted at the tree.
"""
import argparse
import fnmatch
import hashlib
import json
import os
import re
import sys
import tempfile

try:
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
except ImportError:
    print(json.dumps({"fatal": "python3-jinja2 is not installed: apt-get install python3-jinja2"}))
    sys.exit(2)
try:
    import yaml
except ImportError:
    print(json.dumps({"fatal": "python3-yaml is not installed: apt-get install python3-yaml"}))
    sys.exit(2)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixtures  # noqa: E402

# Real Salt state functions this tree may use (module.function). Keep to Salt's names.
KNOWN_STATE_FUNCTIONS = {
    "pkg.installed", "pkg.latest", "pkg.removed", "pkg.purged",
    "pkgrepo.managed",
    "file.managed", "file.directory", "file.absent", "file.recurse", "file.symlink",
    "file.serialize", "file.replace", "file.append", "file.exists",
    "service.running", "service.dead", "service.enabled", "service.disabled", "service.masked",
    "user.present", "user.absent", "group.present",
    "cmd.run", "cmd.script",
    "archive.extracted",
    "git.latest",
    "ssh_known_hosts.present",
    "schedule.present", "schedule.absent",
    "test.fail_without_changes", "test.nop", "test.succeed_without_changes",
    "salt.runner", "salt.state", "salt.function",
}
# Reactor files call functions through these clients (runner.<fun>, local.<fun>).
REACTOR_CLIENTS = ("runner.", "local.", "wheel.")
REQUISITES = ("require", "watch", "onchanges", "onfail", "prereq", "use",
              "require_in", "watch_in", "onchanges_in", "onfail_in", "prereq_in", "use_in")
# Files other engineers build (docs/contracts.md); reported apart while they are missing.
EXTERNAL_SOURCES = ("salt://runner/files/ci-netboot-selftest", "salt://buildkite/files/hooks",
                    "salt://runner/files/ci-job-slot", "salt://runner/files/ci-job-guest")
# Inline pillar passed by the master's orchestration (salt/_runners/ci_fleet.py).
PILLAR_INLINE_PREFIXES = ("ci_fleet_inline:", "ci_fleet_job_slot")


# --- Salt's Jinja extensions, reduced to what the tree uses ---------------------------

class SerializerExtension(Extension):
    """import_yaml / import_json as in salt.utils.jinja.SerializerExtension."""

    tags = {"import_yaml", "import_json"}

    def parse(self, parser):
        loader = "load_yaml" if parser.stream.current.value == "import_yaml" else "load_json"
        import_node = parser.parse_import()
        target = import_node.target
        lineno = import_node.lineno
        return [
            import_node,
            nodes.Assign(
                nodes.Name(target, "store").set_lineno(lineno),
                nodes.Filter(nodes.Name(target, "load").set_lineno(lineno), loader,
                             [], [], None, None).set_lineno(lineno),
            ).set_lineno(lineno),
        ]


def load_yaml(value):
    return yaml.safe_load(str(value))


def load_json(value):
    return json.loads(str(value))


def salt_json(value, sort_keys=True):
    return jinja2.utils.markupsafe.Markup(json.dumps(value, sort_keys=sort_keys))


def yaml_encode(value):
    return yaml.safe_dump(value, default_flow_style=True).replace("\n...", "").strip()


def sha256(value):
    return hashlib.sha256(str(value).encode()).hexdigest()


# --- the fake Salt context --------------------------------------------------------------

def traverse(data, path, default, delimiter=":"):
    for key in path.split(delimiter):
        if isinstance(data, dict) and key in data:
            data = data[key]
        else:
            return default
    return data


def merge(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for key, value in b.items():
            out[key] = merge(out[key], value) if key in out else value
        return out
    return b


class Recorder:
    def __init__(self):
        self.pillar_paths = set()
        self.grain_paths = set()


def salt_functions(pillar, grains, recorder):
    def pillar_get(key, default="", merge=False, delimiter=":"):
        recorder.pillar_paths.add(key)
        return traverse(pillar, key, default, delimiter)

    def grains_get(key, default="", delimiter=":"):
        recorder.grain_paths.add(key)
        return traverse(grains, key, default, delimiter)

    def slsutil_merge(a, b, strategy="smart", renderer="yaml", merge_lists=False):
        return merge(a, b)

    def cp_hash_file(path, saltenv="base"):
        # As the master's roots fileserver answers (file_hash; hash_type sha256 in its config).
        name = os.path.join(SALT_ROOT[0], path[len("salt://"):]) if path.startswith("salt://") else path
        if not os.path.isfile(name):
            return {}
        with open(name, "rb") as handle:
            return {"hash_type": "sha256", "hsum": hashlib.sha256(handle.read()).hexdigest()}

    # Anything else raises KeyError: the tree may call only what is faked here.
    return {"pillar.get": pillar_get, "grains.get": grains_get, "slsutil.merge": slsutil_merge,
            "cp.hash_file": cp_hash_file}


# The tree cp.hash_file reads (run() sets it to --salt-root).
SALT_ROOT = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "salt")]


def make_env(search_path):
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search_path),
        extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols", SerializerExtension],
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update({"load_yaml": load_yaml, "load_json": load_json, "json": salt_json,
                        "yaml_encode": yaml_encode, "sha256": sha256})
    return env


def grains_for(minion_id):
    # The fleet's machines run Ubuntu 24.04 (equinix.os ubuntu_24_04; the pinned AMI).
    return {"id": minion_id, "os": "Ubuntu", "os_family": "Debian", "oscodename": "noble",
            "osarch": "amd64", "kernel": "Linux"}


def render_file(env, name, pillar, grains, minion_id, extra=None):
    recorder_ctx = {}
    sls = name[:-4].replace("/", ".") if name.endswith(".sls") else ""
    if sls.endswith(".init"):
        sls = sls[: -len(".init")]
    tpldir = os.path.dirname(name)
    context = {
        "grains": grains, "pillar": pillar, "saltenv": "base", "sls": sls,
        "slspath": tpldir, "tpldir": tpldir, "tplfile": name,
        "opts": {"id": minion_id, "saltenv": "base"},
    }
    context.update(extra or {})
    context.update(recorder_ctx)
    return env.get_template(name).render(**context)


def parse_rendered(text):
    first = text.split("\n", 1)[0]
    if first.startswith("#!"):
        pipe = first[2:].split("|")
        body = text.split("\n", 1)[1] if "\n" in text else ""
        if pipe[-1].strip() == "json":
            return json.loads(body)
    return yaml.safe_load(text)


# --- matching (the subset of Salt's matchers the top files use) -------------------------

def compound_match(expr, minion_id):
    tokens = expr.replace("(", " ( ").replace(")", " ) ").split()
    python = []
    for token in tokens:
        if token in ("and", "or", "not", "(", ")"):
            python.append(token)
        elif token.startswith("L@"):
            python.append(repr(minion_id in token[2:].split(",")))
        elif "@" in token[:3]:
            raise ValueError("matcher not supported by the harness: %s" % token)
        else:
            python.append(repr(fnmatch.fnmatchcase(minion_id, token)))
    return eval(" ".join(python), {"__builtins__": {}})  # only True/False/and/or/not


def top_sls_for(top, minion_id):
    """The sls names a top file gives the minion, in order; match types used."""
    names, matchers = [], []
    for target, entries in (top.get("base") or {}).items():
        match = "glob"
        slses = []
        for entry in entries:
            if isinstance(entry, dict):
                match = entry.get("match", match)
            else:
                slses.append(entry)
        matchers.append(match)
        if match == "glob":
            hit = fnmatch.fnmatchcase(minion_id, target)
        elif match == "list":
            hit = minion_id in (target if isinstance(target, list) else str(target).split(","))
        elif match == "compound":
            hit = compound_match(target, minion_id)
        else:
            raise ValueError("matcher not supported by the harness: %s" % match)
        if hit:
            names.extend(s for s in slses if s not in names)
    return names, matchers


# --- the contract -----------------------------------------------------------------------

def strip_jsonc(text):
    out, in_string, i = [], False, 0
    while i < len(text):
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def contract_document(contracts_md):
    with open(contracts_md) as handle:
        text = handle.read()
    block = re.search(r"```jsonc\n(.*?)```", text, re.S).group(1)
    return json.loads(strip_jsonc(block))


def key_paths(data, prefix=()):
    """Every path in a document; `<x>` keys of the contract become `*`."""
    paths = {}
    if isinstance(data, dict):
        for key, value in data.items():
            key = "*" if key.startswith("<") and key.endswith(">") else key
            path = prefix + (key,)
            paths[path] = "object" if isinstance(value, dict) else "value"
            paths.update(key_paths(value, path))
    return paths


def path_in(path, contract_paths):
    for candidate in contract_paths:
        if len(candidate) == len(path) and all(c in ("*", p) for c, p in zip(candidate, path)):
            return True
    return False


# --- checks -------------------------------------------------------------------------------

def sls_file(root, sls):
    rel = sls.replace(".", "/")
    for candidate in (rel + ".sls", rel + "/init.sls"):
        if os.path.isfile(os.path.join(root, candidate)):
            return candidate
    return None


def resolve_include(including_sls, including_file, name):
    if not name.startswith("."):
        return name
    # Relative to the including sls's package (for foo/init.sls the package is foo).
    package = including_sls if including_file.endswith("/init.sls") else including_sls.rsplit(".", 1)[0]
    return package + name


def state_function(state_id, body):
    """[(module.function, args dict)] of one state declaration."""
    out = []
    for key, value in body.items():
        if key in ("__sls__", "__env__"):
            continue
        if "." in key:
            out.append((key, merge_args(value)))
        else:
            funcs = [v for v in (value or []) if isinstance(v, str)]
            out.append(("%s.%s" % (key, funcs[0] if funcs else "?"), merge_args(value)))
    return out


def merge_args(value):
    args = {}
    for item in value or []:
        if isinstance(item, dict):
            args.update(item)
    return args


class Highstate:
    def __init__(self, root, env, pillar, grains, minion_id, extra=None):
        self.root, self.env, self.pillar, self.grains = root, env, pillar, grains
        self.minion_id, self.extra = minion_id, extra or {}
        self.states = {}      # id -> (sls, body)
        self.rendered = {}    # sls -> file
        self.errors = []
        self.external_missing = set()
        self.files = {}       # path on the minion -> rendered text (templates, contents)

    def render_sls(self, sls):
        name = sls_file(self.root, sls)
        if name is None:
            self.errors.append("sls %s does not exist" % sls)
            return None, None
        try:
            data = parse_rendered(render_file(self.env, name, self.pillar, self.grains,
                                              self.minion_id, self.extra))
        except Exception as error:  # noqa: BLE001 - reported, not raised
            self.errors.append("%s: %s: %s" % (name, type(error).__name__, error))
            return name, None
        return name, data if data is not None else {}

    def add(self, sls):
        if sls in self.rendered:
            return
        name, data = self.render_sls(sls)
        self.rendered[sls] = name
        if data is None:
            return
        if not isinstance(data, dict):
            self.errors.append("%s: does not render to a mapping" % name)
            return
        for include in data.pop("include", []) or []:
            self.add(resolve_include(sls, name, include))
        for state_id, body in data.items():
            if state_id in ("extend", "exclude"):
                self.errors.append("%s: %s is not used in this tree" % (name, state_id))
                continue
            if state_id in self.states:
                self.errors.append("duplicate state id %s (in %s and %s)"
                                   % (state_id, self.states[state_id][0], sls))
                continue
            self.states[state_id] = (sls, body)


def check_states(highstate, root, known):
    problems = []
    by_module = {}
    for state_id, (sls, body) in highstate.states.items():
        if not isinstance(body, dict):
            problems.append("%s: state body is not a mapping" % state_id)
            continue
        for function, args in state_function(state_id, body):
            by_module.setdefault(function.split(".")[0], set()).add(state_id)
            by_module.setdefault("sls", set()).add(sls)
    for state_id, (sls, body) in highstate.states.items():
        if not isinstance(body, dict):
            continue
        functions = state_function(state_id, body)
        for key, value in body.items():
            names = [k for item in (value or []) if isinstance(item, dict) for k in item] if isinstance(value, list) else []
            for name in sorted({n for n in names if names.count(n) > 1}):
                problems.append("%s: argument %s given twice (one would silently replace the other)" % (state_id, name))
        if len(functions) != 1:
            problems.append("%s: expected exactly one module.function, got %s" % (state_id, functions))
        for function, args in functions:
            if function not in known:
                problems.append("%s: unknown state function %s" % (state_id, function))
            # <formula>-<sls path>-...-<module>-<function>
            prefix = sls.replace(".", "-") + "-"
            suffix = "-" + function.replace(".", "-")
            if not (state_id.startswith(prefix) and state_id.endswith(suffix)):
                problems.append("%s: id must start with %r and end with %r" % (state_id, prefix, suffix))
            for requisite in REQUISITES:
                for ref in args.get(requisite, []) or []:
                    if not isinstance(ref, dict) or len(ref) != 1:
                        problems.append("%s: malformed %s %r" % (state_id, requisite, ref))
                        continue
                    (module, target), = ref.items()
                    if target not in by_module.get(module, set()):
                        problems.append("%s: %s %s: %s not in the highstate" % (state_id, requisite, module, target))
            if isinstance(args.get("contents"), str):
                highstate.files[args.get("name", state_id)] = args["contents"]
            source = args.get("source")
            for src in source if isinstance(source, list) else [source]:
                if isinstance(src, str) and src.startswith("salt://"):
                    path = os.path.join(root, src[len("salt://"):])
                    if not os.path.exists(path) and src in EXTERNAL_SOURCES:
                        highstate.external_missing.add(src)
                    elif not os.path.exists(path):
                        problems.append("%s: source %s does not exist" % (state_id, src))
                    elif args.get("template") == "jinja":
                        try:
                            ctx = dict(args.get("defaults") or {})
                            ctx.update(args.get("context") or {})
                            ctx = dict(highstate.extra, **ctx)
                            highstate.files[args.get("name", state_id)] = render_file(
                                highstate.env, src[len("salt://"):], highstate.pillar,
                                highstate.grains, highstate.minion_id, ctx)
                        except Exception as error:  # noqa: BLE001
                            problems.append("%s: template %s: %s: %s" % (state_id, src, type(error).__name__, error))
    return problems


def all_sls(root):
    out = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".sls"):
                out.append(os.path.relpath(os.path.join(directory, name), root))
    return sorted(out)


def sls_name(path):
    name = path[:-4].replace("/", ".")
    return name[: -len(".init")] if name.endswith(".init") else name


def compile_pillar(root, pillar_dir, minion_id, recorder):
    env = make_env([os.path.join(root, "pillar"), pillar_dir])
    grains = grains_for(minion_id)
    salt = salt_functions({}, grains, recorder)
    top = parse_rendered(render_file(env, "top.sls", {}, grains, minion_id, {"salt": salt}))
    names, matchers = top_sls_for(top, minion_id)
    pillar = {}
    for name in names:
        rel = name.replace(".", "/") + ".sls"
        data = parse_rendered(render_file(env, rel, {}, grains, minion_id, {"salt": salt}))
        pillar = merge(pillar, data or {})
    return pillar, names, matchers


def program_documents(path, root):
    """The pillar documents `pulumi up` would write (from the offline preview), as the
    master's pillar sync serves them: with the master's minion index derived by the sync."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "ci_fleet_pillar_sync", os.path.join(root, "salt_master", "files", "ci_fleet_pillar_sync.py"))
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    with open(path) as handle:
        return sync.with_minion_index(json.load(handle))


def highstates(root, docs):
    """(minion_id, pillar, top_sls, highstate) for every minion of `docs`, in id order, with
    each pillar served as the master serves it (pillar top, the documents as files)."""
    with tempfile.TemporaryDirectory() as pillar_dir:
        os.makedirs(os.path.join(pillar_dir, "minions"))
        for minion_id, doc in docs.items():
            with open(os.path.join(pillar_dir, "minions", minion_id + ".json"), "w") as handle:
                json.dump(doc, handle)
        env = make_env([root])
        for minion_id in sorted(docs):
            pillar, _, _ = compile_pillar(root, pillar_dir, minion_id, Recorder())
            grains = grains_for(minion_id)
            extra = {"salt": salt_functions(pillar, grains, Recorder())}
            top = parse_rendered(render_file(env, "top.sls", pillar, grains, minion_id, extra))
            top_sls, _ = top_sls_for(top, minion_id)
            highstate = Highstate(root, env, pillar, grains, minion_id, extra)
            for sls in top_sls:
                highstate.add(sls)
            yield minion_id, pillar, top_sls, highstate


def run(root, contracts_md, documents_file=None):
    root = os.path.abspath(root)
    SALT_ROOT[0] = root
    docs = program_documents(documents_file, root) if documents_file else fixtures.documents()
    contract = contract_document(contracts_md)
    contract_paths = key_paths(contract)
    result = {"minions": {}, "fixture_problems": [], "pillar_paths_outside_contract": [],
              "contract_top_keys": sorted(contract)}

    # The fixtures follow the contract: every path they use is one it declares.
    for minion_id, doc in docs.items():
        for path, kind in key_paths(doc).items():
            if not path_in(path, contract_paths):
                result["fixture_problems"].append("%s: %s not in docs/contracts.md" % (minion_id, ":".join(path)))

    common_recorder = Recorder()
    allowed_extra = set()
    with tempfile.TemporaryDirectory() as pillar_dir:
        os.makedirs(os.path.join(pillar_dir, "minions"))
        for minion_id, doc in docs.items():
            with open(os.path.join(pillar_dir, "minions", minion_id + ".json"), "w") as handle:
                json.dump(doc, handle)
        # Keys of the in-repo common pillar are allowed too (not part of the contract).
        common = yaml.safe_load(open(os.path.join(root, "pillar", "common.sls")).read().split("#}", 1)[-1])
        allowed_extra = {(k,) for k in (common or {})}

        state_env = make_env([root])
        all_pillar_paths = set()
        for minion_id in sorted(docs):
            out = {"problems": []}
            result["minions"][minion_id] = out
            try:
                pillar, pillar_sls, pillar_matchers = compile_pillar(root, pillar_dir, minion_id, common_recorder)
            except Exception as error:  # noqa: BLE001
                out["problems"].append("pillar: %s: %s" % (type(error).__name__, error))
                continue
            out["pillar_sls"] = pillar_sls
            out["pillar_matchers"] = pillar_matchers
            out["pillar_minion_id"] = traverse(pillar, "ci_fleet:minion_id", None)
            out["pillar_provider"] = traverse(pillar, "ci_fleet:provider", None)
            out["pillar_top_keys"] = sorted(pillar)
            out["pillar_equals_own_document"] = {k: v for k, v in pillar.items() if k != "ci_fleet_common"} == docs[minion_id]
            grains = grains_for(minion_id)
            recorder = Recorder()
            salt = salt_functions(pillar, grains, recorder)
            extra = {"salt": salt}

            top = parse_rendered(render_file(state_env, "top.sls", pillar, grains, minion_id, extra))
            top_sls, _ = top_sls_for(top, minion_id)
            out["top_sls"] = top_sls
            highstate = Highstate(root, state_env, pillar, grains, minion_id, extra)
            for sls in top_sls:
                highstate.add(sls)
            out["highstate_sls"] = sorted(highstate.rendered)
            out["state_ids"] = sorted(highstate.states)
            out["problems"].extend(highstate.errors)
            out["problems"].extend(check_states(highstate, root, KNOWN_STATE_FUNCTIONS))
            external = set(highstate.external_missing)
            out["files"] = highstate.files
            # Each state's function and arguments (for tests of what a state asks Salt to do).
            out["states"] = {sid: {"sls": sls, "function": function, "args": args}
                             for sid, (sls, body) in highstate.states.items() if isinstance(body, dict)
                             for function, args in state_function(sid, body)[:1]}

            # Every other sls (incl. orchestration) renders for this minion too.
            for path in all_sls(root):
                if path.startswith("pillar/") or path == "top.sls":
                    continue
                name = sls_name(path)
                if path.startswith("orch/reactor/"):
                    out["problems"].extend(check_reactor(state_env, path, pillar, grains, minion_id, extra))
                    continue
                if name in highstate.rendered:
                    continue
                alone = Highstate(root, state_env, pillar, grains, minion_id, extra)
                alone.add(name)
                out["problems"].extend("%s (rendered alone): %s" % (name, p) for p in alone.errors)
                out["problems"].extend("%s (rendered alone): %s" % (name, p)
                                       for p in check_states(alone, root, KNOWN_STATE_FUNCTIONS))
                external |= alone.external_missing
            out["external_sources_missing"] = sorted(external)
            out["pillar_paths"] = sorted(recorder.pillar_paths)
            out["grain_paths"] = sorted(recorder.grain_paths)
            all_pillar_paths |= recorder.pillar_paths

    for key in sorted(all_pillar_paths):
        if key.startswith(PILLAR_INLINE_PREFIXES):
            continue
        path = tuple(key.split(":"))
        if not (path_in(path, contract_paths) or path in allowed_extra):
            result["pillar_paths_outside_contract"].append(key)
    return result


def check_reactor(env, path, pillar, grains, minion_id, extra):
    problems = []
    data = {"id": minion_id, "tag": "ci-fleet/test", "data": {}}
    try:
        rendered = parse_rendered(render_file(env, path, pillar, grains, minion_id,
                                              dict(extra, data=data, tag=data["tag"])))
    except Exception as error:  # noqa: BLE001
        return ["%s: %s: %s" % (path, type(error).__name__, error)]
    for reaction_id, body in (rendered or {}).items():
        for function in body:
            if not function.startswith(REACTOR_CLIENTS):
                problems.append("%s: %s: %s is not runner./local./wheel." % (path, reaction_id, function))
    return problems


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--salt-root", required=True)
    parser.add_argument("--contracts", required=True)
    parser.add_argument("--documents", help="JSON {minion_id: pillar document} to render with instead of the fixtures")
    args = parser.parse_args()
    print(json.dumps(run(args.salt_root, args.contracts, args.documents), indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
