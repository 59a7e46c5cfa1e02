import * as pulumi from "@pulumi/pulumi";
import { FleetConfigError } from "./config/check";
import { createFleet } from "./program";

/** Pulumi prints a RunError as its message alone: a config problem is one clear error, not a stack trace. */
function createFleetOrExplain(): ReturnType<typeof createFleet> {
  try {
    return createFleet();
  } catch (error) {
    if (error instanceof FleetConfigError) throw new pulumi.RunError(error.message);
    throw error;
  }
}

const { fleet } = createFleetOrExplain();

/** Stack outputs: what an operator needs, nothing secret. */
export const machines = fleet.machines.map((m) => ({
  hostname: m.hostname,
  role: m.role,
  queue: m.queue,
  instanceType: m.instanceType,
  privateIpv4: m.machine.privateIpv4,
}));
export const teleportPublicIpv4 = fleet.teleport.machine.publicIpv4;
/** Name servers of the control plane's zone (`dns.zone`): on equinix-metal the parent domain delegates to them. */
export const dnsNameServers = fleet.dns.nameServers;
export const kmsKeyAlias = fleet.identity.kmsAliasName;
export const agentRoleArns = fleet.identity.agentRoleArns;
