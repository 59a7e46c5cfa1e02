{#- salt-run state.orch orch.deregister: remove this stack's GitHub runners whose name is
    not a current minion (ci_fleet_master:minions), e.g. after a machine was destroyed. #}
orch-deregister-stale-salt-runner:
  salt.runner:
    - name: ci_fleet.deregister_stale
