include:
  - runner
  - .archive
  - .hooks
  - .config
  - .service
  - .register
