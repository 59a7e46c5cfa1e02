{%- from "buildkite/map.jinja" import buildkite with context %}
{%- from "runner/map.jinja" import runner with context %}

include:
  - runner.user

buildkite-config-agent-cfg-file-managed:
  file.managed:
    - name: {{ buildkite.config_dir }}/buildkite-agent.cfg
    - source: salt://buildkite/files/buildkite-agent.cfg.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True
    - context:
        buildkite: {{ buildkite | json }}

buildkite-config-token-script-file-managed:
  file.managed:
    - name: {{ buildkite.token_script }}
    - source: salt://buildkite/files/buildkite_agent_token.py
    - user: root
    - group: root
    - mode: '0755'

{#- build-path and plugins-path live in the work dir, which ci-agent-reset recreates empty
    before and after every job; the agent creates them (MkdirAll, agent_start.go). Salt
    writes nothing below the CI user's home. #}
