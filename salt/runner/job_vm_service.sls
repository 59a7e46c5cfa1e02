{%- from "runner/map.jinja" import runner with context %}
{%- from "runner/job_vm_map.jinja" import golden_image with context %}
{%- set jv = runner.job_vm %}
{%- set slots = runner.job_vm_pillar.get('slots', 0) | int %}
{#- One unit per slot, ci-job-slot@<N> (N = 1..slots, pillar ci_fleet:runner:job_vm:slots).
    Every start and every stop, however the launcher ended (a crash, SIGKILL, a reboot mid-job),
    runs the launcher's cleanup: no VM, overlay, tap or nft table of the slot survives it.
    KillMode=mixed: SIGTERM to the launcher alone, which powers its VM off and cleans up; what
    is left after TimeoutStopSec= (QEMU included) gets SIGKILL, then ExecStopPost= cleans up. #}

include:
  - .job_vm_kvm
  - .job_vm_image
  - .job_vm_config

runner-job_vm_service-unit-file-managed:
  file.managed:
    - name: /etc/systemd/system/{{ jv.unit_template }}
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        # Managed by Salt (runner.job_vm_service).
        [Unit]
        Description=ci-fleet job slot %i: a fresh VM per job
        After=network-online.target nftables.service
        Wants=network-online.target
        ConditionPathExists={{ jv.config }}

        [Service]
        Type=simple
        ExecStartPre={{ jv.launcher }} cleanup --config {{ jv.config }} --slot %i
        ExecStart={{ jv.launcher }} run --config {{ jv.config }} --slot %i
        ExecStopPost={{ jv.launcher }} cleanup --config {{ jv.config }} --slot %i
        KillMode=mixed
        KillSignal=SIGTERM
        TimeoutStopSec={{ jv.stop_timeout_seconds }}
        Restart=always
        RestartSec=5
        SyslogIdentifier=ci-job-slot-%i

        [Install]
        WantedBy=multi-user.target

runner-job_vm_service-unit-reload-cmd-run:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: runner-job_vm_service-unit-file-managed
{%- for n in range(1, slots + 1) %}

{#- Not restarted by a changed config or image (that would kill a job): the launcher reads its
    config at each start and again between VMs (after one is destroyed, before the next is
    prepared), so a rebuilt golden image, whose build deletes the older ones, is used by the next
    VM; a running VM keeps its open backing file (docs/job-vm.md "The slot loop"). #}
runner-job_vm_service-slot-{{ n }}-service-running:
  service.running:
    - name: ci-job-slot@{{ n }}.service
    - enable: True
    - require:
      - cmd: runner-job_vm_service-unit-reload-cmd-run
      - cmd: runner-job_vm_kvm-reload-cmd-run
      - cmd: runner-job_vm_image-build-cmd-run
      - file: runner-job_vm_config-json-file-managed
      - file: runner-job_vm_config-launcher-file-managed
{%- endfor %}

{#- Slots beyond the pillar's count (the plan or jobVm shrank): stopped and disabled. #}
runner-job_vm_service-extra-slots-cmd-run:
  cmd.run:
    - name: >-
        for u in $(systemctl list-units --all --plain --no-legend 'ci-job-slot@*.service' | awk '{print $1}');
        do n=${u#ci-job-slot@}; n=${n%.service};
        [ "$n" -ge 1 ] 2>/dev/null && [ "$n" -le {{ slots }} ] || systemctl disable --now "$u"; done
    - onlyif: systemctl list-units --all --plain --no-legend 'ci-job-slot@*.service' | awk '{print $1}' | sed 's/ci-job-slot@//; s/.service//' | awk '$1 < 1 || $1 > {{ slots }}' | grep -q .
