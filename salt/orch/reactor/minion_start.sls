{#- Reactor for salt/minion/<id>/start (the minion connected after a start: a new machine, a
    reboot, a restarted salt-minion, a reconnect to a replaced master). It publishes nothing: it
    marks the minion due in the master's record (salt/_runners/ci_fleet_converge.py), at most
    once every 5 minutes and never replacing a highstate in flight; the schedule's
    ci_fleet_converge.run (every minute) publishes due highstates within one fleet-wide budget of
    25 a minute, and joins/labels a Teleport agent once its highstate has answered. The tag and
    data['id'] are passed as JSON strings and checked there: the id must be the tag's and an
    accepted key's (a batched event may carry any id); nothing is decided from them but which
    minion to look at. #}
orch-reactor-minion-start:
  runner.ci_fleet_converge.minion_start:
    - args:
      - tag: {{ tag | string | json }}
      - minion: {{ data.get('id', '') | string | json }}
