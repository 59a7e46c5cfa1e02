#!/usr/bin/python3
"""Issue 15: the Buildkite job's own environment in the VM (docs/job-vm.md "The Buildkite input").

The real guest agent (salt/runner/files/ci-job-guest) imported as a module; its job_command for
kind buildkite: any variable name the job's environment holds reaches `buildkite-agent bootstrap`
(pipeline, build and step env, not only BUILDKITE_*/CI*), except the names that belong to the
guest's own setup, which keep the guest's values; names that are not identifiers, non-strings,
NUL bytes and oversized input are refused with a clear error. Pure: no root needed.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from load_script import GUEST, ROOT, load  # noqa: E402


guest = load("ci_job_guest_env", GUEST)
USER_ENV = {"HOME": "/home/ci", "USER": "ci", "LOGNAME": "ci", "SHELL": "/bin/bash",
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def bk(env, **kwargs):
    job = {"kind": "buildkite", "env": dict({"BUILDKITE_JOB_ID": "job-1", "BUILDKITE_AGENT_ACCESS_TOKEN": "bkaj_x"}, **env)}
    return guest.job_command(job, USER_ENV, **kwargs)


class PipelineEnvTest(unittest.TestCase):
    def test_pipeline_step_and_build_variables_reach_the_bootstrap(self):
        argv, env = bk({"NODE_ENV": "test", "GREETING": "a b=c  d", "_X1": "", "lower_case": "x",
                        "PYTHONPATH": "src", "NODE_OPTIONS": "--max-old-space-size=4096", "LANG": "en_GB.UTF-8",
                        "CI": "true", "BUILDKITE": "true", "BUILDKITE_REPO": "https://example.org/r.git"})
        self.assertEqual(argv, ["buildkite-agent", "bootstrap"])
        for k, v in {"NODE_ENV": "test", "GREETING": "a b=c  d", "_X1": "", "lower_case": "x", "PYTHONPATH": "src",
                     "NODE_OPTIONS": "--max-old-space-size=4096", "LANG": "en_GB.UTF-8", "CI": "true",
                     "BUILDKITE": "true", "BUILDKITE_REPO": "https://example.org/r.git",
                     "BUILDKITE_AGENT_ACCESS_TOKEN": "bkaj_x"}.items():
            self.assertEqual((k, env.get(k)), (k, v))

    def test_the_guests_own_names_keep_the_guests_values(self):
        hostile = {"HOME": "/tmp/h", "USER": "root", "LOGNAME": "root", "SHELL": "/tmp/sh", "PATH": "/tmp/bin",
                   "LD_PRELOAD": "/tmp/evil.so", "LD_LIBRARY_PATH": "/tmp", "LD_AUDIT": "/tmp/a.so",
                   "BASH_ENV": "/tmp/x", "ENV": "/tmp/x", "SHELLOPTS": "xtrace", "BASHOPTS": "extdebug",
                   "IFS": "/", "PS4": "$(id)", "AWS_CONFIG_FILE": "/tmp/c", "AWS_SHARED_CREDENTIALS_FILE": "/tmp/k",
                   "BUILDKITE_AGENT_TOKEN": "bkua_secret", "BUILDKITE_BUILD_PATH": "/var/lib/buildkite-agent/builds",
                   "BUILDKITE_PLUGINS_PATH": "/var/lib/buildkite-agent/plugins"}
        _, env = bk(hostile)
        for k in ("HOME", "USER", "LOGNAME", "SHELL", "PATH"):
            self.assertEqual((k, env[k]), (k, USER_ENV[k]))
        for k in ("LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "IFS", "PS4",
                  "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "BUILDKITE_AGENT_TOKEN"):
            self.assertNotIn(k, env)
        self.assertEqual(env["BUILDKITE_BUILD_PATH"], "/home/ci/builds")
        self.assertEqual(env["BUILDKITE_PLUGINS_PATH"], "/home/ci/plugins")

    def test_aws_names_the_guest_sets_win_with_a_session_and_aws_region_is_the_jobs_without(self):
        _, env = bk({"AWS_REGION": "eu-west-1", "AWS_CONFIG_FILE": "/tmp/c", "AWS_PROFILE": "mine"}, aws_region="us-east-1")
        self.assertEqual((env["AWS_REGION"], env["AWS_CONFIG_FILE"], env["AWS_SHARED_CREDENTIALS_FILE"]),
                         ("us-east-1", guest.AWS_CONFIG, guest.AWS_CREDENTIALS_NONE))
        self.assertEqual(env["AWS_PROFILE"], "mine")
        _, env = bk({"AWS_REGION": "eu-west-1", "AWS_CONFIG_FILE": "/tmp/c"})
        self.assertEqual(env["AWS_REGION"], "eu-west-1")
        self.assertNotIn("AWS_CONFIG_FILE", env)

    def test_names_that_are_not_identifiers_and_bad_values_are_refused(self):
        for bad in ({"A=B": "x"}, {"1ABC": "x"}, {"A-B": "x"}, {"": "x"}, {"A B": "x"}, {"Ä": "x"},
                    {"X": 1}, {"X": None}, {"X": ["a"]}, {"X": "a\0b"}, {"X": "\ud800"}):
            with self.subTest(bad=bad), self.assertRaisesRegex(RuntimeError, "^buildkite job env: "):
                bk(bad)

    def test_size_limits(self):
        many = {f"V{i}": "x" for i in range(guest.BUILDKITE_MAX_VARS)}
        with self.assertRaisesRegex(RuntimeError, r"variables, more than %d" % guest.BUILDKITE_MAX_VARS):
            bk(many)
        with self.assertRaisesRegex(RuntimeError, r"BIG is \d+ bytes, more than"):
            bk({"BIG": "x" * guest.BUILDKITE_MAX_VAR_BYTES})
        chunk = "x" * (guest.BUILDKITE_MAX_VAR_BYTES - 100)
        with self.assertRaisesRegex(RuntimeError, r"more than %d bytes in all" % guest.BUILDKITE_MAX_ENV_BYTES):
            bk({f"C{i}": chunk for i in range(guest.BUILDKITE_MAX_ENV_BYTES // len(chunk) + 1)})
        # Just under every limit: accepted, and the process really starts with it (execve's limits).
        fits = {f"C{i}": chunk for i in range(guest.BUILDKITE_MAX_ENV_BYTES // guest.BUILDKITE_MAX_VAR_BYTES)}
        _, env = bk(fits)
        import subprocess
        out = subprocess.run(["/usr/bin/env"], env=env, capture_output=True, check=True).stdout
        self.assertIn(b"C0=" + chunk.encode(), out)

    def test_without_a_job_id_or_env_object_nothing_starts(self):
        for job in ({"kind": "buildkite"}, {"kind": "buildkite", "env": []}, {"kind": "buildkite", "env": {"NODE_ENV": "x"}}):
            with self.subTest(job=job), self.assertRaises(RuntimeError):
                guest.job_command(job, USER_ENV)


if __name__ == "__main__":
    unittest.main(verbosity=2)
