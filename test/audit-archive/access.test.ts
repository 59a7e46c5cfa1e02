/**
 * Who can do what to the archive, decided by a real IAM evaluator
 * (@cloud-copilot/iam-simulate, a devDependency) over the documents the component
 * registered under the mocks: identity policies, trust policies, the bucket policy and
 * the fleet key's policy (built by infra/identity, the real key's builder).
 */
import { runSimulation, runUnsafeSimulation, type Simulation } from "@cloud-copilot/iam-simulate";
import { kmsKeyPolicy } from "../../infra/identity/policies";
import { ACCOUNT, AUDITOR_PRINCIPAL, KMS_KEY_ARN, OTHER_ACCOUNT, REGION, STACK, T, captureArchive, only, parsed } from "./support";

type Decision = "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied";
interface Doc {
  Version: string;
  Statement: unknown[];
}
type Identity = { name: string; policy: Doc }[];

const BUCKET_ARN = `arn:aws:s3:::ci-fleet-${STACK}-ci-events-${ACCOUNT}`;
const OBJECT = `${BUCKET_ARN}/events/detail-type=Build Finished/2026/07/01/ci-fleet-${STACK}-ci-events-1-2026-07-01-00-00-00-abc.gz`;
const roleArn = (account: string, name: string) => `arn:aws:iam::${account}:role/${name}`;
const AUDITOR = roleArn(ACCOUNT, `ci-fleet-${STACK}-ci-event-auditor`);
const DELIVERY = roleArn(ACCOUNT, `ci-fleet-${STACK}-ci-event-delivery`);
const ROUTING = roleArn(ACCOUNT, `ci-fleet-${STACK}-ci-event-routing`);
const AGENT = roleArn(ACCOUNT, `ci-fleet-${STACK}-agent-default`);
/** Whoever runs `pulumi up`: an administrator, allowed everything by IAM. */
const DEPLOYER = roleArn(ACCOUNT, "ci-fleet-deployer");
const STREAM_ARN = `arn:aws:firehose:${REGION}:${ACCOUNT}:deliverystream/ci-fleet-${STACK}-ci-events`;

const allowAll = (name: string, actions: string[]): Identity => [
  { name, policy: { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: actions, Resource: "*" }] } },
];

/** Calls come from a session of a role; AWS sets aws:PrincipalArn to the role's ARN (the simulator does not derive it). */
const sessionOf = (role: string) => {
  const [, , , , account, resource] = role.split(":");
  return `arn:aws:sts::${account}:assumed-role/${resource.split("/").pop()}/access-test`;
};

let docs: { bucket: Doc; auditor: Identity; delivery: Identity; routing: Identity; trust: Record<"auditor" | "delivery" | "routing", Doc>; ruleArn: string };
beforeAll(async () => {
  const { resources } = await captureArchive();
  const policyOf = (name: string): Identity => [{ name, policy: parsed(only(resources, T.rolePolicy, `ci-events-${name}-access`).inputs.policy) as Doc }];
  const trustOf = (name: string) => parsed(only(resources, T.role, `ci-events-${name}`).inputs.assumeRolePolicy) as Doc;
  docs = {
    bucket: parsed(only(resources, T.bucketPolicy).inputs.policy) as Doc,
    auditor: policyOf("auditor"),
    delivery: policyOf("delivery"),
    routing: policyOf("routing"),
    trust: { auditor: trustOf("auditor"), delivery: trustOf("delivery"), routing: trustOf("routing") },
    ruleArn: only(resources, T.rule).outputs.arn as string,
  };
});

function simulation(principal: string, action: string, resource: string, identity: Identity, resourcePolicy: Doc | undefined, context: Record<string, string>): Simulation {
  return {
    request: { principal, action, resource: { resource, accountId: ACCOUNT }, contextVariables: context },
    identityPolicies: identity,
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    resourcePolicy,
  };
}

/** Any validation error (a misspelled action, an invalid document) fails the test. */
async function decide(sim: Simulation): Promise<Decision> {
  const result = await runSimulation(sim, {});
  if (result.resultType === "error") throw new Error(`simulation error: ${JSON.stringify(result.errors)}`);
  return result.overallResult;
}

