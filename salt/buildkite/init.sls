include:
  - runner
  - .package
  - .archive
  - .hooks
  - .config
  - .service
