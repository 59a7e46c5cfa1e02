{%- from "buildkite/map.jinja" import buildkite with context %}
{%- from "runner/map.jinja" import runner with context %}
{%- from "aws_credentials/map.jinja" import aws_credentials with context %}
{#- Gated on the netboot self-test (Requires= + After=). The agent exits after each
    job (disconnect-after-job) and systemd restarts it through the root reset. #}
{%- set env_file = '/run/' ~ buildkite.runtime_dir ~ '/agent.env' %}

include:
  - runner.selftest
  - .package
  - .hooks
  - .config

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
        User={{ runner.user.name }}
        Group={{ runner.user.name }}
        # Both owned by User=, 0700, recreated empty at every start (systemd.exec(5)).
        RuntimeDirectory={{ buildkite.runtime_dir }} {{ buildkite.job_secrets_dir }}
        RuntimeDirectoryMode=0700
        Environment=HOME={{ runner.user.home }}
        Environment=BUILDKITE_AGENT_CONFIG={{ buildkite.config_dir }}/buildkite-agent.cfg
        # For the job-secrets hooks (docs/contracts.md); the agent passes its environment to every job.
        Environment=CI_FLEET_SSM_PREFIX={{ buildkite.ssm_prefix }}
        Environment=AWS_REGION={{ buildkite.region }}
        Environment=CI_FLEET_STATE_DIR={{ buildkite.state_dir }}
        # The queue role's AWS config (root-owned, outside the CI user's home), for the token
        # script (boto3), the hooks (JS SDK v3) and every job.
        Environment=AWS_CONFIG_FILE={{ aws_credentials.users.runner.config }}
        Environment=AWS_SHARED_CREDENTIALS_FILE={{ aws_credentials.users.runner.shared_credentials }}
        ExecStartPre=+{{ runner.reset_script }}
        ExecStartPre={{ buildkite.token_script }} --parameter {{ buildkite.token_parameter }} --region {{ buildkite.region }} --output {{ env_file }}
        EnvironmentFile=-{{ env_file }}
        ExecStart=/usr/bin/{{ buildkite.package }} start
        # After each job (disconnect-after-job), not only before the next start.
        ExecStopPost=-+{{ runner.reset_script }}
        KillMode=control-group
        Restart=always
        RestartSec=5
        TimeoutStopSec=60
        PrivateTmp=yes
        NoNewPrivileges=yes
        ProtectSystem=full
        ProtectKernelTunables=yes
        ProtectControlGroups=yes

        [Install]
        WantedBy=multi-user.target

buildkite-service-agent-service-running:
  service.running:
    - name: {{ buildkite.unit }}
    - enable: True
    - require:
      - service: runner-selftest-service-running
      - pkg: buildkite-package-agent-pkg-installed
      - file: buildkite-hooks-agent-hooks-file-recurse
      - file: buildkite-config-token-script-file-managed
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
    - onchanges:
      - file: buildkite-service-unit-file-managed
      - file: buildkite-config-agent-cfg-file-managed
    - require:
      - cmd: buildkite-service-unit-reload-cmd-run

{#- The tarball install this formula used before the apt package, removed once the agent
    runs from /usr/bin (after the unit above points there, so systemd never restarts the
    agent into a path that is gone). #}
{%- for what, path in [('binary', buildkite.old_install.binary), ('releases', buildkite.old_install.releases_dir)] %}

buildkite-service-old-{{ what }}-file-absent:
  file.absent:
    - name: {{ path }}
    - require:
      - service: buildkite-service-agent-service-running
{%- endfor %}
