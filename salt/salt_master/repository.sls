{%- from "salt_master/map.jinja" import salt_master with context %}
{#- The master serves the salt/ tree of a checkout of this repository at the ref from
    pillar: changing ci_fleet:salt:ref moves the fleet without replacing a machine. #}
{%- set has_deploy_key = salt['pillar.get']('ci_fleet_master:salt_repository_deploy_key', '') != '' %}

salt_master-repository-git-pkg-installed:
  pkg.installed:
    - pkgs: [git, openssh-client]

{%- if has_deploy_key %}

salt_master-repository-deploy-key-file-managed:
  file.managed:
    - name: {{ salt_master.deploy_key_file }}
    - contents_pillar: ci_fleet_master:salt_repository_deploy_key
    - user: root
    - group: root
    - mode: '0400'
    - makedirs: True
    - show_changes: False

{#- The same file and text cloud-init wrote (cloud-init/pins.yaml, through pillar). #}
salt_master-repository-known-hosts-file-managed:
  file.managed:
    - name: {{ salt_master.known_hosts_file }}
    - contents_pillar: ci_fleet_master:salt_repository_known_hosts
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True

{#- core.sshCommand (infra/bootstrap/salt-config.ts, the bytes cloud-init wrote): the deploy key
    and only the pinned host keys. System scope, because git.latest first runs `git ls-remote`
    outside the checkout. Never `identity:` on git.latest: Salt's ssh wrapper then passes
    -oStrictHostKeyChecking=no (salt/templates/git/ssh-id-wrapper). #}
salt_master-repository-git-config-file-managed:
  file.managed:
    - name: {{ salt_master.git_system_config }}
    - contents_pillar: ci_fleet_master:salt_repository_git_config
    - user: root
    - group: root
    - mode: '0644'
{%- endif %}

salt_master-repository-checkout-git-latest:
  git.latest:
    - name: {{ salt_master.repository | json }}
    - target: {{ salt_master.checkout }}
    - rev: {{ salt_master.ref | json }}
    - force_reset: True
    - force_fetch: True
    - user: root
    - require:
      - pkg: salt_master-repository-git-pkg-installed
{%- if has_deploy_key %}
      - file: salt_master-repository-deploy-key-file-managed
      - file: salt_master-repository-known-hosts-file-managed
      - file: salt_master-repository-git-config-file-managed
{%- endif %}
