{%- from "github_runner/map.jinja" import github_runner with context %}
{%- from "runner/map.jinja" import runner with context %}
{%- set updater = github_runner.updater %}
{#- The runner is installed and kept current by a root-run updater (not the runner's own
    self-update, which rewrites its install directory and trusts only the hash the Actions
    service sends). Releases are root-owned under releases_dir; install_dir is a symlink
    to the current one. This state installs the floor; the timer moves forward. #}

include:
  - .config

github_runner-archive-dependencies-pkg-installed:
  pkg.installed:
    - pkgs: {{ github_runner.dependencies | json }}

github_runner-archive-updater-script-file-managed:
  file.managed:
    - name: {{ updater.script }}
    - source: salt://github_runner/files/ci_fleet_actions_runner_update.py
    - user: root
    - group: root
    - mode: '0755'

github_runner-archive-updater-config-file-managed:
  file.managed:
    - name: {{ updater.config }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True
    - contents: |
        {{ {
          "install_dir": github_runner.install_dir,
          "releases_dir": github_runner.releases_dir,
          "env_file": github_runner.env_file,
          "runner_group": runner.user.name,
          "unit": github_runner.unit,
          "api_url": updater.api_url,
          "download_base": updater.download_base,
          "platform": updater.platform,
          "floor": {"version": github_runner.version | string, "url": github_runner.source,
                    "sha256": github_runner.sha256},
          "lock": updater.lock,
          "state_dir": updater.state_dir,
          "min_check_seconds": updater.min_check_seconds,
          "force_after_days": updater.force_after_days,
        } | json }}

github_runner-archive-floor-cmd-run:
  cmd.run:
    - name: {{ updater.script }} ensure-floor
    - unless: {{ updater.script }} floor-installed
    - require:
      - pkg: github_runner-archive-dependencies-pkg-installed
      - file: github_runner-archive-updater-script-file-managed
      - file: github_runner-archive-updater-config-file-managed
      - file: github_runner-config-env-file-managed

github_runner-archive-updater-service-file-managed:
  file.managed:
    - name: /etc/systemd/system/{{ updater.unit }}.service
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (github_runner.archive). Root: it writes root-owned releases.
        [Unit]
        Description=Install the newest GitHub Actions runner release between jobs
        Wants=network-online.target
        After=network-online.target

        [Service]
        Type=oneshot
        ExecStart={{ updater.script }} update
        # It waits for the registration's lock; never forever.
        TimeoutStartSec=30min

github_runner-archive-updater-timer-file-managed:
  file.managed:
    - name: /etc/systemd/system/{{ updater.unit }}.timer
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (github_runner.archive).
        [Unit]
        Description=Keep the GitHub Actions runner within GitHub's 30-day window

        [Timer]
        OnBootSec=10min
        OnUnitActiveSec={{ updater.interval }}
        RandomizedDelaySec=10min
        Persistent=true

        [Install]
        WantedBy=timers.target

{#- Salt's service states reload systemd only for the unit they start: the .service the
    timer starts is reloaded here, so a changed ExecStart is the one that runs. #}
github_runner-archive-updater-units-cmd-run:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: github_runner-archive-updater-service-file-managed
      - file: github_runner-archive-updater-timer-file-managed

github_runner-archive-updater-timer-service-running:
  service.running:
    - name: {{ updater.unit }}.timer
    - enable: True
    - watch:
      - file: github_runner-archive-updater-service-file-managed
      - file: github_runner-archive-updater-timer-file-managed
    - require:
      - cmd: github_runner-archive-updater-units-cmd-run
      - cmd: github_runner-archive-floor-cmd-run
