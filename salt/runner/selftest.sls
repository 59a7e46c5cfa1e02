{%- from "runner/map.jinja" import runner with context %}
{%- set selftest = runner.selftest %}
{#- The netboot self-test runs once per boot (and again when the toolchain or the test
    changes). The CI agent's unit Requires= and is After= it, so a failing self-test
    keeps the agent stopped. Its output goes to the journal; a failure fails the
    service.running state below, so it shows in every highstate result. #}

include:
  - .package

runner-selftest-script-file-managed:
  file.managed:
    - name: {{ selftest.script }}
    - source: salt://runner/files/ci-netboot-selftest
    - user: root
    - group: root
    - mode: '0755'

runner-selftest-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/{{ selftest.unit }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (runner.selftest).
        [Unit]
        Description=ci-fleet: netboot self-test (DHCP, TFTP/HTTP, iPXE, QEMU) gating the CI agent
        After=network-online.target nftables.service

        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart={{ selftest.script }} --timeout {{ selftest.boot_timeout_seconds }}
        TimeoutStartSec={{ selftest.timeout_seconds }}
        StandardOutput=journal
        StandardError=journal
        SyslogIdentifier=ci-netboot-selftest

        [Install]
        WantedBy=multi-user.target

runner-selftest-service-running:
  service.running:
    - name: {{ selftest.unit }}
    - enable: True
    - watch:
      - pkg: runner-package-toolchain-pkg-installed
      - file: runner-selftest-script-file-managed
      - file: runner-selftest-unit-file-managed
