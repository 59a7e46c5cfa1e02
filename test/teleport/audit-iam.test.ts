import { runSimulation } from "@cloud-copilot/iam-simulate";
import { previewStack } from "../support/preview";

/**
 * Every AWS call Teleport's audit backends make (lib/events/dynamoevents: the
 * `dynamodb://` events log; lib/events/s3sessions: the `s3://` recordings handler and its
 * multipart streamer; both on the AWS SDK for Go v2), evaluated by an IAM policy engine
 * against the policies the program really registers for the Teleport machine's role, the
 * bucket policy and the fleet key's policy — on both providers. What Teleport does must be
 * allowed; what would delete or reconfigure the audit log must not.
 */

interface Arns {
  bucket: string;
  table: string;
  /** The cluster state table (lib/backend/dynamo). */
  state: string;
  key: string;
  region: string;
}
type Call = [api: string, action: string, resource: (a: Arns) => string, context: (a: Arns) => Record<string, string>];

const TLS = () => ({ "aws:SecureTransport": "true" });
const NONE = () => ({});
const viaS3 = (a: Arns) => ({ "kms:ViaService": `s3.${a.region}.amazonaws.com` });
const viaDynamo = (a: Arns) => ({ "kms:ViaService": `dynamodb.${a.region}.amazonaws.com` });
const recording = (a: Arns) => `${a.bucket}/records/2f1c7e0e-5a8b-4d9e-9a36-0c1b2d3e4f50.tar`;

/** What Teleport calls, the IAM action each needs, on which resource. */
const TELEPORT_CALLS: Call[] = [
  // dynamoevents.New -> configureTable
  ["DescribeTable (table status at start)", "dynamodb:DescribeTable", (a) => a.table, NONE],
  ["DescribeTimeToLive (UpdateTimeToLive only if TTL is off; Pulumi turns it on)", "dynamodb:DescribeTimeToLive", (a) => a.table, NONE],
  // EmitAuditEvent -> putAuditEvent (conditional PutItem)
  ["PutItem (every audit event)", "dynamodb:PutItem", (a) => a.table, NONE],
  // SearchEvents / SearchSessionEvents: per-day Query on the timesearchV2 index; by session id on the table
  ["Query timesearchV2 (audit log UI, tsh recordings ls)", "dynamodb:Query", (a) => `${a.table}/index/timesearchV2`, NONE],
  ["Query by SessionID (one session's events)", "dynamodb:Query", (a) => a.table, NONE],
  ["DynamoDB decrypts the table key for the caller", "kms:Decrypt", (a) => a.key, viaDynamo],
  ["DynamoDB describes the table's key for the caller", "kms:DescribeKey", (a) => a.key, viaDynamo],
  // s3sessions.NewHandler -> ensureBucket
  ["HeadBucket", "s3:ListBucket", (a) => a.bucket, TLS],
  // Upload (manager.Uploader) and the streamer: CreateMultipartUpload, UploadPart, CompleteMultipartUpload, PutObject
  ["PutObject / CreateMultipartUpload / UploadPart / CompleteMultipartUpload", "s3:PutObject", recording, TLS],
  ["AbortMultipartUpload (empty upload, cleanup)", "s3:AbortMultipartUpload", recording, TLS],
  ["ListParts (resuming an upload)", "s3:ListMultipartUploadParts", recording, TLS],
  ["ListMultipartUploads (the upload completer)", "s3:ListBucketMultipartUploads", (a) => a.bucket, TLS],
  // Download: oldest version, then GetObject with VersionId
  ["ListObjectVersions (oldest version of a recording)", "s3:ListBucketVersions", (a) => a.bucket, TLS],
  ["GetObject with VersionId", "s3:GetObjectVersion", recording, TLS],
  ["SSE-KMS on PutObject / CreateMultipartUpload", "kms:GenerateDataKey", (a) => a.key, viaS3],
  ["SSE-KMS on UploadPart / CompleteMultipartUpload / GetObject", "kms:Decrypt", (a) => a.key, viaS3],
];

