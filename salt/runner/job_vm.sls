{#- Issue 15: every job in a fresh VM. Applied (salt/top.sls) when this runner's pillar says
    ci_fleet:runner:isolation vm: nested KVM on the host, the golden image (once per pin), the
    launcher's config, one slot unit per slot, and no host CI agent taking jobs itself. #}
include:
  - .job_vm_kvm
  - .job_vm_image
  - .job_vm_config
  - .job_vm_service
  - .job_vm_host_agent
