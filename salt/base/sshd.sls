{%- from "base/map.jinja" import base with context %}
{#- Teleport is the only door: OpenSSH is stopped, disabled and masked. #}
{%- for unit in base.ssh_units %}
{%-   set unit_id = unit | replace('.', '-') %}

base-sshd-{{ unit_id }}-service-dead:
  service.dead:
    - name: {{ unit }}
    - enable: False

base-sshd-{{ unit_id }}-service-masked:
  service.masked:
    - name: {{ unit }}
    - require:
      - service: base-sshd-{{ unit_id }}-service-dead
{%- endfor %}
