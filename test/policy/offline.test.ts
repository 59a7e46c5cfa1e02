import { CapturedResource, checkCapturedResources } from "../../policy/offline";
import { policies } from "../../policy/policies";
import { analyzeRequest, inProcessAnalyzer, secretOnTheWire } from "./analyzer-rpc";
import {
  FLEET_KEY_ARN,
  agentRole,
  deployRole,
  equinixDevice,
  fleetKey,
  queueParameter,
  runnerInstance,
  runnerSecurityGroup,
  teleportInstance,
  teleportSecurityGroup,
  trustDocument,
} from "./known-good";

const captured = (type: string, name: string, inputs: Record<string, unknown>, outputs: Record<string, unknown> = {}): CapturedResource => ({
  type,
  name,
  inputs,
  outputs: { id: `${name}-id`, ...outputs },
  options: {},
});

const KEY_OUTPUTS = { arn: FLEET_KEY_ARN, keyId: "0b7e5c4a", id: "0b7e5c4a" };
const BUCKET = "ci-fleet-production-teleport-audit";

/** A whole production stack that keeps every invariant (what the program should capture). */
function goodStack(): CapturedResource[] {
  return [
    captured("aws:kms/key:Key", "fleet-key", fleetKey(), KEY_OUTPUTS),
    captured("aws:kms/alias:Alias", "fleet-key-alias", { name: "alias/ci-fleet-production", targetKeyId: "0b7e5c4a" }),
    captured("aws:ssm/parameter:Parameter", "default-buildkite-agent-token", queueParameter()),
    captured("aws:ssm/parameter:Parameter", "pillar-production-salt-master", {
      ...queueParameter(),
      name: "/ci-fleet/production/pillar/production-salt-master",
      keyId: "alias/ci-fleet-production",
    }),
    captured("aws:iam/role:Role", "agent-default", agentRole()),
    captured("aws:iam/role:Role", "deploy-infra-prod", deployRole()),
    captured("aws:ec2/instance:Instance", "production-default-r1", runnerInstance()),
    captured("aws:ec2/instance:Instance", "production-teleport", teleportInstance()),
    captured("equinix-metal:index/device:Device", "production-default-m1", equinixDevice()),
    captured("aws:ec2/securityGroup:SecurityGroup", "teleport-sg", teleportSecurityGroup()),
    captured("aws:ec2/securityGroup:SecurityGroup", "runner-sg", runnerSecurityGroup()),
    captured("aws:s3/bucket:Bucket", "audit", { bucket: BUCKET }, { bucket: BUCKET, id: BUCKET }),
    captured("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "audit-pab", {
      bucket: BUCKET,
      blockPublicAcls: true,
      blockPublicPolicy: true,
      ignorePublicAcls: true,
      restrictPublicBuckets: true,
    }),
    captured("aws:s3/bucketVersioning:BucketVersioning", "audit-versioning", { bucket: BUCKET, versioningConfiguration: { status: "Enabled" } }),
    captured("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "audit-sse", {
      bucket: BUCKET,
      rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "aws:kms", kmsMasterKeyId: FLEET_KEY_ARN } }],
    }),
  ];
}

/** The deliberately broken fixture: each resource breaks one invariant (the instance two). */
function brokenStack(): CapturedResource[] {
  const runner = runnerInstance();
  return [
    captured("aws:iam/role:Role", "agent-default", { ...agentRole(), assumeRolePolicy: JSON.stringify(trustDocument("*")) }),
    captured("aws:kms/key:Key", "fleet-key", { ...fleetKey(), enableKeyRotation: false }, KEY_OUTPUTS),
    captured("aws:ssm/parameter:Parameter", "default-buildkite-agent-token", { ...queueParameter(), type: "String" }),
    captured("aws:ec2/instance:Instance", "production-default-r1", {
      ...runner,
      associatePublicIpAddress: true,
      metadataOptions: { httpTokens: "required", httpPutResponseHopLimit: 2 },
    }),
    captured("equinix-metal:index/device:Device", "production-default-m1", { ...equinixDevice(), userData: "#cloud-config\n" }),
  ];
}

