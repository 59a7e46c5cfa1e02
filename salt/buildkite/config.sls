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

buildkite-config-build-dir-file-directory:
  file.directory:
    - name: {{ buildkite.build_dir }}
    - user: {{ runner.user.name }}
    - group: {{ runner.user.name }}
    - mode: '0700'
    - makedirs: True
    - require:
      - file: runner-user-work-dir-file-directory