/**
 * Every AWS call lib/backend/dynamo makes on an existing, configured cluster state table
 * (dynamodbbk.go configureTable / CRUD / KeepAlive / DeleteRange, atomicwrite.go
 * TransactWriteItems, shards.go stream polling), as the IAM action each is authorised by.
 */
const stateStream = (a: Arns) => `${a.state}/stream/2026-01-01T00:00:00.000`;
const BACKEND_CALLS: Call[] = [
  ["DescribeTable (getTableStatus, stream check, findStream)", "dynamodb:DescribeTable", (a) => a.state, NONE],
  ["DescribeTimeToLive (TTL already on)", "dynamodb:DescribeTimeToLive", (a) => a.state, NONE],
  ["GetItem (Get)", "dynamodb:GetItem", (a) => a.state, NONE],
  ["PutItem (Create/Put/Update/CompareAndSwap/ConditionalUpdate)", "dynamodb:PutItem", (a) => a.state, NONE],
  ["UpdateItem (KeepAlive)", "dynamodb:UpdateItem", (a) => a.state, NONE],
  ["DeleteItem (Delete/ConditionalDelete/expired keys)", "dynamodb:DeleteItem", (a) => a.state, NONE],
  ["Query (GetRange)", "dynamodb:Query", (a) => a.state, NONE],
  ["BatchWriteItem (DeleteRange)", "dynamodb:BatchWriteItem", (a) => a.state, NONE],
  ["TransactWriteItems ConditionCheck (AtomicWrite)", "dynamodb:ConditionCheckItem", (a) => a.state, NONE],
  ["DescribeStream (collectActiveShards)", "dynamodb:DescribeStream", stateStream, NONE],
  ["GetShardIterator (pollShard)", "dynamodb:GetShardIterator", stateStream, NONE],
  ["GetRecords (pollShard)", "dynamodb:GetRecords", stateStream, NONE],
  ["DynamoDB decrypts the state table's key for the caller", "kms:Decrypt", (a) => a.key, viaDynamo],
];

/** What the Teleport machine must not do to the cluster state (Pulumi owns its settings; PITR stays on). */
const STATE_FORBIDDEN: Call[] = [
  ["turn PITR off", "dynamodb:UpdateContinuousBackups", (a) => a.state, NONE],
  ["delete the table", "dynamodb:DeleteTable", (a) => a.state, NONE],
  ["change the table (streams, billing)", "dynamodb:UpdateTable", (a) => a.state, NONE],
  ["point TTL elsewhere", "dynamodb:UpdateTimeToLive", (a) => a.state, NONE],
  ["create tables", "dynamodb:CreateTable", (a) => a.state, NONE],
  ["scan the table (not a backend call)", "dynamodb:Scan", (a) => a.state, NONE],
  ["restore or export behind Pulumi's back", "dynamodb:RestoreTableToPointInTime", (a) => a.state, NONE],
  ["write the audit events table's items with the state grant", "dynamodb:DeleteItem", (a) => a.table, NONE],
];

/** What a compromised Teleport machine must not be able to do to the audit log. */
const FORBIDDEN: Call[] = [
  ["delete an event", "dynamodb:DeleteItem", (a) => a.table, NONE],
  ["delete events in a batch (BatchWriteItem DeleteRequest)", "dynamodb:BatchWriteItem", (a) => a.table, NONE],
  ["point TTL at another attribute (mass expiry)", "dynamodb:UpdateTimeToLive", (a) => a.table, NONE],
  ["turn PITR off", "dynamodb:UpdateContinuousBackups", (a) => a.table, NONE],
  ["change the table", "dynamodb:UpdateTable", (a) => a.table, NONE],
  ["delete the table", "dynamodb:DeleteTable", (a) => a.table, NONE],
  ["delete a recording", "s3:DeleteObject", recording, TLS],
  ["delete a recording's version", "s3:DeleteObjectVersion", recording, TLS],
  ["shorten retention", "s3:PutLifecycleConfiguration", (a) => a.bucket, TLS],
  ["suspend versioning", "s3:PutBucketVersioning", (a) => a.bucket, TLS],
  ["replace the bucket policy", "s3:PutBucketPolicy", (a) => a.bucket, TLS],
  ["use the key outside S3/DynamoDB", "kms:Decrypt", (a) => a.key, NONE],
  ["delete the key", "kms:ScheduleKeyDeletion", (a) => a.key, NONE],
];

