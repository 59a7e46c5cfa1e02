{%- from "runner/map.jinja" import runner with context %}
{%- from "github_runner/map.jinja" import github_runner with context %}
{%- set jv = runner.job_vm %}
{#- With isolation vm the host runs no job itself.
    GitHub Actions: no runner unit on the host at all (salt/top.sls applies no github_runner
    formula); one left from isolation host is stopped and removed. Each slot's VM gets its own
    just-in-time config (<minion>-s<N>) through the slot's inbox.
    Buildkite: the host's agent stays (it holds the queue's agent token, which never enters a VM)
    but runs no job: its bootstrap-script is ci-job-handoff, which gives the job's own environment
    (its per-job BUILDKITE_AGENT_ACCESS_TOKEN, never BUILDKITE_AGENT_TOKEN) to a free slot and
    waits for the VM's exit code. #}
{%- if runner.agent == 'github-actions' %}

runner-job_vm_host_agent-github-unit-service-dead:
  service.dead:
    - name: {{ github_runner.unit }}
    - enable: False

runner-job_vm_host_agent-github-unit-file-absent:
  file.absent:
    - name: /etc/systemd/system/{{ github_runner.unit }}
    - require:
      - service: runner-job_vm_host_agent-github-unit-service-dead
{%- elif runner.agent == 'buildkite' %}
{%- from "buildkite/map.jinja" import buildkite with context %}

