{%- from "base/map.jinja" import base with context %}
{#- cloud-init keeps copies of user-data (minion key, join tokens): root only. #}
{%- set instances = base.cloud_init.instances_dir %}

base-cloudinit-instances-file-directory:
  file.directory:
    - name: {{ instances }}
    - user: root
    - group: root
    - mode: '0700'

base-cloudinit-user-data-copies-cmd-run:
  cmd.run:
    - name: find {{ instances }} -name 'user-data.txt*' -exec chown root:root {} + -exec chmod 0600 {} +
    - onlyif: find {{ instances }} -name 'user-data.txt*' \( ! -user root -o -perm /0177 \) | grep -q .
    - require:
      - file: base-cloudinit-instances-file-directory
