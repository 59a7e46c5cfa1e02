include:
  - .packages
  - .apt_keys
  - .firewall
  - .sshd
  - .upgrades
  - .timesync
  - .schedule
  - .cloudinit
