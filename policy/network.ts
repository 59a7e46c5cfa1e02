import * as aws from "@pulumi/aws";
import { ResourceValidationPolicy, validateResourceOfType } from "@pulumi/policy";
import { FLEET_TAGS, awsTags, isRecord } from "./support";

const OPEN_TO_THE_WORLD = ["0.0.0.0/0", "::/0"];

/** The one opening to the internet: Teleport's proxy on HTTPS (web, tsh, agents, ACME TLS-ALPN). */
function isTeleportHttps(protocol: unknown, fromPort: unknown, toPort: unknown): boolean {
  return (protocol === "tcp" || protocol === "6") && fromPort === 443 && toPort === 443;
}

function describeRule(protocol: unknown, fromPort: unknown, toPort: unknown, cidrs: string[]): string {
  const ports = fromPort === toPort ? `port ${String(fromPort)}` : `ports ${String(fromPort)}-${String(toPort)}`;
  return `ingress ${String(protocol)} ${ports} from ${cidrs.join(", ")}`;
}

function check(
  tags: Record<string, string>,
  rule: { protocol: unknown; fromPort: unknown; toPort: unknown; cidrs: unknown[] },
  reportViolation: (message: string) => void,
): void {
  const open = rule.cidrs.filter((c): c is string => typeof c === "string" && OPEN_TO_THE_WORLD.includes(c));
  if (open.length === 0) return;
  const isTeleport = tags[FLEET_TAGS.role] === "teleport";
  if (isTeleport && isTeleportHttps(rule.protocol, rule.fromPort, rule.toPort)) return;
  const why = isTeleport ? "the Teleport node may only open tcp 443 to the internet" : "only the Teleport node may accept traffic from the internet";
  reportViolation(`${describeRule(rule.protocol, rule.fromPort, rule.toPort, open)}: ${why}`);
}

export const securityGroupNoOpenIngress: ResourceValidationPolicy = {
  name: "security-group-no-open-ingress",
  description: `No security group accepts traffic from 0.0.0.0/0 or ::/0, except tcp 443 on the Teleport node's group (tag ${FLEET_TAGS.role}=teleport).`,
  enforcementLevel: "mandatory",
  validateResource: [
    validateResourceOfType(aws.ec2.SecurityGroup, (group, _args, reportViolation) => {
      const tags = awsTags(group);
      for (const rule of group.ingress ?? []) {
        if (!isRecord(rule)) continue;
        const cidrs = [...(rule.cidrBlocks ?? []), ...(rule.ipv6CidrBlocks ?? [])];
        check(tags, { protocol: rule.protocol, fromPort: rule.fromPort, toPort: rule.toPort, cidrs }, reportViolation);
      }
    }),
    validateResourceOfType(aws.vpc.SecurityGroupIngressRule, (rule, _args, reportViolation) => {
      const cidrs = [rule.cidrIpv4, rule.cidrIpv6].filter((c) => c !== undefined);
      check(awsTags(rule), { protocol: rule.ipProtocol, fromPort: rule.fromPort, toPort: rule.toPort, cidrs }, reportViolation);
    }),
    // aws.ec2.SecurityGroupRule has no tags, so it can never prove it belongs to the Teleport node.
    validateResourceOfType(aws.ec2.SecurityGroupRule, (rule, _args, reportViolation) => {
      if (rule.type !== "ingress") return;
      const cidrs = [...(rule.cidrBlocks ?? []), ...(rule.ipv6CidrBlocks ?? [])];
      check({}, { protocol: rule.protocol, fromPort: rule.fromPort, toPort: rule.toPort, cidrs }, reportViolation);
    }),
  ],
};

export const networkPolicies: ResourceValidationPolicy[] = [securityGroupNoOpenIngress];
