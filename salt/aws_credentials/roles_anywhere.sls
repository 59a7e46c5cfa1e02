{%- from "aws_credentials/map.jinja" import aws_credentials as aws with context %}
{#- equinix-metal: the role comes from IAM Roles Anywhere through credential_process.
    The certificate and key are readable by the user that gets the role, and only by it. #}
{%- set ra = aws.roles_anywhere %}
{%- if ra and aws.user %}
{%-   set user = aws.user.name %}
{%-   set helper = aws.signing_helper %}

aws_credentials-roles_anywhere-signing-helper-file-managed:
  file.managed:
    - name: {{ helper.path }}
    - source: {{ helper.source }}
    - source_hash: sha256={{ helper.sha256 }}
    - user: root
    - group: root
    - mode: '0755'

aws_credentials-roles_anywhere-cert-dir-file-directory:
  file.directory:
    - name: {{ aws.cert_dir }}
    - user: root
    - group: {{ user }}
    - mode: '0750'
    - makedirs: True

aws_credentials-roles_anywhere-certificate-file-managed:
  file.managed:
    - name: {{ aws.cert_dir }}/certificate.pem
    - contents_pillar: ci_fleet:aws:roles_anywhere:certificate_pem
    - user: root
    - group: {{ user }}
    - mode: '0640'
    - require:
      - file: aws_credentials-roles_anywhere-cert-dir-file-directory

aws_credentials-roles_anywhere-private-key-file-managed:
  file.managed:
    - name: {{ aws.cert_dir }}/private-key.pem
    - contents_pillar: ci_fleet:aws:roles_anywhere:private_key_pem
    - user: root
    - group: {{ user }}
    - mode: '0640'
    - show_changes: False
    - require:
      - file: aws_credentials-roles_anywhere-cert-dir-file-directory

{%- if user != 'root' %}

aws_credentials-roles_anywhere-config-dir-file-directory:
  file.directory:
    - name: {{ aws.user.config.rsplit('/', 1)[0] }}
    - user: root
    - group: {{ user }}
    - mode: '0750'
    - makedirs: True
{%- endif %}

aws_credentials-roles_anywhere-config-file-managed:
  file.managed:
    - name: {{ aws.user.config }}
    - user: root
    - group: {{ user }}
    - mode: '0640'
    - makedirs: True
    - contents: |
        # Managed by Salt (aws_credentials.roles_anywhere).
        [default]
        region = {{ aws.region }}
        credential_process = {{ helper.path }} credential-process --certificate {{ aws.cert_dir }}/certificate.pem --private-key {{ aws.cert_dir }}/private-key.pem --trust-anchor-arn {{ ra.trust_anchor_arn }} --profile-arn {{ ra.profile_arn }} --role-arn {{ aws.role_arn }}
    - require:
      - file: aws_credentials-roles_anywhere-signing-helper-file-managed
      - file: aws_credentials-roles_anywhere-certificate-file-managed
      - file: aws_credentials-roles_anywhere-private-key-file-managed
{%-   if user != 'root' %}
      - file: aws_credentials-roles_anywhere-config-dir-file-directory
{%-   endif %}
{%- endif %}
