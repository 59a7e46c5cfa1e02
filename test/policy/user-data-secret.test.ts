import * as aws from "@pulumi/aws";
import * as metal from "@pulumi/equinix-metal";
import { ResourceValidationArgs, Secret } from "@pulumi/policy";
import { EC2_INSTANCE_TYPE, EQUINIX_DEVICE_TYPE, machineUserDataSecret } from "../../policy/machines";
import { policies } from "../../policy/policies";
import { UNKNOWN_ON_THE_WIRE, analyzeRequest, inProcessAnalyzer, secretOnTheWire } from "./analyzer-rpc";
import { NotApplicableSignal, fakeResourceArgs, pulumiTypeOf, violationsOf } from "./fake-args";
import { equinixDevice, runnerInstance } from "./known-good";

const PLAIN = "#cloud-config\nwrite_files: []\n";

/** Remediate, then validate, on one resource: the engine's order, with fake args. */
function remediateThenValidate(resourceClass: typeof aws.ec2.Instance | typeof metal.Device, wireProps: Record<string, unknown>, name: string): string[] {
  const remediateArgs: ResourceValidationArgs = fakeResourceArgs(resourceClass, wireProps, { name, secretsAsSecretInstances: true });
  try {
    machineUserDataSecret.remediateResource!(remediateArgs);
  } catch (e) {
    if (!(e instanceof NotApplicableSignal)) throw e;
  }
  const unwrapped = Object.fromEntries(Object.entries(wireProps).map(([k, v]) => [k, v instanceof Secret ? v.value : v]));
  return violationsOf(machineUserDataSecret, fakeResourceArgs(resourceClass, unwrapped, { name }));
}

describe("machine-user-data-secret: type tokens", () => {
  it("checks the real type tokens of the two machine resources", () => {
    expect(pulumiTypeOf(aws.ec2.Instance)).toBe(EC2_INSTANCE_TYPE);
    expect(pulumiTypeOf(metal.Device)).toBe(EQUINIX_DEVICE_TYPE);
  });
});

describe("machine-user-data-secret: offline captures (secrets already masked)", () => {
  it('accepts the "[secret]" placeholder on an instance and a device', () => {
    expect(violationsOf(machineUserDataSecret, fakeResourceArgs(aws.ec2.Instance, runnerInstance()))).toEqual([]);
    expect(violationsOf(machineUserDataSecret, fakeResourceArgs(metal.Device, equinixDevice()))).toEqual([]);
  });
  it("accepts a machine without user data", () => {
    const props = runnerInstance();
    delete props.userData;
    expect(violationsOf(machineUserDataSecret, fakeResourceArgs(aws.ec2.Instance, props))).toEqual([]);
  });
  it("fails closed on a plain value when no remediation pass observed it", () => {
    expect(violationsOf(machineUserDataSecret, fakeResourceArgs(aws.ec2.Instance, { ...runnerInstance(), userData: PLAIN }))).toEqual([
      'cannot tell whether userData is a secret: the policy\'s remediation pass did not run (keep this policy at enforcement level "remediate")',
    ]);
  });
  it("does not apply to other types", () => {
    expect(violationsOf(machineUserDataSecret, fakeResourceArgs(aws.kms.Key, { userData: PLAIN }))).toEqual([]);
  });
});

describe("machine-user-data-secret: remediation pass sees Secret instances", () => {
  it("accepts secret userData / userDataBase64 / customData", () => {
    expect(remediateThenValidate(aws.ec2.Instance, { ...runnerInstance(), userData: new Secret(PLAIN) }, "r1")).toEqual([]);
    const b64 = { ...runnerInstance(), userData: undefined, userDataBase64: new Secret("H4sI") };
    expect(remediateThenValidate(aws.ec2.Instance, b64, "r2")).toEqual([]);
    expect(remediateThenValidate(metal.Device, { ...equinixDevice(), userData: new Secret(PLAIN), customData: new Secret("{}") }, "d1")).toEqual([]);
  });
  it("rejects each plain field by name", () => {
    expect(remediateThenValidate(aws.ec2.Instance, { ...runnerInstance(), userData: PLAIN }, "r3")).toEqual([
      "userData is not a Pulumi secret: it would sit unencrypted in the state and the preview; wrap it in pulumi.secret()",
    ]);
    expect(remediateThenValidate(aws.ec2.Instance, { ...runnerInstance(), userData: undefined, userDataBase64: "H4sI" }, "r4")).toEqual([
      "userDataBase64 is not a Pulumi secret: it would sit unencrypted in the state and the preview; wrap it in pulumi.secret()",
    ]);
    expect(remediateThenValidate(metal.Device, { ...equinixDevice(), userData: new Secret(PLAIN), customData: '{"k":1}' }, "d2")).toEqual([
      "customData is not a Pulumi secret: it would sit unencrypted in the state and the preview; wrap it in pulumi.secret()",
    ]);
  });
});

describe("machine-user-data-secret: @pulumi/policy's own Remediate + Analyze handlers (the pulumi preview path)", () => {
  const analyze = inProcessAnalyzer(policies);
  const ofThisPolicy = <T extends { policy: string }>(ds: T[]): T[] => ds.filter((d) => d.policy === machineUserDataSecret.name);
  const description = machineUserDataSecret.description;

  it("passes an instance whose userData arrives as a secret", async () => {
    const request = analyzeRequest(EC2_INSTANCE_TYPE, "production-default-r1", { ...runnerInstance(), userData: secretOnTheWire(PLAIN) });
    expect(await analyze(request)).toEqual([]);
  });

  it("blocks (mandatory) an instance whose userData arrives plain", async () => {
    const request = analyzeRequest(EC2_INSTANCE_TYPE, "production-default-r2", { ...runnerInstance(), userData: PLAIN });
    expect(ofThisPolicy(await analyze(request))).toEqual([
      {
        policy: "machine-user-data-secret",
        enforcement: "mandatory",
        message: `${description}\nuserData is not a Pulumi secret: it would sit unencrypted in the state and the preview; wrap it in pulumi.secret()`,
      },
    ]);
  });

  it("blocks an Equinix Metal device with plain userData and passes a secret one", async () => {
    const plain = analyzeRequest(EQUINIX_DEVICE_TYPE, "production-default-r3", { ...equinixDevice(), userData: PLAIN });
    expect(ofThisPolicy(await analyze(plain)).map((d) => d.enforcement)).toEqual(["mandatory"]);
    const secret = analyzeRequest(EQUINIX_DEVICE_TYPE, "production-default-r4", { ...equinixDevice(), userData: secretOnTheWire(PLAIN) });
    expect(await analyze(secret)).toEqual([]);
  });

  it("defers an unknown userData in preview (advisory) and accepts an unknown secret", async () => {
    const unknown = analyzeRequest(EC2_INSTANCE_TYPE, "production-default-r5", { ...runnerInstance(), userData: UNKNOWN_ON_THE_WIRE });
    const ds = ofThisPolicy(await analyze(unknown));
    expect(ds).toHaveLength(1);
    expect(ds[0].enforcement).toBe("advisory");
    expect(ds[0].message).toMatch(/^can't run policy 'machine-user-data-secret' .* during preview: string value at \.userData can't be known during preview$/);
    const unknownSecret = analyzeRequest(EC2_INSTANCE_TYPE, "production-default-r6", {
      ...runnerInstance(),
      userData: secretOnTheWire(UNKNOWN_ON_THE_WIRE),
    });
    expect(await analyze(unknownSecret)).toEqual([]);
  });
});
