{%- from "buildkite/map.jinja" import buildkite with context %}
{#- The agent token, from this runner's own pillar (ci_fleet:runner:buildkite_agent_token:
    the master compiles and encrypts it for this minion alone; it is never under the queue's
    SSM path, which every job's role may read). A root-only file in a root-only directory,
    never rendered into a state's arguments (contents_pillar) nor shown in a diff; systemd
    (root) copies it into the unit's credentials directory (LoadCredential=), readable by the
    agent's uid and root only. A runner without a usable token in its pillar fails here (and
    the unit, whose credential is then missing, does not start). #}
buildkite-token-dir-file-directory:
  file.directory:
    - name: {{ buildkite.token_dir }}
    - user: root
    - group: root
    - mode: '0700'
    - makedirs: True
{%- if buildkite.has_agent_token %}

buildkite-token-file-managed:
  file.managed:
    - name: {{ buildkite.token_file }}
    - contents_pillar: ci_fleet:runner:buildkite_agent_token
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: False
    - require:
      - file: buildkite-token-dir-file-directory
{%- else %}

buildkite-token-test-fail_without_changes:
  test.fail_without_changes:
    - name: "ci_fleet:runner:buildkite_agent_token is missing from this runner's pillar or is not an agent token: set queueSecrets.{{ buildkite.queue }}.buildkite.agent-token and run pulumi up"
{%- endif %}
