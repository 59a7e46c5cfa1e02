import * as aws from "@pulumi/aws";
import {
  PolicyResource,
  ResourceValidationPolicy,
  StackValidationPolicy,
  validateResourceOfType,
} from "@pulumi/policy";
import { isRecord, stackOfUrn } from "./support";

/** Every runtime secret lives under this prefix (docs/contracts.md). */
export function fleetSsmPrefix(stack: string): string {
  return `/ci-fleet/${stack}/`;
}

/** `alias/aws/ssm` and friends: AWS-managed keys, whose key policy the fleet does not control. */
function isAwsManagedKeyReference(keyId: string): boolean {
  return /(^|:)alias\/aws\//.test(keyId);
}

export const ssmParameterSecureString: ResourceValidationPolicy = {
  name: "ssm-parameter-secure",
  description:
    "Every SSM parameter of the fleet is a SecureString under /ci-fleet/<stack>/, encrypted with the fleet's own KMS key (keyId set, not an AWS-managed key), with no plaintext insecureValue.",
  enforcementLevel: "mandatory",
  validateResource: validateResourceOfType(aws.ssm.Parameter, (parameter, args, reportViolation) => {
    if (parameter.type !== "SecureString") {
      reportViolation(`the parameter's type is "${String(parameter.type)}", not "SecureString"`);
    }
    if (parameter.insecureValue !== undefined) {
      reportViolation("the parameter sets insecureValue, which Pulumi stores and shows in plain text");
    }
    const keyId = parameter.keyId;
    if (keyId === undefined || keyId === "") {
      reportViolation("the parameter sets no keyId, so AWS would encrypt it with the AWS-managed key alias/aws/ssm");
    } else if (isAwsManagedKeyReference(keyId)) {
      reportViolation(`the parameter's keyId "${keyId}" is an AWS-managed key, not the fleet's KMS key`);
    }
    const stack = stackOfUrn(args.urn);
    const prefix = stack === undefined ? "/ci-fleet/<stack>/" : fleetSsmPrefix(stack);
    const name = parameter.name;
    if (name === undefined) {
      reportViolation(`the parameter sets no name, so Pulumi would auto-name it outside ${prefix}`);
    } else if (!name.startsWith(prefix)) {
      reportViolation(`the parameter's name "${name}" is not under ${prefix}`);
    }
  }),
};

function referencesOfStackKeys(resources: PolicyResource[]): Set<string> {
  const refs = new Set<string>();
  for (const r of resources) {
    if (r.type !== "aws:kms/key:Key" && r.type !== "aws:kms/alias:Alias") continue;
    for (const field of ["arn", "keyId", "id", "name"]) {
      const value: unknown = r.props[field];
      if (typeof value === "string" && value !== "") refs.add(value);
    }
  }
  return refs;
}

export const ssmParameterUsesStackKey: StackValidationPolicy = {
  name: "ssm-parameter-uses-fleet-key",
  description: "The keyId of every SSM parameter is a KMS key (or alias) that this stack manages: the fleet's own key.",
  enforcementLevel: "mandatory",
  validateStack: (args, reportViolation) => {
    const parameters = args.resources.filter((r) => r.type === "aws:ssm/parameter:Parameter");
    if (parameters.length === 0) return;
    const stackKeys = referencesOfStackKeys(args.resources);
    for (const parameter of parameters) {
      const keyId: unknown = parameter.props.keyId;
      if (typeof keyId !== "string" || keyId === "") continue; // ssm-parameter-secure reports it
      if (!stackKeys.has(keyId)) {
        reportViolation(`parameter "${parameter.name}" uses keyId "${keyId}", which is no KMS key or alias of this stack`, parameter.urn);
      }
    }
  },
};

export const kmsKeyRotation: ResourceValidationPolicy = {
  name: "kms-key-rotation",
  description: "Every KMS key of the fleet has automatic key rotation enabled.",
  enforcementLevel: "mandatory",
  validateResource: validateResourceOfType(aws.kms.Key, (key, _args, reportViolation) => {
    if (key.enableKeyRotation !== true) {
      reportViolation(`the key's enableKeyRotation is ${String(key.enableKeyRotation)}, not true`);
    }
  }),
};

