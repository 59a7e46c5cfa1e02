#!/usr/bin/python3
"""Runs salt/github_runner/files/ci_fleet_actions_runner_update.py for real (as a process,
as root) against a local fake of GitHub: a release JSON shaped like
GET /repos/actions/runner/releases/latest, with the release-notes SHA lines of
actions/runner's releaseNote.md, and runner tarballs built here, served over HTTP on
127.0.0.1; a fake systemctl and fake cgroup/proc trees stand in for the runner's unit.

  python3 test/github-runner/test_updater.py      (run by test/github-runner/github-runner.test.ts)
"""
import fcntl
import hashlib
import http.server
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "salt", "github_runner", "files", "ci_fleet_actions_runner_update.py")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def tarball(version, extra=None):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        files = {"bin/Runner.Listener": "#!/bin/sh\necho listener %s\n" % version,
                 "bin/Runner.Worker": "#!/bin/sh\n", "run.sh": "#!/bin/bash\n", "config.sh": "#!/bin/bash\n",
                 "run-helper.sh.template": "#!/bin/bash\n"}
        files.update(extra or {})
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(text), 0o775, 1001, 1001   # like upstream's builder
            tar.addfile(info, io.BytesIO(text.encode()))
    return data.getvalue()


def notes(platform_shas):
    # The "SHA-256 Checksums" section of actions/runner releaseNote.md after release.yml filled it in.
    lines = ["## SHA-256 Checksums", "", "The SHA-256 checksums for the packages included in this build are shown below:", ""]
    for platform, (name, sha) in platform_shas.items():
        lines.append("- %s <!-- BEGIN SHA %s -->%s<!-- END SHA %s -->" % (name, platform, sha, platform))
    return "\n".join(lines)


