include:
  - .packages
  - .firewall
  - .sshd
  - .upgrades
  - .timesync
  - .schedule
  - .cloudinit
