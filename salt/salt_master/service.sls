include:
  - .repository
  - .config

salt_master-service-salt-master-service-running:
  service.running:
    - name: salt-master
    - enable: True
    - watch:
      - file: salt_master-config-master-d-file-managed
      - git: salt_master-repository-checkout-git-latest
