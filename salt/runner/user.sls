{%- from "runner/map.jinja" import runner with context %}
{#- The CI agent and its jobs run as this unprivileged user: in group kvm, no sudo,
    no usable password, no login shell (and sshd is off everywhere). #}

include:
  - .package

runner-user-ci-agent-user-present:
  user.present:
    - name: {{ runner.user.name }}
    - home: {{ runner.user.home }}
    - shell: {{ runner.user.shell }}
    - system: True
    - createhome: True
    - groups: {{ runner.user.groups | json }}
    - remove_groups: True
    - require:
      - pkg: runner-package-toolchain-pkg-installed

runner-user-home-file-directory:
  file.directory:
    - name: {{ runner.user.home }}
    - user: {{ runner.user.name }}
    - group: {{ runner.user.name }}
    - mode: '0750'
    - require:
      - user: runner-user-ci-agent-user-present

{#- Nothing below the home is Salt's: root would write through paths a job controls
    (symlinks). ci-agent-reset recreates the work dir before and after every job. #}

runner-user-no-sudo-file-absent:
  file.absent:
    - name: /etc/sudoers.d/{{ runner.user.name }}
