import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { denyInsecureTransport, encryptedBucket } from "../storage/encrypted-bucket";
import { arns, fleetTag, roleNameProblem } from "../identity/names";
import { PolicyDocument, PolicyStatement } from "../identity/policies";

/**
 * The CI event archive: Buildkite's Amazon EventBridge events kept where a compromised
 * runner or pipeline cannot rewrite them.
 *
 *   partner event source (Buildkite) -> partner event bus -> rule (every Buildkite event)
 *   -> target (role "routing") -> Firehose stream (role "delivery", dynamic partitioning)
 *   -> S3 bucket `events/detail-type=<type>/<yyyy/MM/dd>/`, SSE-KMS with the fleet key.
 *
 * Only the auditor role reads the objects, only the delivery role writes them (the
 * bucket policy denies everyone else, whatever their IAM says), and the account root
 * stays the break-glass for both.
 *
 * Every document is built by a pure function below, so tests can check it exactly.
 */

export interface CiEventArchiveArgs {
  stack: string;
  /** Account and region of the fleet's identity (config `identity`): the archive lives there. */
  accountId: string;
  region: string;
  /** Config `auditArchive.partnerEventSource`: `aws.partner/buildkite.com/<org>/<id>`. */
  partnerEventSource: string;
  /** The fleet KMS key; its key policy delegates to IAM (account root statement). */
  kmsKeyArn: pulumi.Input<string>;
  /** Days an event is kept (current versions); default DEFAULT_RETENTION_DAYS. */
  retentionDays?: number;
  /**
   * Who may assume the auditor role: named IAM roles or users (e.g. the role of an IAM
   * Identity Center "auditor" permission set). Never an account root nor a wildcard: the
   * policy pack refuses a role that trusts a whole account, and a named principal is
   * where MFA belongs (its sign-in), because `aws:MultiFactorAuthPresent` is absent from
   * role-chained sessions such as Identity Center's, so an MFA condition here would lock
   * those auditors out instead of protecting anything.
   */
  auditorPrincipalArns: string[];
}

export const DEFAULT_RETENTION_DAYS = 400;
/** Unfinished multipart uploads (a crashed delivery) are cleaned up after this many days. */
/** Dynamic partitioning requires a buffer of at least 64 MiB. */
export const DELIVERY_BUFFER_MB = 64;
export const DELIVERY_BUFFER_SECONDS = 300;
export const AUDITOR_SESSION_SECONDS = 3600;

/** Every event Buildkite sends through EventBridge has a source under this prefix. */
export const BUILDKITE_SOURCE_PREFIX = "aws.partner/buildkite.com";

/** One prefix per event type, then per day (UTC), as Firehose's dynamic partitioning writes them. */
export const EVENTS_PREFIX = "events/detail-type=!{partitionKeyFromQuery:detail_type}/!{timestamp:yyyy/MM/dd}/";
/** Records Firehose could not partition or deliver; `error-output-type` is required with dynamic partitioning. */
export const ERRORS_PREFIX = "errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/";
/** JQ query of the MetadataExtraction processor: the partition key `detail_type`. */
export const DETAIL_TYPE_QUERY = '{detail_type: .["detail-type"]}';

/**
 * Values of the `ci-fleet:role` tag. The pack's iam-role-kind-tagged policy accepts only
 * agent | deploy | salt-master | teleport | runner | service on IAM roles (policy/support.ts
 * IAM_ROLE_KINDS), so the auditor role is a `service` role too; `ci-fleet:purpose` tells
 * the three apart.
 */
export const ARCHIVE_TAG_ROLES = { auditor: "service", service: "service", resource: "ci-event-archive" } as const;
export const PURPOSE_TAG = "ci-fleet:purpose";

export interface CiEventArchiveNames {
  bucket: string;
  deliveryStream: string;
  rule: string;
  auditorRole: string;
  deliveryRole: string;
  routingRole: string;
}

export function ciEventArchiveBucketName(stack: string, accountId: string): string {
  return `ci-fleet-${stack}-ci-events-${accountId}`;
}

/** Every AWS name of the archive, from the stack and account alone. */
export function ciEventArchiveNames(stack: string, accountId: string): CiEventArchiveNames {
  return {
    bucket: ciEventArchiveBucketName(stack, accountId),
    deliveryStream: `ci-fleet-${stack}-ci-events`,
    rule: `ci-fleet-${stack}-buildkite-events`,
    auditorRole: `ci-fleet-${stack}-ci-event-auditor`,
    deliveryRole: `ci-fleet-${stack}-ci-event-delivery`,
    routingRole: `ci-fleet-${stack}-ci-event-routing`,
  };
}

