include:
  - .roles_anywhere
  - .instance_profile
