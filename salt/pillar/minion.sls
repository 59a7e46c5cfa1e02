#!jinja|json
{#- The pillar document of the minion being compiled, written by ci-fleet-pillar-sync
    to /srv/ci-fleet/pillar/minions/<id>.json (a pillar_roots entry). A missing document
    fails the pillar render, so the minion gets no highstate: fail closed. #}
{%- import_json 'minions/' ~ opts.id ~ '.json' as document %}
{{ document | json }}
