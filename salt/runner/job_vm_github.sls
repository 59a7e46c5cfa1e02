{%- from "runner/map.jinja" import runner with context %}
{%- set jv = runner.job_vm %}
{%- set slots = runner.job_vm_pillar.get('slots', 0) | int %}
{#- Issue 15: one slot's GitHub just-in-time runner config (runner <minion>-s<N>), applied only by
    the master's orchestration (salt/_runners/ci_fleet.py register_github_runners), never by the
    highstate: `state.apply runner.job_vm_github pillar={"ci_fleet_job_slot": N}`. The config is in
    this minion's own pillar (ci_fleet_inline:github_jit_config, removed after this run); the
    publication carries only N, which must be one of this minion's slots (its own pillar's count).
    Written as the job input ci-job-guest expects ({"kind": "github", "jitconfig": ...}), root-only
    in the slot's run directory (0700, root: ci-job-slot ensure_dirs), then renamed into the inbox
    in one rename(2) (same file system): the launcher never sees half a file (docs/job-vm.md). #}
{%- set n = salt['pillar.get']('ci_fleet_job_slot', 0) %}
{%- set config = salt['pillar.get']('ci_fleet_inline:github_jit_config', '') %}
{%- if runner.agent != 'github-actions' or runner.isolation != 'vm' or n is not number or n is sameas true or n < 1 or n > slots or not config %}

runner-job_vm_github-input-test-fail_without_changes:
  test.fail_without_changes:
    - name: "runner.job_vm_github: no JIT config, no vm isolation, or slot {{ n | string | truncate(8, True, '') }} is not one of this runner's {{ slots }} slots"
{%- else %}
{%- set name = 'github-' ~ (config | sha256)[:24] %}
{%- set dir = jv.run_dir ~ '/' ~ n %}

runner-job_vm_github-input-file-managed:
  file.managed:
    - name: {{ dir }}/.{{ name }}
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: False
    - show_changes: False
    - contents: {{ {"kind": "github", "jitconfig": config} | json | json }}

runner-job_vm_github-input-file-rename:
  file.rename:
    - name: {{ dir }}/inbox/{{ name }}
    - source: {{ dir }}/.{{ name }}
    - require:
      - file: runner-job_vm_github-input-file-managed
{%- endif %}
