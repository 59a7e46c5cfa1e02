import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { denyInsecureTransport, encryptedBucket } from "../storage/encrypted-bucket";
import { SESSION_RECORDINGS_PREFIX, type TeleportAuditBackend } from "./config";
import { teleportEc2JoinPolicy } from "./resources";

/**
 * Where Teleport's cluster state and audit log outlive the Teleport machine, in the fleet's
 * AWS account (on both providers; on equinix-metal the Teleport machine reaches them with its
 * Roles Anywhere credentials):
 *
 * - cluster state (`storage.type: dynamodb`): a DynamoDB table of its own in the schema of
 *   lib/backend/dynamo (HashKey/FullPath, stream NEW_IMAGE, TTL on `Expires`), encrypted
 *   with the fleet key, point-in-time recovery on, deletion-protected. It holds the CAs and
 *   their private keys, users, roles, tokens and node records: a replaced Teleport machine
 *   with the same config serves the same cluster, and joined nodes keep their certificates;
 * - session recordings: an S3 bucket, SSE-KMS with the fleet key, versioned (Teleport
 *   plays the OLDEST version of a recording, so an overwrite cannot hide a session),
 *   public access blocked, owner-enforced, TLS-only, expired after the retention;
 * - audit events: a DynamoDB table in the schema Teleport's `dynamodb://` backend uses,
 *   encrypted with the fleet key, point-in-time recovery on, TTL on `Expires` (Teleport
 *   sets it from `retention_period`), deletion-protected;
 * - inline policies on the Teleport machine's role granting what Teleport calls on them
 *   (and nothing that deletes or reconfigures them: Pulumi owns their settings).
 */

export interface TeleportAuditStorageArgs {
  stack: string;
  /** Account and region of the fleet's identity (config `identity`). */
  accountId: string;
  region: string;
  /** The fleet KMS key that encrypts the bucket and the table. */
  kmsKeyArn: pulumi.Input<string>;
  /** NAME of the Teleport machine's IAM role (an EC2 instance role, or the Roles Anywhere role). */
  teleportRoleName: pulumi.Input<string>;
  /** Config `teleport.auditRetentionDays`. */
  retentionDays: number;
  /**
   * aws only: the machines' region. The auth service checks every `ec2` join with
   * ec2:DescribeInstances there (./resources.ts `teleportEc2JoinPolicy`), one more role policy.
   */
  ec2JoinRegion?: string;
  tags?: Record<string, string>;
}

/** DynamoDB schema of Teleport's audit events backend (lib/events/dynamoevents). */
export const TELEPORT_EVENTS_TABLE_SCHEMA = {
  hashKey: "SessionID",
  rangeKey: "EventIndex",
  attributes: [
    { name: "SessionID", type: "S" },
    { name: "EventIndex", type: "N" },
    { name: "CreatedAtDate", type: "S" },
    { name: "CreatedAt", type: "N" },
  ],
  timeSearchIndex: { name: "timesearchV2", hashKey: "CreatedAtDate", rangeKey: "CreatedAt" },
  ttlAttribute: "Expires",
} as const;

/** Unfinished multipart uploads (a crashed upload) are cleaned up after this many days. */

export function teleportAuditBucketName(stack: string, accountId: string): string {
  return `ci-fleet-${stack}-teleport-audit-${accountId}`;
}

export function teleportEventsTableName(stack: string): string {
  return `ci-fleet-${stack}-teleport-events`;
}

export function teleportStateTableName(stack: string): string {
  return `ci-fleet-${stack}-teleport-state`;
}

/**
 * DynamoDB schema of Teleport's cluster state backend (lib/backend/dynamo `createTable`:
 * hash key `HashKey`, range key `FullPath`, both strings; `configureTable` turns on TTL on
 * `Expires` and a NEW_IMAGE stream when they are off, calls this backend needs no permission
 * for because the table is made with them).
 */
export const TELEPORT_STATE_TABLE_SCHEMA = {
  hashKey: "HashKey",
  rangeKey: "FullPath",
  attributes: [
    { name: "HashKey", type: "S" },
    { name: "FullPath", type: "S" },
  ],
  ttlAttribute: "Expires",
  streamViewType: "NEW_IMAGE",
} as const;

/**
 * The Teleport machine's permissions on its cluster state table: exactly what
 * lib/backend/dynamo calls on an existing table made as above. At start (`configureTable`):
 * DescribeTable, DescribeTimeToLive. Items: GetItem, PutItem (Create/Put/Update/
 * CompareAndSwap/ConditionalUpdate), UpdateItem (KeepAlive), DeleteItem (Delete,
 * ConditionalDelete, expired keys), Query (GetRange), BatchWriteItem (DeleteRange);
 * TransactWriteItems (AtomicWrite) is authorised per item as PutItem, DeleteItem and
 * ConditionCheckItem. The event stream (shards.go): DescribeTable (LatestStreamArn),
 * DescribeStream, GetShardIterator, GetRecords on the table's stream. Deliberately absent:
 * CreateTable, UpdateTable, UpdateTimeToLive, UpdateContinuousBackups (PITR cannot be turned
 * off from the machine), DeleteTable, Scan, and any application-autoscaling action.
 */
