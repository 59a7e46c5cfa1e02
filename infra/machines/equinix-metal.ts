import * as metal from "@pulumi/equinix-metal";
import * as pulumi from "@pulumi/pulumi";
import { EquinixSite } from "../config/model";
import { ignoreUserData, Machine, MachineRequest, MachineSite, machineTags } from "./site";

/**
 * Equinix Metal devices (the provider the project asked for; Equinix Metal was sunset on
 * 2026-06-30, so `aws` is the supported destination: one config key moves a stack).
 * Devices keep a public IPv4 for egress (Equinix has no managed NAT); the nftables policy
 * Salt applies drops every inbound connection, and only the Teleport machine's public
 * address is published as an output.
 */
export class EquinixMetalSite implements MachineSite {
  readonly provider = "equinix-metal" as const;

  constructor(
    private readonly stack: string,
    private readonly site: EquinixSite,
  ) {}

  createMachine(name: string, request: MachineRequest, parent: pulumi.Resource): Machine {
    const tags = machineTags(this.stack, request);
    const device = new metal.Device(
      name,
      {
        hostname: request.hostname,
        projectId: this.site.projectId,
        metro: this.site.metro,
        plan: request.instanceType,
        // The SDK's OperatingSystem enum stops at ubuntu_20_04: the slug goes as a plain string.
        operatingSystem: request.os ?? this.site.os,
        billingCycle: "hourly",
        userData: request.userData,
        tags: Object.entries(tags).map(([k, v]) => `${k}=${v}`),
        // No SSH keys: OpenSSH is disabled at first boot; Teleport is the only way in.
        projectSshKeyIds: [],
      },
      { parent, ...ignoreUserData("userData"), ...(request.dependsOn ? { dependsOn: request.dependsOn } : {}), ...request.lifecycle },
    );
    return {
      hostname: request.hostname,
      role: request.role,
      ...(request.queue ? { queue: request.queue } : {}),
      id: device.id,
      privateIpv4: device.accessPrivateIpv4,
      ...(request.role === "teleport" ? { publicIpv4: device.accessPublicIpv4 } : {}),
    };
  }
}
