{#- Reactor for ci-fleet/roles-anywhere/csr, sent by ci-fleet-roles-anywhere on a minion
    whose certificate is due (salt/aws_credentials/files/ci_fleet_roles_anywhere.py).
    data['id'] names the sender, data['data'] is the request {csr, ts, sig}. Neither is
    trusted here: salt/_runners/ci_fleet_pki.py signs only a request signed with the Salt key
    the master's pillar holds for that id, with a subject the master chooses. Both values
    are passed as JSON strings/maps, never spliced into YAML unquoted. #}
{%- set request = data.get('data') if data.get('data') is mapping else {} %}
orch-reactor-roles-anywhere-csr:
  runner.ci_fleet_pki.sign:
    - args:
      - minion: {{ data.get('id', '') | string | json }}
      - request: {{ request | json }}
