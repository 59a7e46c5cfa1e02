import { createFleet } from "./program";

const { fleet } = createFleet();

/** Stack outputs: what an operator needs, nothing secret. */
export const machines = fleet.machines.map((m) => ({
  hostname: m.hostname,
  role: m.role,
  queue: m.queue,
  instanceType: m.instanceType,
  privateIpv4: m.machine.privateIpv4,
}));
export const teleportPublicIpv4 = fleet.teleport.machine.publicIpv4;
export const kmsKeyAlias = fleet.identity.kmsAliasName;
export const agentRoleArns = fleet.identity.agentRoleArns;
