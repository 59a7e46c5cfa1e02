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
    CI user's session file and region, exactly when aws_credentials.session writes that session
    on this runner (the same condition): the launcher hands it to every VM (docs/job-vm.md). #}
{%- set aws_session = aws.user and aws.user.name != 'root' and aws.provider in ('aws', 'equinix-metal') and (aws.roles_anywhere or aws.provider == 'aws') %}
{%- set aws_input = {"aws": {"sessionFile": aws.session.file, "region": aws.region}} if aws_session else {} %}

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
        }, **dict(request_input, **aws_input)) | json }}
{%- endif %}
