{#- Nothing by default: the top file picks teleport.auth or teleport.node by minion id. #}
include:
  - .repo
  - .package
