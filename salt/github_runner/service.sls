{%- from "github_runner/map.jinja" import github_runner with context %}
{%- from "runner/map.jinja" import runner with context %}
{#- Gated on the netboot self-test (Requires= + After=). Ephemeral: the runner exits
    after one job and unregisters itself; the unit then stays down (no .runner file)
    and tells the master, which registers it again with a fresh token. #}

include:
  - runner.selftest
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
        ExecStartPre=+{{ runner.reset_script }}
        ExecStart={{ github_runner.install_dir }}/run.sh
        ExecStopPost=-+/usr/bin/salt-call --log-level=quiet event.send {{ github_runner.unregistered_event }}
        KillMode=control-group
        Restart=no
        PrivateTmp=yes
        NoNewPrivileges=yes
        ProtectSystem=full
        ProtectKernelTunables=yes
        ProtectControlGroups=yes

        [Install]
        WantedBy=multi-user.target

github_runner-service-enabled-service-enabled:
  service.enabled:
    - name: {{ github_runner.unit }}
    - require:
      - file: github_runner-service-unit-file-managed
      - file: github_runner-config-env-file-managed
      - file: github_runner-config-path-file-managed
      - file: github_runner-hooks-job-started-file-managed
      - file: github_runner-hooks-job-completed-file-managed
      - service: runner-selftest-service-running
