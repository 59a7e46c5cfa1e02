{%- from "salt_master/map.jinja" import salt_master with context %}

salt_master-config-master-d-file-managed:
  file.managed:
    - name: {{ salt_master.config_file }}
    - source: salt://salt_master/files/master.conf.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0600'
    - context:
        salt_master: {{ salt_master | json }}

{#- Keys are accepted only from pillar (salt_master.minion_keys): no autosigning. #}
salt_master-config-autosign-file-absent:
  file.absent:
    - name: /etc/salt/autosign.conf

salt_master-config-autosign-grains-file-absent:
  file.absent:
    - name: /etc/salt/autosign_grains
