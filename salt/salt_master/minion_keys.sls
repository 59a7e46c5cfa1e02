{%- from "salt_master/map.jinja" import salt_master with context %}
{#- Accepted minion keys come only from pillar; keys of minions no longer listed are
    removed by the clean directory below (it keeps only files managed here). #}
{%- set minions_dir = salt_master.pki_dir ~ '/minions' %}
{%- set valid_ids = [] %}
{%- for minion_id in salt_master.minions | sort %}
{%-   if minion_id and '/' not in minion_id and not minion_id.startswith('.') %}
{%-     do valid_ids.append(minion_id) %}
{%-   endif %}
{%- endfor %}
{%- for minion_id in valid_ids %}

salt_master-minion_keys-{{ minion_id }}-file-managed:
  file.managed:
    - name: {{ minions_dir }}/{{ minion_id }}
    - contents_pillar: ci_fleet_master:minions:{{ minion_id }}:public_key_pem
    - user: root
    - group: root
    - mode: '0644'
{%- endfor %}
{%- if valid_ids %}

salt_master-minion_keys-minions-file-directory:
  file.directory:
    - name: {{ minions_dir }}
    - user: root
    - group: root
    - mode: '0700'
    - clean: True
    - require:
{%- for minion_id in valid_ids %}
      - file: salt_master-minion_keys-{{ minion_id }}-file-managed
{%- endfor %}
{%- else %}

{#- An empty list means the pillar is broken, not that the fleet is gone: keep every key. #}
salt_master-minion_keys-minions-test-fail_without_changes:
  test.fail_without_changes:
    - name: pillar ci_fleet_master:minions is empty; refusing to remove accepted minion keys
{%- endif %}