describe("the bucket, for S3 requests over TLS", () => {
  const s3 = (role: string, action: string, resource: string, identity: Identity, context: Record<string, string> = {}) =>
    decide(simulation(sessionOf(role), action, resource, identity, docs.bucket, { "aws:SecureTransport": "true", "aws:PrincipalArn": role, ...context }));

  const cases: [who: string, role: () => [string, Identity], action: string, resource: string, expected: Decision][] = [
    ["the auditor", () => [AUDITOR, docs.auditor], "s3:GetObject", OBJECT, "Allowed"],
    ["the auditor", () => [AUDITOR, docs.auditor], "s3:GetObjectVersion", OBJECT, "Allowed"],
    ["the auditor", () => [AUDITOR, docs.auditor], "s3:ListBucket", BUCKET_ARN, "Allowed"],
    ["the auditor", () => [AUDITOR, docs.auditor], "s3:ListBucketVersions", BUCKET_ARN, "Allowed"],
    ["the auditor", () => [AUDITOR, docs.auditor], "s3:PutObject", OBJECT, "ExplicitlyDenied"],
    ["the auditor", () => [AUDITOR, docs.auditor], "s3:DeleteObjectVersion", OBJECT, "ExplicitlyDenied"],
    ["the delivery role", () => [DELIVERY, docs.delivery], "s3:PutObject", OBJECT, "Allowed"],
    ["the delivery role", () => [DELIVERY, docs.delivery], "s3:AbortMultipartUpload", OBJECT, "Allowed"],
    ["the delivery role", () => [DELIVERY, docs.delivery], "s3:ListBucketMultipartUploads", BUCKET_ARN, "Allowed"],
    ["the delivery role", () => [DELIVERY, docs.delivery], "s3:GetObject", OBJECT, "ExplicitlyDenied"],
    ["the delivery role", () => [DELIVERY, docs.delivery], "s3:DeleteObject", OBJECT, "ImplicitlyDenied"],
    ["an agent role", () => [AGENT, []], "s3:GetObject", OBJECT, "ExplicitlyDenied"],
    ["an agent role", () => [AGENT, []], "s3:ListBucket", BUCKET_ARN, "ImplicitlyDenied"],
    // Even a role whose IAM grants s3:* everywhere is stopped by the bucket policy.
    ["an agent role with s3:*", () => [AGENT, allowAll("s3-everything", ["s3:*"])], "s3:GetObject", OBJECT, "ExplicitlyDenied"],
    ["an agent role with s3:*", () => [AGENT, allowAll("s3-everything", ["s3:*"])], "s3:GetObjectVersion", OBJECT, "ExplicitlyDenied"],
    ["an agent role with s3:*", () => [AGENT, allowAll("s3-everything", ["s3:*"])], "s3:PutObject", OBJECT, "ExplicitlyDenied"],
    ["an agent role with s3:*", () => [AGENT, allowAll("s3-everything", ["s3:*"])], "s3:DeleteObjectVersion", OBJECT, "ExplicitlyDenied"],
    // The deployer keeps managing the bucket (HeadBucket is s3:ListBucket) but reads and changes no event.
    ["the deployer (administrator)", () => [DEPLOYER, allowAll("admin", ["*"])], "s3:ListBucket", BUCKET_ARN, "Allowed"],
    ["the deployer (administrator)", () => [DEPLOYER, allowAll("admin", ["*"])], "s3:PutBucketPolicy", BUCKET_ARN, "Allowed"],
    ["the deployer (administrator)", () => [DEPLOYER, allowAll("admin", ["*"])], "s3:PutLifecycleConfiguration", BUCKET_ARN, "Allowed"],
    ["the deployer (administrator)", () => [DEPLOYER, allowAll("admin", ["*"])], "s3:GetObject", OBJECT, "ExplicitlyDenied"],
    ["the deployer (administrator)", () => [DEPLOYER, allowAll("admin", ["*"])], "s3:PutObject", OBJECT, "ExplicitlyDenied"],
    // A role of the same name in another account is not the auditor.
    ["an impostor auditor in another account", () => [roleArn(OTHER_ACCOUNT, `ci-fleet-${STACK}-ci-event-auditor`), allowAll("s3-everything", ["s3:*"])], "s3:GetObject", OBJECT, "ExplicitlyDenied"],
  ];
  test.each(cases.map(([label, who, action, resource, expected]) => ({ label, who, action, resource, expected })))(
    "$label: $action -> $expected",
    async ({ who, action, resource, expected }) => {
      const [role, identity] = who();
      expect(await s3(role, action, resource, identity)).toBe(expected);
    },
  );

  test("a request without aws:PrincipalArn is denied (the exceptions fail closed)", async () => {
    const sim = simulation(sessionOf(AUDITOR), "s3:GetObject", OBJECT, docs.auditor, docs.bucket, { "aws:SecureTransport": "true" });
    expect(await decide(sim)).toBe("ExplicitlyDenied");
  });
});

