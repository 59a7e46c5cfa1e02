include:
  - .repository
  - .config
  - .minion_keys
  - .pillar_sync
  - .bootstrap_credentials
  - .service
