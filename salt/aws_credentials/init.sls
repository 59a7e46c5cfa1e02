include:
  # session first: on a runner its config directory makes /etc/ci-fleet (root:ci-agent 0750),
  # so the root-only key directory (0700) is never the one that creates that parent.
  - .session
  - .roles_anywhere
  - .instance_profile
