{%- from "github_runner/map.jinja" import github_runner with context %}
{#- Registration, applied by the master's orchestration (salt/_runners/ci_fleet.py) with a
    GitHub just-in-time runner config in this minion's own pillar
    (ci_fleet_inline:github_jit_config). The master minted it for this runner's name, runner
    group and labels; it is single use (one job, then GitHub removes the runner). Nothing
    here chooses a name, group or label, and config.sh is never run. The config goes to a
    root-only file the unit reads as root (EnvironmentFile=) and removes when the runner
    stops; it is never on a command line and never shown in a diff. In a normal highstate
    there is no config and this file does nothing. #}
{%- set jit_config = salt['pillar.get']('ci_fleet_inline:github_jit_config', '') %}
include:
  - .service

{%- if jit_config %}

{#- Start on the newest release: GitHub gives no jobs to a runner more than 30 days
    behind. No requisite (Salt runs the states in this order): if GitHub's API cannot be
    read, start what is installed. #}
github_runner-register-update-cmd-run:
  cmd.run:
    - name: {{ github_runner.updater.script }} update

github_runner-register-jit-config-file-managed:
  file.managed:
    - name: {{ github_runner.jit_config_file }}
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: True
    - show_changes: False
    - contents: |
        ACTIONS_RUNNER_INPUT_JITCONFIG={{ jit_config }}
    - require:
      - service: github_runner-service-enabled-service-enabled

{#- Started under the updater's lock: the listener writes the config's files into the
    current release, and the updater switches releases only while the unit is inactive
    (it holds the same lock), so a switch never races the start. #}
github_runner-register-start-cmd-run:
  cmd.run:
    - name: flock --wait 900 {{ github_runner.updater.lock }} systemctl start {{ github_runner.unit }}
    - require:
      - file: github_runner-register-jit-config-file-managed
{%- endif %}
