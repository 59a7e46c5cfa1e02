{%- from "github_runner/map.jinja" import github_runner with context %}
{#- The runner's listener reads <root>/.env at start (Runner.Listener Program.cs); each
    release's .env is a link to this root-owned file, so a job cannot add variables to the
    next runner start (e.g. LD_PRELOAD). No .path: run.sh never reads it (only runsvc.sh),
    systemd's default PATH applies. #}

github_runner-config-env-file-managed:
  file.managed:
    - name: {{ github_runner.env_file }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True
    - contents: |
        LANG=C.UTF-8
        ACTIONS_RUNNER_HOOK_JOB_STARTED={{ github_runner.hooks_dir }}/job-started.sh
        ACTIONS_RUNNER_HOOK_JOB_COMPLETED={{ github_runner.hooks_dir }}/job-completed.sh
