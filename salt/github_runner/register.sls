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

github_runner-register-config-cmd-run:
  cmd.run:
    - name: >-
        ./config.sh --unattended --replace --disableupdate
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
