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

salt_master-service-salt-master-service-running:
  service.running:
    - name: salt-master
    - enable: True
    - require:
      - cmd: salt_master-service-daemon-reload-cmd-run
    # Not the repository: file_roots, pillar_roots and the orch/reactor sls are read from
    # disk at each request, and a restart kills running orchestration (its token cleanup).
    - watch:
      - file: salt_master-service-drop-in-file-managed
      - file: salt_master-config-master-d-file-managed

{#- Runner modules (runner_dirs) stay loaded in the master's long-lived scheduler and reactor
    processes: after they change, restart the master once, under the orchestration lock every
    ci_fleet runner function holds (shared) while it runs, so no run is killed half-way. The
    stamp (sha256 of the runner files the restart loaded) is written only after a restart;
    a lock timeout fails the state and the next highstate tries again. #}
{%- set runners = salt_master.checkout ~ '/salt/_runners' %}
{%- set digest = 'cat ' ~ runners ~ '/*.py | sha256sum | cut -d" " -f1' %}
salt_master-service-runners-refresh-cmd-run:
  cmd.run:
    - name: >-
        flock -x -w {{ salt_master.runner_refresh.lock_wait_seconds }} {{ salt_master.runner_refresh.lock }} sh -c
        'systemctl restart salt-master && mkdir -p {{ salt_master.runner_refresh.stamp.rsplit('/', 1)[0] }} && {{ digest }} > {{ salt_master.runner_refresh.stamp }}'
    - unless: test "$({{ digest }})" = "$(cat {{ salt_master.runner_refresh.stamp }} 2>/dev/null)"
    - require:
      - git: salt_master-repository-checkout-git-latest
      - service: salt_master-service-salt-master-service-running
