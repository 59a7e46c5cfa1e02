{#- The one check every vendor apt repository's signing key passes before apt trusts it
    (teleport.repo, buildkite.repo): a key file is put in place only if it holds exactly
    one primary key with the pinned fingerprint (file.managed check_cmd on the download). #}

include:
  - .packages

base-apt_keys-verify-script-file-managed:
  file.managed:
    - name: /usr/local/sbin/ci-fleet-verify-key-fingerprint
    - source: salt://base/files/ci-fleet-verify-key-fingerprint
    - user: root
    - group: root
    - mode: '0755'
    # The script runs gpg (gnupg, a base package).
    - require:
      - pkg: base-packages-install-pkg-installed
