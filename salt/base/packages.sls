{%- from "base/map.jinja" import base with context %}

base-packages-install-pkg-installed:
  pkg.installed:
    - pkgs: {{ base.packages | json }}
