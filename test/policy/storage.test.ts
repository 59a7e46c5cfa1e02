import * as aws from "@pulumi/aws";
import { StackValidationPolicy } from "@pulumi/policy";
import { kmsKeyRotation, s3BucketHardened, ssmParameterSecureString, ssmParameterUsesStackKey } from "../../policy/storage";
import { fakeResourceArgs, fakeStackResource, stackViolationsOf, violationsOf } from "./fake-args";
import { FLEET_KEY_ARN, fleetKey, queueParameter } from "./known-good";

const parameter = (props: Record<string, unknown>) => fakeResourceArgs(aws.ssm.Parameter, props, { name: "param" });

describe("ssm-parameter-secure", () => {
  it("accepts a SecureString under /ci-fleet/production/ with the fleet key", () => {
    expect(violationsOf(ssmParameterSecureString, parameter(queueParameter()))).toEqual([]);
  });

  it.each<[string, Record<string, unknown>, string]>([
    ["a String", { type: "String" }, 'the parameter\'s type is "String", not "SecureString"'],
    ["a StringList", { type: "StringList" }, 'the parameter\'s type is "StringList", not "SecureString"'],
    ["no keyId", { keyId: undefined }, "the parameter sets no keyId, so AWS would encrypt it with the AWS-managed key alias/aws/ssm"],
    ["the AWS-managed alias", { keyId: "alias/aws/ssm" }, 'the parameter\'s keyId "alias/aws/ssm" is an AWS-managed key, not the fleet\'s KMS key'],
    [
      "the AWS-managed alias ARN",
      { keyId: "arn:aws:kms:us-east-1:123456789012:alias/aws/ssm" },
      'the parameter\'s keyId "arn:aws:kms:us-east-1:123456789012:alias/aws/ssm" is an AWS-managed key, not the fleet\'s KMS key',
    ],
    ["another stack's prefix", { name: "/ci-fleet/staging/default/x" }, 'the parameter\'s name "/ci-fleet/staging/default/x" is not under /ci-fleet/production/'],
    ["a prefix look-alike", { name: "/ci-fleet/production-old/x" }, 'the parameter\'s name "/ci-fleet/production-old/x" is not under /ci-fleet/production/'],
    ["no name", { name: undefined }, "the parameter sets no name, so Pulumi would auto-name it outside /ci-fleet/production/"],
    ["a plaintext insecureValue", { value: undefined, insecureValue: "v" }, "the parameter sets insecureValue, which Pulumi stores and shows in plain text"],
  ])("rejects %s", (_label, change, message) => {
    const props = { ...queueParameter(), ...change };
    for (const [k, v] of Object.entries(change)) if (v === undefined) delete props[k];
    expect(violationsOf(ssmParameterSecureString, parameter(props))).toEqual([message]);
  });

  it("takes the stack from the URN", () => {
    const args = fakeResourceArgs(aws.ssm.Parameter, queueParameter(), { stack: "staging" });
    expect(violationsOf(ssmParameterSecureString, args)).toEqual([
      'the parameter\'s name "/ci-fleet/production/default/buildkite/agent-token" is not under /ci-fleet/staging/',
    ]);
  });
});

describe("ssm-parameter-uses-fleet-key", () => {
  const key = () => fakeStackResource(aws.kms.Key, "fleet-key", { ...fleetKey(), arn: FLEET_KEY_ARN, keyId: "0b7e5c4a", id: "0b7e5c4a" });
  const param = (keyId: string) => fakeStackResource(aws.ssm.Parameter, "param", { ...queueParameter(), keyId });
  const policy = ssmParameterUsesStackKey as StackValidationPolicy;

  it("accepts the key's ARN, id and an alias of the stack", () => {
    const alias = fakeStackResource(aws.kms.Alias, "fleet-alias", { name: "alias/ci-fleet-production", targetKeyId: "0b7e5c4a" });
    expect(stackViolationsOf(policy, [key(), alias, param(FLEET_KEY_ARN), param("0b7e5c4a"), param("alias/ci-fleet-production")])).toEqual([]);
  });
  it("rejects a key the stack does not manage", () => {
    const foreign = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555";
    expect(stackViolationsOf(policy, [key(), param(foreign)])).toEqual([
      `param: parameter "param" uses keyId "${foreign}", which is no KMS key or alias of this stack`,
    ]);
  });
});

