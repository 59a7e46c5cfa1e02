import type { JobIsolation, JobVmSpec, MachineProviderName, QueueSpec } from "./model";

/**
 * Job slots (issue 15): each runner host runs N slots, each a loop of fresh VMs (one job each).
 * N comes from the host's plan size, minus what the host keeps for itself, or from
 * `queues.<q>.jobVm.slots`. Pure: the config check, the pillar and report.md all call it.
 */

export interface PlanSize {
  /** Hardware threads (what KVM schedules vCPUs on; AWS's "vCPUs"). */
  threads: number;
  /** Physical cores, as the provider quotes them (Equinix quotes cores). */
  cores: number;
  memoryGiB: number;
  /** Local disk the host can give overlays (GiB); undefined when storage is network-attached (EBS). */
  localDiskGiB?: number;
  /** Where the figures come from. */
  source: string;
}

/**
 * The providers' documented sizes of the types the fleet uses. An unknown type needs
 * `jobVm.slots` (the config check says so): slots are never guessed.
 */
export const PLAN_SIZES: Record<MachineProviderName, Record<string, PlanSize>> = {
  "equinix-metal": {
    // https://deploy.equinix.com/product/servers/c3-small/: 1x Intel Xeon E-2278G, 8 cores @ 3.4 GHz (16 threads), 32 GB, 2x 480 GB SSD.
    "c3.small.x86": { cores: 8, threads: 16, memoryGiB: 32, localDiskGiB: 480, source: "deploy.equinix.com/product/servers/c3-small" },
    // https://deploy.equinix.com/product/servers/m3-large/: 1x AMD EPYC 7502P, 32 cores @ 2.5 GHz (64 threads), 256 GB, 2x 3.8 TB NVMe.
    "m3.large.x86": { cores: 32, threads: 64, memoryGiB: 256, localDiskGiB: 3800, source: "deploy.equinix.com/product/servers/m3-large" },
    // https://deploy.equinix.com/product/servers/n3-xlarge/: 1x Intel Xeon Gold 6314U, 32 cores @ 2.3 GHz (64 threads), 512 GB, 2x 3.8 TB NVMe.
    "n3.xlarge.x86": { cores: 32, threads: 64, memoryGiB: 512, localDiskGiB: 3800, source: "deploy.equinix.com/product/servers/n3-xlarge" },
  },
  aws: {
    // https://aws.amazon.com/ec2/instance-types/ (general purpose / compute optimised tables).
    "m5zn.metal": { cores: 24, threads: 48, memoryGiB: 192, source: "aws.amazon.com/ec2/instance-types/m5/ (m5zn.metal: 48 vCPU, 192 GiB, EBS only)" },
    "c5.metal": { cores: 48, threads: 96, memoryGiB: 192, source: "aws.amazon.com/ec2/instance-types/c5/ (c5.metal: 96 vCPU, 192 GiB, EBS only)" },
    "m6i.large": { cores: 1, threads: 2, memoryGiB: 8, source: "aws.amazon.com/ec2/instance-types/m6i/ (m6i.large: 2 vCPU, 8 GiB)" },
    // Other bare-metal types, from the same published tables (vCPU, GiB).
    "m5.metal": { cores: 48, threads: 96, memoryGiB: 384, source: "aws.amazon.com/ec2/instance-types/m5/" },
    "c5n.metal": { cores: 36, threads: 72, memoryGiB: 192, source: "aws.amazon.com/ec2/instance-types/c5/" },
    "c6i.metal": { cores: 64, threads: 128, memoryGiB: 256, source: "aws.amazon.com/ec2/instance-types/c6i/" },
    "m6i.metal": { cores: 64, threads: 128, memoryGiB: 512, source: "aws.amazon.com/ec2/instance-types/m6i/" },
    "c7i.metal-24xl": { cores: 48, threads: 96, memoryGiB: 192, source: "aws.amazon.com/ec2/instance-types/c7i/" },
    "m7i.metal-24xl": { cores: 48, threads: 96, memoryGiB: 384, source: "aws.amazon.com/ec2/instance-types/m7i/" },
    "m7a.metal-48xl": { cores: 192, threads: 192, memoryGiB: 768, source: "aws.amazon.com/ec2/instance-types/m7a/" },
    "r7iz.metal-16xl": { cores: 32, threads: 64, memoryGiB: 512, source: "aws.amazon.com/ec2/instance-types/r7iz/" },
    "g4dn.metal": { cores: 48, threads: 96, memoryGiB: 384, source: "aws.amazon.com/ec2/instance-types/g4/" },
    "i3.metal": { cores: 36, threads: 72, memoryGiB: 512, source: "aws.amazon.com/ec2/instance-types/i3/" },
  },
};

/**
 * What a runner host keeps for itself: the Salt minion, the Teleport node, the slot launchers,
 * the golden-image build, page cache for the image; and QEMU's own memory per VM (its process,
 * device emulation, the guest's page tables) on top of the guest's RAM.
 */
export const HOST_RESERVE = { threads: 2, memoryGiB: 8, perVmMemoryGiB: 0.5 } as const;

