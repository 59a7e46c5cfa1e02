{%- from "base/map.jinja" import base with context %}
{#- equinix-metal: a machine's Roles Anywhere certificate arrives through the signed CSR event
    flow (salt/_runners/ci_fleet_pki.py), whose delivery is itself a `state.apply queue=True`:
    it waits for the running highstate, so the FIRST highstate can never see the certificate.
    The states that cannot work without it (base.credentials_pending.gated, per role) are
    skipped while it is missing, with a pending comment, instead of failing: this gate is
    stateful (salt/states/cmd.py `_reinterpreted_state`: the last stdout line, name=value pairs)
    and reports a change only when the certificate is there, and each gated state gets it as an
    `onchanges` requisite (onchanges_in), so without a change Salt does not run it and reports
    True. The first highstate then succeeds for everything else; the master keeps a highstate
    whose return holds a `ci-fleet pending:` comment for unconverged (salt/_runners/
    ci_fleet_converge.py) and applies the highstate again within minutes, after the
    certificate is installed. The cost: with the certificate in place this gate reports a
    change on every highstate of that machine. No "=" in the comments: each pair is split on it. #}
{%- set pending = base.credentials_pending %}
{%- set gated = pending.gated.get(base.role, []) if base.provider == 'equinix-metal' else [] %}
{%- if gated %}

base-credentials_pending-roles-anywhere-certificate-cmd-run:
  cmd.run:
    - name: >-
        if test -s {{ pending.certificate }}; then
        echo 'changed=yes comment="the Roles Anywhere certificate is in place"';
        else
        echo 'changed=no comment="{{ pending.comment }}"';
        fi
    - stateful: True
    - onchanges_in:
{%-   for ref in gated %}
      - {{ ref | json }}
{%-   endfor %}
{%- endif %}
