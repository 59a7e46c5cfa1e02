{%- from "buildkite/map.jinja" import buildkite with context %}
{#- Agent hooks (root-owned, read-only to jobs): the job-secrets hooks built in
    salt/buildkite/files/hooks/ (wrappers + a bundled ci-fleet-job-secrets.js run by
    node), plus the pre-exit cleanup of the checkout. #}

include:
  - .package

buildkite-hooks-agent-hooks-file-recurse:
  file.recurse:
    - name: {{ buildkite.hooks_dir }}
    - source: salt://buildkite/files/hooks
    - user: root
    - group: root
    - dir_mode: '0755'
    - file_mode: '0755'
    - clean: True
    - makedirs: True
    - require:
      - pkg: buildkite-package-install-pkg-installed