export function teleportStateAccessPolicy(tableArn: string): object {
  return {
    Version: "2012-10-17",
    Statement: [
      {
        Sid: "ClusterStateTable",
        Effect: "Allow",
        Action: [
          "dynamodb:BatchWriteItem",
          "dynamodb:ConditionCheckItem",
          "dynamodb:DeleteItem",
          "dynamodb:DescribeTable",
          "dynamodb:DescribeTimeToLive",
          "dynamodb:GetItem",
          "dynamodb:PutItem",
          "dynamodb:Query",
          "dynamodb:UpdateItem",
        ],
        Resource: tableArn,
      },
      {
        Sid: "ClusterStateStream",
        Effect: "Allow",
        Action: ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"],
        Resource: `${tableArn}/stream/*`,
      },
    ],
  };
}

export interface AuditAccessPolicyInput {
  bucketArn: string;
  tableArn: string;
  kmsKeyArn: string;
  region: string;
}

/**
 * The Teleport machine's permissions on its audit storage: what the `s3://` session
 * uploader and the `dynamodb://` events backend call on an existing, Pulumi-managed
 * bucket and table. Deliberately absent: every Delete*, bucket/table configuration
 * (CreateBucket, PutBucketVersioning, PutEncryptionConfiguration, CreateTable,
 * UpdateTable, UpdateTimeToLive, UpdateContinuousBackups) — Teleport skips those when
 * the bucket and table already exist and are configured (TTL on `Expires` is on, and the
 * config leaves `continuous_backups` and `auto_scaling` unset). UpdateTimeToLive stays out
 * on purpose: pointed at another attribute it would expire every event.
 */
export function teleportAuditAccessPolicy(input: AuditAccessPolicyInput): object {
  return {
    Version: "2012-10-17",
    Statement: [
      {
        Sid: "SessionRecordingsBucket",
        Effect: "Allow",
        // HeadBucket (ListBucket), finding a recording's oldest version, resuming uploads.
        Action: ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:ListBucketVersions"],
        Resource: input.bucketArn,
      },
      {
        Sid: "SessionRecordingsObjects",
        Effect: "Allow",
        Action: ["s3:AbortMultipartUpload", "s3:GetObject", "s3:GetObjectVersion", "s3:ListMultipartUploadParts", "s3:PutObject"],
        Resource: `${input.bucketArn}/${SESSION_RECORDINGS_PREFIX}/*`,
      },
      {
        Sid: "AuditEventsTable",
        Effect: "Allow",
        // What lib/events/dynamoevents calls at 17.x: DescribeTable and DescribeTimeToLive at
        // start, PutItem per event, Query to search. Not BatchWriteItem: its DeleteRequest
        // would let the machine erase events.
        Action: ["dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive", "dynamodb:PutItem", "dynamodb:Query"],
        Resource: [input.tableArn, `${input.tableArn}/index/*`],
      },
      {
        Sid: "FleetKeyThroughS3",
        Effect: "Allow",
        Action: ["kms:Decrypt", "kms:GenerateDataKey"],
        Resource: input.kmsKeyArn,
        Condition: { StringEquals: { "kms:ViaService": `s3.${input.region}.amazonaws.com` } },
      },
      {
        Sid: "FleetKeyThroughDynamoDB",
        Effect: "Allow",
        Action: ["kms:Decrypt", "kms:DescribeKey"],
        Resource: input.kmsKeyArn,
        Condition: { StringEquals: { "kms:ViaService": `dynamodb.${input.region}.amazonaws.com` } },
      },
    ],
  };
}

/** Bucket policy: nothing reaches the recordings over plain HTTP. */
export function auditBucketPolicy(bucketArn: string): object {
  return {
    Version: "2012-10-17",
    Statement: [denyInsecureTransport(bucketArn)],
  };
}

export class TeleportAuditStorage extends pulumi.ComponentResource {
  public readonly bucketName: pulumi.Output<string>;
  public readonly bucketArn: pulumi.Output<string>;
  public readonly eventsTableName: pulumi.Output<string>;
  public readonly eventsTableArn: pulumi.Output<string>;
  public readonly stateTableName: pulumi.Output<string>;
  public readonly stateTableArn: pulumi.Output<string>;
  /** Ready for `buildAuthProxyConfig({..., audit})`. */
  public readonly auditBackend: pulumi.Output<TeleportAuditBackend>;

