{%- from "github_runner/map.jinja" import github_runner with context %}
{%- from "runner/map.jinja" import runner with context %}
{%- from "aws_credentials/map.jinja" import aws_credentials with context %}
{#- Gated on the netboot self-test (Requires= + After=). Just-in-time: the runner starts
    from the single-use config the master minted (github_runner.register writes it to
    jit_config_file); after its one job GitHub removes the runner, the unit removes the
    config and stays down (no config file) and tells the master, which mints a new one
    once GitHub no longer lists the runner. A runner whose start failed before it ran (a
    failed self-test at boot: Restart= only restarts an exited process) still has its
    config and is started by the next highstate. #}

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
        ConditionPathExists={{ github_runner.jit_config_file }}

        [Service]
        User={{ runner.user.name }}
        Group={{ runner.user.name }}
        WorkingDirectory={{ github_runner.install_dir }}
        # The queue role's AWS config (root-owned, outside the CI user's home). The listener's
        # environment reaches the worker and every job step (JobDispatcher.cs, ProcessInvoker.cs).
        Environment=AWS_CONFIG_FILE={{ aws_credentials.users.runner.config }}
        Environment=AWS_SHARED_CREDENTIALS_FILE={{ aws_credentials.users.runner.shared_credentials }}
        # ACTIONS_RUNNER_INPUT_JITCONFIG=<encoded JIT config>: read by systemd (root) before
        # it drops to the CI user; the listener takes it as `run --jitconfig` (CommandSettings:
        # ACTIONS_RUNNER_INPUT_ prefix, a secret: masked). Never on a command line. `-`: only
        # the condition above decides whether the unit starts.
        EnvironmentFile=-{{ github_runner.jit_config_file }}
        ExecStartPre=+{{ runner.reset_script }}
        ExecStart={{ github_runner.install_dir }}/run.sh
        # Single use: the config and the runner files the listener wrote from it go first.
        ExecStopPost=+/bin/rm -f {{ github_runner.jit_config_file }} {{ github_runner.install_dir }}/.runner {{ github_runner.install_dir }}/.credentials {{ github_runner.install_dir }}/.credentials_rsaparams
        # The reset before the event: the home is wiped before the master starts a new runner.
        ExecStopPost=-+{{ runner.reset_script }}
        ExecStopPost=-+/usr/bin/salt-call --log-level=quiet event.send {{ github_runner.unregistered_event }}
        KillMode=control-group
        # run.sh exits 0 for every listener exit but 2 (run-helper.sh). Whatever the exit,
        # ExecStopPost has removed the single-use config, so the condition keeps the unit
        # down until the master mints a new one (deregister_stale removes a runner GitHub
        # still lists offline once its minion's unit is down).
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
    finished its one job has no JIT config any more and is left down for the master. #}
github_runner-service-running-service-running:
  service.running:
    - name: {{ github_runner.unit }}
    - onlyif: test -f {{ github_runner.jit_config_file }}
    - require:
      - cmd: github_runner-service-unit-reload-cmd-run
      - service: github_runner-service-enabled-service-enabled
