{%- from "base/map.jinja" import base with context %}
{%- set servers = base.time.servers.get(base.provider, []) %}

include:
  - .packages

base-timesync-chrony-conf-file-managed:
  file.managed:
    - name: /etc/chrony/conf.d/ci-fleet.conf
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (base.timesync).
{%- for server in servers %}
        server {{ server }} prefer iburst
{%- endfor %}
    - require:
      - pkg: base-packages-install-pkg-installed

base-timesync-chrony-service-running:
  service.running:
    - name: chrony
    - enable: True
    - watch:
      - file: base-timesync-chrony-conf-file-managed
