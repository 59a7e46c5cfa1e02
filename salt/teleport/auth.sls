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
{%- if provider == 'equinix-metal' %}
  # The drop-in below points the AWS SDK at root's config, written by aws_credentials.
  - aws_credentials
{%- endif %}

{%- if not auth_config or not resources %}

teleport-auth-pillar-test-fail_without_changes:
  test.fail_without_changes:
    - name: pillar ci_fleet_teleport:auth_config and ci_fleet_teleport:resources_gzip_base64 are required on the Teleport machine
{%- else %}
{%-   set digest = resources | sha256 %}
{%-   set stamp_dir = teleport.resources_stamp.rsplit('/', 1)[0] %}
{#- The stamp names what was applied and the day: the same resources are applied again
    the next day, so roles or the connector lost or edited in the backend come back. #}
{%-   set unless = 'grep -qx "%s $(date +%%F)" %s' | format(digest, teleport.resources_stamp) %}

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

{#- Salt reloads systemd itself only when `systemctl status` says so: reload explicitly. #}
teleport-auth-aws-dropin-daemon-reload-cmd-run:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: teleport-auth-aws-dropin-file-managed
{%-   endif %}

teleport-auth-service-running:
  service.running:
    - name: teleport
    - enable: True
{%-   if provider == 'equinix-metal' %}
    # The audit backend (DynamoDB/S3) initialises at start with root's Roles Anywhere
    # config: never start Teleport before that file exists.
    - require:
      - file: aws_credentials-roles_anywhere-config-file-managed
      - cmd: teleport-auth-aws-dropin-daemon-reload-cmd-run
{%-   endif %}
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
    # Until these resources have been applied successfully (the stamp is written only then).
    - unless: {{ unless }}
    - require:
      - service: teleport-auth-service-running

{#- Every highstate until it succeeds (never `onchanges` of the file above: after a failed
    apply that file is unchanged and the apply would not be retried). Waits, bounded, for
    the auth service to answer (`tctl status` pings it) before `tctl create -f`; the decoded
    stream (the connector's client secret) is removed on every exit. #}
teleport-auth-resources-apply-cmd-run:
  cmd.run:
    - name: |
        set -u
        umask 077
        trap 'rm -f {{ teleport.resources_file }} {{ teleport.resources_file }}.gz.b64' EXIT
        tries=0
        until tctl status >/dev/null 2>&1; do
          tries=$((tries + 1))
          if [ "$tries" -ge {{ teleport.auth_ready.tries }} ]; then echo "teleport auth service not ready" >&2; exit 1; fi
          sleep {{ teleport.auth_ready.interval_seconds }}
        done
        base64 -d {{ teleport.resources_file }}.gz.b64 | gunzip > {{ teleport.resources_file }} || exit 1
        tctl create -f {{ teleport.resources_file }} || exit 1
        mkdir -p {{ stamp_dir }} && echo "{{ digest }} $(date +%F)" > {{ teleport.resources_stamp }}.tmp && mv {{ teleport.resources_stamp }}.tmp {{ teleport.resources_stamp }}
    - unless: {{ unless }}
    - output_loglevel: quiet
    - require:
      - file: teleport-auth-resources-file-managed
      - service: teleport-auth-service-running

{#- Belt and braces (the command's trap removes them): no requisite on the command, so
    they run after it whether or not it succeeded. #}
{%- for suffix in ['', '.gz.b64'] %}

teleport-auth-resources{{ suffix | replace('.', '-') }}-file-absent:
  file.absent:
    - name: {{ teleport.resources_file }}{{ suffix }}
{%- endfor %}
{%- endif %}
