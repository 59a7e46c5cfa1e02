include:
  - .repository
  - .config
  - .minion_keys
  - .pillar_sync
  - .service
