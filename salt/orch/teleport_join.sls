{#- salt-run state.orch orch.teleport_join: join every minion whose Teleport agent is
    not joined yet (equinix-metal; on aws nodes join by themselves with the `ec2` method).
    The master's schedule does this through ci_fleet.reconcile, which then gives joined nodes
    their labels (ci_fleet.assign_teleport_labels). #}
orch-teleport_join-nodes-salt-runner:
  salt.runner:
    - name: ci_fleet.join_teleport_nodes
