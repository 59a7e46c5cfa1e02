{%- from "buildkite/map.jinja" import buildkite with context %}
{%- set release_dir = buildkite.install_dir ~ '/' ~ buildkite.version %}
{#- One directory per pinned version, root-owned; the symlink picks the current one. #}

buildkite-archive-release-archive-extracted:
  archive.extracted:
    - name: {{ release_dir }}
    - source: {{ buildkite.source }}
    - source_hash: sha256={{ buildkite.sha256 }}
    - enforce_toplevel: False
    - user: root
    - group: root
    - if_missing: {{ release_dir }}/buildkite-agent

buildkite-archive-binary-file-symlink:
  file.symlink:
    - name: /usr/local/bin/buildkite-agent
    - target: {{ release_dir }}/buildkite-agent
    - force: True
    - require:
      - archive: buildkite-archive-release-archive-extracted
