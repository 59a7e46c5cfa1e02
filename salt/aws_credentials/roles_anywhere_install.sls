{%- from "aws_credentials/map.jinja" import aws_credentials as aws with context %}
{#- Applied only by the master (salt/_runners/ci_fleet_pki.py), never by the highstate:
    `state.apply aws_credentials.roles_anywhere_install` with the certificate it just issued
    for this minion as inline pillar ci_fleet_roles_anywhere_issued:certificate_pem (public).
    ci-fleet-roles-anywhere installs it only if it is for the pending key. #}
{%- set issued = salt['pillar.get']('ci_fleet_roles_anywhere_issued:certificate_pem', '') %}
{%- if issued and aws.roles_anywhere %}

aws_credentials-roles_anywhere_install-incoming-file-managed:
  file.managed:
    - name: {{ aws.cert_dir }}/incoming.pem
    - contents_pillar: ci_fleet_roles_anywhere_issued:certificate_pem
    - user: root
    - group: root
    - mode: '0600'

aws_credentials-roles_anywhere_install-cmd-run:
  cmd.run:
    - name: {{ aws.renew.script }} install --cert-dir {{ aws.cert_dir }} --incoming {{ aws.cert_dir }}/incoming.pem
    - onchanges:
      - file: aws_credentials-roles_anywhere_install-incoming-file-managed
{%- endif %}
