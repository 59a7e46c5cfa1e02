import * as pulumi from "@pulumi/pulumi";
import { runSimulation } from "@cloud-copilot/iam-simulate";
import {
  auditBucketPolicy,
  TeleportAuditStorage,
  teleportAuditAccessPolicy,
  teleportStateAccessPolicy,
  TELEPORT_EVENTS_TABLE_SCHEMA,
  TELEPORT_STATE_TABLE_SCHEMA,
} from "../../infra/teleport/audit-storage";
import { buildAuthProxyConfig, type TeleportAuditBackend } from "../../infra/teleport/config";
import { authInput } from "./fixtures";

// ---------------------------------------------------------------------------------------
// A small local mock runtime: records every registration (type, name, inputs, and the
// options a resource transform sees) and throws on any provider call (data source).

interface Registration {
  type: string;
  name: string;
  inputs: Record<string, any>;
  parentType?: string;
  dependsOn: string[];
}

const ACCOUNT = "123456789012";
const REGION = "us-east-1";
const KMS_KEY_ARN = `arn:aws:kms:${REGION}:${ACCOUNT}:key/11111111-2222-3333-4444-555555555555`;
const BUCKET = `ci-fleet-production-teleport-audit-${ACCOUNT}`;
const BUCKET_ARN = `arn:aws:s3:::${BUCKET}`;
const TABLE_ARN = `arn:aws:dynamodb:${REGION}:${ACCOUNT}:table/ci-fleet-production-teleport-events`;
const STATE_TABLE = "ci-fleet-production-teleport-state";
const STATE_TABLE_ARN = `arn:aws:dynamodb:${REGION}:${ACCOUNT}:table/${STATE_TABLE}`;

const registrations: Registration[] = [];
const seenOptions: Array<{ name: string; parent?: pulumi.Resource; dependsOn: pulumi.Resource[] }> = [];

/** `urn:pulumi:stack::project::parentType$type::name` -> `type`. */
function urnType(urn: string): string {
  return urn.split("::")[2].split("$").pop()!;
}

function unwrapSecrets(value: any): any {
  if (Array.isArray(value)) return value.map(unwrapSecrets);
  if (value !== null && typeof value === "object") {
    if (value[pulumi.runtime.specialSigKey] === pulumi.runtime.specialSecretSig) return unwrapSecrets(value.value);
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, unwrapSecrets(v)]));
  }
  return value;
}

function mockArn(type: string, inputs: Record<string, any>): Record<string, string> {
  switch (type) {
    case "aws:s3/bucket:Bucket":
      return { arn: `arn:aws:s3:::${inputs.bucket}`, id: inputs.bucket };
    case "aws:dynamodb/table:Table":
      return { arn: `arn:aws:dynamodb:${REGION}:${ACCOUNT}:table/${inputs.name}` };
    default:
      return {};
  }
}

async function createStorage(overrides: Partial<ConstructorParameters<typeof TeleportAuditStorage>[1]> = {}) {
  registrations.length = 0;
  seenOptions.length = 0;
  await pulumi.runtime.setMocks(
    {
      newResource: (args) => {
        const inputs = unwrapSecrets(args.inputs);
        registrations.push({ type: args.type, name: args.name, inputs, dependsOn: [] });
        const extra = mockArn(args.type, inputs);
        return { id: extra.id ?? `${args.name}-id`, state: { ...inputs, ...extra } };
      },
      call: (args) => {
        throw new Error(`unmocked provider call ${args.token}`);
      },
    },
    "ci-fleet",
    "production",
    false,
  );
  const args = {
    stack: "production",
    accountId: ACCOUNT,
    region: REGION,
    kmsKeyArn: KMS_KEY_ARN,
    teleportRoleName: "ci-fleet-production-teleport",
    retentionDays: 365,
    ...overrides,
  };
  // Mocks cannot see options; a transformation passed by the caller can, and it reaching
  // every child shows the caller's options are kept and the children are parented.
  const recordOptions: pulumi.ResourceTransformation = ({ name, opts }) => {
    const dependsOn = ([] as pulumi.Resource[]).concat((opts.dependsOn as pulumi.Resource[] | undefined) ?? []);
    seenOptions.push({ name, parent: opts.parent, dependsOn });
    return undefined;
  };
  const storage = new TeleportAuditStorage("audit", args, { transformations: [recordOptions] });
  await Promise.all([storage.urn, storage.bucketArn, storage.eventsTableArn, storage.auditBackend].map((o) => promiseOf(o as pulumi.Output<unknown>)));
  // Let the last registrations (they wait on the outputs above) reach the mock.
  await new Promise((resolve) => setTimeout(resolve, 50));
  for (const seen of seenOptions) {
    const registration = registrations.find((r) => r.name === seen.name);
    if (!registration) continue;
    registration.parentType = seen.parent ? urnType(await promiseOf(seen.parent.urn)) : undefined;
    registration.dependsOn = (await Promise.all(seen.dependsOn.map((r) => promiseOf(r.urn)))).map((urn) => urn.split("::").pop()!);
  }
  return storage;
}