describe("kms-key-rotation", () => {
  const key = (props: Record<string, unknown>) => fakeResourceArgs(aws.kms.Key, props, { name: "fleet-key" });
  it("accepts rotation on", () => {
    expect(violationsOf(kmsKeyRotation, key(fleetKey()))).toEqual([]);
  });
  it.each([
    [false, "the key's enableKeyRotation is false, not true"],
    [undefined, "the key's enableKeyRotation is undefined, not true"],
  ])("rejects enableKeyRotation %s", (value, message) => {
    const props = { ...fleetKey(), enableKeyRotation: value };
    if (value === undefined) delete props.enableKeyRotation;
    expect(violationsOf(kmsKeyRotation, key(props))).toEqual([message]);
  });
});

describe("s3-bucket-hardened", () => {
  const policy = s3BucketHardened as StackValidationPolicy;
  const bucket = () => fakeStackResource(aws.s3.Bucket, "audit", { bucket: "ci-fleet-production-audit", id: "ci-fleet-production-audit" });
  const block = (over: Record<string, unknown> = {}) =>
    fakeStackResource(aws.s3.BucketPublicAccessBlock, "audit-pab", {
      bucket: "ci-fleet-production-audit",
      blockPublicAcls: true,
      blockPublicPolicy: true,
      ignorePublicAcls: true,
      restrictPublicBuckets: true,
      ...over,
    });
  const versioning = (status = "Enabled") =>
    fakeStackResource(aws.s3.BucketVersioning, "audit-versioning", { bucket: "ci-fleet-production-audit", versioningConfiguration: { status } });
  const encryption = (sseAlgorithm = "aws:kms") =>
    fakeStackResource(aws.s3.BucketServerSideEncryptionConfiguration, "audit-sse", {
      bucket: "ci-fleet-production-audit",
      rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm, kmsMasterKeyId: FLEET_KEY_ARN }, bucketKeyEnabled: true }],
    });

  it("accepts a bucket with all three companions", () => {
    expect(stackViolationsOf(policy, [bucket(), block(), versioning(), encryption()])).toEqual([]);
  });
  it("rejects a public access block with one setting off", () => {
    expect(stackViolationsOf(policy, [bucket(), block({ restrictPublicBuckets: false }), versioning(), encryption()])).toEqual([
      'audit: bucket "ci-fleet-production-audit" has no public access block with blockPublicAcls, blockPublicPolicy, ignorePublicAcls, restrictPublicBuckets all true',
    ]);
  });
  it("rejects suspended versioning", () => {
    expect(stackViolationsOf(policy, [bucket(), block(), versioning("Suspended"), encryption()])).toEqual([
      'audit: bucket "ci-fleet-production-audit" is not versioned (no versioning configuration with status "Enabled")',
    ]);
  });
  it("rejects SSE-S3 (AES256)", () => {
    expect(stackViolationsOf(policy, [bucket(), block(), versioning(), encryption("AES256")])).toEqual([
      'audit: bucket "ci-fleet-production-audit" is not encrypted with SSE-KMS (aws:kms with a kmsMasterKeyId)',
    ]);
  });
  it("does not let one bucket's settings cover another bucket", () => {
    const other = fakeStackResource(aws.s3.Bucket, "other", { bucket: "ci-fleet-production-other", id: "ci-fleet-production-other" });
    expect(stackViolationsOf(policy, [bucket(), other, block(), versioning(), encryption()])).toHaveLength(3);
  });
});
