{%- from "teleport/map.jinja" import teleport with context %}

include:
  - .repo

teleport-package-install-pkg-installed:
  pkg.installed:
    - name: {{ teleport.package }}
    - version: {{ teleport.version | json }}
    - refresh: True
    - hold: True
    - require:
      - file: teleport-repo-sources-file-managed
