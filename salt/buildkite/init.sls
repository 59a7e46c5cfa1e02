include:
  - runner
  - .repo
  - .user
  - .package
  - .hooks
  - .config
  - .token
  - .job
  - .service
