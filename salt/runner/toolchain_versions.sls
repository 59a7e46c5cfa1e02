{%- from "runner/map.jinja" import runner with context %}
{#- The installed toolchain versions: a root-owned file, shown in the highstate output
    when they change, and the ci_fleet_toolchain grain (salt/_grains/ci_fleet.py). #}

include:
  - .package

runner-toolchain_versions-script-file-managed:
  file.managed:
    - name: {{ runner.versions_script }}
    - source: salt://runner/files/ci_fleet_toolchain_versions.py
    - user: root
    - group: root
    - mode: '0755'

runner-toolchain_versions-record-cmd-run:
  cmd.run:
    - name: {{ runner.versions_script }} --write {{ runner.versions_file }} {{ runner.toolchain | join(' ') }}
    - unless: {{ runner.versions_script }} --check {{ runner.versions_file }} {{ runner.toolchain | join(' ') }}
    - require:
      - pkg: runner-package-toolchain-pkg-installed
      - file: runner-toolchain_versions-script-file-managed
