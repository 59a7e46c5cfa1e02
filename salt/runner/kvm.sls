{#- QEMU needs /dev/kvm: group kvm, mode 0660 (the CI user is in kvm, nobody else). #}

runner-kvm-udev-rule-file-managed:
  file.managed:
    - name: /etc/udev/rules.d/65-ci-fleet-kvm.rules
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (runner.kvm).
        KERNEL=="kvm", GROUP="kvm", MODE="0660"

runner-kvm-udev-trigger-cmd-run:
  cmd.run:
    - name: udevadm control --reload-rules && udevadm trigger --name-match=kvm
    - onchanges:
      - file: runner-kvm-udev-rule-file-managed
