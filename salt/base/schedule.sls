{%- from "base/map.jinja" import base with context %}
{#- The minion re-applies its highstate on its own, so drift is corrected without the master asking. #}

base-schedule-highstate-schedule-present:
  schedule.present:
    - name: ci-fleet-highstate
    - function: state.apply
    - minutes: {{ base.highstate.minutes }}
    - splay: {{ base.highstate.splay }}
    - maxrunning: 1
    - persist: True
