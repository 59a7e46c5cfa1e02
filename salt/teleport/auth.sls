{%- from "teleport/map.jinja" import teleport with context %}
{#- The Teleport machine: auth + proxy from ci_fleet_teleport:auth_config; roles and
    the GitHub connector applied with tctl from ci_fleet_teleport:resources_gzip_base64
    (gzip+base64: the YAML alone outgrows an SSM parameter) through root-only files in
    /run that are removed right after. #}
{%- set auth_config = salt['pillar.get']('ci_fleet_teleport:auth_config', '') %}
{%- set resources = salt['pillar.get']('ci_fleet_teleport:resources_gzip_base64', '') %}
{%- set provider = salt['pillar.get']('ci_fleet:provider', '') %}
{%- set region = salt['pillar.get']('ci_fleet:aws:region', '') %}
include:
  - teleport

{%- if not auth_config or not resources %}

teleport-auth-pillar-test-fail_without_changes:
  test.fail_without_changes:
    - name: pillar ci_fleet_teleport:auth_config and ci_fleet_teleport:resources_gzip_base64 are required on the Teleport machine
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

{%-   if provider == 'equinix-metal' %}

{#- The audit log's DynamoDB table and S3 bucket are reached with root's Roles Anywhere
    profile: the packaged unit sets no HOME, so name the file (AWS_SDK_LOAD_CONFIG is
    for SDK v1 code paths; v2 reads AWS_CONFIG_FILE itself). On aws, IMDS serves root. #}

teleport-auth-aws-dropin-file-managed:
  file.managed:
    - name: {{ teleport.aws_dropin }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True
    - contents: |
        # Managed by Salt (teleport.auth).
        [Service]
        Environment=AWS_CONFIG_FILE={{ teleport.aws_config_file }}
        Environment=AWS_SDK_LOAD_CONFIG=1
        Environment=AWS_REGION={{ region }}
{%-   endif %}

teleport-auth-service-running:
  service.running:
    - name: teleport
    - enable: True
    # Salt's systemd module runs daemon-reload itself when a unit or drop-in changed.
    - watch:
      - file: teleport-auth-config-file-managed
      - pkg: teleport-package-install-pkg-installed
{%-   if provider == 'equinix-metal' %}
      - file: teleport-auth-aws-dropin-file-managed
{%-   endif %}

teleport-auth-resources-file-managed:
  file.managed:
    - name: {{ teleport.resources_file }}.gz.b64
    - contents_pillar: ci_fleet_teleport:resources_gzip_base64
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
    - name: >-
        umask 077 &&
        base64 -d {{ teleport.resources_file }}.gz.b64 | gunzip > {{ teleport.resources_file }} &&
        tctl create -f {{ teleport.resources_file }} && mkdir -p {{ teleport.resources_stamp.rsplit('/', 1)[0] }} && echo {{ digest }} > {{ teleport.resources_stamp }}
    - output_loglevel: quiet
    - onchanges:
      - file: teleport-auth-resources-file-managed

{%- for suffix in ['', '.gz.b64'] %}

teleport-auth-resources{{ suffix | replace('.', '-') }}-file-absent:
  file.absent:
    - name: {{ teleport.resources_file }}{{ suffix }}
    - require:
      - cmd: teleport-auth-resources-apply-cmd-run
{%- endfor %}
{%- endif %}
