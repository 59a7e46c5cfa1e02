{%- from "runner/map.jinja" import runner with context %}
{%- from "runner/job_vm_map.jinja" import golden_image with context %}
{%- from "aws_credentials/map.jinja" import aws_credentials as aws with context %}
{%- set jv = runner.job_vm %}
{%- set p = runner.job_vm_pillar %}
{%- from "github_runner/map.jinja" import github_runner with context %}
{#- GitHub slots ask the master for their next JIT config with the host runner's own event (the
    launcher's InputRequester; the reactor registers this minion's runners). Buildkite: none. #}
{%- set request_input = {"requestInputEvent": github_runner.unregistered_event} if runner.agent == 'github-actions' else {} %}
{#- The launcher's config (docs/job-vm.md, salt/runner/files/ci-job-slot load_config): one
    writer, Salt, from this runner's pillar (sizes, blocked networks: the program computes them)
    and the formula's defaults (paths, network, the golden image's pinned name). `aws`: the
    region and the command that mints a session of the queue role, exactly when and exactly as
    aws_credentials.session's timer runs it (aws_credentials/session_command.jinja, without the
    timer's file, group and alarm): the launcher (root) runs it with --stdout --duration 900 for
    each VM, and again while that VM lives; the host's own session file never reaches a VM
    (docs/job-vm.md "The AWS session"). #}
{%- from "aws_credentials/session_command.jinja" import session_enabled, session_command with context %}
{%- set aws_input = {"aws": {"region": aws.region, "command": session_command}} if session_enabled else {} %}
{#- Buildkite: the queue's SSM namespace for the job-secrets hooks in each VM (seed ssm_prefix ->
    CI_FLEET_SSM_PREFIX), the same pillar value as the host agent's unit (buildkite.ssm_prefix). #}
{%- from "buildkite/map.jinja" import buildkite with context %}
{%- set secrets_input = {"ssmPrefix": buildkite.ssm_prefix} if runner.agent == 'buildkite' and buildkite.ssm_prefix else {} %}

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
        {{ dict({
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
        }, **dict(request_input, **dict(aws_input, **secrets_input))) | json }}
{%- endif %}
