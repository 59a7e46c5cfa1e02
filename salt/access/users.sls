{%- from "access/map.jinja" import access with context %}
{#- One user per Teleport login allowed on this machine; logins allowed elsewhere only
    are removed (e.g. ci-operator on the control plane). #}
{%- for name in access.logins_here %}
{%-   set login = access.logins[name] %}

access-users-{{ name }}-user-present:
  user.present:
    - name: {{ name }}
    - fullname: {{ login.fullname | json }}
    - shell: {{ access.shell }}
    - home: {{ access.home_base }}/{{ name }}
    - createhome: True
    - usergroup: True
    # Locked: no password login or su; Teleport certificates are the only way in.
    - password: '!'
    - enforce_password: True
    - system: False
    - groups: {{ login.groups | json }}
{%- endfor %}
{%- for name in access.logins_elsewhere %}

access-users-{{ name }}-user-absent:
  user.absent:
    - name: {{ name }}
    - purge: True
{%- endfor %}
