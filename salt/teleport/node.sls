{%- from "teleport/map.jinja" import teleport with context %}
{#- Every other machine: the Teleport SSH service from ci_fleet:teleport:node_config.
    aws: the config joins with the `ec2` method (the node shows its AWS-signed instance
    identity document; the auth service names it <account>-<instance id>, so it cannot take
    another node's host id; nothing secret is delivered). equinix-metal: the join token exists only as
    inline pillar of the master's join orchestration (salt/_runners/ci_fleet.py), for one
    join; in any other run a leftover token file is removed. The labels roles select on are
    assigned afterwards by the auth service (server_info, ci_fleet.assign_teleport_labels). #}
{%- set node_config = salt['pillar.get']('ci_fleet:teleport:node_config', '') %}
{%- set join_token = salt['pillar.get']('ci_fleet_inline:teleport_join_token', '') %}
{#- The cluster's CA pins, computed by the master from the Teleport machine's host CA and served
    in this node's pillar (salt/pillar/minion.sls, never from a runner). The node config's
    `ca_pin` names teleport.ca_pin_file; Teleport refuses to start while that file is missing or
    empty. Without pins: no agent (re)start and no join token, only a pending comment. #}
{%- set ca_pins = salt['pillar.get']('ci_fleet_teleport_ca:pins', []) %}
include:
  - teleport

{%- if not node_config %}

teleport-node-pillar-test-fail_without_changes:
  test.fail_without_changes:
    - name: pillar ci_fleet:teleport:node_config is required
{%- else %}

teleport-node-config-file-managed:
  file.managed:
    - name: {{ teleport.config_file }}
    - contents_pillar: ci_fleet:teleport:node_config
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: False
    - require:
      - pkg: teleport-package-install-pkg-installed

{%-   if not ca_pins %}

teleport-node-ca-pin-test-succeed_without_changes:
  test.succeed_without_changes:
    - name: {{ teleport.ca_pin_file | json }}
    - comment: {{ teleport.ca_pin_pending_comment | json }}

teleport-node-join-token-file-absent:
  file.absent:
    - name: {{ teleport.join_token_file }}
{%-   else %}

teleport-node-ca-pin-file-managed:
  file.managed:
    - name: {{ teleport.ca_pin_file }}
    - contents: {{ ca_pins | join('\n') | json }}
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: True
    # New pins (a CA rotation) restart the agent with them.
    - watch_in:
      - service: teleport-node-service-running
{%-   if join_token %}

teleport-node-join-token-file-managed:
  file.managed:
    - name: {{ teleport.join_token_file }}
    - contents_pillar: ci_fleet_inline:teleport_join_token
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: True
    - show_changes: False
    # A new token restarts the agent, which then joins with it.
    - watch_in:
      - service: teleport-node-service-running
{%-   else %}

teleport-node-join-token-file-absent:
  file.absent:
    - name: {{ teleport.join_token_file }}
{%-   endif %}

teleport-node-service-running:
  service.running:
    - name: teleport
    - enable: True
    - require:
      - file: teleport-node-ca-pin-file-managed
    - watch:
      - file: teleport-node-config-file-managed
      - pkg: teleport-package-install-pkg-installed
{%-   endif %}
{%- endif %}
