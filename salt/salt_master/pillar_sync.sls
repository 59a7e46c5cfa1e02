{%- from "salt_master/map.jinja" import salt_master with context %}
{%- set sync = salt_master.pillar_sync %}
{#- SSM SecureString documents -> root-only JSON files the pillar top serves by minion id. #}

salt_master-pillar_sync-boto3-pkg-installed:
  pkg.installed:
    - pkgs: [python3, python3-boto3]

salt_master-pillar_sync-pillar-dir-file-directory:
  file.directory:
    - name: {{ salt_master.pillar_dir }}/minions
    - user: root
    - group: root
    - mode: '0700'
    - makedirs: True

salt_master-pillar_sync-script-file-managed:
  file.managed:
    - name: {{ sync.script }}
    - source: salt://salt_master/files/ci_fleet_pillar_sync.py
    - user: root
    - group: root
    - mode: '0755'

salt_master-pillar_sync-env-file-managed:
  file.managed:
    - name: {{ sync.env_file }}
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: True
    - contents: |
        # Managed by Salt (salt_master.pillar_sync).
        CI_FLEET_STACK={{ salt_master.stack }}
        AWS_REGION={{ salt_master.region }}
        CI_FLEET_PILLAR_DIR={{ salt_master.pillar_dir }}/minions

salt_master-pillar_sync-service-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/ci-fleet-pillar-sync.service
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (salt_master.pillar_sync).
        [Unit]
        Description=ci-fleet: copy pillar documents from SSM to the Salt master
        Wants=network-online.target
        After=network-online.target salt-master.service

        [Service]
        Type=oneshot
        EnvironmentFile={{ sync.env_file }}
        Environment=HOME=/root
        UMask=0077
        PrivateTmp=yes
        NoNewPrivileges=yes
        ExecStart={{ sync.script }} --stack ${CI_FLEET_STACK} --region ${AWS_REGION} --output ${CI_FLEET_PILLAR_DIR}

salt_master-pillar_sync-timer-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/ci-fleet-pillar-sync.timer
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (salt_master.pillar_sync).
        [Unit]
        Description=ci-fleet: copy pillar documents from SSM every {{ sync.interval }}

        [Timer]
        OnBootSec=1min
        OnUnitActiveSec={{ sync.interval }}
        RandomizedDelaySec=30s

        [Install]
        WantedBy=timers.target

{#- Salt reloads systemd only for the unit a service state starts (the timer), never for the
    .service the timer starts: reload here, so a changed ExecStart is the one that runs. #}
salt_master-pillar_sync-units-cmd-run:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: salt_master-pillar_sync-service-unit-file-managed
      - file: salt_master-pillar_sync-timer-unit-file-managed

salt_master-pillar_sync-timer-service-running:
  service.running:
    - name: ci-fleet-pillar-sync.timer
    - enable: True
    - require:
      - cmd: salt_master-pillar_sync-units-cmd-run
      - pkg: salt_master-pillar_sync-boto3-pkg-installed
      - file: salt_master-pillar_sync-pillar-dir-file-directory
      - file: salt_master-pillar_sync-script-file-managed
      - file: salt_master-pillar_sync-env-file-managed
      - file: salt_master-pillar_sync-service-unit-file-managed
    - watch:
      - file: salt_master-pillar_sync-timer-unit-file-managed
