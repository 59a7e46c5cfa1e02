{%- from "aws_credentials/map.jinja" import aws_credentials as aws with context %}
{#- aws: root on the Salt master and the Teleport machine wears the instance profile's role
    itself (the pillar sync, the auth service): its config names the region only, so the
    SDK's default chain ends at IMDS, which the firewall opens to uid 0 alone. A runner's
    instance profile is its queue's HOST role, which can only assume the queue's agent role:
    the CI user gets one-hour sessions of that from aws_credentials.session, never the host
    role's credentials. #}
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
{%- endif %}
