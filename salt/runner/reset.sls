{%- from "runner/map.jinja" import runner with context %}
{#- Run as root (ExecStartPre=+) before every agent start: jobs leave nothing behind
    for the next job (work dir, the CI user's temp files, its processes). #}

runner-reset-script-file-managed:
  file.managed:
    - name: {{ runner.reset_script }}
    - user: root
    - group: root
    - mode: '0755'
    - contents: |
        #!/bin/sh
        # Managed by Salt (runner.reset). Wipes what CI jobs may have left behind.
        set -eu
        user={{ runner.user.name }}
        work={{ runner.work_dir }}
        # Processes of the CI user outside the agent's own (stopped) service.
        pkill -KILL -u "$user" || true
        find "$work" -mindepth 1 -delete
        for dir in /tmp /var/tmp /dev/shm; do
          find "$dir" -xdev -mindepth 1 -user "$user" -delete 2>/dev/null || true
        done
