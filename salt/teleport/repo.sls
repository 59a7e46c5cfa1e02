{%- from "teleport/map.jinja" import teleport with context %}
{%- set repo = teleport.repo %}
{%- set line = "deb [signed-by=%s] %s/%s %s %s" | format(repo.key_file, repo.url, grains["os"] | lower, grains["oscodename"], repo.channel) %}
{#- The signing key is downloaded once and installed only if its fingerprint matches
    the pinned one (check_cmd runs on the downloaded file before it is put in place). #}

include:
  - base.apt_keys

teleport-repo-signing-key-file-managed:
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

teleport-repo-sources-file-managed:
  file.managed:
    - name: {{ repo.file }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: {{ line | json }}
    - require:
      - file: teleport-repo-signing-key-file-managed
