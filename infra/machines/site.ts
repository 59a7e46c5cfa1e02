import * as pulumi from "@pulumi/pulumi";
import { MachineProviderName, MachineRole } from "../config/model";

/**
 * One interface, two implementations (equinix-metal.ts, aws.ts): the rest of the program
 * asks a site for machines and gets the same outputs whichever provider is selected.
 */

export interface MachineRequest {
  /** Hostname and Salt minion id, e.g. `production-default-r1`. */
  hostname: string;
  role: MachineRole;
  queue?: string;
  /** The provider's instance type / plan, already resolved from the config's plan key. */
  instanceType: string;
  /** OS slug (Equinix); AWS uses the site's pinned image. */
  os?: string;
  /** Rendered cloud-config; must be a Pulumi secret (it carries the minion's private key). */
  userData: pulumi.Output<string>;
  /** AWS only: the instance profile that gives the machine its role. */
  instanceProfileName?: pulumi.Input<string>;
  /**
   * Resources that must exist before the machine first boots (its control plane's DNS records,
   * the master's key parameter). Ordering only: no input of the machine comes from them, so a
   * change to one of them (a replaced master's new address) never updates the machine.
   */
  dependsOn?: pulumi.Resource[];
  /** Runners only: drain the CI agent before the machine is deleted or replaced (infra/fleet/drain-hook.ts). */
  lifecycle?: Pick<pulumi.CustomResourceOptions, "hooks" | "deleteBeforeReplace">;
}

export interface Machine {
  hostname: string;
  role: MachineRole;
  queue?: string;
  id: pulumi.Output<string>;
  privateIpv4: pulumi.Output<string>;
  /** Only the Teleport machine is reachable from the internet. */
  publicIpv4?: pulumi.Output<string>;
}

export interface MachineSite {
  readonly provider: MachineProviderName;
  /** Creates the machine as a child of `parent`, named `name`. */
  createMachine(name: string, request: MachineRequest, parent: pulumi.Resource): Machine;
}

/** Tags every machine carries, on both providers (policies and Teleport labels rely on them). */
export function machineTags(stack: string, request: Pick<MachineRequest, "hostname" | "role" | "queue">): Record<string, string> {
  return {
    "ci-fleet:stack": stack,
    "ci-fleet:role": request.role,
    ...(request.queue ? { "ci-fleet:queue": request.queue } : {}),
  };
}

/**
 * Cloud-init bootstraps a machine once; Salt owns it afterwards. So a changed user-data
 * (a rotated secret, a new minion) must never replace a machine: each provider ignores
 * the field it carries user-data in, and any other field that only decides the first boot
 * (on aws the image: a new Ubuntu release is applied by Salt in place, never by replacing).
 */
export function ignoreUserData(field: "userData" | "userDataBase64", ...alsoFirstBootOnly: string[]): pulumi.CustomResourceOptions {
  return { ignoreChanges: [field, ...alsoFirstBootOnly] };
}