function promiseOf<T>(output: pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) => output.apply(resolve));
}

const byType = (type: string) => registrations.filter((r) => r.type === type);
const one = (type: string) => {
  const found = byType(type);
  if (found.length !== 1) throw new Error(`expected one ${type}, found ${found.length}`);
  return found[0];
};

// ---------------------------------------------------------------------------------------

describe("TeleportAuditStorage under the mock runtime", () => {
  let storage: TeleportAuditStorage;
  beforeAll(async () => {
    storage = await createStorage();
  });

  test("exactly the component and its eleven children, named from the component, parented to it", () => {
    expect(registrations.map((r) => `${r.type} ${r.name}`).sort()).toEqual(
      [
        "ci-fleet:teleport:AuditStorage audit",
        "aws:s3/bucket:Bucket audit-recordings",
        "aws:s3/bucketOwnershipControls:BucketOwnershipControls audit-recordings-ownership",
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock audit-recordings-public-access",
        "aws:s3/bucketVersioning:BucketVersioning audit-recordings-versioning",
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration audit-recordings-encryption",
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration audit-recordings-retention",
        "aws:s3/bucketPolicy:BucketPolicy audit-recordings-policy",
        "aws:dynamodb/table:Table audit-events",
        "aws:dynamodb/table:Table audit-state",
        "aws:iam/rolePolicy:RolePolicy audit-teleport-access",
        "aws:iam/rolePolicy:RolePolicy audit-teleport-state-access",
      ].sort(),
    );
    for (const child of registrations.filter((r) => r.type.startsWith("aws:"))) {
      expect([child.name, child.parentType]).toEqual([child.name, "ci-fleet:teleport:AuditStorage"]);
    }
    expect(registrations.find((r) => r.name === "audit-recordings-retention")!.dependsOn).toEqual(["audit-recordings-versioning"]);
    expect(registrations.find((r) => r.name === "audit-recordings-policy")!.dependsOn.sort()).toEqual([
      "audit-recordings-ownership",
      "audit-recordings-public-access",
    ]);
  });

  test("the bucket: named for the stack and account, SSE-KMS with the fleet key, versioned, private, owner-enforced", () => {
    expect(one("aws:s3/bucket:Bucket").inputs).toMatchObject({ bucket: BUCKET, forceDestroy: false });
    expect(one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration").inputs).toEqual({
      bucket: BUCKET,
      rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "aws:kms", kmsMasterKeyId: KMS_KEY_ARN }, bucketKeyEnabled: true }],
    });
    expect(one("aws:s3/bucketVersioning:BucketVersioning").inputs).toEqual({ bucket: BUCKET, versioningConfiguration: { status: "Enabled" } });
    expect(one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs).toEqual({
      bucket: BUCKET,
      blockPublicAcls: true,
      blockPublicPolicy: true,
      ignorePublicAcls: true,
      restrictPublicBuckets: true,
    });
    expect(one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs).toEqual({ bucket: BUCKET, rule: { objectOwnership: "BucketOwnerEnforced" } });
  });

  test("lifecycle: current and overwritten recordings expire after the retention; broken uploads after a week", () => {
    expect(one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs).toEqual({
      bucket: BUCKET,
      rules: [
        {
          id: "expire-after-retention",
          status: "Enabled",
          filter: { prefix: "" },
          expiration: { days: 365 },
          noncurrentVersionExpiration: { noncurrentDays: 365 },
          abortIncompleteMultipartUpload: { daysAfterInitiation: 7 },
        },
      ],
    });
  });

  test("bucket policy: exact JSON, denying anything but TLS", () => {
    expect(JSON.parse(one("aws:s3/bucketPolicy:BucketPolicy").inputs.policy)).toEqual({
      Version: "2012-10-17",
      Statement: [
        {
          Sid: "DenyInsecureTransport",
          Effect: "Deny",
          Principal: "*",
          Action: "s3:*",
          Resource: [BUCKET_ARN, `${BUCKET_ARN}/*`],
          Condition: { Bool: { "aws:SecureTransport": "false" } },
        },
      ],
    });
  });

  test("events table: Teleport's schema, on demand, TTL on Expires, PITR, fleet key, deletion-protected", () => {
    expect(registrations.find((r) => r.name === "audit-events")!.inputs).toEqual({
      name: "ci-fleet-production-teleport-events",
      billingMode: "PAY_PER_REQUEST",
      hashKey: "SessionID",
      rangeKey: "EventIndex",
      attributes: [
        { name: "SessionID", type: "S" },
        { name: "EventIndex", type: "N" },
        { name: "CreatedAtDate", type: "S" },
        { name: "CreatedAt", type: "N" },
      ],
      globalSecondaryIndexes: [
        {
          name: "timesearchV2",
          keySchemas: [
            { attributeName: "CreatedAtDate", keyType: "HASH" },
            { attributeName: "CreatedAt", keyType: "RANGE" },
          ],
          projectionType: "ALL",
        },
      ],
      ttl: { attributeName: "Expires", enabled: true },
      pointInTimeRecovery: { enabled: true },
      serverSideEncryption: { enabled: true, kmsKeyArn: KMS_KEY_ARN },
      deletionProtectionEnabled: true,
      tags: { "ci-fleet:stack": "production", "ci-fleet:purpose": "teleport-audit" },
    });
  });

  test("cluster state table: lib/backend/dynamo's schema with its stream and TTL, PITR, fleet key, deletion-protected, separate from the events", () => {
    expect(registrations.find((r) => r.name === "audit-state")!.inputs).toEqual({
      name: STATE_TABLE,
      billingMode: "PAY_PER_REQUEST",
      hashKey: "HashKey",
      rangeKey: "FullPath",
      attributes: [
        { name: "HashKey", type: "S" },
        { name: "FullPath", type: "S" },
      ],
      // configureTable calls UpdateTable (streams) and UpdateTimeToLive only when these are off.
      streamEnabled: true,
      streamViewType: "NEW_IMAGE",
      ttl: { attributeName: "Expires", enabled: true },
      pointInTimeRecovery: { enabled: true },
      serverSideEncryption: { enabled: true, kmsKeyArn: KMS_KEY_ARN },
      deletionProtectionEnabled: true,
      tags: { "ci-fleet:stack": "production", "ci-fleet:purpose": "teleport-cluster-state" },
    });
    expect(TELEPORT_STATE_TABLE_SCHEMA.hashKey).not.toBe(TELEPORT_EVENTS_TABLE_SCHEMA.hashKey);
  });

  test("cluster state policy: exact JSON, on the Teleport role, scoped to the state table and its stream", () => {
    const policy = registrations.find((r) => r.name === "audit-teleport-state-access")!;
    expect(policy.inputs.role).toBe("ci-fleet-production-teleport");
    expect(policy.inputs.name).toBe("teleport-cluster-state");
    expect(JSON.parse(policy.inputs.policy)).toEqual(teleportStateAccessPolicy(STATE_TABLE_ARN));
    expect(JSON.parse(policy.inputs.policy).Statement.map((s: { Resource: string }) => s.Resource)).toEqual([STATE_TABLE_ARN, `${STATE_TABLE_ARN}/stream/*`]);
  });

  test("role policy: exact JSON, on the Teleport role passed in by name", () => {
    const policy = registrations.find((r) => r.name === "audit-teleport-access")!;
    expect(policy.inputs.role).toBe("ci-fleet-production-teleport");
    expect(policy.inputs.name).toBe("teleport-audit-storage");
    expect(JSON.parse(policy.inputs.policy)).toEqual({
      Version: "2012-10-17",
      Statement: [
        {
          Sid: "SessionRecordingsBucket",
          Effect: "Allow",
          Action: ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:ListBucketVersions"],
          Resource: BUCKET_ARN,
        },
        {
          Sid: "SessionRecordingsObjects",
          Effect: "Allow",
          Action: ["s3:AbortMultipartUpload", "s3:GetObject", "s3:GetObjectVersion", "s3:ListMultipartUploadParts", "s3:PutObject"],
          Resource: `${BUCKET_ARN}/records/*`,
        },
        {
          Sid: "AuditEventsTable",
          Effect: "Allow",
          Action: ["dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive", "dynamodb:PutItem", "dynamodb:Query"],
          Resource: [TABLE_ARN, `${TABLE_ARN}/index/*`],
        },
        {
          Sid: "FleetKeyThroughS3",
          Effect: "Allow",
          Action: ["kms:Decrypt", "kms:GenerateDataKey"],
          Resource: KMS_KEY_ARN,
          Condition: { StringEquals: { "kms:ViaService": "s3.us-east-1.amazonaws.com" } },
        },
        {
          Sid: "FleetKeyThroughDynamoDB",
          Effect: "Allow",
          Action: ["kms:Decrypt", "kms:DescribeKey"],
          Resource: KMS_KEY_ARN,
          Condition: { StringEquals: { "kms:ViaService": "dynamodb.us-east-1.amazonaws.com" } },
        },
      ],
    });
  });

  test("auditBackend feeds the auth config's storage section", async () => {
    const audit: TeleportAuditBackend = await promiseOf(storage.auditBackend);
    expect(audit).toEqual({ kind: "aws", region: REGION, stateTable: STATE_TABLE, sessionsBucket: BUCKET, eventsTable: "ci-fleet-production-teleport-events", retentionDays: 365 });
    const storageSection = buildAuthProxyConfig(authInput({ audit })).teleport.storage;
    expect(storageSection.audit_sessions_uri).toBe(`s3://${BUCKET}/records?region=us-east-1`);
    expect({ type: storageSection.type, table_name: storageSection.table_name, region: storageSection.region }).toEqual({ type: "dynamodb", table_name: STATE_TABLE, region: REGION });
  });

  test("a bad retention or an over-long bucket name is refused before anything is created", async () => {
    await expect(createStorage({ retentionDays: 0 })).rejects.toThrow(/retentionDays/);
    await expect(createStorage({ stack: "a-very-long-stack-name-that-cannot-fit" })).rejects.toThrow(/not a valid S3 bucket name/);
  });
});

