{%- from "salt_master/map.jinja" import salt_master with context %}

{#- One builder (infra/bootstrap/salt-config.ts) renders the whole drop-in; cloud-init wrote
    the same text at first boot, so this changes nothing until the builder does. #}
salt_master-config-master-d-file-managed:
  file.managed:
    - name: {{ salt_master.config_file }}
    - contents_pillar: ci_fleet_master:master_config
    - user: root
    - group: root
    - mode: '0600'

{#- Keys are accepted only from pillar (salt_master.minion_keys): no autosigning. #}
salt_master-config-autosign-file-absent:
  file.absent:
    - name: /etc/salt/autosign.conf

salt_master-config-autosign-grains-file-absent:
  file.absent:
    - name: /etc/salt/autosign_grains
