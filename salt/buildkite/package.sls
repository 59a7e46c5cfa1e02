{%- from "buildkite/map.jinja" import buildkite with context %}

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
