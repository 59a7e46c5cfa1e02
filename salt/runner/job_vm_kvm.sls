{%- from "runner/map.jinja" import runner with context %}
{#- Nested virtualisation: a job's own QEMU gets /dev/kvm inside the job VM. The options are
    read when the module loads (modprobe.d(5)); a loaded module without them is reloaded here,
    before any slot starts a VM (modprobe -r fails while a VM holds /dev/kvm: the state then
    fails visibly, and the option takes effect at the next boot). Ubuntu 24.04's 6.8 kernel
    already defaults both to on (kvm_intel since 4.20, kvm_amd since 4.x); this pins it. #}

runner-job_vm_kvm-modprobe-file-managed:
  file.managed:
    - name: {{ runner.job_vm.kvm_modprobe_file }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (runner.job_vm_kvm): job VMs run their own KVM guests.
        options kvm_intel nested=1
        options kvm_amd nested=1

runner-job_vm_kvm-reload-cmd-run:
  cmd.run:
    - name: >-
        for m in kvm_intel kvm_amd; do
        [ -r /sys/module/$m/parameters/nested ] || continue;
        case $(cat /sys/module/$m/parameters/nested) in Y|1) ;; *) modprobe -r $m && modprobe $m ;; esac;
        done
    - unless: >-
        for m in kvm_intel kvm_amd; do
        [ -r /sys/module/$m/parameters/nested ] || continue;
        case $(cat /sys/module/$m/parameters/nested) in Y|1) ;; *) exit 1 ;; esac;
        done
    - require:
      - file: runner-job_vm_kvm-modprobe-file-managed