class FakeGitHub(http.server.BaseHTTPRequestHandler):
    routes = {}
    api_calls = 0

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/repos/"):
            FakeGitHub.api_calls += 1
        body = FakeGitHub.routes.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class UpdaterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        cls.base = "http://127.0.0.1:%d" % cls.server.server_address[1]

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()

    def setUp(self):
        FakeGitHub.routes, FakeGitHub.api_calls = {}, 0
        self.tmp = tempfile.mkdtemp()
        t = lambda *p: os.path.join(self.tmp, *p)  # noqa: E731
        self.t = t
        os.makedirs(t("cgroup", "system.slice", "actions-runner.service"))
        os.makedirs(t("proc"))
        with open(t("env"), "w") as handle:
            handle.write("LANG=C.UTF-8\n")
        self.set_unit("inactive")
        systemctl = t("systemctl")
        with open(systemctl, "w") as handle:
            handle.write('#!/bin/sh\nd=%s\ncase "$1" in\n'
                         '  is-active) cat "$d/unit-state"; [ "$(cat "$d/unit-state")" = active ];;\n'
                         '  show) echo /system.slice/actions-runner.service;;\n'
                         '  stop) echo "stop $2" >> "$d/systemctl.log"; echo inactive > "$d/unit-state";;\n'
                         'esac\n' % self.tmp)
        os.chmod(systemctl, 0o755)
        self.floor = self.publish("2.336.0", route=False)
        self.config = {
            "install_dir": t("opt", "actions-runner"), "releases_dir": t("opt", "actions-runner-releases"),
            "env_file": t("env"), "runner_group": "nogroup", "unit": "actions-runner.service",
            "api_url": self.base + "/repos/actions/runner/releases/latest",
            "download_base": self.base + "/actions/runner/releases/download",
            "platform": "linux-x64", "floor": self.floor, "lock": t("lock", "update.lock"),
            "state_dir": t("state"), "min_check_seconds": 0, "force_after_days": 14,
            "systemctl": systemctl, "cgroup_root": t("cgroup"), "proc_root": t("proc"),
        }
        os.makedirs(t("opt"))
        self.write_config()

    def tearDown(self):
        shutil.rmtree(self.tmp)

    # -- helpers ------------------------------------------------------------------------------
    def write_config(self):
        with open(self.t("config.json"), "w") as handle:
            json.dump(self.config, handle)

    def set_unit(self, state, worker=False):
        with open(self.t("unit-state"), "w") as handle:
            handle.write(state + "\n")
        pids = ["101"] + (["102"] if worker else [])
        with open(self.t("cgroup", "system.slice", "actions-runner.service", "cgroup.procs"), "w") as handle:
            handle.write("\n".join(pids) + "\n")
        for pid, comm in (("101", "Runner.Listener"), ("102", "Runner.Worker")):
            os.makedirs(self.t("proc", pid), exist_ok=True)
            with open(self.t("proc", pid, "comm"), "w") as handle:
                handle.write(comm + "\n")

    def publish(self, version, route=True, sha=None, body=None, digest=True, published_at=None, archive=None):
        data = archive or tarball(version)
        real = hashlib.sha256(data).hexdigest()
        name = "actions-runner-linux-x64-%s.tar.gz" % version
        path = "/actions/runner/releases/download/v%s/%s" % (version, name)
        FakeGitHub.routes[path] = data
        download = self.base + path
        if route:
            release = {
                "tag_name": "v" + version, "name": "v" + version, "draft": False, "prerelease": False,
                "published_at": published_at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "body": body if body is not None else notes({
                    "linux-arm64": ("actions-runner-linux-arm64-%s.tar.gz" % version, "ab" * 32),
                    "linux-x64": (name, sha or real)}),
                "assets": [{"name": name, "browser_download_url": download,
                            **({"digest": "sha256:" + real} if digest else {})}],
            }
            FakeGitHub.routes["/repos/actions/runner/releases/latest"] = json.dumps(release).encode()
        return {"version": version, "url": self.base + path, "sha256": sha or real}

    def run_updater(self, command, http=True):
        args = [PYTHON, SCRIPT, "--config", self.t("config.json")] + (["--test-allow-loopback-http"] if http else [])
        return subprocess.run(args + [command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)

    def installed(self):
        link = self.config["install_dir"]
        return os.path.basename(os.readlink(link)) if os.path.islink(link) else None

    def listener(self):
        with open(os.path.join(self.config["install_dir"], "bin", "Runner.Listener")) as handle:
            return handle.read()

    def staging_left(self):
        return [n for n in os.listdir(self.config["releases_dir"]) if n.startswith(".staging")]

    # -- the floor ----------------------------------------------------------------------------
    def test_installs_the_pinned_floor_root_owned_with_the_env_link(self):
        self.assertEqual(self.run_updater("floor-installed").returncode, 1)
        run = self.run_updater("ensure-floor")
        self.assertEqual(run.returncode, 0, run.stdout)
        self.assertEqual(self.installed(), "2.336.0")
        self.assertEqual(self.run_updater("floor-installed").returncode, 0)
        top = os.lstat(self.config["install_dir"] + "/")
        self.assertEqual((top.st_uid, top.st_gid, stat.S_IMODE(top.st_mode)), (0, 65534, 0o1775))
        listener = os.lstat(os.path.join(self.config["install_dir"], "bin", "Runner.Listener"))
        self.assertEqual((listener.st_uid, listener.st_gid, stat.S_IMODE(listener.st_mode)), (0, 0, 0o755))
        self.assertEqual(os.readlink(os.path.join(self.config["install_dir"], ".env")), self.t("env"))
        self.assertIn("listener 2.336.0", self.listener())
        lock = os.stat(self.config["lock"])
        self.assertEqual((lock.st_uid, stat.S_IMODE(lock.st_mode)), (0, 0o644))

    def test_a_wrong_floor_sha256_installs_nothing(self):
        self.config["floor"] = dict(self.floor, sha256="0" * 64)
        self.write_config()
        run = self.run_updater("ensure-floor")
        self.assertEqual(run.returncode, 1)
        self.assertIn("sha256 mismatch", run.stdout)
        self.assertIsNone(self.installed())
        self.assertEqual(os.listdir(self.config["releases_dir"]), [])

    def test_a_plain_directory_from_the_old_layout_is_moved_aside(self):
        os.makedirs(os.path.join(self.config["install_dir"], "bin"))
        self.assertEqual(self.run_updater("ensure-floor").returncode, 0)
        self.assertEqual(self.installed(), "2.336.0")
        self.assertTrue(any(n.startswith("legacy-") for n in os.listdir(self.config["releases_dir"])))

    # -- moving forward -----------------------------------------------------------------------
    def floor_installed(self):
        self.assertEqual(self.run_updater("ensure-floor").returncode, 0)

    def test_updates_to_the_latest_release_between_jobs_and_keeps_the_previous(self):
        self.floor_installed()
        self.publish("2.337.0")
        run = self.run_updater("update")
        self.assertEqual(run.returncode, 0, run.stdout)
        self.assertIn("switched to 2.337.0", run.stdout)
        self.assertEqual(self.installed(), "2.337.0")
        self.assertIn("listener 2.337.0", self.listener())
        self.assertEqual(sorted(os.listdir(self.config["releases_dir"])), ["2.336.0", "2.337.0"])
        self.publish("2.338.0")
        self.assertEqual(self.run_updater("update").returncode, 0)
        self.assertEqual(sorted(os.listdir(self.config["releases_dir"])), ["2.337.0", "2.338.0"])
        self.assertFalse(os.path.exists(self.t("systemctl.log")))    # nothing to stop: unit inactive

    def test_refuses_a_wrong_sha256_in_the_notes_and_keeps_the_current_release(self):
        self.floor_installed()
        self.publish("2.337.0", sha="1" * 64, digest=False)
        run = self.run_updater("update")
        self.assertEqual(run.returncode, 1)
        self.assertIn("sha256 mismatch", run.stdout)
        self.assertEqual(self.installed(), "2.336.0")
        self.assertIn("listener 2.336.0", self.listener())
        self.assertEqual(self.staging_left(), [])
        self.assertFalse(os.path.exists(os.path.join(self.config["releases_dir"], "2.337.0")))

    def test_refuses_a_release_without_its_sha_line(self):
        self.floor_installed()
        self.publish("2.337.0", body="## What's Changed\n* nothing\n")
        run = self.run_updater("update")
        self.assertEqual(run.returncode, 1)
        self.assertIn("no single sha256 line for linux-x64", run.stdout)
        self.assertEqual(self.installed(), "2.336.0")

    def test_refuses_when_the_asset_digest_disagrees_with_the_notes(self):
        self.floor_installed()
        self.publish("2.337.0")
        release = json.loads(FakeGitHub.routes["/repos/actions/runner/releases/latest"])
        release["assets"][0]["digest"] = "sha256:" + "2" * 64
        FakeGitHub.routes["/repos/actions/runner/releases/latest"] = json.dumps(release).encode()
        run = self.run_updater("update")
        self.assertEqual(run.returncode, 1)
        self.assertIn("disagrees with the notes", run.stdout)
        self.assertEqual(self.installed(), "2.336.0")

    def test_refuses_a_downgrade(self):
        self.floor_installed()
        self.publish("2.337.0")
        self.assertEqual(self.run_updater("update").returncode, 0)
        self.publish("2.336.0")
        run = self.run_updater("update")
        self.assertEqual(run.returncode, 1)
        self.assertIn("refusing a downgrade from 2.337.0 to 2.336.0", run.stdout)
        self.assertEqual(self.installed(), "2.337.0")

    def test_refuses_non_https_urls_in_production_mode(self):
        self.floor_installed()
        self.publish("2.337.0")
        run = self.run_updater("update", http=False)
        self.assertEqual(run.returncode, 1)
        self.assertIn("refusing a non-https URL: http://127.0.0.1", run.stdout)
        self.assertEqual(FakeGitHub.api_calls, 0)
        self.assertEqual(self.installed(), "2.336.0")

    def test_refuses_a_download_url_outside_the_runner_releases(self):
        self.floor_installed()
        self.publish("2.337.0")
        release = json.loads(FakeGitHub.routes["/repos/actions/runner/releases/latest"])
        release["assets"][0]["browser_download_url"] = self.base + "/evil/actions-runner-linux-x64-2.337.0.tar.gz"
        FakeGitHub.routes["/repos/actions/runner/releases/latest"] = json.dumps(release).encode()
        run = self.run_updater("update")
        self.assertEqual(run.returncode, 1)
        self.assertIn("unexpected download URL", run.stdout)

    def test_refuses_an_archive_that_escapes_its_directory(self):
        self.floor_installed()
        self.publish("2.337.0", archive=tarball("2.337.0", {"../escaped": "x"}))
        run = self.run_updater("update")
        self.assertEqual(run.returncode, 1)
        self.assertIn("unsafe path in archive: ../escaped", run.stdout)
        self.assertFalse(os.path.exists(os.path.join(self.config["releases_dir"], "escaped")))
        self.assertEqual(self.installed(), "2.336.0")
        self.assertEqual(self.staging_left(), [])

    # -- never while a job runs -----------------------------------------------------------------
    def test_never_switches_while_a_job_runs_even_when_the_release_is_old(self):
        self.floor_installed()
        self.set_unit("active", worker=True)
        self.publish("2.337.0", published_at="2020-01-01T00:00:00Z")
        run = self.run_updater("update")
        self.assertEqual(run.returncode, 0, run.stdout)
        self.assertIn("deferred 2.337.0", run.stdout)
        self.assertEqual(self.installed(), "2.336.0")
        self.assertFalse(os.path.exists(self.t("systemctl.log")))

    def test_an_idle_registered_runner_waits_for_its_job_until_the_release_is_old(self):
        self.floor_installed()
        self.set_unit("active")
        self.publish("2.337.0")                                   # published now
        self.assertIn("deferred", self.run_updater("update").stdout)
        self.assertEqual(self.installed(), "2.336.0")
        self.publish("2.337.0", published_at="2020-01-01T00:00:00Z")
        run = self.run_updater("update")
        self.assertIn("switched to 2.337.0", run.stdout)
        self.assertEqual(self.installed(), "2.337.0")
        with open(self.t("systemctl.log")) as handle:
            self.assertEqual(handle.read(), "stop actions-runner.service\n")

    def test_waits_for_the_lock_the_registration_holds(self):
        self.floor_installed()
        self.publish("2.337.0")
        os.makedirs(os.path.dirname(self.config["lock"]), exist_ok=True)
        with open(self.config["lock"], "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            process = subprocess.Popen([PYTHON, SCRIPT, "--config", self.t("config.json"),
                                        "--test-allow-loopback-http", "update"], stdout=subprocess.PIPE, text=True)
            time.sleep(1.5)
            self.assertIsNone(process.poll())
            self.assertEqual(self.installed(), "2.336.0")
        self.assertEqual(process.wait(timeout=60), 0)
        self.assertEqual(self.installed(), "2.337.0")
        process.stdout.close()

    def test_asks_the_api_at_most_once_per_interval(self):
        self.floor_installed()
        self.config["min_check_seconds"] = 3600
        self.write_config()
        self.publish("2.337.0")
        self.assertEqual(self.run_updater("update").returncode, 0)
        self.assertEqual(self.run_updater("update").returncode, 0)
        self.assertEqual(FakeGitHub.api_calls, 1)


if __name__ == "__main__":
    result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
    sys.exit(0 if result.wasSuccessful() else 1)
