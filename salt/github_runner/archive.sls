{%- from "github_runner/map.jinja" import github_runner with context %}
{%- from "runner/map.jinja" import runner with context %}
{#- Binaries are root-owned: jobs (the CI user) cannot change the runner. The top
    directory is sticky and group-writable so the runner can write its registration
    files but cannot rename or replace root's files. #}

github_runner-archive-install-dir-file-directory:
  file.directory:
    - name: {{ github_runner.install_dir }}
    - user: root
    - group: {{ runner.user.name }}
    - mode: '1775'

github_runner-archive-release-archive-extracted:
  archive.extracted:
    - name: {{ github_runner.install_dir }}
    - source: {{ github_runner.source }}
    - source_hash: sha256={{ github_runner.sha256 }}
    - enforce_toplevel: False
    - user: root
    - group: root
    - if_missing: {{ github_runner.install_dir }}/bin/Runner.Listener
    - require:
      - file: github_runner-archive-install-dir-file-directory

github_runner-archive-dependencies-cmd-run:
  cmd.run:
    - name: {{ github_runner.install_dir }}/bin/installdependencies.sh
    - onchanges:
      - archive: github_runner-archive-release-archive-extracted
