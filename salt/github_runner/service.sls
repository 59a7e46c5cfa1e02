{%- from "github_runner/map.jinja" import github_runner with context %}
{%- from "runner/map.jinja" import runner with context %}
{%- from "aws_credentials/map.jinja" import aws_credentials with context %}
{#- Gated on the netboot self-test (Requires= + After=). Ephemeral: the runner exits
    after one job and unregisters itself; the unit then stays down (no .runner file)
    and tells the master, which registers it again with a fresh token. A registered
    runner whose start failed (a failed self-test at boot, any start failure: Restart=
    only restarts an exited process) is started by the next highstate. #}

include:
  - runner.selftest
  - .archive
  - .config
  - .hooks

github_runner-service-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/{{ github_runner.unit }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (github_runner.service).
        [Unit]
        Description=GitHub Actions runner ({{ github_runner.queue }} queue)
        Requires={{ runner.selftest.unit }}
        After={{ runner.selftest.unit }} network-online.target
        Wants=network-online.target
        ConditionPathExists={{ github_runner.install_dir }}/.runner

        [Service]
        User={{ runner.user.name }}
        Group={{ runner.user.name }}
        WorkingDirectory={{ github_runner.install_dir }}
        # The queue role's AWS config (root-owned, outside the CI user's home). The listener's
        # environment reaches the worker and every job step (JobDispatcher.cs, ProcessInvoker.cs).
        Environment=AWS_CONFIG_FILE={{ aws_credentials.users.runner.config }}
        Environment=AWS_SHARED_CREDENTIALS_FILE={{ aws_credentials.users.runner.shared_credentials }}
        ExecStartPre=+{{ runner.reset_script }}
        ExecStart={{ github_runner.install_dir }}/run.sh
        # The reset first: the re-registration the event triggers runs config.sh as the CI user.
        ExecStopPost=-+{{ runner.reset_script }}
        ExecStopPost=-+/usr/bin/salt-call --log-level=quiet event.send {{ github_runner.unregistered_event }}
        KillMode=control-group
        # run.sh exits 0 for every listener exit but 2 (run-helper.sh), including 6
        # "configuration refreshed, restart me" and 5 "session conflict" with the
        # registration still there. Restart: a registered runner comes back; after its
        # job an ephemeral runner has deleted .runner and the condition keeps it down.
        Restart=always
        RestartSec=15
        PrivateTmp=yes
        NoNewPrivileges=yes
        ProtectSystem=full
        ProtectKernelTunables=yes
        ProtectControlGroups=yes

        [Install]
        WantedBy=multi-user.target

{#- The unit is started by the registration or by the state below, never restarted by a
    watch (that would kill a job): reload systemd when it changes, so the next start uses it. #}
github_runner-service-unit-reload-cmd-run:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: github_runner-service-unit-file-managed

github_runner-service-enabled-service-enabled:
  service.enabled:
    - name: {{ github_runner.unit }}
    - require:
      - cmd: github_runner-service-unit-reload-cmd-run
      - file: github_runner-service-unit-file-managed
      - file: github_runner-config-env-file-managed
      - file: github_runner-hooks-job-started-file-managed
      - file: github_runner-hooks-job-completed-file-managed
      - service: runner-selftest-service-running
      - cmd: github_runner-archive-floor-cmd-run

{#- onlyif is evaluated when the state runs (salt/state.py _run_check): a runner that has
    just finished its one job has deleted .runner and is left down for the master. #}
github_runner-service-running-service-running:
  service.running:
    - name: {{ github_runner.unit }}
    - onlyif: test -f {{ github_runner.install_dir }}/.runner
    - require:
      - cmd: github_runner-service-unit-reload-cmd-run
      - service: github_runner-service-enabled-service-enabled
