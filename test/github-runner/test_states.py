#!/usr/bin/python3
"""The github_runner formula as Salt would render it (real Jinja2 through test/salt/render.py)
for a contract-shaped runner, with and without the master's inline JIT runner config.

  python3 test/github-runner/test_states.py      (run by test/github-runner/github-runner.test.ts)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SALT = os.path.join(ROOT, "salt")
sys.path.insert(0, os.path.join(ROOT, "test", "salt"))
import fixtures  # noqa: E402
import render  # noqa: E402

MINION = "production-default-r1"
# Published by GitHub for actions/runner v2.336.0 (release notes, linux-x64 line).
FLOOR_SHA256 = "04cf0be1aff4c3ec3554466c39124ca250e3effd8873bb7e8d68535aa9505d5d"


JIT_FILE = "/run/ci-fleet/actions-runner.jitconfig"
JIT = "eyIucnVubmVyIjogImV5SmhaMlZ1ZEU1aGJXVWlPaUFpY2pFaWZRPT0ifQ=="


def highstate(jit_config=None):
    pillar = json.loads(json.dumps(fixtures.documents()[MINION]))
    if jit_config:
        pillar["ci_fleet_inline"] = {"github_jit_config": jit_config}
    grains = render.grains_for(MINION)
    env = render.make_env([SALT])
    extra = {"salt": render.salt_functions(pillar, grains, render.Recorder())}
    state = render.Highstate(SALT, env, pillar, grains, MINION, extra)
    state.add("github_runner")
    assert not state.errors, state.errors
    problems = render.check_states(state, SALT, render.KNOWN_STATE_FUNCTIONS)
    assert not problems, problems
    return state


def args(body):
    (function, arguments), = [(k, v) for k, v in body.items()]
    merged = {}
    for item in arguments:
        if isinstance(item, dict):
            merged.update(item)
    return function, merged


class GithubRunnerStatesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.path.join(SALT, "github_runner", "parameters", "defaults.yaml")) as handle:
            cls.defaults = yaml.safe_load(handle)["github_runner"]
        cls.plain = highstate()
        cls.registering = highstate(jit_config=JIT)

    def state(self, highstate, state_id):
        self.assertIn(state_id, highstate.states)
        return args(highstate.states[state_id][1])

    def test_the_floor_release_can_register_and_is_the_published_tarball(self):
        version = tuple(int(p) for p in str(self.defaults["version"]).split("."))
        self.assertGreaterEqual(version, (2, 329, 0))     # GitHub refuses to configure older runners
        self.assertEqual(self.defaults["version"], "2.336.0")
        self.assertEqual(self.defaults["sha256"], FLOOR_SHA256)
        self.assertEqual(self.defaults["source"], "https://github.com/actions/runner/releases/download/"
                         "v2.336.0/actions-runner-linux-x64-2.336.0.tar.gz")

    def test_the_updater_config_points_at_github_and_the_floor(self):
        config = json.loads(self.plain.files["/etc/ci-fleet/actions-runner-update.json"])
        self.assertEqual(config["api_url"], "https://api.github.com/repos/actions/runner/releases/latest")
        self.assertEqual(config["download_base"], "https://github.com/actions/runner/releases/download")
        self.assertEqual(config["platform"], "linux-x64")
        self.assertEqual(config["floor"], {"version": "2.336.0", "sha256": FLOOR_SHA256,
                                           "url": self.defaults["source"]})
        self.assertEqual((config["install_dir"], config["unit"], config["runner_group"]),
                         ("/opt/actions-runner", "actions-runner.service", "ci-agent"))
        self.assertEqual(config["env_file"], "/etc/ci-fleet/actions-runner.env")
        for key in ("systemctl", "cgroup_root", "proc_root"):
            self.assertNotIn(key, config)     # production uses the real ones

    def test_the_updater_runs_as_root_on_a_timer_and_installs_the_floor_in_the_highstate(self):
        files = self.plain.files
        timer = files["/etc/systemd/system/ci-fleet-actions-runner-update.timer"]
        self.assertIn("OnUnitActiveSec=1h", timer)
        self.assertIn("Persistent=true", timer)
        service = files["/etc/systemd/system/ci-fleet-actions-runner-update.service"]
        self.assertIn("Type=oneshot", service)
        self.assertIn("TimeoutStartSec=30min", service)
        self.assertIn("ExecStart=/usr/local/sbin/ci-fleet-actions-runner-update update", service)
        self.assertNotIn("User=", service)
        function, floor = self.state(self.plain, "github_runner-archive-floor-cmd-run")
        self.assertEqual(function, "cmd.run")
        self.assertEqual(floor["name"], "/usr/local/sbin/ci-fleet-actions-runner-update ensure-floor")
        self.assertEqual(floor["unless"], "/usr/local/sbin/ci-fleet-actions-runner-update floor-installed")
        # No downloaded script runs as root: the .NET dependencies come from Ubuntu 24.04.
        function, deps = self.state(self.plain, "github_runner-archive-dependencies-pkg-installed")
        self.assertEqual(deps["pkgs"], ["libicu74", "libkrb5-3", "liblttng-ust1t64", "libssl3t64", "zlib1g"])
        self.assertFalse([s for s in self.plain.states if "installdependencies" in json.dumps(self.plain.states[s])])

    def test_env_is_one_root_owned_file_and_path_is_not_managed(self):
        env = self.plain.files["/etc/ci-fleet/actions-runner.env"]
        self.assertIn("ACTIONS_RUNNER_HOOK_JOB_STARTED=/opt/actions-runner-hooks/job-started.sh", env)
        self.assertIn("ACTIONS_RUNNER_HOOK_JOB_COMPLETED=/opt/actions-runner-hooks/job-completed.sh", env)
        # run.sh never reads .path (only runsvc.sh does), and config.sh's env.sh rewrites it.
        self.assertNotIn("/opt/actions-runner/.path", self.plain.files)
        self.assertNotIn("/opt/actions-runner/.env", self.plain.files)

    def test_the_runner_unit_starts_only_from_a_jit_config_and_removes_it_when_it_stops(self):
        unit = self.plain.files["/etc/systemd/system/actions-runner.service"]
        lines = unit.splitlines()
        self.assertIn("ConditionPathExists=" + JIT_FILE, lines)
        self.assertFalse([l for l in lines if l.startswith("ConditionPathExists=") and l.endswith("/.runner")])
        # Read by systemd as root before it drops to ci-agent; the listener takes the
        # ACTIONS_RUNNER_INPUT_JITCONFIG input; never on the command line.
        self.assertIn("EnvironmentFile=-" + JIT_FILE, lines)
        self.assertIn("User=ci-agent", lines)
        self.assertIn("ExecStart=/opt/actions-runner/run.sh", lines)
        self.assertFalse([l for l in lines if l.startswith("Exec") and "--jitconfig" in l])
        self.assertIn("Restart=always", lines)
        remove = [i for i, l in enumerate(lines) if l.startswith("ExecStopPost=+/bin/rm -f ")]
        self.assertEqual(len(remove), 1, lines)
        removed = lines[remove[0]].split()[2:]
        self.assertEqual(removed, [JIT_FILE, "/opt/actions-runner/.runner", "/opt/actions-runner/.credentials",
                                   "/opt/actions-runner/.credentials_rsaparams"])
        event = lines.index("ExecStopPost=-+/usr/bin/salt-call --log-level=quiet event.send "
                            "ci-fleet/github-runner/unregistered")
        self.assertLess(remove[0], event)

    def test_the_highstate_starts_a_registered_runner_and_leaves_a_finished_ephemeral_one_down(self):
        # A unit that failed to start once (its Requires= self-test failed at boot, any start
        # failure) is not restarted by Restart= (only a process exit is); the master registers
        # only minions without .runner. So every highstate starts a *registered* runner; an
        # ephemeral runner that just finished has deleted .runner (Runner.cs
        # DeleteLocalRunnerConfig), the guard is false, and the state leaves it down.
        running = [(sid, a) for sid, (sls, body) in self.plain.states.items()
                   for function, a in [args(body)]
                   if function == "service.running" and a.get("name") == "actions-runner.service"]
        self.assertEqual(len(running), 1, running)
        sid, state = running[0]
        self.assertEqual(state.get("onlyif"), "test -f " + JIT_FILE)
        self.assertNotIn("enable", state)        # enabling is service.enabled's job
        self.assertNotIn("watch", state)         # never restarts a runner in the middle of a job
        self.assertIn({"service": "github_runner-service-enabled-service-enabled"}, state.get("require", []))
        # ...which requires the self-test: a failing self-test still keeps the runner down.
        _, enabled = self.state(self.plain, "github_runner-service-enabled-service-enabled")
        self.assertIn({"service": "runner-selftest-service-running"}, enabled["require"])

    def test_jobs_get_the_root_owned_aws_config_and_the_reset_runs_after_every_job(self):
        unit = self.plain.files["/etc/systemd/system/actions-runner.service"]
        lines = unit.splitlines()
        # The worker and every job step inherit the listener's environment (JobDispatcher.cs
        # environment: null; ProcessInvoker.cs adds to StartInfo.Environment).
        self.assertIn("Environment=AWS_CONFIG_FILE=/etc/ci-fleet/ci-agent/aws-config", lines)
        # No shared credentials file a job could plant in $HOME: one nobody writes, root's directory.
        self.assertIn("Environment=AWS_SHARED_CREDENTIALS_FILE=/etc/ci-fleet/ci-agent/aws-credentials-none", lines)
        self.assertIn("ExecStartPre=+/usr/local/sbin/ci-agent-reset", lines)
        reset = lines.index("ExecStopPost=-+/usr/local/sbin/ci-agent-reset")
        event = [i for i, l in enumerate(lines) if l.startswith("ExecStopPost=") and "event.send" in l][0]
        # Reset first: the home is wiped before the master starts the next runner.
        self.assertLess(reset, event)

    def test_registration_writes_the_jit_config_root_only_and_starts_under_the_updater_lock(self):
        ids = list(self.registering.states)
        update_id = "github_runner-register-update-cmd-run"
        file_id = "github_runner-register-jit-config-file-managed"
        start_id = "github_runner-register-start-cmd-run"
        self.assertLess(ids.index(update_id), ids.index(file_id))
        self.assertLess(ids.index(file_id), ids.index(start_id))
        _, update = self.state(self.registering, update_id)
        self.assertEqual(update["name"], "/usr/local/sbin/ci-fleet-actions-runner-update update")
        self.assertNotIn("require", update)      # GitHub's API down must not stop registration
        function, jit = self.state(self.registering, file_id)
        self.assertEqual(function, "file.managed")
        self.assertEqual((jit["name"], jit["user"], jit["group"], jit["mode"]), (JIT_FILE, "root", "root", "0600"))
        self.assertIs(jit["show_changes"], False)
        self.assertEqual(jit["contents"], "ACTIONS_RUNNER_INPUT_JITCONFIG=%s\n" % JIT)
        function, start = self.state(self.registering, start_id)
        self.assertEqual(function, "cmd.run")
        self.assertEqual(start["name"].split(), ["flock", "--wait", "900", "/run/ci-fleet/actions-runner.lock",
                                                 "systemctl", "start", "actions-runner.service"])
        self.assertIn({"file": file_id}, start["require"])
        self.assertNotIn(JIT, json.dumps([b for sid, b in self.registering.states.items() if sid != file_id]))
        # No registration token, no config.sh: name, group and labels are not chosen here.
        everything = json.dumps(self.registering.states)
        for gone in ("config.sh", "ACTIONS_RUNNER_INPUT_TOKEN", "--runnergroup", "--labels", "github_registration_token"):
            self.assertNotIn(gone, everything)
        for state_id in (update_id, file_id, start_id):
            self.assertNotIn(state_id, self.plain.states)

    def test_the_job_hooks_pass_shellcheck_as_bash(self):
        # The runner runs a .sh hook with bash (HostContext.GetDefaultShellForScript).
        directory = tempfile.mkdtemp()
        try:
            for name in ("job-started.sh", "job-completed.sh"):
                path = os.path.join(directory, name)
                with open(path, "w") as handle:
                    handle.write(self.plain.files["/opt/actions-runner-hooks/" + name])
                run = subprocess.run(["shellcheck", "-s", "bash", path], stdout=subprocess.PIPE, text=True)
                self.assertEqual(run.returncode, 0, run.stdout)
        finally:
            shutil.rmtree(directory)


if __name__ == "__main__":
    result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
    sys.exit(0 if result.wasSuccessful() else 1)
