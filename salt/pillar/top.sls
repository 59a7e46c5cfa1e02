{#- Each minion gets exactly the pillar document named by its authenticated id
    (opts.id is set by the master from the minion's accepted key), never by anything
    the minion reports about itself. #}
base:
  '*':
    - common
  {{ opts.id | json }}:
    - match: list
    - minion
