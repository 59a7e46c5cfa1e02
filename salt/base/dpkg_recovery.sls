{#- A dpkg run that was killed (a first-boot salt-call stopped by its bound, power lost mid
    upgrade) leaves its journal in /var/lib/dpkg/updates/, and apt then refuses every install
    ("dpkg was interrupted, you must manually run 'dpkg --configure -a'": apt-pkg/deb/debsystem.cc
    CheckUpdates, any entry whose name is all digits), so every later pkg state would fail until
    someone ran it by hand. This state runs it, first in every highstate (`order: first`: Salt's
    order_chunks puts it before every auto-ordered state) and only when the journal holds such an
    entry (apt's own test). Unattended: keep the installed config files of half-configured packages. #}
base-dpkg_recovery-configure-pending-cmd-run:
  cmd.run:
    - name: dpkg --force-confdef --force-confold --configure -a
    - env:
      - DEBIAN_FRONTEND: noninteractive
    - onlyif: find /var/lib/dpkg/updates -mindepth 1 -maxdepth 1 -name '[0-9]*' ! -name '*[!0-9]*' | grep -q .
    - order: first
