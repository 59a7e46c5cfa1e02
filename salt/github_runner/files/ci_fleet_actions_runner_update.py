#!/usr/bin/python3
"""ci-fleet-actions-runner-update: keeps the GitHub Actions runner within GitHub's window.

GitHub refuses to configure runners older than 2.329.0 and stops giving jobs to a runner
that has not installed a release within 30 days of its publication. The runner's own
self-update cannot work here (it rewrites its root-owned install directory and trusts
only the hash the Actions service sends), so root does it, between jobs:

  ci-fleet-actions-runner-update [--config FILE] floor-installed   exit 0 if >= the pinned floor
  ci-fleet-actions-runner-update [--config FILE] ensure-floor      install the pinned floor release
  ci-fleet-actions-runner-update [--config FILE] update            install GitHub's latest release

Every tarball is verified against a sha256 its publisher published: the pin in Salt for
the floor; for newer releases the `<!-- BEGIN SHA linux-x64 -->` line of the release notes
(actions/runner releaseNote.md), cross-checked with the asset's `digest` when the API
gives one. Each release is unpacked, root-owned, into <releases_dir>/<version>; the
install dir is a symlink switched with one rename, only while no job runs. Python 3
standard library only.
"""
import argparse
import calendar
import fcntl
import grp
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

DEFAULT_CONFIG = "/etc/ci-fleet/actions-runner-update.json"
VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class Refused(Exception):
    """A release that must not be installed; the current one stays."""


def parse_version(text):
    match = VERSION_RE.match(text or "")
    if not match:
        raise Refused("not a runner version: %r" % text)
    return tuple(int(part) for part in match.groups())


def fmt(version):
    return "%d.%d.%d" % version


def log(message):
    print("ci-fleet-actions-runner-update: %s" % message, flush=True)


