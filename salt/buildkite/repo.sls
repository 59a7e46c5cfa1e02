{%- from "buildkite/map.jinja" import buildkite with context %}
{%- set repo = buildkite.repo %}
{%- set line = "deb [signed-by=%s] %s %s main" | format(repo.key_file, repo.url, repo.channel) %}
{#- Buildkite's apt repository (https://buildkite.com/docs/agent/v3/ubuntu). The signing
    key is downloaded once and installed only if its fingerprint matches the pinned one
    (check_cmd runs on the downloaded file before it is put in place); apt then trusts it
    for this repository only (signed-by). #}

include:
  - base.apt_keys

buildkite-repo-signing-key-file-managed:
  file.managed:
    - name: {{ repo.key_file }}
    - source: {{ repo.key_url }}
    - skip_verify: True
    - replace: False
    - check_cmd: /usr/local/sbin/ci-fleet-verify-key-fingerprint {{ repo.key_fingerprint }}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: base-apt_keys-verify-script-file-managed

buildkite-repo-sources-file-managed:
  file.managed:
    - name: {{ repo.file }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: {{ line | json }}
    - require:
      - file: buildkite-repo-signing-key-file-managed
