{#- Roles by minion id (the only identity the master authenticates). The CI agent
    formula comes from pillar, which the master serves by minion id, never a grain. #}
{%- set agent_formulas = {'github-actions': 'github_runner', 'buildkite': 'buildkite'} %}
{%- set agent = salt['pillar.get']('ci_fleet:runner:agent', '') %}
{#- Issue 15: with isolation vm each job runs in a fresh VM on a slot (runner.job_vm); the
    host runs no GitHub runner of its own, and its Buildkite agent only hands jobs to slots. #}
{%- set isolation = salt['pillar.get']('ci_fleet:runner:isolation', 'host') %}
base:
  '*':
    - base
    - access
  '*-salt-master':
    - salt_master
    - aws_credentials
  '*-teleport':
    # aws_credentials first: teleport.auth's audit backend reads root's AWS config.
    - aws_credentials
    - teleport.auth
  '* and not *-teleport':
    - match: compound
    - teleport.node
  '* and not *-salt-master and not *-teleport':
    - match: compound
    - runner
    - aws_credentials
{%- if isolation == 'vm' %}
    - runner.job_vm
{%- endif %}
{%- if agent in agent_formulas and not (isolation == 'vm' and agent == 'github-actions') %}
    - {{ agent_formulas[agent] }}
{%- endif %}
