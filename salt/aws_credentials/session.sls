{%- from "aws_credentials/map.jinja" import aws_credentials as aws with context %}
{#- Runners, both providers: the CI user gets one-hour sessions of its queue's agent role and
    nothing that lasts longer. A root timer fetches them (equinix-metal: the signing helper
    with the machine's root-only key; aws: sts:AssumeRole from the instance's host role,
    whose only permission that is) and writes a credential_process document readable by
    the CI user's group alone; the CI user's AWS config prints it. The CI user never reads a
    private key, and on aws never the host role (the metadata service is closed to every uid
    but 0: base.firewall). #}
{#- The command and the condition: aws_credentials/session_command.jinja, which the slot
    launcher's config (runner.job_vm_config) reads too: a job VM's own session comes from the
    same command with --stdout instead of this timer's file. #}
{%- from "aws_credentials/session_command.jinja" import session_enabled, session_timer_argv with context %}
{%- if session_enabled %}
{%-   set user = aws.user.name %}
{%-   set session = aws.session %}
{%-   set config_id = 'aws_credentials-session-config-file-managed' %}
{%-   set command = session_timer_argv | join(' ') %}
{%-   if aws.provider == 'aws' %}

aws_credentials-session-boto3-pkg-installed:
  pkg.installed:
    - pkgs: [python3-boto3]
{%-   endif %}

aws_credentials-session-script-file-managed:
  file.managed:
    - name: {{ session.script }}
    - source: salt://aws_credentials/files/ci_fleet_aws_session.py
    - user: root
    - group: root
    - mode: '0755'

aws_credentials-session-service-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/ci-fleet-aws-session.service
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (aws_credentials.session).
        [Unit]
        Description=ci-fleet: a one-hour session of the queue role for {{ user }}
        Wants=network-online.target
        After=network-online.target

        [Service]
        Type=oneshot
        Environment=HOME=/root
        UMask=0077
        ExecStart={{ command }}

aws_credentials-session-timer-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/ci-fleet-aws-session.timer
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (aws_credentials.session).
        [Unit]
        Description=ci-fleet: refresh {{ user }}'s AWS session every {{ session.interval }}

        [Timer]
        OnBootSec=0
        OnUnitActiveSec={{ session.interval }}

        [Install]
        WantedBy=timers.target

{#- Salt reloads systemd only when the unit it starts changed (the timer), never for the
    .service the timer starts: reload here, so a changed ExecStart is the one that runs. #}
aws_credentials-session-units-cmd-run:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: aws_credentials-session-service-unit-file-managed
      - file: aws_credentials-session-timer-unit-file-managed

aws_credentials-session-timer-service-running:
  service.running:
    - name: ci-fleet-aws-session.timer
    - enable: True
    - require:
      - file: aws_credentials-session-script-file-managed
      - cmd: aws_credentials-session-units-cmd-run
{%-   if aws.provider == 'aws' %}
      - pkg: aws_credentials-session-boto3-pkg-installed
{%-   endif %}
    - watch:
      - file: aws_credentials-session-timer-unit-file-managed

aws_credentials-session-config-dir-file-directory:
  file.directory:
    - name: {{ aws.user.config.rsplit('/', 1)[0] }}
    - user: root
    - group: {{ user }}
    - mode: '0750'
    - makedirs: True

{{ config_id }}:
  file.managed:
    - name: {{ aws.user.config }}
    - user: root
    - group: {{ user }}
    - mode: '0640'
    - makedirs: True
    - contents: |
        # Managed by Salt (aws_credentials.session).
        [default]
        region = {{ aws.region }}
        credential_process = /bin/cat {{ session.file }}
    - require:
      - file: aws_credentials-session-config-dir-file-directory
{%- endif %}