class Updater:
    def __init__(self, config, allow_loopback_http=False):
        self.c = config
        self.allow_loopback_http = allow_loopback_http

    # -- URLs and downloads -------------------------------------------------------------
    def check_url(self, url):
        # Production: https only. Tests may serve fixtures from this machine over http.
        if url.startswith("https://"):
            return
        if self.allow_loopback_http and re.match(r"^http://127\.0\.0\.1(:\d+)?/", url):
            return
        raise Refused("refusing a non-https URL: %s" % url)

    def opener(self):
        updater = self

        class Redirects(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, req, fp, code, msg, headers, newurl):
                updater.check_url(newurl)    # github.com redirects to its CDN: https too
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        return urllib.request.build_opener(Redirects)

    def fetch_json(self, url):
        self.check_url(url)
        request = urllib.request.Request(url, headers={
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "ci-fleet-actions-runner-update",
        })
        with self.opener().open(request, timeout=60) as response:
            return json.loads(response.read().decode())

    def download(self, url, sha256, directory):
        """Download into directory; return the path only if its sha256 is the expected one."""
        self.check_url(url)
        path = os.path.join(directory, "runner.tar.gz")
        digest = hashlib.sha256()
        request = urllib.request.Request(url, headers={"User-Agent": "ci-fleet-actions-runner-update"})
        with self.opener().open(request, timeout=600) as response, open(path, "wb") as out:
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise Refused("sha256 mismatch for %s: got %s, published %s" % (url, digest.hexdigest(), sha256))
        return path

    # -- the latest release ---------------------------------------------------------------
    def latest_release(self):
        """(version, url, sha256, published_at) of GitHub's latest runner release."""
        cache = os.path.join(self.c["state_dir"], "latest.json")
        try:
            with open(cache) as handle:
                cached = json.load(handle)
            if time.time() - cached["fetched_at"] < self.c.get("min_check_seconds", 900):
                release = cached["release"]
            else:
                release = None
        except (OSError, ValueError, KeyError):
            release = None
        if release is None:
            release = self.fetch_json(self.c["api_url"])
            os.makedirs(self.c["state_dir"], mode=0o700, exist_ok=True)
            with open(cache + ".tmp", "w") as handle:
                json.dump({"fetched_at": time.time(), "release": release}, handle)
            os.replace(cache + ".tmp", cache)
        return self.release_target(release)

    def release_target(self, release):
        if release.get("draft") or release.get("prerelease"):
            raise Refused("the latest release is a draft or prerelease")
        version = parse_version(release.get("tag_name"))
        platform = self.c["platform"]
        name = "actions-runner-%s-%s.tar.gz" % (platform, fmt(version))
        shas = re.findall(r"<!-- BEGIN SHA %s -->\s*([0-9A-Fa-f]*)\s*<!-- END SHA %s -->"
                          % (re.escape(platform), re.escape(platform)), release.get("body") or "")
        if len(shas) != 1 or not SHA_RE.match(shas[0].lower()):
            raise Refused("release %s: no single sha256 line for %s in its notes" % (fmt(version), platform))
        sha256 = shas[0].lower()
        assets = [a for a in release.get("assets") or [] if a.get("name") == name]
        if len(assets) != 1:
            raise Refused("release %s has no asset %s" % (fmt(version), name))
        asset = assets[0]
        digest = asset.get("digest")
        if digest and digest.lower() != "sha256:" + sha256:
            raise Refused("release %s: asset digest %s disagrees with the notes" % (fmt(version), digest))
        url = asset.get("browser_download_url") or ""
        expected = "%s/v%s/%s" % (self.c["download_base"].rstrip("/"), fmt(version), name)
        if url != expected:
            raise Refused("release %s: unexpected download URL %s" % (fmt(version), url))
        return version, url, sha256, release.get("published_at") or ""

    # -- what is installed ------------------------------------------------------------------
    def current(self):
        """(version or None, target path or None) of the install-dir symlink."""
        link = self.c["install_dir"]
        if not os.path.islink(link):
            return None, None
        target = os.readlink(link)
        try:
            return parse_version(os.path.basename(target)), target
        except Refused:
            return None, target

    def release_dir(self, version):
        return os.path.join(self.c["releases_dir"], fmt(version))

    # -- the runner's unit ----------------------------------------------------------------
    def systemctl(self, *args):
        return subprocess.run([self.c.get("systemctl", "systemctl")] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def unit_active(self):
        state = self.systemctl("is-active", self.c["unit"]).stdout.strip()
        return state in ("active", "activating", "deactivating", "reloading")

    def job_running(self):
        """A job runs in Runner.Worker, a child of the listener, in the unit's cgroup."""
        group = self.systemctl("show", "--property=ControlGroup", "--value", self.c["unit"]).stdout.strip()
        if not group:
            return False
        procs = os.path.join(self.c.get("cgroup_root", "/sys/fs/cgroup"), group.lstrip("/"), "cgroup.procs")
        try:
            with open(procs) as handle:
                pids = handle.read().split()
        except FileNotFoundError:
            return False
        for pid in pids:
            try:
                with open(os.path.join(self.c.get("proc_root", "/proc"), pid, "comm")) as handle:
                    if handle.read().strip() == "Runner.Worker":
                        return True
            except FileNotFoundError:
                continue
        return False

    # -- install and switch -----------------------------------------------------------------
    def unpack(self, archive, destination):
        """Extract into destination: no absolute paths, no '..', no devices; root-owned."""
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                parts = member.name.split("/")
                if member.name.startswith("/") or ".." in parts:
                    raise Refused("unsafe path in archive: %s" % member.name)
                if not (member.isfile() or member.isdir() or member.issym()):
                    raise Refused("unsupported member in archive: %s" % member.name)
                if member.issym() and (member.linkname.startswith("/") or ".." in member.linkname.split("/")):
                    raise Refused("symlink leaving the archive: %s" % member.name)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(destination, members=members, filter="data")
            else:
                tar.extractall(destination, members=members)
        for top, dirs, files in os.walk(destination):
            for name in [top] + [os.path.join(top, n) for n in dirs + files]:
                os.lchown(name, 0, 0)
                if not os.path.islink(name):
                    mode = os.lstat(name).st_mode & 0o755    # nothing writable but by root
                    os.chmod(name, mode)
        if not os.path.isfile(os.path.join(destination, "bin", "Runner.Listener")):
            raise Refused("archive has no bin/Runner.Listener")

    def install(self, version, url, sha256):
        """Unpack a verified release into <releases_dir>/<version>; the rename is the commit."""
        final = self.release_dir(version)
        if os.path.isdir(final):
            return final
        os.makedirs(self.c["releases_dir"], mode=0o755, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".staging-%s-" % fmt(version), dir=self.c["releases_dir"])
        try:
            archive = self.download(url, sha256, staging)
            root = os.path.join(staging, "root")
            os.mkdir(root, 0o700)
            self.unpack(archive, root)
            # The runner writes its registration (.runner, .credentials), _diag and
            # run-helper.sh into its root: group-writable and sticky, so it cannot
            # rename or replace root's files (a job runs as the same user).
            os.chown(root, 0, grp.getgrnam(self.c["runner_group"]).gr_gid)
            os.chmod(root, 0o1775)
            os.symlink(self.c["env_file"], os.path.join(root, ".env"))
            os.rename(root, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    def switch(self, target):
        link, legacy = self.c["install_dir"], None
        if os.path.isdir(link) and not os.path.islink(link):
            # The layout before this updater: a plain directory. Moved aside once.
            legacy = os.path.join(self.c["releases_dir"], "legacy-%d" % int(time.time()))
            os.rename(link, legacy)
        temporary = "%s.new-%d" % (link, os.getpid())
        if os.path.lexists(temporary):
            os.unlink(temporary)
        os.symlink(target, temporary)
        os.replace(temporary, link)          # one rename: old or new, never half
        return legacy

    def prune(self, keep):
        for name in os.listdir(self.c["releases_dir"]):
            path = os.path.join(self.c["releases_dir"], name)
            if path not in keep and os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)

    def apply(self, version, url, sha256, force_idle=False):
        """Install version and switch to it between jobs. Returns a short status."""
        current, previous = self.current()
        if current is not None and version < current:
            raise Refused("refusing a downgrade from %s to %s" % (fmt(current), fmt(version)))
        if current == version:
            return "current %s" % fmt(version)
        active = self.unit_active()
        if active and (self.job_running() or not force_idle):
            return "deferred %s: the runner is registered or running a job" % fmt(version)
        target = self.install(version, url, sha256)
        if active and self.job_running():
            return "deferred %s: a job started" % fmt(version)
        previous = self.switch(target) or previous
        if active:
            # Registered on the old release and idle: stop it; the unit's ExecStopPost
            # asks the master to register it again, now on the new release.
            self.systemctl("stop", self.c["unit"])
        self.prune({target, previous} if previous else {target})
        return "switched to %s" % fmt(version)


def locked(path):
    # Root-owned, readable: the runner's start (register.sls, as root) locks it too.
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    handle = os.fdopen(os.open(path, os.O_RDONLY | os.O_CREAT, 0o644))
    fcntl.flock(handle, fcntl.LOCK_EX)    # the runner's start (register.sls) takes it too
    return handle


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--test-allow-loopback-http", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("command", choices=["floor-installed", "ensure-floor", "update"])
    args = parser.parse_args(argv)
    with open(args.config) as handle:
        config = json.load(handle)
    updater = Updater(config, allow_loopback_http=args.test_allow_loopback_http)
    floor = config["floor"]
    floor_version = parse_version(floor["version"])
    if args.command == "floor-installed":
        current, _ = updater.current()
        return 0 if current is not None and current >= floor_version else 1
    lock = locked(config["lock"])
    try:
        if args.command == "ensure-floor":
            current, _ = updater.current()
            if current is not None and current >= floor_version:
                log("current %s (floor %s)" % (fmt(current), fmt(floor_version)))
                return 0
            log(updater.apply(floor_version, floor["url"], floor["sha256"]))
            return 0
        version, url, sha256, published_at = updater.latest_release()
        if version < floor_version:
            raise Refused("latest release %s is older than the floor %s" % (fmt(version), fmt(floor_version)))
        # Idle registered runners are stopped for an update only once the release is
        # force_after_days old: normally the next job boundary comes first.
        age_days = 0.0
        if published_at:
            age_days = (time.time() - calendar.timegm(time.strptime(published_at, "%Y-%m-%dT%H:%M:%SZ"))) / 86400
        log(updater.apply(version, url, sha256, force_idle=age_days >= config.get("force_after_days", 14)))
        return 0
    except Refused as error:
        log("refused: %s" % error)
        return 1
    except OSError as error:
        log("failed: %s" % error)
        return 1
    finally:
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
