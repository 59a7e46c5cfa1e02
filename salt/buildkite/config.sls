{%- from "buildkite/map.jinja" import buildkite with context %}
{%- from "runner/map.jinja" import runner with context %}

include:
  - runner.user
  - .package

{#- After the agent package: its postinst, on install, runs
    `chown -R buildkite-agent:buildkite-agent /etc/buildkite-agent` (buildkite/agent@v3.123.1
    packaging/linux/scripts/after-install-and-upgrade.sh); Salt then owns all of it again. #}
buildkite-config-dir-file-directory:
  file.directory:
    - name: {{ buildkite.config_dir }}
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - pkg: buildkite-package-agent-pkg-installed

buildkite-config-agent-cfg-file-managed:
  file.managed:
    - name: {{ buildkite.config_dir }}/buildkite-agent.cfg
    - source: salt://buildkite/files/buildkite-agent.cfg.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - context:
        buildkite: {{ buildkite | json }}
    - require:
      - pkg: buildkite-package-agent-pkg-installed
      - file: buildkite-config-dir-file-directory

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
