{%- from "buildkite/map.jinja" import buildkite with context %}

include:
  - .repo
  - .user

buildkite-package-nodejs-pin-file-managed:
  file.managed:
    - name: /etc/apt/preferences.d/ci-fleet-nodejs
    - mode: '0644'
    - contents: |
        # Managed by Salt (buildkite.package): the Node the job-secrets hooks are tested on.
        Package: nodejs libnode*
        Pin: version {{ buildkite.nodejs_pin }}
        Pin-Priority: 1001

buildkite-package-install-pkg-installed:
  pkg.installed:
    - pkgs: {{ buildkite.packages | json }}
    - require:
      - file: buildkite-package-nodejs-pin-file-managed

{#- The agent, pinned (deb version <version>-<build number>) and held. Salt's apt module
    installs with --force-confold --force-confdef, and the deb has no conffile: its
    postinst copies a template cfg and the hook samples into /etc/buildkite-agent only where
    none exist, so an upgrade never prompts and never replaces ours. On upgrade the postinst
    runs `systemctl try-restart buildkite-agent`: a version bump restarts a running agent. #}
buildkite-package-agent-pin-file-managed:
  file.managed:
    - name: {{ buildkite.pin_file }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (buildkite.package): the pinned Buildkite agent release.
        Package: {{ buildkite.package }}
        Pin: version {{ buildkite.version }}-*
        Pin-Priority: 1001

buildkite-package-agent-pkg-installed:
  pkg.installed:
    - name: {{ buildkite.package }}
    - version: {{ (buildkite.version ~ '-*') | json }}
    - refresh: True
    - hold: True
    - require:
      - file: buildkite-repo-sources-file-managed
      - file: buildkite-package-agent-pin-file-managed
      # Salt's agent user first: the postinst then finds it and makes none of its own.
      - user: buildkite-user-agent-user-present
