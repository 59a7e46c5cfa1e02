{%- from "runner/map.jinja" import runner with context %}
{%- from "buildkite/map.jinja" import buildkite with context %}
{#- Run as root before every agent start (ExecStartPre=+) and after every stop
    (ExecStopPost=-+): nothing of a job reaches the next one. The CI user's whole home
    is wiped (Salt manages nothing below it: a job controls every path there), the home
    and the work dir made afresh with the owner and mode the agents need.
    A job cannot outlive the agent's cgroup either: lingering and the user's systemd
    manager are ended before the CI user's processes are killed. #}

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
        home={{ runner.user.home }}
        work={{ runner.work_dir }}
        uid=$(id -u "$user")
        # A job may have made itself linger (logind) and started systemd --user units,
        # which live outside the agent's cgroup: end them, and the user manager itself.
        loginctl disable-linger "$user" 2>/dev/null || true
        loginctl terminate-user "$user" 2>/dev/null || true
        systemctl stop "user@$uid.service" 2>/dev/null || true
        # Processes of the CI user outside the agent's own (stopped) service.
        pkill -KILL -u "$user" || true
        # The home goes whole, work dir included (rm never follows a symlink), and both are
        # made afresh: mkdir fails rather than follow a link planted in between, and
        # chown -h never follows one, so root writes nowhere a job chose.
        find "$home" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +
        chown -h "$user:$user" "$home"
        chmod 0750 "$home"
        mkdir -m 0700 "$work"
        chown -h "$user:$user" "$work"
{%- if runner.agent == 'buildkite' %}
        # Buildkite (buildkite.job): the agent runs as {{ buildkite.agent_user.name }}, every job as $user.
        # build-path is the job's; the agent only enters it (the job process starts there). Its
        # parent is root's, so no job can swap it for a link. The hooks' state dir is the job's.
        builds={{ buildkite.build_dir }}
        rm -rf -- "$builds"
        mkdir -m 0710 "$builds"
        chown -h "$user:{{ buildkite.agent_user.name }}" "$builds"
        mkdir -m 0700 "{{ buildkite.job_secrets_dir }}"
        chown -h "$user:$user" "{{ buildkite.job_secrets_dir }}"
{%- endif %}
        # Everything else a job can leave for the next one: files in the world-writable
        # directories, POSIX message queues, System V IPC (RemoveIPC= skips system users).
        for dir in /tmp /var/tmp /dev/shm /run/lock /var/crash /dev/mqueue; do
          [ -d "$dir" ] || continue
          find "$dir" -xdev -mindepth 1 -user "$user" -delete 2>/dev/null || true
        done
        for kind in m q s; do
          ipcs -"$kind" 2>/dev/null | awk -v u="$user" '$3 == u {print $2}' |
            while read -r id; do ipcrm -"$kind" "$id" 2>/dev/null || true; done
        done

{#- systemd's org.freedesktop.login1.policy allows set-self-linger to any user
    (allow_any yes): deny it, and set-user-linger, to the CI user. Read by polkitd from
    /etc/polkit-1/rules.d (JavaScript rules; first decision wins, files in name order). #}
runner-reset-no-linger-polkit-rule-file-managed:
  file.managed:
    - name: {{ runner.polkit_rule }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True
    - contents: |
        // Managed by Salt (runner.reset). CI jobs may not keep processes after the job.
        polkit.addRule(function (action, subject) {
          if ((action.id == "org.freedesktop.login1.set-self-linger" ||
               action.id == "org.freedesktop.login1.set-user-linger") &&
              subject.user == "{{ runner.user.name }}") {
            return polkit.Result.NO;
          }
        });