describe.each(["production", "production-aws"])("the Teleport role's audit access in %s, as the program registers it", (stack) => {
  let arns: Arns;
  let principal: string;
  let accountId: string;
  let identityPolicies: Array<{ name: string; policy: object }>;
  let bucketPolicy: object;
  let keyPolicy: object;
  let others: Array<{ name: string; arn: string; policies: Array<{ name: string; policy: object }>; attachments: number }>;
  let otherAccounts: string[];

  beforeAll(async () => {
    const run = await previewStack(stack);
    const roleName = `ci-fleet-${stack}-teleport`;
    const role = run.resources.find((r) => r.type === "aws:iam/role:Role" && r.inputs.name === roleName)!;
    principal = role.outputs.arn as string;
    accountId = principal.split(":")[4];
    const asObject = (p: unknown) => (typeof p === "string" ? JSON.parse(p) : p) as object;
    const table = run.resources.find((r) => r.type === "aws:dynamodb/table:Table" && r.inputs.name === `ci-fleet-${stack}-teleport-events`)!;
    const state = run.resources.find((r) => r.type === "aws:dynamodb/table:Table" && r.inputs.name === `ci-fleet-${stack}-teleport-state`)!;
    // DynamoDB table ARNs are arn:aws:dynamodb:<region>:<account>:table/<name>, as the mock returns them.
    const tableArn = table.outputs.arn as string;
    expect(tableArn).toMatch(new RegExp(`^arn:aws:dynamodb:[a-z0-9-]+:${accountId}:table/${table.inputs.name}$`));
    const tableRegion = tableArn.split(":")[3];
    identityPolicies = run.resources
      .filter((r) => r.type === "aws:iam/rolePolicy:RolePolicy" && (r.outputs.role ?? r.inputs.role) === roleName)
      .map((r) => ({ name: r.inputs.name as string, policy: asObject(r.inputs.policy) }));
    expect(identityPolicies.map((p) => p.name)).toEqual(expect.arrayContaining(["teleport-audit-storage", "teleport-cluster-state"]));
    // Managed policies would escape this check: the role must have none.
    expect(run.resources.filter((r) => r.type === "aws:iam/rolePolicyAttachment:RolePolicyAttachment" && (r.outputs.role ?? r.inputs.role) === roleName)).toEqual([]);
    const bucket = run.resources.find((r) => r.type === "aws:s3/bucket:Bucket" && String(r.inputs.bucket).startsWith(`ci-fleet-${stack}-teleport-audit-`))!;
    const key = run.resources.find((r) => r.type === "aws:kms/key:Key")!;
    arns = { bucket: bucket.outputs.arn as string, table: tableArn, state: state.outputs.arn as string, key: key.outputs.arn as string, region: tableRegion };
    // Roles of other accounts (deploy targets) reach a table of this account only through a
    // resource policy, and the state table has none (checked below): the fleet account's roles remain.
    const roles = run.resources.filter((r) => r.type === "aws:iam/role:Role" && r.inputs.name !== roleName);
    otherAccounts = [...new Set(roles.map((r) => String(r.outputs.arn).split(":")[4]).filter((a) => a !== accountId))];
    others = roles
      .filter((r) => String(r.outputs.arn).split(":")[4] === accountId)
      .map((r) => ({
        name: r.inputs.name as string,
        arn: r.outputs.arn as string,
        policies: run.resources
          .filter((p) => p.type === "aws:iam/rolePolicy:RolePolicy" && (p.outputs.role ?? p.inputs.role) === r.inputs.name)
          .map((p) => ({ name: p.inputs.name as string, policy: asObject(p.inputs.policy) })),
        attachments: run.resources.filter((p) => p.type === "aws:iam/rolePolicyAttachment:RolePolicyAttachment" && (p.outputs.role ?? p.inputs.role) === r.inputs.name).length,
      }));
    // No resource policy on the state table: identity policies alone decide who reaches it.
    expect(run.resources.filter((r) => r.type === "aws:dynamodb/resourcePolicy:ResourcePolicy")).toEqual([]);
    bucketPolicy = asObject(run.resources.find((r) => r.type === "aws:s3/bucketPolicy:BucketPolicy" && r.inputs.bucket === bucket.outputs.id)!.inputs.policy);
    keyPolicy = asObject(key.inputs.policy);
    // The table keeps TTL on Teleport's attribute, so Teleport never calls UpdateTimeToLive.
    expect(table.inputs.ttl).toEqual({ attributeName: "Expires", enabled: true });
  }, 60_000);

  async function decide(action: string, resource: string, contextVariables: Record<string, string>, as?: { arn: string; policies: Array<{ name: string; policy: object }> }): Promise<string> {
    const result = await runSimulation(
      {
        request: { principal: as?.arn ?? principal, action, resource: { resource, accountId }, contextVariables },
        identityPolicies: as?.policies ?? identityPolicies,
        serviceControlPolicies: [],
        resourceControlPolicies: [],
        resourcePolicy: action.startsWith("s3:") ? bucketPolicy : action.startsWith("kms:") ? keyPolicy : undefined,
      },
      {},
    );
    if (result.resultType === "error") throw new Error(`simulation error for ${action}: ${JSON.stringify(result.errors)}`);
    return result.overallResult;
  }

  test.each(TELEPORT_CALLS)("Teleport: %s -> %s is allowed", async (_api, action, resource, context) => {
    expect(await decide(action, resource(arns), context(arns))).toBe("Allowed");
  });

  test.each(FORBIDDEN)("never: %s (%s)", async (_what, action, resource, context) => {
    expect(await decide(action, resource(arns), context(arns))).not.toBe("Allowed");
  });

  test.each(BACKEND_CALLS)("cluster state backend: %s -> %s is allowed", async (_api, action, resource, context) => {
    expect(await decide(action, resource(arns), context(arns))).toBe("Allowed");
  });

  test.each(STATE_FORBIDDEN)("cluster state, never: %s (%s)", async (_what, action, resource, context) => {
    expect(await decide(action, resource(arns), context(arns))).not.toBe("Allowed");
  });

  test("no other role of the stack can make any call the backend makes on the cluster state", async () => {
    expect(others.length).toBeGreaterThan(3);
    expect(otherAccounts.length).toBeGreaterThan(0);
    const reached: string[] = [];
    for (const role of others) {
      // A managed policy would escape the simulation: no role may have one.
      expect({ role: role.name, attachments: role.attachments }).toEqual({ role: role.name, attachments: 0 });
      for (const [, action, resource] of BACKEND_CALLS.filter(([, action]) => action.startsWith("dynamodb:"))) {
        if ((await decide(action, resource(arns), {}, role)) === "Allowed") reached.push(`${role.name} ${action}`);
      }
    }
    expect(reached).toEqual([]);
  });

  test("no other role of the stack reads a session recording or an audit event in AWS (Teleport's RBAC is the only gate: issue 12.3 finding B)", async () => {
    const reads: Array<[string, string]> = [
      ["s3:GetObject", `${arns.bucket}/records/0b1c2d3e-session.tar`],
      ["s3:ListBucket", arns.bucket],
      ["dynamodb:Query", arns.table],
      ["dynamodb:Scan", arns.table],
      ["dynamodb:GetItem", arns.table],
    ];
    const reached: string[] = [];
    for (const role of others) {
      for (const [action, resource] of reads) if ((await decide(action, resource, {}, role)) === "Allowed") reached.push(`${role.name} ${action}`);
    }
    expect(reached).toEqual([]);
  });
});
