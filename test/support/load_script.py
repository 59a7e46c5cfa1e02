"""Scripts of the Salt tree imported as modules by the Python tests (extensionless ones too).

  sys.path.insert(0, <repo>/test/support); from load_script import load, ROOT, SALT, LAUNCHER, GUEST
"""
import importlib.machinery
import importlib.util
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ inside the Salt tree
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The tree under test: this checkout's, or another one (CI_FLEET_SALT_ROOT, e.g. HEAD's for "fails on the old code").
SALT = os.environ.get("CI_FLEET_SALT_ROOT") or os.path.join(ROOT, "salt")
LAUNCHER = os.path.join(ROOT, "salt", "runner", "files", "ci-job-slot")
GUEST = os.path.join(ROOT, "salt", "runner", "files", "ci-job-guest")


def load(name, path):
    """The file at `path` executed as a fresh module called `name`."""
    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
