{%- from "base/map.jinja" import base with context %}

include:
  - .packages

base-firewall-nftables-conf-file-managed:
  file.managed:
    - name: /etc/nftables.conf
    - source: salt://base/files/nftables.conf.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0600'
    # Refuse a ruleset nft cannot load, before it replaces the working one.
    - check_cmd: /usr/sbin/nft -c -f
    - context:
        role: {{ base.role | json }}
        provider: {{ base.provider | json }}
        firewall: {{ base.firewall | json }}
        teleport_proxy_ipv4: {{ base.teleport_proxy_ipv4 | json }}
        # Job VMs on this host (salt/runner/job_vm.sls): their taps are cijs<N> (ci-job-slot Slot).
        job_vm: {{ (base.role == 'runner' and salt['pillar.get']('ci_fleet:runner:isolation', 'host') == 'vm') | json }}
        job_vm_taps: cijs*
    - require:
      - pkg: base-packages-install-pkg-installed

base-firewall-nftables-service-running:
  service.running:
    - name: nftables
    - enable: True
    - reload: True
    - watch:
      - file: base-firewall-nftables-conf-file-managed
