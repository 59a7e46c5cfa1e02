{%- from "github_runner/map.jinja" import github_runner with context %}
{#- The runner reads .env at start: root-owned, so a job cannot add variables to the
    next runner start (e.g. LD_PRELOAD). #}

include:
  - .archive

github_runner-config-env-file-managed:
  file.managed:
    - name: {{ github_runner.install_dir }}/.env
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        LANG=C.UTF-8
        ACTIONS_RUNNER_HOOK_JOB_STARTED={{ github_runner.hooks_dir }}/job-started.sh
        ACTIONS_RUNNER_HOOK_JOB_COMPLETED={{ github_runner.hooks_dir }}/job-completed.sh
    - require:
      - archive: github_runner-archive-release-archive-extracted

github_runner-config-path-file-managed:
  file.managed:
    - name: {{ github_runner.install_dir }}/.path
    - user: root
    - group: root
    - mode: '0644'
    - contents: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    - require:
      - archive: github_runner-archive-release-archive-extracted
