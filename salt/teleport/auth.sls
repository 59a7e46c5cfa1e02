{%- from "teleport/map.jinja" import teleport with context %}
{#- The Teleport machine: auth + proxy from ci_fleet_teleport:auth_config; roles and
    the GitHub connector applied with tctl from ci_fleet_teleport:resources through a
    root-only file in /run that is removed right after. #}
{%- set auth_config = salt['pillar.get']('ci_fleet_teleport:auth_config', '') %}
{%- set resources = salt['pillar.get']('ci_fleet_teleport:resources', '') %}
include:
  - teleport

{%- if not auth_config or not resources %}

teleport-auth-pillar-test-fail_without_changes:
  test.fail_without_changes:
    - name: pillar ci_fleet_teleport:auth_config and ci_fleet_teleport:resources are required on the Teleport machine
{%- else %}
{%-   set digest = resources | sha256 %}

teleport-auth-config-file-managed:
  file.managed:
    - name: {{ teleport.config_file }}
    - contents_pillar: ci_fleet_teleport:auth_config
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: False
    - require:
      - pkg: teleport-package-install-pkg-installed

teleport-auth-service-running:
  service.running:
    - name: teleport
    - enable: True
    - watch:
      - file: teleport-auth-config-file-managed
      - pkg: teleport-package-install-pkg-installed

teleport-auth-resources-file-managed:
  file.managed:
    - name: {{ teleport.resources_file }}
    - contents_pillar: ci_fleet_teleport:resources
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: True
    - dir_mode: '0700'
    - show_changes: False
    # Only when the resources changed since they were last applied.
    - unless: grep -qx {{ digest }} {{ teleport.resources_stamp }}
    - require:
      - service: teleport-auth-service-running

teleport-auth-resources-apply-cmd-run:
  cmd.run:
    - name: tctl create -f {{ teleport.resources_file }} && mkdir -p {{ teleport.resources_stamp.rsplit('/', 1)[0] }} && echo {{ digest }} > {{ teleport.resources_stamp }}
    - output_loglevel: quiet
    - onchanges:
      - file: teleport-auth-resources-file-managed

teleport-auth-resources-file-absent:
  file.absent:
    - name: {{ teleport.resources_file }}
    - require:
      - cmd: teleport-auth-resources-apply-cmd-run
{%- endif %}
