{%- from "access/map.jinja" import access with context %}
{#- sudo only for logins marked `sudo` (ci-admin). visudo checks the candidate file
    before Salt puts it in place: a broken drop-in would break sudo for everyone. #}
{%- set admins = access.logins_here | select('in', access.logins | dictsort | selectattr('1.sudo') | map(attribute='0') | list) | list %}

access-sudo-package-pkg-installed:
  pkg.installed:
    - name: sudo

access-sudo-dropin-file-managed:
  file.managed:
    - name: {{ access.sudoers_file }}
    - user: root
    - group: root
    - mode: '0440'
    - check_cmd: {{ access.visudo }} -c -f
    - contents: |
        # Managed by Salt (access.sudo). Teleport logins with sudo; every command is logged.
{%- for name in admins %}
        Defaults:{{ name }} log_allowed, log_denied, log_output, syslog=authpriv
        {{ name }} ALL=(ALL:ALL) NOPASSWD: ALL
{%- endfor %}
    - require:
      - pkg: access-sudo-package-pkg-installed
{%- for name in admins %}
      - user: access-users-{{ name }}-user-present
{%- endfor %}
