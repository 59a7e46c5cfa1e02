{%- from "runner/map.jinja" import runner with context %}

runner-package-toolchain-pkg-installed:
  pkg.installed:
    - pkgs: {{ runner.toolchain | json }}
