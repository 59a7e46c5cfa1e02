include:
  - .package
  - .toolchain_versions
  - .user
  - .kvm
  - .reset
  - .selftest
