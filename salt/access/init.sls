{#- Local login users for Teleport sessions, and sudo for admins. #}
include:
  - .users
  - .sudo
