include:
  # First: an interrupted dpkg fails every pkg state after it.
  - .dpkg_recovery
  - .packages
  - .apt_keys
  - .firewall
  - .sshd
  - .upgrades
  - .timesync
  - .schedule
  - .cloudinit
  - .credentials_pending