const BUCKET_NAME = /^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/;
/** Firehose stream and EventBridge rule names: 1-64 of these characters. */
const STREAM_OR_RULE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** EventBridge partner event source names: `aws.partner/<partner>/<...>`, at most 256 characters. */
const PARTNER_SOURCE = /^aws\.partner(\/[A-Za-z0-9._-]+)+$/;
const IAM_PRINCIPAL = /^arn:aws[a-z-]*:iam::\d{12}:(role|user)\/[A-Za-z0-9+=,.@_/-]+$/;

/** Every problem of the arguments, so a bad stack reports all of them at once. */
export function ciEventArchiveArgsProblems(args: CiEventArchiveArgs): string[] {
  const problems: string[] = [];
  if (!/^\d{12}$/.test(args.accountId)) problems.push(`accountId "${args.accountId}" is not a 12-digit AWS account id`);
  if (!/^[a-z]{2}(-[a-z]+)+-\d$/.test(args.region)) problems.push(`region "${args.region}" is not an AWS region name`);
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(args.stack)) problems.push(`stack "${args.stack}" is not a lower-case DNS label`);
  if (
    args.partnerEventSource.length > 256 ||
    !PARTNER_SOURCE.test(args.partnerEventSource) ||
    !args.partnerEventSource.startsWith(`${BUILDKITE_SOURCE_PREFIX}/`)
  ) {
    problems.push(`partnerEventSource "${args.partnerEventSource}" is not a Buildkite partner event source (${BUILDKITE_SOURCE_PREFIX}/<org>/<id>)`);
  }
  const retention = args.retentionDays ?? DEFAULT_RETENTION_DAYS;
  if (!Number.isInteger(retention) || retention < 1) problems.push(`retentionDays must be a positive whole number, got ${retention}`);
  if (args.auditorPrincipalArns.length === 0) problems.push("auditorPrincipalArns is empty: nobody could read the archive");
  for (const arn of args.auditorPrincipalArns) {
    if (!IAM_PRINCIPAL.test(arn) || arn.includes("*")) {
      problems.push(`auditor principal "${arn}" is not a named IAM role or user ARN (no account root, no wildcard)`);
    }
  }
  const names = ciEventArchiveNames(args.stack, args.accountId);
  if (!BUCKET_NAME.test(names.bucket)) problems.push(`bucket name "${names.bucket}" is not a valid S3 bucket name (3-63 characters)`);
  for (const [what, name] of [["Firehose stream", names.deliveryStream], ["EventBridge rule", names.rule]]) {
    if (!STREAM_OR_RULE_NAME.test(name)) problems.push(`${what} name "${name}" is ${name.length} characters or has characters AWS refuses; at most 64 of A-Z a-z 0-9 _ . -`);
  }
  for (const role of [names.auditorRole, names.deliveryRole, names.routingRole]) {
    const problem = roleNameProblem(role);
    if (problem) problems.push(problem);
  }
  return problems;
}

// --- IAM documents (pure) ----------------------------------------------------

const document = (Statement: PolicyStatement[]): PolicyDocument => ({ Version: "2012-10-17", Statement });

export const s3ViaService = (region: string) => `s3.${region}.amazonaws.com`;

/** The rule that matches every Buildkite event on the partner bus. */
export function buildkiteEventPattern(): string {
  return JSON.stringify({ source: [{ prefix: BUILDKITE_SOURCE_PREFIX }] });
}

/** EventBridge assumes the routing role only for this account's rule (confused-deputy guard). */
export function routingTrustPolicy(input: { accountId: string; ruleArn: string }): PolicyDocument {
  return document([
    {
      Sid: "EventBridgeForTheArchiveRule",
      Effect: "Allow",
      Principal: { Service: "events.amazonaws.com" },
      Action: "sts:AssumeRole",
      Condition: { StringEquals: { "aws:SourceAccount": input.accountId, "aws:SourceArn": input.ruleArn } },
    },
  ]);
}

/** The routing role may only put records into the archive's stream. */
export function routingPolicy(input: { deliveryStreamArn: string }): PolicyDocument {
  return document([
    {
      Sid: "PutIntoTheArchiveStream",
      Effect: "Allow",
      Action: ["firehose:PutRecord", "firehose:PutRecordBatch"],
      Resource: input.deliveryStreamArn,
    },
  ]);
}

