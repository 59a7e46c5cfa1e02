{%- from "salt_master/map.jinja" import salt_master with context %}
include:
  - .repository
  - .config

{#- User=root whatever the packaged unit says (one builder, infra/bootstrap/salt-config.ts;
    cloud-init wrote the same bytes before the package was installed). #}
salt_master-service-drop-in-file-managed:
  file.managed:
    - name: {{ salt_master.service_drop_in }}
    - contents_pillar: ci_fleet_master:master_service_drop_in
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True

{#- Salt reloads systemd before a restart only when `systemctl status` says so
    (systemd_service._check_for_unit_changes): reload explicitly when the drop-in changes. #}
salt_master-service-daemon-reload-cmd-run:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: salt_master-service-drop-in-file-managed

{#- Started by the bootstrap script before the first highstate; here it is only kept running
    and enabled. No `watch`: a restart by the service state would not take the orchestration
    lock and would kill a running orchestration (its token revocation in `finally`). #}
salt_master-service-salt-master-service-running:
  service.running:
    - name: salt-master
    - enable: True
    - require:
      - cmd: salt_master-service-daemon-reload-cmd-run

{#- Every restart of the master: announce it (root-only marker; ci_fleet runs then start
    nothing, so their shared locks drain: flock has no writer preference), then take the
    orchestration lock exclusively; the trap removes the marker whatever happens (restart
    done, lock timeout, signal). lock/pending: defaults.yaml, read by salt/_runners/ci_fleet.py. #}
{%- set refresh = salt_master.runner_refresh %}
{%- set q = "'" %}
{%- set locked_restart = 'sh -c ' ~ q ~ 'umask 077; trap "rm -f ' ~ refresh.pending ~ '" EXIT; trap "exit 1" HUP INT TERM; : > ' ~ refresh.pending ~ ' && flock -x -w ' ~ refresh.lock_wait_seconds ~ ' ' ~ refresh.lock ~ ' systemctl restart salt-master' ~ q %}

{#- The master reads its config and unit only at start: restart after they change (the unit
    drop-in after the daemon-reload, which the running state requires). #}
salt_master-service-config-restart-cmd-run:
  cmd.run:
    - name: >-
        {{ locked_restart }}
    - onchanges:
      - file: salt_master-service-drop-in-file-managed
      - file: salt_master-config-master-d-file-managed
    - require:
      - service: salt_master-service-salt-master-service-running

{#- Runner modules (runner_dirs) stay loaded in the master's long-lived scheduler and reactor
    processes: after they change, restart the master once, the same locked way. The stamp
    (sha256 of the runner files the restart loaded) is written only after a restart; a lock
    timeout fails the state and the next highstate tries again. #}
{%- set runners = salt_master.checkout ~ '/salt/_runners' %}
{%- set digest = 'cat ' ~ runners ~ '/*.py | sha256sum | cut -d" " -f1' %}
salt_master-service-runners-refresh-cmd-run:
  cmd.run:
    - name: >-
        {{ locked_restart }} && mkdir -p {{ refresh.stamp.rsplit('/', 1)[0] }} && {{ digest }} > {{ refresh.stamp }}
    - unless: test "$({{ digest }})" = "$(cat {{ refresh.stamp }} 2>/dev/null)"
    - require:
      - git: salt_master-repository-checkout-git-latest
      - service: salt_master-service-salt-master-service-running
      - cmd: salt_master-service-config-restart-cmd-run
