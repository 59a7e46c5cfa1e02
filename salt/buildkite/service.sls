{%- from "buildkite/map.jinja" import buildkite with context %}
{%- from "runner/map.jinja" import runner with context %}
{%- from "aws_credentials/map.jinja" import aws_credentials with context %}
{#- Gated on the netboot self-test (Requires= + After=). The agent exits after each
    job (disconnect-after-job) and systemd restarts it through the root reset.
    Two users: the agent runs as its own (buildkite.user) with its token from a root-only
    file systemd loads as a credential (buildkite.token); each job runs as the CI user
    (bootstrap-script, buildkite.job). No job can read the agent's environment, memory or
    files: /proc/<pid>/environ and ptrace need the same uid (or root). #}

include:
  - runner.selftest
  - .user
  - .package
  - .hooks
  - .config
  - .token
  - .job

buildkite-service-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/{{ buildkite.unit }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (buildkite.service).
        [Unit]
        Description=Buildkite agent ({{ buildkite.queue }} queue)
        Requires={{ runner.selftest.unit }}
        After={{ runner.selftest.unit }} network-online.target
        Wants=network-online.target

        [Service]
        # The agent's own user; jobs run as {{ runner.user.name }} (bootstrap-script in the cfg).
        User={{ buildkite.agent_user.name }}
        Group={{ buildkite.agent_user.name }}
        # The agent token: systemd (root) copies the root-only file into this unit's credentials
        # directory, readable by {{ buildkite.agent_user.name }} and root only; the start script puts it in the
        # agent's environment, which the agent clears before any job starts (clicommand/global.go
        # UnsetConfigFromEnvironment). A missing file fails the start: no token, no agent.
        LoadCredential={{ buildkite.token_credential }}:{{ buildkite.token_file }}
        Environment=BUILDKITE_AGENT_CONFIG={{ buildkite.config_dir }}/buildkite-agent.cfg
        # For the job-secrets hooks (docs/contracts.md): the agent passes its environment to
        # every job (agent/job_runner.go), sudo -E keeps it, the hooks run in the job.
        Environment=CI_FLEET_SSM_PREFIX={{ buildkite.ssm_prefix }}
        Environment=AWS_REGION={{ buildkite.region }}
        Environment=CI_FLEET_STATE_DIR={{ buildkite.state_dir }}
        # The queue role's AWS config (root-owned, outside the CI user's home), for the hooks
        # (JS SDK v3) and every job; the agent itself neither reads it nor can.
        Environment=AWS_CONFIG_FILE={{ aws_credentials.users.runner.config }}
        Environment=AWS_SHARED_CREDENTIALS_FILE={{ aws_credentials.users.runner.shared_credentials }}
        ExecStartPre=+{{ runner.reset_script }}
        ExecStart={{ buildkite.start_script }}
        # After each job (disconnect-after-job), not only before the next start.
        ExecStopPost=-+{{ runner.reset_script }}
        KillMode=control-group
        Restart=always
        RestartSec=5
        TimeoutStopSec=60
        PrivateTmp=yes
        # No NoNewPrivileges=: sudo (set-uid) is how each job becomes {{ runner.user.name }}; the
        # job executor gives every job no_new_privs itself (setpriv --no-new-privs). What sudo, or
        # any set-uid program started here, can hold is bounded to changing to the job's user and
        # relaying the agent's signals to the job.
        CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_AUDIT_WRITE CAP_KILL
        ProtectSystem=full
        ProtectKernelTunables=yes
        ProtectControlGroups=yes

        [Install]
        WantedBy=multi-user.target

{#- Runs as the agent's user (ExecStart=): the credential into BUILDKITE_AGENT_TOKEN, then
    the agent itself (exec: systemd's main PID is the agent's). #}
buildkite-service-start-script-file-managed:
  file.managed:
    - name: {{ buildkite.start_script }}
    - user: root
    - group: root
    - mode: '0755'
    - contents: |
        #!/bin/sh
        # Managed by Salt (buildkite.service). ExecStart of {{ buildkite.unit }}, as {{ buildkite.agent_user.name }}.
        set -eu
        # LoadCredential= put the token here (readable by this uid and root only); never on a
        # command line, never in the cfg. The agent reads BUILDKITE_AGENT_TOKEN and unsets it
        # from its own environment before it starts any job.
        credential="${CREDENTIALS_DIRECTORY:?no credentials directory: the unit has no LoadCredential=}/{{ buildkite.token_credential }}"
        BUILDKITE_AGENT_TOKEN=$(cat -- "$credential")
        [ -n "$BUILDKITE_AGENT_TOKEN" ] || { echo "{{ buildkite.unit }}: the agent token credential is empty" >&2; exit 1; }
        export BUILDKITE_AGENT_TOKEN
        unset CREDENTIALS_DIRECTORY credential
        exec /usr/bin/{{ buildkite.package }} start

buildkite-service-agent-service-running:
  service.running:
    - name: {{ buildkite.unit }}
    - enable: True
    # Not while ci_fleet_drain drains this runner (its runtime drop-in, salt/_runners/ci_fleet_drain.py DRAIN_DROPIN).
    - unless: test -e /run/systemd/system/{{ buildkite.unit }}.d/zz-ci-fleet-drain.conf
    - require:
      - service: runner-selftest-service-running
      - pkg: buildkite-package-agent-pkg-installed
      - file: buildkite-hooks-agent-hooks-file-recurse
      - file: buildkite-job-sudoers-file-managed
      - file: buildkite-service-start-script-file-managed
{%- if buildkite.has_agent_token %}
      - file: buildkite-token-file-managed
{%- else %}
      - test: buildkite-token-test-fail_without_changes
{%- endif %}
      - cmd: buildkite-service-unit-reload-cmd-run
      - cmd: buildkite-service-agent-graceful-restart-cmd-run

{#- A changed unit or config must not cancel a running job (a restart would signal every
    process of it): reload systemd and send SIGTERM to the agent alone, which disconnects
    after finishing its job (Buildkite's agent lifecycle: SIGTERM graceful, SIGQUIT not);
    Restart=always then starts it, through the reset, with the new unit and config. #}
buildkite-service-unit-reload-cmd-run:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: buildkite-service-unit-file-managed

buildkite-service-agent-graceful-restart-cmd-run:
  cmd.run:
    - name: >-
        pid=$(systemctl show --property=MainPID --value {{ buildkite.unit }}) &&
        if [ "$pid" -gt 0 ]; then kill -TERM "$pid"; fi
    # A draining agent has had its one SIGTERM (ci_fleet_drain): a second would cancel its job.
    - unless: test -e /run/systemd/system/{{ buildkite.unit }}.d/zz-ci-fleet-drain.conf
    - onchanges:
      - file: buildkite-service-unit-file-managed
      - file: buildkite-config-agent-cfg-file-managed
      - file: buildkite-service-start-script-file-managed
{%- if buildkite.has_agent_token %}
      # A rotated token: the agent registers with it at its next start (after its job).
      - file: buildkite-token-file-managed
{%- endif %}
    - require:
      - cmd: buildkite-service-unit-reload-cmd-run

{#- The tarball install this formula used before the apt package, removed once the agent
    runs from /usr/bin (after the unit above points there, so systemd never restarts the
    agent into a path that is gone); and the script that read the token from SSM. #}
{%- for what, path in [('binary', buildkite.old_install.binary), ('releases', buildkite.old_install.releases_dir), ('token-script', buildkite.old_token_script)] %}

buildkite-service-old-{{ what }}-file-absent:
  file.absent:
    - name: {{ path }}
    - require:
      - service: buildkite-service-agent-service-running
{%- endfor %}
