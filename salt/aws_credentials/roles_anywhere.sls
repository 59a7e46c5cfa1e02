{%- from "aws_credentials/map.jinja" import aws_credentials as aws with context %}
{#- equinix-metal: IAM Roles Anywhere with a certificate the fleet issues itself.
    The key pair is made on this machine and never leaves it (cert_dir: root 0700, keys
    0600); ci-fleet-roles-anywhere (a root timer) renews it at half its lifetime with a NEW
    key, through the master (minions) or locally with the CA key (the master), and raises
    the alarm at a quarter. Only root wears the machine's role with it: root's config on
    the master and the Teleport machine; on a runner the CI user gets one-hour sessions
    from aws_credentials.session instead, never the key. #}
{%- set ra = aws.roles_anywhere %}
{%- if ra and aws.user %}
{%-   set helper = aws.signing_helper %}
{%-   set renew = aws.renew %}
{%-   set is_master = aws.role == 'salt-master' %}
{%-   set run_command = renew.script ~ ' run --cert-dir ' ~ aws.cert_dir ~ ' --minion-id ' ~ aws.minion_id ~ ' --alarm-dir ' ~ aws.alarm_dir %}
{%-   if is_master %}
{%-     set run_command = run_command ~ ' --local-issuer ' ~ aws.local_issuer ~ ' --ca-dir ' ~ aws.ca_dir ~ ' --master-document ' ~ aws.master_document_dir ~ '/' ~ aws.minion_id ~ '.json' %}
{%-   endif %}

aws_credentials-roles_anywhere-signing-helper-file-managed:
  file.managed:
    - name: {{ helper.path }}
    - source: {{ helper.source }}
    - source_hash: sha256={{ helper.sha256 }}
    - user: root
    - group: root
    - mode: '0755'

aws_credentials-roles_anywhere-renew-script-file-managed:
  file.managed:
    - name: {{ renew.script }}
    - source: salt://aws_credentials/files/ci_fleet_roles_anywhere.py
    - user: root
    - group: root
    - mode: '0755'

{#- The parent first, world-traversable: `makedirs` would give it the key directory's 0700
    (file.makedirs_perms), and the CI user's AWS config lives under it too. #}
aws_credentials-roles_anywhere-cert-parent-dir-file-directory:
  file.directory:
    - name: {{ aws.cert_dir.rsplit('/', 1)[0] }}
    - user: root
    - group: root
    - mode: '0755'

aws_credentials-roles_anywhere-cert-dir-file-directory:
  file.directory:
    - name: {{ aws.cert_dir }}
    - user: root
    - group: root
    - mode: '0700'
    - require:
      - file: aws_credentials-roles_anywhere-cert-parent-dir-file-directory
{%-   if is_master %}

{#- The CA: the master alone holds its key, from its own pillar (never user-data). #}
aws_credentials-roles_anywhere-cryptography-pkg-installed:
  pkg.installed:
    - pkgs: [python3-cryptography]

aws_credentials-roles_anywhere-ca-dir-file-directory:
  file.directory:
    - name: {{ aws.ca_dir }}
    - user: root
    - group: root
    - mode: '0700'
    - makedirs: True

aws_credentials-roles_anywhere-ca-certificate-file-managed:
  file.managed:
    - name: {{ aws.ca_dir }}/certificate.pem
    - contents_pillar: ci_fleet_master:roles_anywhere_ca:certificate_pem
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: aws_credentials-roles_anywhere-ca-dir-file-directory

aws_credentials-roles_anywhere-ca-private-key-file-managed:
  file.managed:
    - name: {{ aws.ca_dir }}/private-key.pem
    - contents_pillar: ci_fleet_master:roles_anywhere_ca:private_key_pem
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: False
    - require:
      - file: aws_credentials-roles_anywhere-ca-dir-file-directory

{#- The master's first certificate, before root's config names it (the pillar sync's first
    run used cloud-init's short bootstrap certificate, which salt_master.bootstrap_credentials
    removes after this). Later ones come from the timer. #}
aws_credentials-roles_anywhere-first-certificate-cmd-run:
  cmd.run:
    - name: {{ run_command }}
    - creates: {{ aws.cert_dir }}/current/certificate.pem
    - require:
      - pkg: aws_credentials-roles_anywhere-cryptography-pkg-installed
      - file: aws_credentials-roles_anywhere-renew-script-file-managed
      - file: aws_credentials-roles_anywhere-cert-dir-file-directory
      - file: aws_credentials-roles_anywhere-ca-certificate-file-managed
      - file: aws_credentials-roles_anywhere-ca-private-key-file-managed
{%-   endif %}

aws_credentials-roles_anywhere-renew-service-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/ci-fleet-roles-anywhere.service
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (aws_credentials.roles_anywhere).
        [Unit]
        Description=ci-fleet: renew this machine's Roles Anywhere certificate; alarm before it expires
        Wants=network-online.target
        After=network-online.target salt-minion.service

        [Service]
        Type=oneshot
        UMask=0077
        ExecStart={{ run_command }}

aws_credentials-roles_anywhere-renew-timer-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/ci-fleet-roles-anywhere.timer
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (aws_credentials.roles_anywhere).
        [Unit]
        Description=ci-fleet: Roles Anywhere certificate renewal and alarm, every {{ renew.interval }}

        [Timer]
        OnBootSec=1min
        OnUnitActiveSec={{ renew.interval }}
        RandomizedDelaySec=5min

        [Install]
        WantedBy=timers.target

aws_credentials-roles_anywhere-renew-units-cmd-run:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: aws_credentials-roles_anywhere-renew-service-unit-file-managed
      - file: aws_credentials-roles_anywhere-renew-timer-unit-file-managed

aws_credentials-roles_anywhere-renew-timer-service-running:
  service.running:
    - name: ci-fleet-roles-anywhere.timer
    - enable: True
    - require:
      - file: aws_credentials-roles_anywhere-renew-script-file-managed
      - file: aws_credentials-roles_anywhere-cert-dir-file-directory
      - cmd: aws_credentials-roles_anywhere-renew-units-cmd-run
    - watch:
      - file: aws_credentials-roles_anywhere-renew-timer-unit-file-managed
{%-   if aws.user.name == 'root' %}

aws_credentials-roles_anywhere-config-file-managed:
  file.managed:
    - name: {{ aws.user.config }}
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: True
    - contents: |
        # Managed by Salt (aws_credentials.roles_anywhere).
        [default]
        region = {{ aws.region }}
        credential_process = {{ helper.path }} credential-process --certificate {{ aws.cert_dir }}/current/certificate.pem --private-key {{ aws.cert_dir }}/current/private-key.pem --trust-anchor-arn {{ ra.trust_anchor_arn }} --profile-arn {{ ra.profile_arn }} --role-arn {{ aws.role_arn }} --session-duration 3600
    - require:
      - file: aws_credentials-roles_anywhere-signing-helper-file-managed
      - file: aws_credentials-roles_anywhere-cert-dir-file-directory
{%-     if is_master %}
      - cmd: aws_credentials-roles_anywhere-first-certificate-cmd-run
{%-     endif %}
{%-   endif %}
{%- endif %}