runner-job_vm_host_agent-handoff-file-managed:
  file.managed:
    - name: {{ jv.handoff }}
    - user: root
    - group: root
    - mode: '0755'
    - contents: |
        #!/usr/bin/python3 -I
        # Managed by Salt (runner.job_vm_host_agent). The Buildkite agent's bootstrap-script with
        # isolation vm, run as root through sudo: the job's environment as one job input to the
        # first free slot (a lock per slot), then that job VM's exit code as ours. sudo resets the
        # environment and keeps only BUILDKITE_*, CI_FLEET_*, CI and BUILDKITE (env_keep; no SETENV,
        # so no LD_* from the agent's user); -I ignores PYTHON* variables and the user site anyway,
        # and the launcher runs with an environment of its own.
        import fcntl, json, os, pwd, stat, subprocess, sys
        LAUNCHER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        SLOTS = {{ runner.job_vm_pillar.get('slots', 0) | int }}
        LOCKS = "{{ jv.run_dir }}-handoff"
        # Never in a VM: the queue's agent token (the agent deleted it; sudo too; here again),
        # and what the agent sets from its own host config (buildkite/agent v3.123.1
        # agent/job_runner.go createEnvironment): host paths the VM does not have (its guest
        # agent sets its own build and plugin paths) and the host agent's pid.
        DROP = {"BUILDKITE_AGENT_TOKEN", "BUILDKITE_ENV_FILE", "BUILDKITE_ENV_JSON_FILE", "BUILDKITE_BIN_PATH",
                "BUILDKITE_CONFIG_PATH", "BUILDKITE_BUILD_PATH", "BUILDKITE_SOCKETS_PATH", "BUILDKITE_GIT_MIRRORS_PATH",
                "BUILDKITE_HOOKS_PATH", "BUILDKITE_ADDITIONAL_HOOKS_PATHS", "BUILDKITE_PLUGINS_PATH",
                "BUILDKITE_AGENT_PID", "BUILDKITE_AGENT_JWKS_FILE", "CI_FLEET_STATE_DIR"}
        # The job's whole environment as Buildkite defines it (pipeline, build and step env: NODE_ENV
        # and the like, which sudo's env_keep does not pass): the JSON file the agent wrote for this
        # job (buildkite/agent v3.123.1 agent/job_runner.go createJobEnvFiles: os.CreateTemp, 0600,
        # owned by the agent's user; createEnvironment writes r.conf.Job.Env, without
        # BUILDKITE_AGENT_TOKEN, as one JSON object of strings and names it in BUILDKITE_ENV_JSON_FILE).
        AGENT_USER = "{{ buildkite.agent_user.name }}"
        ENV_JSON_MAX = 768 << 10  # the whole job input must fit ci-job-slot's 1 MiB


        def job_env_file(path):
            """The job's env JSON: a regular file of AGENT_USER (no link: O_NOFOLLOW, fstat), not
            writable by group or others, at most ENV_JSON_MAX bytes, one JSON object of strings."""
            def refuse(why):
                sys.exit(f"ci-job-handoff: the job's environment file {path!r} {why}: not running the job without its pipeline's environment")
            if not path or not os.path.isabs(path):
                refuse("is not named (BUILDKITE_ENV_JSON_FILE)")
            try:
                uid = pwd.getpwnam(AGENT_USER).pw_uid
            except KeyError:
                refuse(f"cannot be checked: no user {AGENT_USER}")
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                refuse(f"cannot be opened ({e.strerror}; a symbolic link is refused)")
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
                    refuse(f"is not a regular file of {AGENT_USER} that only it can write")
                data = b""
                while len(data) <= ENV_JSON_MAX:
                    chunk = os.read(fd, ENV_JSON_MAX + 1 - len(data))
                    if not chunk:
                        break
                    data += chunk
            finally:
                os.close(fd)
            if len(data) > ENV_JSON_MAX:
                refuse(f"is larger than {ENV_JSON_MAX} bytes")
            try:
                doc = json.loads(data.decode("utf-8"))
            except ValueError:
                refuse("is not JSON")
            if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
                refuse("is not a JSON object of strings")
            return doc


        # The job's own environment from Buildkite (BUILDKITE_*, and CI=true, BUILDKITE=true as
        # every job sees them) and the fleet's CI_FLEET_* names.
        env = {k: v for k, v in os.environ.items()
               if (k.startswith("BUILDKITE_") or k.startswith("CI_FLEET_") or k in ("CI", "BUILDKITE")) and k not in DROP}
        if not env.get("BUILDKITE_AGENT_ACCESS_TOKEN") or not env.get("BUILDKITE_JOB_ID"):
            sys.exit("ci-job-handoff: no job access token or job id in the environment")
        # Only Buildkite's job-scoped token (bkaj_): without one in the accept response the agent
        # gives the job its own session token (agent/job_runner.go NewJobRunner), which would let
        # the VM take this agent's later jobs (no disconnect-after-job on a vm host).
        if not env["BUILDKITE_AGENT_ACCESS_TOKEN"].startswith("bkaj_"):
            sys.exit("ci-job-handoff: the job's access token is not job-scoped (bkaj_): not handing this agent's session to a VM")
        # The file's variables first, then the agent's own (it sets those over the job's, as
        # createEnvironment does); the DROP set from both.
        env = {k: v for k, v in {**job_env_file(os.environ.get("BUILDKITE_ENV_JSON_FILE", "")), **env}.items() if k not in DROP}
        job = json.dumps({"kind": "buildkite", "env": env}, sort_keys=True).encode()
        os.makedirs(LOCKS, mode=0o700, exist_ok=True)
        for n in range(1, SLOTS + 1):
            lock = open(os.path.join(LOCKS, str(n)), "a")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            # A cancelled or timed-out job: the agent signals sudo's process group, sudo forwards the
            # signal to us only (its user cannot signal root), so pass it on to the launcher's handoff
            # (it has the slot end the VM) and wait for its exit code. A signal that comes before the
            # child exists is passed on once it does.
            import signal
            child, pending = None, []
            def forward(signum, _frame):
                if child is None:
                    pending.append(signum)
                else:
                    child.send_signal(signum)
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(s, forward)
            child = subprocess.Popen(["{{ jv.launcher }}", "handoff", "--config", "{{ jv.config }}", "--slot", str(n)], stdin=subprocess.PIPE, env=LAUNCHER_ENV)
            for s in pending:
                child.send_signal(s)
            child.communicate(job)
            sys.exit(child.returncode if child.returncode >= 0 else 128 - child.returncode)
        sys.exit("ci-job-handoff: every slot is busy (spawn exceeds slots?)")
{%- endif %}
