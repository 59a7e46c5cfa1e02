{%- from "github_runner/map.jinja" import github_runner with context %}
{%- from "runner/map.jinja" import runner with context %}
{#- Job hooks (ACTIONS_RUNNER_HOOK_JOB_STARTED/COMPLETED) wipe the work directory, so
    nothing of a job reaches the next one even before the root reset between jobs. #}

github_runner-hooks-dir-file-directory:
  file.directory:
    - name: {{ github_runner.hooks_dir }}
    - user: root
    - group: root
    - mode: '0755'

github_runner-hooks-job-started-file-managed:
  file.managed:
    - name: {{ github_runner.hooks_dir }}/job-started.sh
    - user: root
    - group: root
    - mode: '0755'
    - contents: |
        #!/bin/sh
        # Managed by Salt (github_runner.hooks). Start every job from an empty workspace.
        set -eu
        if [ -n "${GITHUB_WORKSPACE:-}" ] && [ -d "$GITHUB_WORKSPACE" ]; then
          find "$GITHUB_WORKSPACE" -mindepth 1 -delete
        fi
    - require:
      - file: github_runner-hooks-dir-file-directory

github_runner-hooks-job-completed-file-managed:
  file.managed:
    - name: {{ github_runner.hooks_dir }}/job-completed.sh
    - user: root
    - group: root
    - mode: '0755'
    - contents: |
        #!/bin/sh
        # Managed by Salt (github_runner.hooks). Leave nothing of this job behind;
        # _temp is the runner's own and it removes it after this hook.
        set -eu
        find {{ runner.work_dir }} -mindepth 1 -maxdepth 1 ! -name _temp -exec rm -rf {} +
    - require:
      - file: github_runner-hooks-dir-file-directory