describe("checkCapturedResources (the offline preview's policy run)", () => {
  it("finds nothing wrong in a stack that keeps every invariant", () => {
    expect(checkCapturedResources(goodStack(), "production")).toEqual([]);
  });

  it("names exactly the violations of the broken fixture", () => {
    expect(checkCapturedResources(brokenStack(), "production")).toEqual([
      {
        policy: "iam-trust-no-wildcard-or-root",
        resource: "agent-default",
        type: "aws:iam/role:Role",
        message: 'statement "Trust" trusts the wildcard principal "*"',
        enforcement: "mandatory",
      },
      {
        policy: "kms-key-rotation",
        resource: "fleet-key",
        type: "aws:kms/key:Key",
        message: "the key's enableKeyRotation is false, not true",
        enforcement: "mandatory",
      },
      {
        policy: "ssm-parameter-secure",
        resource: "default-buildkite-agent-token",
        type: "aws:ssm/parameter:Parameter",
        message: 'the parameter\'s type is "String", not "SecureString"',
        enforcement: "mandatory",
      },
      {
        policy: "ec2-imdsv2-hop-limit-1",
        resource: "production-default-r1",
        type: "aws:ec2/instance:Instance",
        message: "metadataOptions.httpPutResponseHopLimit is 2, not 1",
        enforcement: "mandatory",
      },
      {
        policy: "ec2-no-public-ip-except-teleport",
        resource: "production-default-r1",
        type: "aws:ec2/instance:Instance",
        message: "a runner instance asks for a public IP (associatePublicIpAddress = true)",
        enforcement: "mandatory",
      },
      {
        policy: "machine-user-data-secret",
        resource: "production-default-m1",
        type: "equinix-metal:index/device:Device",
        message: "userData is not a Pulumi secret: it would sit unencrypted in the state and the preview; wrap it in pulumi.secret()",
        enforcement: "mandatory",
      },
    ]);
  });

  it("runs the stack policies over outputs: a parameter encrypted with a key the stack does not own", () => {
    const stack = goodStack();
    const foreign = "arn:aws:kms:us-east-1:123456789012:key/99999999-0000-4000-8000-000000000000";
    stack[2] = { ...stack[2], inputs: { ...stack[2].inputs, keyId: foreign } };
    expect(checkCapturedResources(stack, "production").map((v) => [v.policy, v.resource, v.message])).toEqual([
      ["ssm-parameter-uses-fleet-key", "default-buildkite-agent-token", `parameter "default-buildkite-agent-token" uses keyId "${foreign}", which is no KMS key or alias of this stack`],
    ]);
  });

  it("checks SSM names against the stack it is given", () => {
    expect(checkCapturedResources(goodStack(), "staging").filter((v) => v.policy === "ssm-parameter-secure")).toHaveLength(2);
  });

  it("gives identical results on identical input (byte-identical preview files)", () => {
    expect(JSON.stringify(checkCapturedResources(brokenStack(), "production"))).toBe(
      JSON.stringify(checkCapturedResources(brokenStack(), "production")),
    );
  });

  it("agrees with @pulumi/policy's own Remediate + Analyze handlers on every resource", async () => {
    const analyze = inProcessAnalyzer(policies);
    const stackPolicyNames = new Set(policies.filter((p) => "validateStack" in p).map((p) => p.name));
    expect(stackPolicyNames.size).toBe(2);
    const onTheWire = (value: unknown): unknown =>
      value === "[secret]"
        ? secretOnTheWire(value)
        : Array.isArray(value)
          ? value.map(onTheWire)
          : typeof value === "object" && value !== null
            ? Object.fromEntries(Object.entries(value).map(([k, v]) => [k, onTheWire(v)]))
            : value;
    for (const stack of [goodStack(), brokenStack()]) {
      const fromServer: string[] = [];
      for (const r of stack) {
        const ds = await analyze(analyzeRequest(r.type, r.name, onTheWire(r.inputs) as Record<string, unknown>));
        for (const d of ds) fromServer.push(`${d.policy} ${r.name} ${d.enforcement}: ${d.message.split("\n").slice(1).join("\n")}`);
      }
      const offline = checkCapturedResources(stack, "production")
        .filter((v) => !stackPolicyNames.has(v.policy)) // those run in AnalyzeStack, not Analyze
        .map((v) => `${v.policy} ${v.resource} ${v.enforcement}: ${v.message}`);
      expect(offline).toEqual(fromServer);
    }
  });
});
