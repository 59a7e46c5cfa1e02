#!jinja|json
{#- The pillar document of the minion being compiled, written by ci-fleet-pillar-sync
    to /srv/ci-fleet/pillar/minions/<id>.json (a pillar_roots entry). A missing document
    fails the pillar render, so the minion gets no highstate: fail closed.

    ci_fleet_inline: a one-time secret the master's orchestration (salt/_runners/ci_fleet.py)
    put in /srv/ci-fleet/pillar/inline/<id>/<key>.json for the duration of one state.apply
    of this minion: teleport_join_token, github_jit_config (a GitHub just-in-time runner
    config). Pillar is compiled for, and encrypted to, this minion alone; a publication
    (`state.apply pillar=...`) would reach every minion. The file holds one JSON string the
    runner checked (token: [A-Za-z0-9_.-]; JIT config: base64 [A-Za-z0-9+/=]); absent files
    are skipped. #}
{%- import_json 'minions/' ~ opts.id ~ '.json' as document %}
{%- set inline = {} %}
{%- for key in ['teleport_join_token', 'github_jit_config'] %}
{%-   set text %}{% include 'inline/' ~ opts.id ~ '/' ~ key ~ '.json' ignore missing %}{% endset %}
{%-   if text | trim %}
{%-     do inline.update({key: text | trim | load_json}) %}
{%-   endif %}
{%- endfor %}
{%- if inline %}
{%-   do document.update({'ci_fleet_inline': inline}) %}
{%- endif %}
{#- ci_fleet_teleport_ca: the Teleport cluster's CA pins, written by the master itself
    (ci_fleet.refresh_teleport_ca_pins, from the Teleport minion's host CA) to
    teleport/ca_pins.json; served to every machine that runs a Teleport node (not the
    Teleport machine), for salt/teleport/node.sls. Absent until the master knows them. #}
{%- if document.get('ci_fleet', {}).get('role') != 'teleport' %}
{%-   set text %}{% include 'teleport/ca_pins.json' ignore missing %}{% endset %}
{%-   if text | trim %}
{%-     do document.update({'ci_fleet_teleport_ca': {'pins': text | trim | load_json}}) %}
{%-   endif %}
{%- endif %}
{{ document | json }}
