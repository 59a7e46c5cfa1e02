# ci-fleet: Teleport is the only door; OpenSSH is stopped, disabled and masked.
# Runs from bootcmd on every boot: idempotent, succeeds whether or not sshd is installed.
set -eu
systemctl stop ssh.socket ssh.service 2>/dev/null || true
systemctl disable ssh.socket ssh.service 2>/dev/null || true
# `systemctl enable ssh` leaves the sshd.service alias behind; mask refuses to replace it.
if [ -L /etc/systemd/system/sshd.service ] && [ "$(readlink /etc/systemd/system/sshd.service)" != /dev/null ]; then
  rm -f /etc/systemd/system/sshd.service
fi
systemctl mask ssh.service ssh.socket sshd.service
