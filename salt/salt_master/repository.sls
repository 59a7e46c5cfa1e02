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
    - mode: '0600'
    - makedirs: True
    - show_changes: False

salt_master-repository-github-host-ssh_known_hosts-present:
  ssh_known_hosts.present:
    - name: github.com
    - user: root
    - enc: ssh-ed25519
    - fingerprint: {{ salt_master.github_host_fingerprint | json }}
    - fingerprint_hash_type: sha256
{%- endif %}

salt_master-repository-checkout-git-latest:
  git.latest:
    - name: {{ salt_master.repository | json }}
    - target: {{ salt_master.checkout }}
    - rev: {{ salt_master.ref | json }}
    - force_reset: True
    - force_fetch: True
    - user: root
{%- if has_deploy_key %}
    - identity: {{ salt_master.deploy_key_file }}
{%- endif %}
    - require:
      - pkg: salt_master-repository-git-pkg-installed
{%- if has_deploy_key %}
      - file: salt_master-repository-deploy-key-file-managed
      - ssh_known_hosts: salt_master-repository-github-host-ssh_known_hosts-present
{%- endif %}
