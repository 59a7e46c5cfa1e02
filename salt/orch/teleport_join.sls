{#- salt-run state.orch orch.teleport_join: join every minion whose Teleport agent is
    not joined yet (the master's schedule also does this through ci_fleet.reconcile). #}
orch-teleport_join-nodes-salt-runner:
  salt.runner:
    - name: ci_fleet.join_teleport_nodes
