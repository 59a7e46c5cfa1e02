include:
  - runner
  - .repo
  - .package
  - .hooks
  - .config
  - .service