/** Firehose assumes the delivery role only on behalf of this account. */
export function deliveryTrustPolicy(input: { accountId: string }): PolicyDocument {
  return document([
    {
      Sid: "FirehoseOfThisAccount",
      Effect: "Allow",
      Principal: { Service: "firehose.amazonaws.com" },
      Action: "sts:AssumeRole",
      Condition: { StringEquals: { "aws:SourceAccount": input.accountId } },
    },
  ]);
}

export interface KeyUseInput {
  bucketArn: string;
  kmsKeyArn: string;
  region: string;
}

/**
 * The fleet key, only as S3 uses it for this bucket: S3 puts the bucket ARN (bucket key on)
 * or the object ARN (bucket key off) in the encryption context, so the key cannot be used
 * through S3 for any other bucket (the Teleport recordings share the key).
 */
function keyThroughS3(sid: string, actions: string[], input: KeyUseInput): PolicyStatement {
  return {
    Sid: sid,
    Effect: "Allow",
    Action: actions,
    Resource: input.kmsKeyArn,
    Condition: {
      StringEquals: { "kms:ViaService": s3ViaService(input.region) },
      StringLike: { "kms:EncryptionContext:aws:s3:arn": [input.bucketArn, `${input.bucketArn}/*`] },
    },
  };
}

/** What Firehose's S3 destination needs (AWS's documented set), on this bucket only, and nothing that reads or deletes. */
export function deliveryPolicy(input: KeyUseInput): PolicyDocument {
  return document([
    {
      Sid: "ArchiveBucket",
      Effect: "Allow",
      Action: ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      Resource: input.bucketArn,
    },
    {
      Sid: "ArchiveObjects",
      Effect: "Allow",
      Action: ["s3:AbortMultipartUpload", "s3:PutObject"],
      Resource: `${input.bucketArn}/*`,
    },
    keyThroughS3("FleetKeyThroughS3", ["kms:Decrypt", "kms:GenerateDataKey"], input),
  ]);
}

/** The named auditors, and nobody else. */
export function auditorTrustPolicy(input: { principalArns: string[] }): PolicyDocument {
  const principals = [...new Set(input.principalArns)].sort();
  return document([
    {
      Sid: "NamedAuditors",
      Effect: "Allow",
      Principal: { AWS: principals.length === 1 ? principals[0] : principals },
      Action: "sts:AssumeRole",
    },
  ]);
}

/** Read-only: list the archive (versions included, to see tampering) and read any version. */
export function auditorPolicy(input: KeyUseInput): PolicyDocument {
  return document([
    {
      Sid: "ListArchive",
      Effect: "Allow",
      Action: ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketVersions"],
      Resource: input.bucketArn,
    },
    {
      Sid: "ReadArchive",
      Effect: "Allow",
      Action: ["s3:GetObject", "s3:GetObjectVersion"],
      Resource: `${input.bucketArn}/*`,
    },
    keyThroughS3("DecryptThroughS3", ["kms:Decrypt"], input),
  ]);
}

export interface ArchiveBucketPolicyInput {
  bucketArn: string;
  accountId: string;
  auditorRoleArn: string;
  deliveryRoleArn: string;
}

/**
 * The bucket's own guard, whatever any identity policy grants (an administrator's `s3:*`
 * included): TLS only; object contents readable only by the auditor role; objects written,
 * overwritten or deleted only by the delivery role. The account root is exempt from both
 * as the break-glass (it can rewrite this policy anyway).
 *
 * The exceptions are `aws:PrincipalArn` conditions, not `Principal`/`NotPrincipal`: an
 * assumed-role session's PrincipalArn is its role's ARN, and a condition keeps working
 * (unlike a Principal, which S3 turns into an opaque id) if a role is ever recreated.
 *
 * s3:ListBucket is deliberately NOT denied: HeadBucket is authorised as s3:ListBucket, and
 * the Pulumi AWS provider calls HeadBucket to read the bucket on every refresh and update,
 * so denying it would lock the deployment out of its own bucket. Listing shows key names
 * (event type and date), never event contents; IAM still grants it to nobody but the
 * auditor and the delivery role.
 */
