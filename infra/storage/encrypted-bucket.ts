import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import type { PolicyStatement } from "../identity/policies";

/** Unfinished multipart uploads are cleaned up after this many days. */
export const ABORT_INCOMPLETE_UPLOAD_DAYS = 7;

export interface EncryptedBucketArgs {
  bucketName: string;
  /** The fleet KMS key. */
  kmsKeyArn: pulumi.Input<string>;
  /** Days an object (and an overwritten or deleted version) is kept. */
  retentionDays: number;
  tags: Record<string, string>;
}

export interface EncryptedBucket {
  bucket: aws.s3.Bucket;
  ownership: aws.s3.BucketOwnershipControls;
  publicAccess: aws.s3.BucketPublicAccessBlock;
  versioning: aws.s3.BucketVersioning;
  encryption: aws.s3.BucketServerSideEncryptionConfiguration;
}

/**
 * An S3 bucket as every ci-fleet bucket must be (and the policy pack checks): SSE-KMS with
 * the fleet key, versioned, no public access, ACLs off, expiring after the retention
 * (noncurrent versions too, so a deleted object stays recoverable as long as any is kept).
 * Children are named `<name>-<part>`. The caller writes the bucket policy, after
 * `publicAccess` and `ownership`, because each bucket's readers differ.
 */
export function encryptedBucket(name: string, args: EncryptedBucketArgs, opts: pulumi.CustomResourceOptions): EncryptedBucket {
  const bucket = new aws.s3.Bucket(name, { bucket: args.bucketName, forceDestroy: false, tags: args.tags }, opts);
  const ownership = new aws.s3.BucketOwnershipControls(`${name}-ownership`, { bucket: bucket.id, rule: { objectOwnership: "BucketOwnerEnforced" } }, opts);
  const publicAccess = new aws.s3.BucketPublicAccessBlock(
    `${name}-public-access`,
    { bucket: bucket.id, blockPublicAcls: true, blockPublicPolicy: true, ignorePublicAcls: true, restrictPublicBuckets: true },
    opts,
  );
  const versioning = new aws.s3.BucketVersioning(`${name}-versioning`, { bucket: bucket.id, versioningConfiguration: { status: "Enabled" } }, opts);
  const encryption = new aws.s3.BucketServerSideEncryptionConfiguration(
    `${name}-encryption`,
    {
      bucket: bucket.id,
      // Bucket key on: one KMS call per bucket key instead of one per object.
      rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "aws:kms", kmsMasterKeyId: args.kmsKeyArn }, bucketKeyEnabled: true }],
    },
    opts,
  );
  new aws.s3.BucketLifecycleConfiguration(
    `${name}-retention`,
    {
      bucket: bucket.id,
      rules: [
        {
          id: "expire-after-retention",
          status: "Enabled",
          filter: { prefix: "" },
          expiration: { days: args.retentionDays },
          noncurrentVersionExpiration: { noncurrentDays: args.retentionDays },
          abortIncompleteMultipartUpload: { daysAfterInitiation: ABORT_INCOMPLETE_UPLOAD_DAYS },
        },
      ],
    },
    pulumi.mergeOptions(opts, { dependsOn: [versioning] }),
  );
  return { bucket, ownership, publicAccess, versioning, encryption };
}

/** The statement every fleet bucket policy starts with: nothing reaches the bucket over plain HTTP. */
export function denyInsecureTransport(bucketArn: string): PolicyStatement {
  return {
    Sid: "DenyInsecureTransport",
    Effect: "Deny",
    Principal: "*",
    Action: "s3:*",
    Resource: [bucketArn, `${bucketArn}/*`],
    Condition: { Bool: { "aws:SecureTransport": "false" } },
  };
}