  constructor(name: string, args: TeleportAuditStorageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ci-fleet:teleport:AuditStorage", name, {}, opts);
    if (!Number.isInteger(args.retentionDays) || args.retentionDays < 1) {
      throw new Error(`TeleportAuditStorage ${name}: retentionDays must be a positive whole number, got ${args.retentionDays}`);
    }
    const bucketName = teleportAuditBucketName(args.stack, args.accountId);
    if (!/^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/.test(bucketName)) {
      throw new Error(`TeleportAuditStorage ${name}: bucket name ${bucketName} is not a valid S3 bucket name (3-63 chars)`);
    }
    const tags = { ...args.tags, "ci-fleet:stack": args.stack, "ci-fleet:purpose": "teleport-audit" };
    const child: pulumi.CustomResourceOptions = { parent: this };
    const childAfter = (dependsOn: pulumi.Resource[]) => pulumi.mergeOptions(child, { dependsOn });

    const { bucket, ownership, publicAccess } = encryptedBucket(
      `${name}-recordings`,
      { bucketName, kmsKeyArn: args.kmsKeyArn, retentionDays: args.retentionDays, tags },
      child,
    );
    new aws.s3.BucketPolicy(
      `${name}-recordings-policy`,
      { bucket: bucket.id, policy: bucket.arn.apply((arn) => JSON.stringify(auditBucketPolicy(arn))) },
      childAfter([publicAccess, ownership]),
    );

    const schema = TELEPORT_EVENTS_TABLE_SCHEMA;
    const table = new aws.dynamodb.Table(
      `${name}-events`,
      {
        name: teleportEventsTableName(args.stack),
        billingMode: "PAY_PER_REQUEST",
        hashKey: schema.hashKey,
        rangeKey: schema.rangeKey,
        attributes: schema.attributes.map((a) => ({ ...a })),
        globalSecondaryIndexes: [
          {
            name: schema.timeSearchIndex.name,
            keySchemas: [
              { attributeName: schema.timeSearchIndex.hashKey, keyType: "HASH" },
              { attributeName: schema.timeSearchIndex.rangeKey, keyType: "RANGE" },
            ],
            projectionType: "ALL",
          },
        ],
        ttl: { attributeName: schema.ttlAttribute, enabled: true },
        pointInTimeRecovery: { enabled: true },
        serverSideEncryption: { enabled: true, kmsKeyArn: args.kmsKeyArn },
        deletionProtectionEnabled: true,
        tags,
      },
      child,
    );

    new aws.iam.RolePolicy(
      `${name}-teleport-access`,
      {
        role: args.teleportRoleName,
        name: "teleport-audit-storage",
        policy: pulumi
          .all([bucket.arn, table.arn, args.kmsKeyArn])
          .apply(([bucketArn, tableArn, kmsKeyArn]) => JSON.stringify(teleportAuditAccessPolicy({ bucketArn, tableArn, kmsKeyArn, region: args.region }))),
      },
      child,
    );

    const stateSchema = TELEPORT_STATE_TABLE_SCHEMA;
    const stateTable = new aws.dynamodb.Table(
      `${name}-state`,
      {
        name: teleportStateTableName(args.stack),
        billingMode: "PAY_PER_REQUEST",
        hashKey: stateSchema.hashKey,
        rangeKey: stateSchema.rangeKey,
        attributes: stateSchema.attributes.map((a) => ({ ...a })),
        streamEnabled: true,
        streamViewType: stateSchema.streamViewType,
        ttl: { attributeName: stateSchema.ttlAttribute, enabled: true },
        pointInTimeRecovery: { enabled: true },
        serverSideEncryption: { enabled: true, kmsKeyArn: args.kmsKeyArn },
        deletionProtectionEnabled: true,
        tags: { ...tags, "ci-fleet:purpose": "teleport-cluster-state" },
      },
      child,
    );
    new aws.iam.RolePolicy(
      `${name}-teleport-state-access`,
      {
        role: args.teleportRoleName,
        name: "teleport-cluster-state",
        policy: stateTable.arn.apply((tableArn) => JSON.stringify(teleportStateAccessPolicy(tableArn))),
      },
      child,
    );

    if (args.ec2JoinRegion !== undefined) {
      new aws.iam.RolePolicy(
        `${name}-teleport-ec2-join`,
        { role: args.teleportRoleName, name: "teleport-ec2-join", policy: JSON.stringify(teleportEc2JoinPolicy(args.ec2JoinRegion)) },
        child,
      );
    }

    this.bucketName = bucket.bucket;
    this.bucketArn = bucket.arn;
    this.eventsTableName = table.name;
    this.eventsTableArn = table.arn;
    this.stateTableName = stateTable.name;
    this.stateTableArn = stateTable.arn;
    this.auditBackend = pulumi.all([bucket.bucket, table.name, stateTable.name]).apply(
      ([sessionsBucket, eventsTable, stateTableName]): TeleportAuditBackend => ({
        kind: "aws",
        region: args.region,
        stateTable: stateTableName,
        sessionsBucket,
        eventsTable,
        retentionDays: args.retentionDays,
      }),
    );
    this.registerOutputs({
      bucketName: this.bucketName,
      bucketArn: this.bucketArn,
      eventsTableName: this.eventsTableName,
      eventsTableArn: this.eventsTableArn,
      stateTableName: this.stateTableName,
      stateTableArn: this.stateTableArn,
    });
  }
}
