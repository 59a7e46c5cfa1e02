import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { MachineProviderName, machineNames } from "../config/model";

/**
 * Stable names for the control plane. Every minion and Teleport agent reaches the Salt master
 * and the Teleport auth service by a name in one Route53 hosted zone that the program
 * manages; each name's A record follows its machine's private IPv4, so replacing the master or
 * the Teleport machine changes a record, never a runner's (ignored) user-data.
 *
 * - aws: a private hosted zone attached to the fleet VPC; machines resolve it through the
 *   VPC's own resolver. Nothing outside the VPC sees the names.
 * - equinix-metal: a machine cannot use a VPC-private zone (there is no VPC), so the zone is
 *   public and holds the private addresses. That publishes two RFC 1918 addresses and nothing
 *   else: they are unreachable from the internet, the firewall admits Salt (4505/4506) and
 *   Teleport auth (3025) from private networks only, and a forged answer gains nothing (the
 *   minion pins the master's key with `master_finger`; a Teleport agent verifies the auth
 *   server against the cluster's CA, not the name). The parent domain delegates the zone once.
 *
 * Names are pure functions of the stack and the zone (so user-data depends on config only);
 * records depend on the machines' outputs.
 */

/** Seconds a resolver may keep an answer: how long after a replacement the old address may still be used. */
export const CONTROL_PLANE_RECORD_TTL_SECONDS = 60;

export interface ControlPlaneNames {
  /** `<stack>-salt-master.<zone>`: the master, for every minion. */
  saltMaster: string;
  /** `<stack>-teleport.<zone>`: the Teleport auth service, for every agent. */
  teleport: string;
}

/** The record names: what user-data and pillar carry instead of addresses. */
export function controlPlaneNames(stack: string, zone: string): ControlPlaneNames {
  return {
    saltMaster: `${machineNames.saltMaster(stack)}.${zone}`,
    teleport: `${machineNames.teleport(stack)}.${zone}`,
  };
}

export interface ControlPlaneDnsArgs {
  stack: string;
  provider: MachineProviderName;
  /** The zone's name (config `dns.zone`). */
  zone: string;
  /** aws: the fleet VPC the private zone is attached to (required there, refused on equinix-metal). */
  vpcId?: pulumi.Input<string>;
  /** The private IPv4 of each control-plane machine. */
  saltMasterIpv4: pulumi.Input<string>;
  teleportIpv4: pulumi.Input<string>;
}

export class ControlPlaneDns extends pulumi.ComponentResource {
  readonly names: ControlPlaneNames;
  readonly zoneId: pulumi.Output<string>;
  /** The zone's name servers (equinix-metal: what the parent domain delegates to). */
  readonly nameServers: pulumi.Output<string[]>;
  /** The A records: runners depend on them (ordering only), so a first boot never resolves an absent name. */
  readonly records: aws.route53.Record[];

  constructor(name: string, args: ControlPlaneDnsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ci-fleet:fleet:ControlPlaneDns", name, {}, opts);
    if ((args.provider === "aws") !== (args.vpcId !== undefined)) {
      throw new Error(`control-plane DNS: a VPC is required on aws and only there (provider ${args.provider})`);
    }
    this.names = controlPlaneNames(args.stack, args.zone);
    const child = { parent: this };
    const zone = new aws.route53.Zone(
      `${name}-zone`,
      {
        name: args.zone,
        comment: `ci-fleet ${args.stack}: stable names of the control plane (${args.provider === "aws" ? "private to the fleet VPC" : "public, private addresses"})`,
        ...(args.vpcId !== undefined ? { vpcs: [{ vpcId: args.vpcId }] } : {}),
        // A zone with records left in it is never deleted by accident.
        forceDestroy: false,
        tags: { "ci-fleet:stack": args.stack, "ci-fleet:role": "dns" },
      },
      child,
    );
    const record = (suffix: string, recordName: string, ipv4: pulumi.Input<string>) =>
      new aws.route53.Record(
        `${name}-${suffix}`,
        { zoneId: zone.zoneId, name: recordName, type: "A", ttl: CONTROL_PLANE_RECORD_TTL_SECONDS, records: [ipv4] },
        child,
      );
    this.records = [record("salt-master", this.names.saltMaster, args.saltMasterIpv4), record("teleport", this.names.teleport, args.teleportIpv4)];
    this.zoneId = zone.zoneId;
    this.nameServers = zone.nameServers;
    this.registerOutputs({ zoneId: this.zoneId, nameServers: this.nameServers, names: this.names });
  }
}