// --- S3 ---------------------------------------------------------------------

const BUCKET_TYPES = ["aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"];
const VERSIONING_TYPES = ["aws:s3/bucketVersioning:BucketVersioning", "aws:s3/bucketVersioningV2:BucketVersioningV2"];
const ENCRYPTION_TYPES = [
  "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
  "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
];
const PUBLIC_ACCESS_BLOCK_TYPE = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock";
const PUBLIC_ACCESS_FLAGS = ["blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"];

function asList(value: unknown): unknown[] {
  if (Array.isArray(value)) return value;
  return value === undefined || value === null ? [] : [value];
}

/** SSE-KMS with a customer key: `rules[].applyServerSideEncryptionByDefault` (or the bucket's inline `rule`). */
function encryptsWithKms(configuration: unknown): boolean {
  if (!isRecord(configuration)) return false;
  const rules = [...asList(configuration.rules), ...asList(configuration.rule)];
  return rules.some((rule) => {
    if (!isRecord(rule)) return false;
    const byDefault = asList(rule.applyServerSideEncryptionByDefault)[0];
    return (
      isRecord(byDefault) &&
      (byDefault.sseAlgorithm === "aws:kms" || byDefault.sseAlgorithm === "aws:kms:dsse") &&
      typeof byDefault.kmsMasterKeyId === "string" &&
      byDefault.kmsMasterKeyId !== ""
    );
  });
}

function bucketNames(bucket: PolicyResource): string[] {
  return [bucket.props.bucket, bucket.props.id].filter((v): v is string => typeof v === "string" && v !== "");
}

export const s3BucketHardened: StackValidationPolicy = {
  name: "s3-bucket-hardened",
  description:
    "Every S3 bucket of the fleet (Teleport audit, archives) blocks public access (all four settings), is versioned, and is encrypted with SSE-KMS.",
  enforcementLevel: "mandatory",
  validateStack: (args, reportViolation) => {
    const of = (types: string[]) => args.resources.filter((r) => types.includes(r.type));
    for (const bucket of of(BUCKET_TYPES)) {
      const names = bucketNames(bucket);
      const about = (r: PolicyResource) => names.includes(r.props.bucket as string);
      const label = `bucket "${names[0] ?? bucket.name}"`;

      const blocks = of([PUBLIC_ACCESS_BLOCK_TYPE]).filter(about);
      if (!blocks.some((b) => PUBLIC_ACCESS_FLAGS.every((flag) => b.props[flag] === true))) {
        reportViolation(`${label} has no public access block with ${PUBLIC_ACCESS_FLAGS.join(", ")} all true`, bucket.urn);
      }

      const inlineVersioning = asList(bucket.props.versioning)[0];
      const versioned =
        (isRecord(inlineVersioning) && inlineVersioning.enabled === true) ||
        of(VERSIONING_TYPES)
          .filter(about)
          .some((v) => isRecord(v.props.versioningConfiguration) && v.props.versioningConfiguration.status === "Enabled");
      if (!versioned) reportViolation(`${label} is not versioned (no versioning configuration with status "Enabled")`, bucket.urn);

      const encrypted =
        encryptsWithKms(asList(bucket.props.serverSideEncryptionConfiguration)[0]) ||
        of(ENCRYPTION_TYPES).filter(about).some((e) => encryptsWithKms(e.props));
      if (!encrypted) reportViolation(`${label} is not encrypted with SSE-KMS (aws:kms with a kmsMasterKeyId)`, bucket.urn);
    }
  },
};

export const storagePolicies: (ResourceValidationPolicy | StackValidationPolicy)[] = [
  ssmParameterSecureString,
  ssmParameterUsesStackKey,
  kmsKeyRotation,
  s3BucketHardened,
];