describe("nobody gets anything without TLS", () => {
  const cases: [who: string, role: () => [string, Identity], action: string, resource: string][] = [
    ["the auditor", () => [AUDITOR, docs.auditor], "s3:GetObject", OBJECT],
    ["the auditor", () => [AUDITOR, docs.auditor], "s3:ListBucket", BUCKET_ARN],
    ["the delivery role", () => [DELIVERY, docs.delivery], "s3:PutObject", OBJECT],
    ["the deployer (administrator)", () => [DEPLOYER, allowAll("admin", ["*"])], "s3:ListBucket", BUCKET_ARN],
    ["the account root", () => [`arn:aws:iam::${ACCOUNT}:root`, allowAll("admin", ["*"])], "s3:GetObject", OBJECT],
  ];
  test.each(cases.map(([label, who, action, resource]) => ({ label, who, action, resource })))(
    "$label: $action over plain HTTP is explicitly denied",
    async ({ who, action, resource }) => {
      const [role, identity] = who();
      const principal = role.endsWith(":root") ? role : sessionOf(role);
      const sim = simulation(principal, action, resource, identity, docs.bucket, { "aws:SecureTransport": "false", "aws:PrincipalArn": role });
      expect(await decide(sim)).toBe("ExplicitlyDenied");
    },
  );
});

describe("who may assume the archive's roles", () => {
  const assume = (principal: string, role: string, trust: Doc, identity: Identity, context: Record<string, string> = {}) =>
    decide(simulation(principal, "sts:AssumeRole", role, identity, trust, context));
  const mayAssume = allowAll("assume-anything", ["sts:AssumeRole"]);

  test("the named auditor principal assumes the auditor role", async () => {
    expect(await assume(AUDITOR_PRINCIPAL, AUDITOR, docs.trust.auditor, mayAssume)).toBe("Allowed");
  });

  test.each([
    ["an agent role", sessionOf(AGENT), {}],
    ["another role of the account, with MFA", sessionOf(roleArn(ACCOUNT, "someone-else")), { "aws:MultiFactorAuthPresent": "true" }],
    ["the delivery role", sessionOf(DELIVERY), {}],
  ])("%s cannot assume the auditor role", async (_who, principal, context) => {
    expect(await assume(principal, AUDITOR, docs.trust.auditor, mayAssume, context)).toBe("ImplicitlyDenied");
  });

  test("EventBridge assumes the routing role for the archive rule of this account only", async () => {
    const events = (sourceArn: string, account = ACCOUNT) =>
      assume("events.amazonaws.com", ROUTING, docs.trust.routing, [], { "aws:SourceAccount": account, "aws:SourceArn": sourceArn });
    expect(await events(docs.ruleArn)).toBe("Allowed");
    expect(await events(`arn:aws:events:${REGION}:${ACCOUNT}:rule/default/another-rule`)).toBe("ImplicitlyDenied");
    expect(await events(docs.ruleArn, OTHER_ACCOUNT)).toBe("ImplicitlyDenied");
    expect(await assume("firehose.amazonaws.com", ROUTING, docs.trust.routing, [], { "aws:SourceAccount": ACCOUNT, "aws:SourceArn": docs.ruleArn })).toBe("ImplicitlyDenied");
  });

  test("Firehose of this account assumes the delivery role; nothing else does", async () => {
    const firehose = (account: string) => assume("firehose.amazonaws.com", DELIVERY, docs.trust.delivery, [], { "aws:SourceAccount": account });
    expect(await firehose(ACCOUNT)).toBe("Allowed");
    expect(await firehose(OTHER_ACCOUNT)).toBe("ImplicitlyDenied");
    expect(await assume("events.amazonaws.com", DELIVERY, docs.trust.delivery, [], { "aws:SourceAccount": ACCOUNT })).toBe("ImplicitlyDenied");
    expect(await assume(sessionOf(AGENT), DELIVERY, docs.trust.delivery, mayAssume)).toBe("ImplicitlyDenied");
  });
});

