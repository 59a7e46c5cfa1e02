{%- from "runner/map.jinja" import runner with context %}
{%- from "runner/job_vm_map.jinja" import golden_image with context %}
{%- set jv = runner.job_vm %}
{%- set p = runner.job_vm_pillar %}
{#- The launcher's config (docs/job-vm.md, salt/runner/files/ci-job-slot load_config): one
    writer, Salt, from this runner's pillar (sizes, blocked networks: the program computes them)
    and the formula's defaults (paths, network, the golden image's pinned name). #}

runner-job_vm_config-launcher-file-managed:
  file.managed:
    - name: {{ jv.launcher }}
    - source: salt://runner/files/ci-job-slot
    - user: root
    - group: root
    - mode: '0755'

{%- if not p.get('slots') %}

runner-job_vm_config-json-test-fail_without_changes:
  test.fail_without_changes:
    - name: "ci_fleet:runner:job_vm is missing from this runner's pillar (isolation vm needs it): run pulumi up"
{%- else %}

runner-job_vm_config-json-file-managed:
  file.managed:
    - name: {{ jv.config }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True
    - contents: |
        {{ {
          "image": golden_image.golden,
          "cpus": p.cpus,
          "memoryMiB": p.memory_mib,
          "diskGiB": p.disk_gib,
          "maxJobSeconds": p.max_job_seconds,
          "bootTimeoutSeconds": jv.boot_timeout_seconds,
          "accel": jv.accel,
          "stateDir": jv.state_dir,
          "runDir": jv.run_dir,
          "selftest": jv.selftest,
          "network": {"base": jv.network_base, "blockedCidrs": p.blocked_cidrs, "dns": jv.dns},
        } | json }}
{%- endif %}
