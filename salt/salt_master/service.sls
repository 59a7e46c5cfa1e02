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
    - watch:
      - file: salt_master-service-drop-in-file-managed
      - file: salt_master-config-master-d-file-managed
      - git: salt_master-repository-checkout-git-latest
