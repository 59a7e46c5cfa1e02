import * as pulumi from "@pulumi/pulumi";
import { Machine, MachineRequest, MachineSite } from "../machines/site";

/**
 * The three kinds of machine the fleet has, one component each. They own nothing but
 * their machines: everything they need (keys, roles, user-data) is decided by the Fleet.
 */

export interface MachineComponentArgs {
  site: MachineSite;
  request: MachineRequest;
}

/** The Salt master: configuration management over ZeroMQ; minions talk only to it. */
export class SaltMaster extends pulumi.ComponentResource {
  readonly machine: Machine;

  constructor(name: string, args: MachineComponentArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ci-fleet:fleet:SaltMaster", name, {}, opts);
    this.machine = args.site.createMachine(`${name}-machine`, args.request, this);
    this.registerOutputs({ privateIpv4: this.machine.privateIpv4 });
  }
}

/** The Teleport machine: auth + proxy, the only way in for engineers. */
export class TeleportNode extends pulumi.ComponentResource {
  readonly machine: Machine;

  constructor(name: string, args: MachineComponentArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ci-fleet:fleet:TeleportNode", name, {}, opts);
    this.machine = args.site.createMachine(`${name}-machine`, args.request, this);
    this.registerOutputs({ privateIpv4: this.machine.privateIpv4, publicIpv4: this.machine.publicIpv4 });
  }
}

export interface RunnerQueueArgs {
  site: MachineSite;
  /** Runner name (a config map key) -> its machine request. */
  runners: Record<string, MachineRequest>;
}

/** A queue is a trust domain: its runners share one agent role and nothing with other queues. */
export class RunnerQueue extends pulumi.ComponentResource {
  readonly runners: Record<string, Machine> = {};

  constructor(name: string, args: RunnerQueueArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ci-fleet:fleet:RunnerQueue", name, {}, opts);
    for (const runner of Object.keys(args.runners).sort()) {
      this.runners[runner] = args.site.createMachine(`${name}-${runner}`, args.runners[runner], this);
    }
    this.registerOutputs({ runners: Object.keys(this.runners) });
  }
}
