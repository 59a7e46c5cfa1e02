{%- from "salt_master/map.jinja" import salt_master with context %}
{#- The AWS config, environment and (equinix-metal) Roles Anywhere certificate and key that
    cloud-init wrote for the first pillar sync only. Once aws_credentials has written root's
    own config (which the pillar sync timer reads), they are stale copies of a private key
    and of a certificate that expires: remove them. #}
include:
  - aws_credentials
{%- set aws_config_state = {
      'equinix-metal': 'aws_credentials-roles_anywhere-config-file-managed',
      'aws': 'aws_credentials-instance_profile-config-file-managed',
    }.get(salt_master.provider, '') %}
{#- Only the master has root's own config to wait for (a runner's config is its CI user's). #}
{%- if aws_config_state and salt['pillar.get']('ci_fleet:role') == 'salt-master' %}

salt_master-bootstrap_credentials-aws-dir-file-absent:
  file.absent:
    - name: {{ salt_master.bootstrap_aws_dir }}
    - require:
      - file: {{ aws_config_state }}
{%- endif %}