export function archiveBucketPolicy(input: ArchiveBucketPolicyInput): PolicyDocument {
  const root = arns.accountRoot(input.accountId);
  const objects = `${input.bucketArn}/*`;
  return document([
    denyInsecureTransport(input.bucketArn),
    {
      Sid: "DenyReadsExceptAuditor",
      Effect: "Deny",
      Principal: "*",
      Action: "s3:GetObject*",
      Resource: objects,
      Condition: { StringNotLike: { "aws:PrincipalArn": [input.auditorRoleArn, root] } },
    },
    {
      Sid: "DenyChangesExceptDelivery",
      Effect: "Deny",
      Principal: "*",
      Action: ["s3:DeleteObject*", "s3:PutObject*"],
      Resource: objects,
      Condition: { StringNotLike: { "aws:PrincipalArn": [input.deliveryRoleArn, root] } },
    },
  ]);
}

// --- Firehose settings (pure) ------------------------------------------------

/** The `extendedS3Configuration` of the stream, except what only exists at deploy time. */
export function deliveryS3Settings(input: { bucketArn: string; roleArn: string; kmsKeyArn: string }) {
  return {
    bucketArn: input.bucketArn,
    roleArn: input.roleArn,
    // Explicit, so Firehose writes with the fleet key even if the bucket default ever changes.
    kmsKeyArn: input.kmsKeyArn,
    prefix: EVENTS_PREFIX,
    errorOutputPrefix: ERRORS_PREFIX,
    bufferingSize: DELIVERY_BUFFER_MB,
    bufferingInterval: DELIVERY_BUFFER_SECONDS,
    compressionFormat: "GZIP",
    dynamicPartitioningConfiguration: { enabled: true, retryDuration: 300 },
    processingConfiguration: {
      enabled: true,
      processors: [
        {
          type: "MetadataExtraction",
          parameters: [
            { parameterName: "MetadataExtractionQuery", parameterValue: DETAIL_TYPE_QUERY },
            { parameterName: "JsonParsingEngine", parameterValue: "JQ-1.6" },
          ],
        },
        // One event per line (JSON Lines): EventBridge sends records without a newline.
        { type: "AppendDelimiterToRecord" },
      ],
    },
  };
}

// --- The component -------------------------------------------------------------

export class CiEventArchive extends pulumi.ComponentResource {
  public readonly bucketName: pulumi.Output<string>;
  public readonly bucketArn: pulumi.Output<string>;
  public readonly auditorRoleArn: pulumi.Output<string>;
  public readonly deliveryStreamArn: pulumi.Output<string>;
  public readonly eventBusName: pulumi.Output<string>;

