{%- from "aws_credentials/map.jinja" import aws_credentials as aws with context %}
{#- aws: the instance profile IS the machine's role. Root (the Salt master, the Teleport
    auth service) reads it from the metadata service itself: its config names the region
    only, so the SDK's default chain ends at IMDS. The metadata service is closed to every
    uid but 0 (it also serves user-data), so for the CI user a root timer copies the role's
    credentials (never user-data) to a file only the CI user can read, and the CI user's
    credential_process prints it. #}
{%- if aws.provider == 'aws' and aws.user and aws.user.name == 'root' %}

aws_credentials-instance_profile-config-file-managed:
  file.managed:
    - name: {{ aws.user.config }}
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: True
    - contents: |
        # Managed by Salt (aws_credentials.instance_profile).
        [default]
        region = {{ aws.region }}
{%- elif aws.provider == 'aws' and aws.user %}
{%-   set user = aws.user.name %}

aws_credentials-instance_profile-helper-file-managed:
  file.managed:
    - name: {{ aws.imds_helper }}
    - source: salt://aws_credentials/files/ci_fleet_imds_credentials.py
    - user: root
    - group: root
    - mode: '0755'

aws_credentials-instance_profile-service-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/ci-fleet-imds-credentials.service
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (aws_credentials.instance_profile).
        [Unit]
        Description=ci-fleet: copy the instance role's credentials for {{ user }}
        Wants=network-online.target
        After=network-online.target

        [Service]
        Type=oneshot
        ExecStart={{ aws.imds_helper }} --output {{ aws.imds_credentials_file }} --group {{ user }}

aws_credentials-instance_profile-timer-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/ci-fleet-imds-credentials.timer
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (aws_credentials.instance_profile).
        [Unit]
        Description=ci-fleet: refresh the instance role's credentials for {{ user }}

        [Timer]
        OnBootSec=0
        OnUnitActiveSec=10min

        [Install]
        WantedBy=timers.target

# Salt reloads systemd only when the unit it starts changed (the timer), never for the
# .service the timer starts: reload here, so a changed ExecStart is the one that runs.
aws_credentials-instance_profile-units-cmd-run:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: aws_credentials-instance_profile-service-unit-file-managed
      - file: aws_credentials-instance_profile-timer-unit-file-managed

aws_credentials-instance_profile-timer-service-running:
  service.running:
    - name: ci-fleet-imds-credentials.timer
    - enable: True
    - require:
      - file: aws_credentials-instance_profile-helper-file-managed
      - cmd: aws_credentials-instance_profile-units-cmd-run
    - watch:
      - file: aws_credentials-instance_profile-timer-unit-file-managed

aws_credentials-instance_profile-config-dir-file-directory:
  file.directory:
    - name: {{ aws.user.config.rsplit('/', 1)[0] }}
    - user: root
    - group: {{ user }}
    - mode: '0750'
    - makedirs: True

aws_credentials-instance_profile-config-file-managed:
  file.managed:
    - name: {{ aws.user.config }}
    - user: root
    - group: {{ user }}
    - mode: '0640'
    - makedirs: True
    - contents: |
        # Managed by Salt (aws_credentials.instance_profile).
        [default]
        region = {{ aws.region }}
        credential_process = /bin/cat {{ aws.imds_credentials_file }}
    - require:
      - file: aws_credentials-instance_profile-config-dir-file-directory
{%- endif %}
