{%- from "salt_master/map.jinja" import salt_master with context %}
{#- The master serves the salt/ tree of a checkout of this repository at the commit from
    pillar: changing ci_fleet:salt:ref (saltMaster.ref, 40 hex digits) moves the fleet
    without replacing a machine. A branch is followed only with saltMaster.followBranch,
    which puts ci_fleet_master:salt_repository_branch in pillar. #}
{%- set has_deploy_key = salt['pillar.get']('ci_fleet_master:salt_repository_deploy_key', '') != '' %}
{%- set follow_branch = salt['pillar.get']('ci_fleet_master:salt_repository_branch', '') %}
{%- set rev = salt_master.ref %}
{%- set pinned = follow_branch == '' and rev | length == 40 and rev.strip('0123456789abcdef') == '' %}

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

{%- if pinned %}

{#- salt/states/git.py latest() resolves `rev` as refs/heads/<rev>, then refs/tags/<rev>, and
    only then as a SHA1: a branch or tag named like the pinned commit (anyone who may push a
    branch could create one) would be checked out instead. Refuse while one exists. #}
salt_master-repository-rev-unambiguous-cmd-run:
  cmd.run:
    - name: 'echo "the remote has a branch or tag named like the pinned commit: git.latest would check out that ref instead of the commit; delete the ref" >&2; exit 1'
    - onlyif: 'git ls-remote --exit-code -- "$CI_FLEET_SALT_REPOSITORY" "$CI_FLEET_SALT_REV"'
    - env:
      - CI_FLEET_SALT_REPOSITORY: {{ salt_master.repository | json }}
      - CI_FLEET_SALT_REV: {{ rev | json }}
    - require:
      - pkg: salt_master-repository-git-pkg-installed
{%- if has_deploy_key %}
      - file: salt_master-repository-deploy-key-file-managed
      - file: salt_master-repository-known-hosts-file-managed
      - file: salt_master-repository-git-config-file-managed
{%- endif %}
{%- elif follow_branch == '' %}

{#- Neither a commit id nor an opted-in branch (config checking refuses this): change nothing. #}
salt_master-repository-rev-pinned-test-fail_without_changes:
  test.fail_without_changes:
    - name: 'ci_fleet:salt:ref is not a 40-hex commit id and ci_fleet_master:salt_repository_branch is unset: the checkout is left where it is'
{%- endif %}

{#- A pinned commit: `rev` only, no `branch`, so HEAD stays detached at exactly that commit
    (a later commit is a fast-forward `git reset --hard <rev>`, an earlier one a hard reset
    under force_reset; the state fails unless HEAD equals rev afterwards). No `depth`: git.latest
    refuses it unless rev is a branch. fetch_tags keeps local tags equal to the remote's, or every
    run would fetch again. The commit must be reachable from a branch or tag of the remote (the
    fetch takes refs/heads/* and refs/tags/*, never a bare commit).
    A followed branch: `rev` and `branch` both, so the detached checkout of the first boot is
    replaced by a local branch tracking origin/<branch> (without `branch`, git.latest cannot
    fast-forward a detached HEAD). #}
salt_master-repository-checkout-git-latest:
  git.latest:
    - name: {{ salt_master.repository | json }}
    - target: {{ salt_master.checkout }}
    - rev: {{ rev | json }}
{%- if follow_branch != '' %}
    - branch: {{ follow_branch | json }}
{%- endif %}
    - fetch_tags: True
    - force_reset: True
    - force_fetch: True
    - user: root
    - require:
      - pkg: salt_master-repository-git-pkg-installed
{%- if pinned %}
      - cmd: salt_master-repository-rev-unambiguous-cmd-run
{%- elif follow_branch == '' %}
      - test: salt_master-repository-rev-pinned-test-fail_without_changes
{%- endif %}
{%- if has_deploy_key %}
      - file: salt_master-repository-deploy-key-file-managed
      - file: salt_master-repository-known-hosts-file-managed
      - file: salt_master-repository-git-config-file-managed
{%- endif %}
