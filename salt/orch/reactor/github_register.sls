{#- Reactor for ci-fleet/github-runner/unregistered, sent by a JIT runner's unit
    when it stops. data['id'] is the minion id the master authenticated. #}
orch-reactor-github-register:
  runner.ci_fleet.register_github_runners:
    - args:
      - minion: {{ data['id'] | json }}
