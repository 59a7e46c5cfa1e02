{#- salt-run state.orch orch.github_register: register every GitHub Actions runner that
    has no registration, each with its own one-hour token as inline pillar. #}
orch-github_register-runners-salt-runner:
  salt.runner:
    - name: ci_fleet.register_github_runners