  constructor(name: string, args: CiEventArchiveArgs, opts?: pulumi.ComponentResourceOptions) {
    // Checked before registering anything, so bad config leaves no half-made component.
    const problems = ciEventArchiveArgsProblems(args);
    if (problems.length > 0) throw new Error(`CiEventArchive ${name}:\n- ${problems.join("\n- ")}`);
    super("ci-fleet:audit:CiEventArchive", name, {}, opts);
    const retentionDays = args.retentionDays ?? DEFAULT_RETENTION_DAYS;
    const names = ciEventArchiveNames(args.stack, args.accountId);
    const { accountId, region } = args;

    const tags = (role: string, purpose: string) => ({ [fleetTag.stack]: args.stack, [fleetTag.role]: role, [PURPOSE_TAG]: purpose });
    const resourceTags = tags(ARCHIVE_TAG_ROLES.resource, "ci-event-archive");
    const child: pulumi.CustomResourceOptions = { parent: this };
    const childAfter = (dependsOn: pulumi.Resource[]) => pulumi.mergeOptions(child, { dependsOn });
    const json = (doc: pulumi.Output<PolicyDocument>) => doc.apply((d) => JSON.stringify(d));

    // --- The bucket.
    const { bucket, ownership, publicAccess, encryption, versioning } = encryptedBucket(
      `${name}-bucket`,
      { bucketName: names.bucket, kmsKeyArn: args.kmsKeyArn, retentionDays, tags: resourceTags },
      child,
    );

    // --- The auditor.
    const auditorRole = new aws.iam.Role(
      `${name}-auditor`,
      {
        name: names.auditorRole,
        description: `Reads the CI event archive of stack ${args.stack} (read-only)`,
        assumeRolePolicy: JSON.stringify(auditorTrustPolicy({ principalArns: args.auditorPrincipalArns })),
        maxSessionDuration: AUDITOR_SESSION_SECONDS,
        tags: tags(ARCHIVE_TAG_ROLES.auditor, "ci-event-audit"),
      },
      child,
    );
    new aws.iam.RolePolicy(
      `${name}-auditor-access`,
      {
        role: auditorRole.name,
        name: "ci-event-archive-read",
        policy: json(pulumi.all([bucket.arn, args.kmsKeyArn]).apply(([bucketArn, kmsKeyArn]) => auditorPolicy({ bucketArn, kmsKeyArn, region }))),
      },
      child,
    );

    // --- Firehose -> bucket.
    const deliveryRole = new aws.iam.Role(
      `${name}-delivery`,
      {
        name: names.deliveryRole,
        description: `Firehose writes the CI event archive of stack ${args.stack}`,
        assumeRolePolicy: JSON.stringify(deliveryTrustPolicy({ accountId })),
        tags: tags(ARCHIVE_TAG_ROLES.service, "ci-event-delivery"),
      },
      child,
    );
    const deliveryAccess = new aws.iam.RolePolicy(
      `${name}-delivery-access`,
      {
        role: deliveryRole.name,
        name: "ci-event-archive-write",
        policy: json(pulumi.all([bucket.arn, args.kmsKeyArn]).apply(([bucketArn, kmsKeyArn]) => deliveryPolicy({ bucketArn, kmsKeyArn, region }))),
      },
      child,
    );
    const bucketPolicy = new aws.s3.BucketPolicy(
      `${name}-bucket-policy`,
      {
        bucket: bucket.id,
        policy: json(
          pulumi
            .all([bucket.arn, auditorRole.arn, deliveryRole.arn])
            .apply(([bucketArn, auditorRoleArn, deliveryRoleArn]) => archiveBucketPolicy({ bucketArn, accountId, auditorRoleArn, deliveryRoleArn })),
        ),
      },
      childAfter([publicAccess, ownership]),
    );
    // Firehose checks its role and the bucket when the stream is created: everything first.
    const stream = new aws.kinesis.FirehoseDeliveryStream(
      `${name}-stream`,
      {
        name: names.deliveryStream,
        destination: "extended_s3",
        // EventBridge puts records directly; encrypt them at rest inside Firehose too.
        serverSideEncryption: { enabled: true, keyType: "AWS_OWNED_CMK" },
        extendedS3Configuration: pulumi
          .all([bucket.arn, deliveryRole.arn, args.kmsKeyArn])
          .apply(([bucketArn, roleArn, kmsKeyArn]) => deliveryS3Settings({ bucketArn, roleArn, kmsKeyArn })),
        tags: resourceTags,
      },
      childAfter([deliveryAccess, bucketPolicy, encryption, versioning]),
    );

    // --- Buildkite -> EventBridge -> Firehose.
    // A partner event bus is named after its partner event source; creating it accepts the source.
    const bus = new aws.cloudwatch.EventBus(
      `${name}-bus`,
      { name: args.partnerEventSource, eventSourceName: args.partnerEventSource, tags: resourceTags },
      child,
    );
    const rule = new aws.cloudwatch.EventRule(
      `${name}-rule`,
      {
        name: names.rule,
        description: "Every Buildkite event, to the CI event archive",
        eventBusName: bus.name,
        eventPattern: buildkiteEventPattern(),
        tags: resourceTags,
      },
      child,
    );
    const routingRole = new aws.iam.Role(
      `${name}-routing`,
      {
        name: names.routingRole,
        description: `EventBridge forwards Buildkite events of stack ${args.stack} to Firehose`,
        assumeRolePolicy: json(rule.arn.apply((ruleArn) => routingTrustPolicy({ accountId, ruleArn }))),
        tags: tags(ARCHIVE_TAG_ROLES.service, "ci-event-routing"),
      },
      child,
    );
    const routingAccess = new aws.iam.RolePolicy(
      `${name}-routing-access`,
      {
        role: routingRole.name,
        name: "ci-event-archive-put",
        policy: json(stream.arn.apply((arn) => routingPolicy({ deliveryStreamArn: arn }))),
      },
      child,
    );
    new aws.cloudwatch.EventTarget(
      `${name}-target`,
      {
        rule: rule.name,
        eventBusName: bus.name,
        targetId: "ci-event-archive",
        arn: stream.arn,
        roleArn: routingRole.arn,
      },
      childAfter([routingAccess]),
    );

    this.bucketName = bucket.bucket;
    this.bucketArn = bucket.arn;
    this.auditorRoleArn = auditorRole.arn;
    this.deliveryStreamArn = stream.arn;
    this.eventBusName = bus.name;
    this.registerOutputs({
      bucketName: this.bucketName,
      bucketArn: this.bucketArn,
      auditorRoleArn: this.auditorRoleArn,
      deliveryStreamArn: this.deliveryStreamArn,
      eventBusName: this.eventBusName,
    });
  }
}
