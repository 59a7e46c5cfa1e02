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
    # Ubuntu's pockets: Origin "Ubuntu", Suite (archive) "noble-security"; the Codename is
    # plain "noble". The release pocket never changes but may hold a fix's new dependency
    # (as Ubuntu's own 50unattended-upgrades says). `#clear` drops the package's lists
    # (read earlier), so this file is the whole policy.
    - contents: |
        // Managed by Salt (base.upgrades).
        #clear Unattended-Upgrade::Allowed-Origins;
        #clear Unattended-Upgrade::Origins-Pattern;
        Unattended-Upgrade::Origins-Pattern {
          "origin=Ubuntu,archive=${distro_codename}-security";
          "origin=Ubuntu,archive=${distro_codename}";
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
