{%- from "github_runner/map.jinja" import github_runner with context %}
{%- from "runner/map.jinja" import runner with context %}
{#- Registration, applied by the master's orchestration (salt/_runners/ci_fleet.py)
    with a one-hour registration token as inline pillar for this minion only. The
    token reaches config.sh through its environment (ACTIONS_RUNNER_INPUT_TOKEN),
    never the command line, and is not logged. In a normal highstate there is no
    token and this file does nothing. #}
{%- set token = salt['pillar.get']('ci_fleet_inline:github_registration_token', '') %}
include:
  - .service

{%- if token %}
{%-   set labels = (github_runner.labels + ['queue-' ~ github_runner.queue]) | join(',') %}

{#- Register on the newest release: GitHub gives no jobs to a runner more than 30 days
    behind. No requisite: if GitHub's API cannot be read, register on what is installed. #}
github_runner-register-update-cmd-run:
  cmd.run:
    - name: {{ github_runner.updater.script }} update

{#- Under the updater's lock, and by absolute path: config.sh resolves its directory
    (the current release) only once the lock is held. --disableupdate: the runner cannot
    replace its root-owned files; the updater does. #}
github_runner-register-config-cmd-run:
  cmd.run:
    - name: >-
        flock --wait 900 {{ github_runner.updater.lock }}
        {{ github_runner.install_dir }}/config.sh --unattended --replace --disableupdate
        {%- if github_runner.ephemeral %} --ephemeral{% endif %}
        --url https://github.com/{{ github_runner.organization }}
        --name {{ github_runner.minion_id }}
        --runnergroup {{ github_runner.runner_group | json }}
        --labels {{ labels | json }}
        --work {{ runner.work_dir }}
    - cwd: {{ github_runner.install_dir }}
    - runas: {{ runner.user.name }}
    - env:
      - ACTIONS_RUNNER_INPUT_TOKEN: {{ token | json }}
    - hide_output: True
    - output_loglevel: quiet
    - unless: test -f {{ github_runner.install_dir }}/.runner
    - require:
      - service: github_runner-service-enabled-service-enabled

github_runner-register-service-running:
  service.running:
    - name: {{ github_runner.unit }}
    - require:
      - cmd: github_runner-register-config-cmd-run
{%- endif %}
