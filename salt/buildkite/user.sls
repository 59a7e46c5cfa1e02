{%- from "buildkite/map.jinja" import buildkite with context %}
{%- from "runner/map.jinja" import runner with context %}
{#- The agent's own system user. Buildkite's deb makes it on install (useradd --system,
    home /var/lib/buildkite-agent: packaging/linux/scripts/after-install-and-upgrade.sh);
    Salt makes it first and keeps it so: no login shell, no password, and in no group but
    its own (not the CI user's group, not kvm), so it reads nothing of the CI user's and
    the CI user nothing of its. Jobs never run as this user: bootstrap-script drops every
    job to the CI user (buildkite.job). #}

include:
  - runner.user

buildkite-user-agent-user-present:
  user.present:
    - name: {{ buildkite.agent_user.name }}
    - home: {{ buildkite.agent_user.home }}
    - shell: {{ buildkite.agent_user.shell }}
    - system: True
    - createhome: True
    - usergroup: True
    - password: '!'
    - enforce_password: True
    - groups: []
    - remove_groups: True
    - require:
      - user: runner-user-ci-agent-user-present
