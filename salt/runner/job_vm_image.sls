{%- from "runner/map.jinja" import runner with context %}
{%- from "runner/job_vm_map.jinja" import golden_image with context %}
{%- set image = runner.job_vm.image %}
{%- set agent = golden_image.agent %}
{%- set base = golden_image.base %}
{%- set golden = golden_image.golden %}
{%- set hooks = golden_image.hooks %}
{#- The golden image, built once per pin on the host: Canonical's noble cloud image, downloaded
    only against the pinned sha256 (file.managed source_hash), customised offline with
    virt-customize (no boot, no first-boot seed work on every VM: a warm spare is ready as soon
    as the guest agent starts) with the CI agent at the host formula's pinned release (Buildkite:
    with the job-secrets hooks and the Node that runs them, as on a host), the
    netboot toolchain, the job user and ci-job-guest as a systemd unit, then made read-only.
    Its name carries every pin (release serial, sha256, agent release, recipe), so a changed pin
    is a new file: a new build, never an edit of the image a slot is using. #}

runner-job_vm_image-dir-file-directory:
  file.directory:
    - name: {{ image.dir }}
    - user: root
    - group: root
    - mode: '0700'
    - makedirs: True

runner-job_vm_image-build-tools-pkg-installed:
  pkg.installed:
    - pkgs: {{ image.build_packages | json }}

{#- Never used unverified: file.managed checks the download against source_hash before it
    puts the file in place (and re-checks an existing file against it). #}
runner-job_vm_image-base-file-managed:
  file.managed:
    - name: {{ base }}
    - source: {{ image.url }}
    - source_hash: sha256={{ image.sha256 }}
    - user: root
    - group: root
    - mode: '0400'
    - require:
      - file: runner-job_vm_image-dir-file-directory
{%- if agent.kind == 'github-actions' %}

runner-job_vm_image-agent-file-managed:
  file.managed:
    - name: {{ golden_image.runner_tarball }}
    - source: {{ agent.source }}
    - source_hash: sha256={{ agent.sha256 }}
    - user: root
    - group: root
    - mode: '0400'
    - require:
      - file: runner-job_vm_image-dir-file-directory
{%- endif %}

runner-job_vm_image-guest-agent-file-managed:
  file.managed:
    - name: {{ image.dir }}/ci-job-guest
    - source: salt://runner/files/ci-job-guest
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - file: runner-job_vm_image-dir-file-directory
{%- if hooks %}

{#- Buildkite: the job-secrets hooks for the image, as the host formula installs them
    (buildkite.hooks: the same source), staged root-only for the build's --copy-in. #}
runner-job_vm_image-hooks-file-recurse:
  file.recurse:
    - name: {{ hooks.stage }}
    - source: {{ hooks.source }}
    - user: root
    - group: root
    - dir_mode: '0700'
    - file_mode: '0755'
    - clean: True
    - require:
      - file: runner-job_vm_image-dir-file-directory
{%- endif %}

runner-job_vm_image-build-script-file-managed:
  file.managed:
    - name: {{ image.build_script }}
    - source: salt://runner/files/ci-job-image-build.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0755'
    - context:
        image: {{ image | json }}
        agent: {{ agent | json }}
        base: {{ base | json }}
        golden: {{ golden | json }}
        runner_tarball: {{ golden_image.runner_tarball | json }}
        hooks: {{ hooks | json }}

runner-job_vm_image-build-cmd-run:
  cmd.run:
    - name: {{ image.build_script }}
    - creates: {{ golden }}
    - require:
      - pkg: runner-job_vm_image-build-tools-pkg-installed
      - file: runner-job_vm_image-base-file-managed
      - file: runner-job_vm_image-guest-agent-file-managed
      - file: runner-job_vm_image-build-script-file-managed
{%- if agent.kind == 'github-actions' %}
      - file: runner-job_vm_image-agent-file-managed
{%- endif %}
{%- if hooks %}
      - file: runner-job_vm_image-hooks-file-recurse
{%- endif %}