describe("the routing role", () => {
  const routing = (action: string, resource: string) => decide(simulation(sessionOf(ROUTING), action, resource, docs.routing, undefined, {}));

  test("puts records into the archive stream and nowhere else", async () => {
    expect(await routing("firehose:PutRecord", STREAM_ARN)).toBe("Allowed");
    expect(await routing("firehose:PutRecordBatch", STREAM_ARN)).toBe("Allowed");
    expect(await routing("firehose:PutRecordBatch", `arn:aws:firehose:${REGION}:${ACCOUNT}:deliverystream/another`)).toBe("ImplicitlyDenied");
    expect(await routing("firehose:DeleteDeliveryStream", STREAM_ARN)).toBe("ImplicitlyDenied");
    expect(await routing("firehose:UpdateDestination", STREAM_ARN)).toBe("ImplicitlyDenied");
  });
});

/**
 * The fleet key as S3 uses it. iam-simulate 0.1.173 drops `kms:EncryptionContext:<key>` from
 * validated requests (as tools/preview/access-matrix.ts notes), so each request is validated
 * with runSimulation first and decided by runUnsafeSimulation, which keeps every context key.
 */
describe("the fleet key, through S3", () => {
  const keyPolicy = kmsKeyPolicy({ accountId: ACCOUNT, region: REGION, readers: [] }) as unknown as Doc;
  const kms = async (role: string, identity: Identity, action: string, context: Record<string, string>): Promise<Decision> => {
    const sim = simulation(sessionOf(role), action, KMS_KEY_ARN, identity, keyPolicy, { "aws:PrincipalArn": role, ...context });
    await decide(sim); // throws on an invalid request
    const resourcePolicy = { __validated: true, policyDocument: keyPolicy, metadata: { name: "fleet-key-policy" }, errors: [] };
    return runUnsafeSimulation({ ...sim, resourcePolicy } as unknown as Simulation, {}) as Decision;
  };
  const viaS3 = { "kms:ViaService": `s3.${REGION}.amazonaws.com` };
  const teleportBucket = `arn:aws:s3:::ci-fleet-${STACK}-teleport-audit-${ACCOUNT}`;

  test.each<[string, () => [string, Identity], string, Record<string, string>, Decision]>([
    ["auditor decrypts this bucket's data key (bucket key)", () => [AUDITOR, docs.auditor], "kms:Decrypt", { ...viaS3, "kms:EncryptionContext:aws:s3:arn": BUCKET_ARN }, "Allowed"],
    ["auditor decrypts an object of this bucket (no bucket key)", () => [AUDITOR, docs.auditor], "kms:Decrypt", { ...viaS3, "kms:EncryptionContext:aws:s3:arn": OBJECT }, "Allowed"],
    ["auditor cannot decrypt the Teleport recordings' keys", () => [AUDITOR, docs.auditor], "kms:Decrypt", { ...viaS3, "kms:EncryptionContext:aws:s3:arn": teleportBucket }, "ImplicitlyDenied"],
    ["auditor cannot decrypt through SSM", () => [AUDITOR, docs.auditor], "kms:Decrypt", { "kms:ViaService": `ssm.${REGION}.amazonaws.com`, "kms:EncryptionContext:aws:s3:arn": BUCKET_ARN }, "ImplicitlyDenied"],
    ["auditor cannot decrypt directly", () => [AUDITOR, docs.auditor], "kms:Decrypt", { "kms:EncryptionContext:aws:s3:arn": BUCKET_ARN }, "ImplicitlyDenied"],
    ["auditor cannot make data keys", () => [AUDITOR, docs.auditor], "kms:GenerateDataKey", { ...viaS3, "kms:EncryptionContext:aws:s3:arn": BUCKET_ARN }, "ImplicitlyDenied"],
    ["delivery makes data keys for this bucket", () => [DELIVERY, docs.delivery], "kms:GenerateDataKey", { ...viaS3, "kms:EncryptionContext:aws:s3:arn": BUCKET_ARN }, "Allowed"],
    ["delivery decrypts for multipart uploads to this bucket", () => [DELIVERY, docs.delivery], "kms:Decrypt", { ...viaS3, "kms:EncryptionContext:aws:s3:arn": BUCKET_ARN }, "Allowed"],
    ["delivery cannot make data keys for another bucket", () => [DELIVERY, docs.delivery], "kms:GenerateDataKey", { ...viaS3, "kms:EncryptionContext:aws:s3:arn": teleportBucket }, "ImplicitlyDenied"],
    ["an agent role cannot decrypt", () => [AGENT, []], "kms:Decrypt", { ...viaS3, "kms:EncryptionContext:aws:s3:arn": BUCKET_ARN }, "ImplicitlyDenied"],
  ])("%s", async (_what, who, action, context, expected) => {
    const [role, identity] = who();
    expect(await kms(role, identity, action, context)).toBe(expected);
  });
});
