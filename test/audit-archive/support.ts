import * as pulumi from "@pulumi/pulumi";
import { CapturedResource, RecordingMocks, runUnderMocks } from "../../tools/preview/mock-runtime";
import { CiEventArchive, CiEventArchiveArgs } from "../../infra/audit/event-archive";

export const ACCOUNT = "123456789012";
export const OTHER_ACCOUNT = "210987654321";
export const REGION = "eu-west-1";
export const STACK = "production";
export const KMS_KEY_ARN = `arn:aws:kms:${REGION}:${ACCOUNT}:key/0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9`;
export const PARTNER_SOURCE = "aws.partner/buildkite.com/example-org/8f3c1e2a-5b6d-4e7f-9a0b-1c2d3e4f5a6b";
/** An Identity Center permission-set role: how a human auditor arrives. */
export const AUDITOR_PRINCIPAL = `arn:aws:iam::${ACCOUNT}:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Auditor_0123456789abcdef`;

export const baseArgs = (): CiEventArchiveArgs => ({
  stack: STACK,
  accountId: ACCOUNT,
  region: REGION,
  partnerEventSource: PARTNER_SOURCE,
  kmsKeyArn: KMS_KEY_ARN,
  auditorPrincipalArns: [AUDITOR_PRINCIPAL],
});

export interface ArchiveCapture {
  archive: CiEventArchive;
  mocks: RecordingMocks;
  resources: CapturedResource[];
}

/** Runs the component alone under the shared recording mocks (every data-source call refused). */
export async function captureArchive(args: CiEventArchiveArgs = baseArgs(), name = "ci-events"): Promise<ArchiveCapture> {
  // Pulumi records a stack trace per promise; under jest's source maps that dominates the run.
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    const { result, mocks } = await runUnderMocks(
      { stack: args.stack, account: { accountId: args.accountId, region: args.region } },
      () => new CiEventArchive(name, args),
    );
    return { archive: result, mocks, resources: mocks.resources };
  } finally {
    Error.stackTraceLimit = limit;
  }
}

export function only(resources: CapturedResource[], type: string, name?: string): CapturedResource {
  const found = resources.filter((r) => r.type === type && (name === undefined || r.name === name));
  if (found.length !== 1) throw new Error(`expected exactly one ${type}${name ? ` named ${name}` : ""}, found ${found.length}`);
  return found[0];
}

export const parsed = (value: unknown): unknown => (typeof value === "string" ? JSON.parse(value) : value);

export function settle<T>(output: pulumi.Output<T>): Promise<T> {
  return new Promise<T>((resolve) => output.apply(resolve));
}

export const T = {
  component: "ci-fleet:audit:CiEventArchive",
  bus: "aws:cloudwatch/eventBus:EventBus",
  rule: "aws:cloudwatch/eventRule:EventRule",
  target: "aws:cloudwatch/eventTarget:EventTarget",
  stream: "aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream",
  role: "aws:iam/role:Role",
  rolePolicy: "aws:iam/rolePolicy:RolePolicy",
  bucket: "aws:s3/bucket:Bucket",
  ownership: "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
  publicAccess: "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
  versioning: "aws:s3/bucketVersioning:BucketVersioning",
  encryption: "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
  lifecycle: "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
  bucketPolicy: "aws:s3/bucketPolicy:BucketPolicy",
} as const;
