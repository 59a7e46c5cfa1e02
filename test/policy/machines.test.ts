import * as aws from "@pulumi/aws";
import { ec2Imdsv2HopLimit1, ec2NoPublicIpExceptTeleport, ec2VolumesEncrypted } from "../../policy/machines";
import { fakeResourceArgs, violationsOf } from "./fake-args";
import { runnerInstance, teleportInstance } from "./known-good";

const instance = (props: Record<string, unknown>) => fakeResourceArgs(aws.ec2.Instance, props, { name: "production-default-r1" });
const withChange = (base: Record<string, unknown>, change: Record<string, unknown>) => ({ ...base, ...change });

describe("ec2-imdsv2-hop-limit-1", () => {
  it("accepts the runner and the Teleport node", () => {
    expect(violationsOf(ec2Imdsv2HopLimit1, instance(runnerInstance()))).toEqual([]);
    expect(violationsOf(ec2Imdsv2HopLimit1, instance(teleportInstance()))).toEqual([]);
  });
  it.each<[string, unknown, string[]]>([
    ["optional tokens (IMDSv1)", { httpTokens: "optional", httpPutResponseHopLimit: 1 }, ['metadataOptions.httpTokens is "optional", not "required" (IMDSv1 would be open)']],
    ["hop limit 2", { httpTokens: "required", httpPutResponseHopLimit: 2 }, ["metadataOptions.httpPutResponseHopLimit is 2, not 1"]],
    ["hop limit unset", { httpTokens: "required" }, ["metadataOptions.httpPutResponseHopLimit is undefined, not 1"]],
    [
      "no metadataOptions at all",
      undefined,
      ['metadataOptions.httpTokens is undefined, not "required" (IMDSv1 would be open)', "metadataOptions.httpPutResponseHopLimit is undefined, not 1"],
    ],
  ])("rejects %s", (_label, metadataOptions, messages) => {
    const props = withChange(runnerInstance(), { metadataOptions });
    if (metadataOptions === undefined) delete props.metadataOptions;
    expect(violationsOf(ec2Imdsv2HopLimit1, instance(props))).toEqual(messages);
  });
});

describe("ec2-volumes-encrypted", () => {
  it("accepts encrypted root and EBS volumes", () => {
    const props = withChange(runnerInstance(), { ebsBlockDevices: [{ deviceName: "/dev/sdb", encrypted: true }] });
    expect(violationsOf(ec2VolumesEncrypted, instance(props))).toEqual([]);
  });
  it("rejects an unencrypted root volume", () => {
    expect(violationsOf(ec2VolumesEncrypted, instance(withChange(runnerInstance(), { rootBlockDevice: { volumeSize: 200 } })))).toEqual([
      "rootBlockDevice.encrypted is not true",
    ]);
  });
  it("rejects an instance with no rootBlockDevice (the AMI default may be unencrypted)", () => {
    const props = runnerInstance();
    delete props.rootBlockDevice;
    expect(violationsOf(ec2VolumesEncrypted, instance(props))).toEqual(["rootBlockDevice.encrypted is not true"]);
  });
  it("rejects an unencrypted EBS volume", () => {
    const props = withChange(runnerInstance(), { ebsBlockDevices: [{ deviceName: "/dev/sdb", encrypted: false }] });
    expect(violationsOf(ec2VolumesEncrypted, instance(props))).toEqual(["EBS volume /dev/sdb is not encrypted"]);
  });
});

describe("ec2-no-public-ip-except-teleport", () => {
  it("accepts a private runner and the public Teleport node", () => {
    expect(violationsOf(ec2NoPublicIpExceptTeleport, instance(runnerInstance()))).toEqual([]);
    expect(violationsOf(ec2NoPublicIpExceptTeleport, instance(teleportInstance()))).toEqual([]);
  });
  it("rejects a runner with a public IP", () => {
    expect(violationsOf(ec2NoPublicIpExceptTeleport, instance(withChange(runnerInstance(), { associatePublicIpAddress: true })))).toEqual([
      "a runner instance asks for a public IP (associatePublicIpAddress = true)",
    ]);
  });
  it("rejects a runner that leaves the choice to the subnet", () => {
    const props = runnerInstance();
    delete props.associatePublicIpAddress;
    expect(violationsOf(ec2NoPublicIpExceptTeleport, instance(props))).toEqual([
      "a runner instance leaves associatePublicIpAddress unset, so a public subnet would give it a public IP",
    ]);
  });
  it("rejects the Salt master and untagged machines with a public IP", () => {
    const master = withChange(runnerInstance(), { associatePublicIpAddress: true, tags: { "ci-fleet:role": "salt-master" } });
    expect(violationsOf(ec2NoPublicIpExceptTeleport, instance(master))).toEqual(["a salt-master instance asks for a public IP (associatePublicIpAddress = true)"]);
    const untagged = withChange(runnerInstance(), { associatePublicIpAddress: true, tags: {} });
    expect(violationsOf(ec2NoPublicIpExceptTeleport, instance(untagged))).toEqual([
      "an instance without a ci-fleet:role tag asks for a public IP (associatePublicIpAddress = true)",
    ]);
  });
});
