{#- Reactor for ci-fleet/github-runner/unregistered, sent by a JIT runner's unit
    when it stops (and by each job slot's launcher). data['id'] names the sender; a batched event
    may carry any id (docs/security.md), so it only chooses which minion to look at: the runner
    rate limits first (ci_fleet._reactor_gate: one run per id per 10 s, 60 a minute for the
    fleet) and decides everything else from the master's pillar and the minion's own answers. #}
orch-reactor-github-register:
  runner.ci_fleet.register_github_runners:
    - args:
      - minion: {{ data['id'] | json }}