// ---------------------------------------------------------------------------------------
// The role policy evaluated by a real IAM policy engine: what Teleport does is allowed,
// anything that would destroy or reconfigure the audit log is not.

describe("the Teleport role's audit permissions, evaluated", () => {
  const identityPolicies = [
    { name: "teleport-audit-storage", policy: teleportAuditAccessPolicy({ bucketArn: BUCKET_ARN, tableArn: TABLE_ARN, kmsKeyArn: KMS_KEY_ARN, region: REGION }) },
  ];
  const principal = `arn:aws:iam::${ACCOUNT}:role/ci-fleet-production-teleport`;
  // KMS needs the key policy too: these grants work only if the fleet key's policy lets
  // the account's IAM policies decide (AWS's default key policy statement).
  const KEY_POLICY_DELEGATING_TO_IAM = {
    Version: "2012-10-17",
    Statement: [{ Sid: "EnableIamPolicies", Effect: "Allow", Principal: { AWS: `arn:aws:iam::${ACCOUNT}:root` }, Action: "kms:*", Resource: "*" }],
  };

  async function decide(action: string, resource: string, contextVariables: Record<string, string> = {}) {
    const result = await runSimulation(
      {
        request: { principal, action, resource: { resource, accountId: ACCOUNT }, contextVariables },
        identityPolicies,
        serviceControlPolicies: [],
        resourceControlPolicies: [],
        resourcePolicy: action.startsWith("s3:") ? auditBucketPolicy(BUCKET_ARN) : action.startsWith("kms:") ? KEY_POLICY_DELEGATING_TO_IAM : undefined,
      },
      {},
    );
    if (result.resultType === "error") throw new Error(`simulation error for ${action}: ${JSON.stringify(result.errors)}`);
    return result.overallResult;
  }

  const TLS = { "aws:SecureTransport": "true" };
  test.each<[string, string, Record<string, string>, string]>([
    ["s3:PutObject", `${BUCKET_ARN}/records/abc.tar`, TLS, "Allowed"],
    ["s3:GetObjectVersion", `${BUCKET_ARN}/records/abc.tar`, TLS, "Allowed"],
    ["s3:ListBucketVersions", BUCKET_ARN, TLS, "Allowed"],
    ["s3:PutObject", `${BUCKET_ARN}/records/abc.tar`, { "aws:SecureTransport": "false" }, "ExplicitlyDenied"],
    ["s3:PutObject", `${BUCKET_ARN}/elsewhere/abc.tar`, TLS, "ImplicitlyDenied"],
    ["s3:DeleteObject", `${BUCKET_ARN}/records/abc.tar`, TLS, "ImplicitlyDenied"],
    ["s3:DeleteObjectVersion", `${BUCKET_ARN}/records/abc.tar`, TLS, "ImplicitlyDenied"],
    ["s3:PutLifecycleConfiguration", BUCKET_ARN, TLS, "ImplicitlyDenied"],
    ["s3:PutBucketPolicy", BUCKET_ARN, TLS, "ImplicitlyDenied"],
    ["s3:GetObject", "arn:aws:s3:::another-bucket/records/abc.tar", TLS, "ImplicitlyDenied"],
    ["dynamodb:PutItem", TABLE_ARN, {}, "Allowed"],
    ["dynamodb:Query", `${TABLE_ARN}/index/timesearchV2`, {}, "Allowed"],
    ["dynamodb:DeleteItem", TABLE_ARN, {}, "ImplicitlyDenied"],
    ["dynamodb:BatchWriteItem", TABLE_ARN, {}, "ImplicitlyDenied"],
    ["dynamodb:DeleteTable", TABLE_ARN, {}, "ImplicitlyDenied"],
    ["dynamodb:UpdateTimeToLive", TABLE_ARN, {}, "ImplicitlyDenied"],
    ["kms:GenerateDataKey", KMS_KEY_ARN, { "kms:ViaService": "s3.us-east-1.amazonaws.com" }, "Allowed"],
    ["kms:Decrypt", KMS_KEY_ARN, { "kms:ViaService": "dynamodb.us-east-1.amazonaws.com" }, "Allowed"],
    ["kms:Decrypt", KMS_KEY_ARN, {}, "ImplicitlyDenied"],
    ["kms:Decrypt", KMS_KEY_ARN, { "kms:ViaService": "ssm.us-east-1.amazonaws.com" }, "ImplicitlyDenied"],
  ])("%s on %s %j -> %s", async (action, resource, context, expected) => {
    expect(await decide(action, resource, context)).toBe(expected);
  });

  test("the table schema constant matches what the component creates", () => {
    expect(TELEPORT_EVENTS_TABLE_SCHEMA.timeSearchIndex.name).toBe("timesearchV2");
  });
});
