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
    # After the agent package: on install its postinst copies hook samples here if the
    # directory is missing (clean: True removes them) and chowns /etc/buildkite-agent.
    - require:
      - pkg: buildkite-package-install-pkg-installed
      - pkg: buildkite-package-agent-pkg-installed
