{%- from "buildkite/map.jinja" import buildkite with context %}
{%- from "runner/map.jinja" import runner with context %}

include:
  - runner.user
  - .package
  - .user

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

{#- build-path is made by ci-agent-reset (the job's, the agent may only enter it);
    plugins-path and sockets-path are made by the job process in the CI user's work dir,
    which the reset recreates empty before and after every job. Salt writes nothing below
    the CI user's home. #}
