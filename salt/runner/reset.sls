{%- from "runner/map.jinja" import runner with context %}
{#- Run as root before every agent start (ExecStartPre=+) and after every stop
    (ExecStopPost=-+): nothing of a job reaches the next one. The CI user's whole home
    is wiped (Salt manages nothing below it: a job controls every path there) except the
    work dir, which is emptied; both are recreated with the owner and mode the agents need.
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
        # The home: everything but a real work dir goes (rm never follows a symlink).
        if [ -L "$work" ] || { [ -e "$work" ] && [ ! -d "$work" ]; }; then
          rm -f -- "$work"
        fi
        find "$home" -mindepth 1 -maxdepth 1 ! -path "$work" -exec rm -rf -- {} +
        if [ -d "$work" ]; then
          find "$work" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +
        fi
        install -d -o "$user" -g "$user" -m 0750 "$home"
        install -d -o "$user" -g "$user" -m 0700 "$work"
        for dir in /tmp /var/tmp /dev/shm; do
          find "$dir" -xdev -mindepth 1 -user "$user" -delete 2>/dev/null || true
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
