{%- from "buildkite/map.jinja" import buildkite with context %}
{%- from "runner/map.jinja" import runner with context %}
{%- from "access/map.jinja" import access with context %}
{%- set agent = buildkite.agent_user.name %}
{%- set job_user = runner.user.name %}
{#- Every job runs as the CI user, never as the agent's user: the agent's bootstrap-script
    (buildkite-agent.cfg) is `sudo -n -E -u <CI user> -g <CI user> -- <job executor>`. sudo
    lets the agent's user run exactly that one command, with no arguments, as exactly that
    user, and nothing else (no password exists to ask for); the job keeps the environment the
    agent gives it (its job token, BUILDKITE_*, the hooks' CI_FLEET_*/AWS_* variables: SETENV
    with -E) except the agent token, which sudo deletes (the agent has already unset it from
    its own environment). The executor then gives the job a no_new_privs process (setpriv):
    as under the old unit's NoNewPrivileges=, no set-uid program raises a job's privileges. #}

include:
  - access
  - .user

buildkite-job-executor-file-managed:
  file.managed:
    - name: {{ buildkite.job_executor }}
    - user: root
    - group: root
    - mode: '0755'
    - contents: |
        #!/bin/sh
        # Managed by Salt (buildkite.job). The Buildkite agent's bootstrap-script, run through
        # sudo as {{ job_user }} for every job: the agent's own user never runs job code.
        set -eu
        # Never in a job: the agent unset it from its environment and sudo deleted it; again here.
        unset BUILDKITE_AGENT_TOKEN
        # sudo -E kept the agent's HOME; a job lives in the CI user's (wiped before and after every job).
        export HOME={{ runner.user.home }} USER={{ job_user }} LOGNAME={{ job_user }}
        unset SUDO_COMMAND SUDO_USER SUDO_UID SUDO_GID
        # The agent writes the job's environment files as its own user, 0600 (agent/job_runner.go
        # createJobEnvFiles: os.CreateTemp): unreadable here. Plugins then see no file (and say so)
        # rather than one they cannot open.
        [ -r "${BUILDKITE_ENV_FILE:-}" ] || unset BUILDKITE_ENV_FILE
        [ -r "${BUILDKITE_ENV_JSON_FILE:-}" ] || unset BUILDKITE_ENV_JSON_FILE
        exec {{ buildkite.setpriv_binary }} --no-new-privs -- /usr/bin/{{ buildkite.package }} bootstrap

{#- visudo checks the candidate before Salt puts it in place (a broken drop-in would break
    sudo for every rule). The agent's user only: its Defaults touch no other user. #}
buildkite-job-sudoers-file-managed:
  file.managed:
    - name: {{ buildkite.sudoers_file }}
    - user: root
    - group: root
    - mode: '0440'
    - check_cmd: {{ access.visudo }} -c -f
    - contents: |
        # Managed by Salt (buildkite.job). The Buildkite agent starts each job as {{ job_user }}:
        # this one command, no arguments, no password, the job's environment kept except the
        # agent token; no pty of sudo's own (the job's output is the agent's pty), and the
        # job's PATH and variables as the agent passes them (sudo only lowers privileges here).
        # `+=` adds the token to sudo's built-in env_delete list (BASH_ENV, PERL5OPT, PYTHONPATH, ...);
        # `=` would replace that list (sudoers(5)).
        Defaults:{{ agent }} !use_pty, !secure_path, !env_check, env_delete += "BUILDKITE_AGENT_TOKEN"
        {{ agent }} ALL = ({{ job_user }} : {{ job_user }}) NOPASSWD: SETENV: {{ buildkite.job_executor }} ""
{%- if buildkite.isolation == 'vm' %}
        # isolation vm (runner.job_vm_host_agent): root hands the job to a slot's VM; no job runs here.
        # No SETENV and no -E for root: with them the agent's user could set LD_PRELOAD (sudoers(5):
        # SETENV lifts every env restriction) and run code as root. sudo resets the environment and
        # keeps only the job's names, which ci-job-handoff reads.
        Defaults!{{ buildkite.job_handoff }} env_keep = "BUILDKITE_* CI_FLEET_* CI BUILDKITE"
        {{ agent }} ALL = (root) NOPASSWD: {{ buildkite.job_handoff }} ""
{%- endif %}
    - require:
      - pkg: access-sudo-package-pkg-installed
      - user: buildkite-user-agent-user-present
      - file: buildkite-job-executor-file-managed
