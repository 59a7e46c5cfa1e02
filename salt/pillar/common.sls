{#- Non-secret settings shared by every minion. This file is in git and served to all:
    never put a secret here (secrets come only from the per-minion documents). #}
ci_fleet_common:
  managed_by: salt
  contracts: docs/contracts.md