/** The VM size when a vm queue names none. */
export const DEFAULT_JOB_VM: JobVmSpec = { cpus: 4, memoryGiB: 16, diskGiB: 80, maxJobMinutes: 360 };

export interface SlotPlan {
  slots: number;
  /** Whether `slots` came from `jobVm.slots` or from the plan's size. */
  from: "config" | "plan";
  /** What the plan could hold (undefined when its size is unknown). */
  capacity?: number;
  size?: PlanSize;
}

/** The most VMs of this size the plan holds, leaving HOST_RESERVE; undefined when its size is unknown. */
export function slotCapacity(size: PlanSize | undefined, vm: JobVmSpec): number | undefined {
  if (!size) return undefined;
  const byCpu = Math.floor((size.threads - HOST_RESERVE.threads) / vm.cpus);
  const byMemory = Math.floor((size.memoryGiB - HOST_RESERVE.memoryGiB) / (vm.memoryGiB + HOST_RESERVE.perVmMemoryGiB));
  const byDisk = size.localDiskGiB === undefined ? Infinity : Math.floor(size.localDiskGiB / vm.diskGiB);
  return Math.max(0, Math.min(byCpu, byMemory, byDisk));
}

export function planSize(provider: MachineProviderName, instanceType: string | undefined): PlanSize | undefined {
  return instanceType === undefined ? undefined : PLAN_SIZES[provider][instanceType];
}

/** Slots of one runner host: `jobVm.slots` when set, else what its plan holds. */
export function slotPlan(provider: MachineProviderName, instanceType: string | undefined, vm: JobVmSpec): SlotPlan {
  const size = planSize(provider, instanceType);
  const capacity = slotCapacity(size, vm);
  if (vm.slots !== undefined) return { slots: vm.slots, from: "config", ...(capacity !== undefined ? { capacity } : {}), ...(size ? { size } : {}) };
  return { slots: capacity ?? 0, from: "plan", ...(capacity !== undefined ? { capacity } : {}), ...(size ? { size } : {}) };
}

/**
 * Problems with one runner's slots (empty when fine): a VM bigger than the plan, zero slots,
 * more slots than the plan holds, or a plan of unknown size without `jobVm.slots`.
 */
export function slotProblems(provider: MachineProviderName, planName: string, instanceType: string | undefined, vm: JobVmSpec): string[] {
  const size = planSize(provider, instanceType);
  const out: string[] = [];
  // A plan without a type for this provider is already an error of `plans`.
  if (instanceType === undefined) return out;
  if (!size) {
    if (vm.slots === undefined) {
      out.push(`plan ${planName} is ${instanceType ?? "unset"} on ${provider}, whose size ci-fleet does not know (infra/config/job-vm.ts PLAN_SIZES): set jobVm.slots`);
    }
    return out;
  }
  const usableThreads = size.threads - HOST_RESERVE.threads;
  const usableMemory = size.memoryGiB - HOST_RESERVE.memoryGiB;
  const vmMemory = vm.memoryGiB + HOST_RESERVE.perVmMemoryGiB;
  const what = `plan ${planName} is ${instanceType} on ${provider} (${size.threads} threads, ${size.memoryGiB} GiB${size.localDiskGiB !== undefined ? `, ${size.localDiskGiB} GiB local disk` : ""}; the host keeps ${HOST_RESERVE.threads} threads and ${HOST_RESERVE.memoryGiB} GiB, QEMU ${HOST_RESERVE.perVmMemoryGiB} GiB per VM)`;
  const bigger: string[] = [];
  if (vm.cpus > usableThreads) bigger.push(`${vm.cpus} cpus > ${usableThreads}`);
  if (vmMemory > usableMemory) bigger.push(`${vm.memoryGiB} GiB memory > ${usableMemory - HOST_RESERVE.perVmMemoryGiB}`);
  if (size.localDiskGiB !== undefined && vm.diskGiB > size.localDiskGiB) bigger.push(`${vm.diskGiB} GiB disk > ${size.localDiskGiB}`);
  const capacity = slotCapacity(size, vm) ?? 0;
  if (bigger.length) out.push(`the job VM is bigger than the host: ${bigger.join(", ")}; ${what}`);
  else if (vm.slots === undefined && capacity === 0) out.push(`no slot fits: ${what}`);
  if (vm.slots !== undefined && !bigger.length && vm.slots > capacity) {
    out.push(`jobVm.slots ${vm.slots} does not fit: the plan holds ${capacity} VMs of ${vm.cpus} cpus / ${vm.memoryGiB} GiB; ${what}`);
  }
  return out;
}

/** A queue's isolation and VM size as the program uses them (unset isolation: `vm` with the default VM). */
export function queueJobVm(queue: Pick<QueueSpec, "isolation" | "jobVm">): { isolation: JobIsolation; jobVm?: JobVmSpec } {
  const isolation = queue.isolation ?? "vm";
  return isolation === "vm" ? { isolation, jobVm: queue.jobVm ?? DEFAULT_JOB_VM } : { isolation };
}
