include:
  - .packages

base-upgrades-periodic-file-managed:
  file.managed:
    - name: /etc/apt/apt.conf.d/20auto-upgrades
    - user: root
    - group: root
    - mode: '0644'
    - contents: |
        // Managed by Salt (base.upgrades).
        APT::Periodic::Update-Package-Lists "1";
        APT::Periodic::Unattended-Upgrade "1";
    - require:
      - pkg: base-packages-install-pkg-installed

base-upgrades-origins-file-managed:
  file.managed:
    - name: /etc/apt/apt.conf.d/52ci-fleet-unattended-upgrades
    - user: root
    - group: root
    - mode: '0644'
    # Security updates only; pinned vendor packages (Salt, Teleport) move by git commit.
    - contents: |
        // Managed by Salt (base.upgrades).
        Unattended-Upgrade::Origins-Pattern {
          "origin=Debian,codename=${distro_codename}-security,label=Debian-Security";
        };
        Unattended-Upgrade::Automatic-Reboot "false";
    - require:
      - pkg: base-packages-install-pkg-installed

base-upgrades-unattended-upgrades-service-running:
  service.running:
    - name: unattended-upgrades
    - enable: True
    - require:
      - file: base-upgrades-periodic-file-managed
      - file: base-upgrades-origins-file-managed
