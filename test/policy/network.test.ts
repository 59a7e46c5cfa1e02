import * as aws from "@pulumi/aws";
import { securityGroupNoOpenIngress } from "../../policy/network";
import { fakeResourceArgs, violationsOf } from "./fake-args";
import { runnerSecurityGroup, teleportSecurityGroup } from "./known-good";

const group = (props: Record<string, unknown>) => fakeResourceArgs(aws.ec2.SecurityGroup, props, { name: "sg" });

describe("security-group-no-open-ingress", () => {
  it("accepts Teleport's 443 from anywhere, private rules, and open egress", () => {
    expect(violationsOf(securityGroupNoOpenIngress, group(teleportSecurityGroup()))).toEqual([]);
    expect(violationsOf(securityGroupNoOpenIngress, group(runnerSecurityGroup()))).toEqual([]);
  });
  it("rejects SSH from anywhere on the Teleport node", () => {
    const props = teleportSecurityGroup();
    props.ingress = [...(props.ingress as unknown[]), { protocol: "tcp", fromPort: 22, toPort: 22, cidrBlocks: ["0.0.0.0/0"] }];
    expect(violationsOf(securityGroupNoOpenIngress, group(props))).toEqual([
      "ingress tcp port 22 from 0.0.0.0/0: the Teleport node may only open tcp 443 to the internet",
    ]);
  });
  it("rejects 443 from anywhere on a runner group", () => {
    const props = { ...runnerSecurityGroup(), ingress: [{ protocol: "tcp", fromPort: 443, toPort: 443, ipv6CidrBlocks: ["::/0"] }] };
    expect(violationsOf(securityGroupNoOpenIngress, group(props))).toEqual([
      "ingress tcp port 443 from ::/0: only the Teleport node may accept traffic from the internet",
    ]);
  });
  it("rejects all traffic from anywhere, even on Teleport", () => {
    const props = { ...teleportSecurityGroup(), ingress: [{ protocol: "-1", fromPort: 0, toPort: 65535, cidrBlocks: ["0.0.0.0/0"] }] };
    expect(violationsOf(securityGroupNoOpenIngress, group(props))).toEqual([
      "ingress -1 ports 0-65535 from 0.0.0.0/0: the Teleport node may only open tcp 443 to the internet",
    ]);
  });
  it("checks standalone rules: tagged vpc ingress rules, untaggable ec2 rules", () => {
    const rule = { securityGroupId: "sg-1", ipProtocol: "tcp", fromPort: 443, toPort: 443, cidrIpv4: "0.0.0.0/0" };
    const teleportRule = fakeResourceArgs(aws.vpc.SecurityGroupIngressRule, { ...rule, tags: { "ci-fleet:role": "teleport" } });
    expect(violationsOf(securityGroupNoOpenIngress, teleportRule)).toEqual([]);
    const runnerRule = fakeResourceArgs(aws.vpc.SecurityGroupIngressRule, { ...rule, tags: { "ci-fleet:role": "runner" } });
    expect(violationsOf(securityGroupNoOpenIngress, runnerRule)).toEqual([
      "ingress tcp port 443 from 0.0.0.0/0: only the Teleport node may accept traffic from the internet",
    ]);
    const legacy = { type: "ingress", securityGroupId: "sg-1", protocol: "tcp", fromPort: 443, toPort: 443, cidrBlocks: ["0.0.0.0/0"] };
    expect(violationsOf(securityGroupNoOpenIngress, fakeResourceArgs(aws.ec2.SecurityGroupRule, legacy))).toEqual([
      "ingress tcp port 443 from 0.0.0.0/0: only the Teleport node may accept traffic from the internet",
    ]);
    expect(violationsOf(securityGroupNoOpenIngress, fakeResourceArgs(aws.ec2.SecurityGroupRule, { ...legacy, type: "egress" }))).toEqual([]);
  });
});
