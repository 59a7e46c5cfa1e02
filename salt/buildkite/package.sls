{%- from "buildkite/map.jinja" import buildkite with context %}

buildkite-package-install-pkg-installed:
  pkg.installed:
    - pkgs: {{ buildkite.packages | json }}
