import { checkCapturedResources } from "../../policy/offline";
import {
  CiEventArchive,
  CiEventArchiveArgs,
  DEFAULT_RETENTION_DAYS,
  archiveBucketPolicy,
  auditorPolicy,
  auditorTrustPolicy,
  buildkiteEventPattern,
  ciEventArchiveArgsProblems,
  deliveryPolicy,
  deliveryS3Settings,
  deliveryTrustPolicy,
  routingPolicy,
  routingTrustPolicy,
} from "../../infra/audit/event-archive";
import { CapturedResource } from "../../tools/preview/mock-runtime";
import {
  ACCOUNT,
  ArchiveCapture,
  AUDITOR_PRINCIPAL,
  KMS_KEY_ARN,
  PARTNER_SOURCE,
  REGION,
  STACK,
  T,
  baseArgs,
  captureArchive,
  only,
  parsed,
  settle,
} from "./support";

const BUCKET = `ci-fleet-${STACK}-ci-events-${ACCOUNT}`;
const BUCKET_ARN = `arn:aws:s3:::${BUCKET}`;
const AUDITOR_ROLE_ARN = `arn:aws:iam::${ACCOUNT}:role/ci-fleet-${STACK}-ci-event-auditor`;
const DELIVERY_ROLE_ARN = `arn:aws:iam::${ACCOUNT}:role/ci-fleet-${STACK}-ci-event-delivery`;
const STREAM_ARN = `arn:aws:firehose:${REGION}:${ACCOUNT}:deliverystream/ci-fleet-${STACK}-ci-events`;
const RULE_ARN = `arn:aws:events:${REGION}:${ACCOUNT}:rule/${PARTNER_SOURCE}/ci-fleet-${STACK}-buildkite-events`;
const S3_VIA = `s3.${REGION}.amazonaws.com`;

let capture: ArchiveCapture;
let resources: CapturedResource[];
beforeAll(async () => {
  capture = await captureArchive();
  resources = capture.resources.filter((r) => r.type !== "pulumi:pulumi:Stack");
});

const role = (name: string) => only(resources, T.role, `ci-events-${name}`);
const rolePolicyOf = (name: string) => only(resources, T.rolePolicy, `ci-events-${name}-access`);

describe("what CiEventArchive registers", () => {
  test("exactly 17 resources under one component, each named from the component's name", () => {
    expect(resources.map((r) => `${r.type} ${r.name}`).sort()).toEqual(
      [
        `${T.component} ci-events`,
        `${T.bus} ci-events-bus`,
        `${T.rule} ci-events-rule`,
        `${T.target} ci-events-target`,
        `${T.stream} ci-events-stream`,
        `${T.role} ci-events-auditor`,
        `${T.role} ci-events-delivery`,
        `${T.role} ci-events-routing`,
        `${T.rolePolicy} ci-events-auditor-access`,
        `${T.rolePolicy} ci-events-delivery-access`,
        `${T.rolePolicy} ci-events-routing-access`,
        `${T.bucket} ci-events-bucket`,
        `${T.ownership} ci-events-bucket-ownership`,
        `${T.publicAccess} ci-events-bucket-public-access`,
        `${T.versioning} ci-events-bucket-versioning`,
        `${T.encryption} ci-events-bucket-encryption`,
        `${T.lifecycle} ci-events-bucket-retention`,
        `${T.bucketPolicy} ci-events-bucket-policy`,
      ].sort(),
    );
    const children = resources.filter((r) => r.type !== T.component);
    expect(children).toHaveLength(17);
    expect(children.every((r) => r.parent === "ci-events")).toBe(true);
  });

  test("another component name renames every child, not the AWS names", async () => {
    const other = await captureArchive(baseArgs(), "archive-b");
    const names = other.resources.filter((r) => r.type !== "pulumi:pulumi:Stack" && r.type !== T.component).map((r) => r.name);
    expect(names).toHaveLength(17);
    expect(names.every((n) => n.startsWith("archive-b-"))).toBe(true);
    expect(only(other.resources, T.bucket).inputs.bucket).toBe(BUCKET);
  });

  test("the component's outputs", async () => {
    const { archive } = capture;
    expect(await settle(archive.bucketName)).toBe(BUCKET);
    expect(await settle(archive.bucketArn)).toBe(BUCKET_ARN);
    expect(await settle(archive.auditorRoleArn)).toBe(AUDITOR_ROLE_ARN);
    expect(await settle(archive.deliveryStreamArn)).toBe(STREAM_ARN);
    expect(await settle(archive.eventBusName)).toBe(PARTNER_SOURCE);
  });

  test("every taggable resource carries the stack and its role in the fleet", () => {
    const taggable = [T.bus, T.rule, T.stream, T.role, T.bucket];
    const tagged = resources.filter((r) => taggable.includes(r.type as (typeof taggable)[number]));
    expect(tagged).toHaveLength(7);
    expect(Object.fromEntries(tagged.map((r) => [r.name, r.inputs.tags]))).toEqual({
      "ci-events-bus": { "ci-fleet:stack": STACK, "ci-fleet:role": "ci-event-archive", "ci-fleet:purpose": "ci-event-archive" },
      "ci-events-rule": { "ci-fleet:stack": STACK, "ci-fleet:role": "ci-event-archive", "ci-fleet:purpose": "ci-event-archive" },
      "ci-events-stream": { "ci-fleet:stack": STACK, "ci-fleet:role": "ci-event-archive", "ci-fleet:purpose": "ci-event-archive" },
      "ci-events-bucket": { "ci-fleet:stack": STACK, "ci-fleet:role": "ci-event-archive", "ci-fleet:purpose": "ci-event-archive" },
      "ci-events-auditor": { "ci-fleet:stack": STACK, "ci-fleet:role": "service", "ci-fleet:purpose": "ci-event-audit" },
      "ci-events-delivery": { "ci-fleet:stack": STACK, "ci-fleet:role": "service", "ci-fleet:purpose": "ci-event-delivery" },
      "ci-events-routing": { "ci-fleet:stack": STACK, "ci-fleet:role": "service", "ci-fleet:purpose": "ci-event-routing" },
    });
  });
});

describe("EventBridge: partner bus, rule, target", () => {
  test("the partner event bus is named after the partner event source", () => {
    const bus = only(resources, T.bus);
    expect(bus.inputs.name).toBe(PARTNER_SOURCE);
    expect(bus.inputs.eventSourceName).toBe(PARTNER_SOURCE);
  });

  test("the rule lives on that bus and matches every Buildkite source", () => {
    const rule = only(resources, T.rule);
    expect(rule.inputs.eventBusName).toBe(PARTNER_SOURCE);
    expect(rule.inputs.name).toBe(`ci-fleet-${STACK}-buildkite-events`);
    expect(JSON.parse(rule.inputs.eventPattern as string)).toEqual({ source: [{ prefix: "aws.partner/buildkite.com" }] });
    expect(rule.outputs.arn).toBe(RULE_ARN);
  });

  test("the target sends the rule's events to the stream with the routing role", () => {
    const target = only(resources, T.target);
    expect(target.inputs).toEqual({
      rule: `ci-fleet-${STACK}-buildkite-events`,
      eventBusName: PARTNER_SOURCE,
      targetId: "ci-event-archive",
      arn: STREAM_ARN,
      roleArn: `arn:aws:iam::${ACCOUNT}:role/ci-fleet-${STACK}-ci-event-routing`,
    });
  });
});

describe("the exact IAM documents", () => {
  test("routing role: trusted by EventBridge for this rule only; may put records into this stream only", () => {
    expect(parsed(role("routing").inputs.assumeRolePolicy)).toEqual({
      Version: "2012-10-17",
      Statement: [
        {
          Sid: "EventBridgeForTheArchiveRule",
          Effect: "Allow",
          Principal: { Service: "events.amazonaws.com" },
          Action: "sts:AssumeRole",
          Condition: { StringEquals: { "aws:SourceAccount": ACCOUNT, "aws:SourceArn": RULE_ARN } },
        },
      ],
    });
    expect(rolePolicyOf("routing").inputs.role).toBe(`ci-fleet-${STACK}-ci-event-routing`);
    expect(parsed(rolePolicyOf("routing").inputs.policy)).toEqual({
      Version: "2012-10-17",
      Statement: [{ Sid: "PutIntoTheArchiveStream", Effect: "Allow", Action: ["firehose:PutRecord", "firehose:PutRecordBatch"], Resource: STREAM_ARN }],
    });
  });

  test("delivery role: trusted by Firehose of this account; writes this bucket, uses the key only through S3 for it", () => {
    expect(parsed(role("delivery").inputs.assumeRolePolicy)).toEqual({
      Version: "2012-10-17",
      Statement: [
        {
          Sid: "FirehoseOfThisAccount",
          Effect: "Allow",
          Principal: { Service: "firehose.amazonaws.com" },
          Action: "sts:AssumeRole",
          Condition: { StringEquals: { "aws:SourceAccount": ACCOUNT } },
        },
      ],
    });
    expect(rolePolicyOf("delivery").inputs.role).toBe(`ci-fleet-${STACK}-ci-event-delivery`);
    expect(parsed(rolePolicyOf("delivery").inputs.policy)).toEqual({
      Version: "2012-10-17",
      Statement: [
        { Sid: "ArchiveBucket", Effect: "Allow", Action: ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"], Resource: BUCKET_ARN },
        { Sid: "ArchiveObjects", Effect: "Allow", Action: ["s3:AbortMultipartUpload", "s3:PutObject"], Resource: `${BUCKET_ARN}/*` },
        {
          Sid: "FleetKeyThroughS3",
          Effect: "Allow",
          Action: ["kms:Decrypt", "kms:GenerateDataKey"],
          Resource: KMS_KEY_ARN,
          Condition: {
            StringEquals: { "kms:ViaService": S3_VIA },
            StringLike: { "kms:EncryptionContext:aws:s3:arn": [BUCKET_ARN, `${BUCKET_ARN}/*`] },
          },
        },
      ],
    });
  });

  test("auditor role: trusted by the named auditors only, one-hour sessions, read-only", () => {
    const auditor = role("auditor");
    expect(auditor.inputs.name).toBe(`ci-fleet-${STACK}-ci-event-auditor`);
    expect(auditor.inputs.maxSessionDuration).toBe(3600);
    expect(parsed(auditor.inputs.assumeRolePolicy)).toEqual({
      Version: "2012-10-17",
      Statement: [{ Sid: "NamedAuditors", Effect: "Allow", Principal: { AWS: AUDITOR_PRINCIPAL }, Action: "sts:AssumeRole" }],
    });
    expect(rolePolicyOf("auditor").inputs.role).toBe(`ci-fleet-${STACK}-ci-event-auditor`);
    expect(parsed(rolePolicyOf("auditor").inputs.policy)).toEqual({
      Version: "2012-10-17",
      Statement: [
        { Sid: "ListArchive", Effect: "Allow", Action: ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketVersions"], Resource: BUCKET_ARN },
        { Sid: "ReadArchive", Effect: "Allow", Action: ["s3:GetObject", "s3:GetObjectVersion"], Resource: `${BUCKET_ARN}/*` },
        {
          Sid: "DecryptThroughS3",
          Effect: "Allow",
          Action: ["kms:Decrypt"],
          Resource: KMS_KEY_ARN,
          Condition: {
            StringEquals: { "kms:ViaService": S3_VIA },
            StringLike: { "kms:EncryptionContext:aws:s3:arn": [BUCKET_ARN, `${BUCKET_ARN}/*`] },
          },
        },
      ],
    });
  });

  test("several auditors are listed once each, sorted (reordering config changes nothing)", () => {
    const a = `arn:aws:iam::${ACCOUNT}:role/auditor-a`;
    const b = `arn:aws:iam::210987654321:user/auditor-b`;
    const doc = auditorTrustPolicy({ principalArns: [b, a, b] });
    expect(doc.Statement[0].Principal).toEqual({ AWS: [a, b] });
    expect(auditorTrustPolicy({ principalArns: [a, b] })).toEqual(doc);
  });

  test("the bucket policy: TLS only, reads only by the auditor, changes only by the delivery role, root as break-glass", () => {
    expect(parsed(only(resources, T.bucketPolicy).inputs.policy)).toEqual({
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
        {
          Sid: "DenyReadsExceptAuditor",
          Effect: "Deny",
          Principal: "*",
          Action: "s3:GetObject*",
          Resource: `${BUCKET_ARN}/*`,
          Condition: { StringNotLike: { "aws:PrincipalArn": [AUDITOR_ROLE_ARN, `arn:aws:iam::${ACCOUNT}:root`] } },
        },
        {
          Sid: "DenyChangesExceptDelivery",
          Effect: "Deny",
          Principal: "*",
          Action: ["s3:DeleteObject*", "s3:PutObject*"],
          Resource: `${BUCKET_ARN}/*`,
          Condition: { StringNotLike: { "aws:PrincipalArn": [DELIVERY_ROLE_ARN, `arn:aws:iam::${ACCOUNT}:root`] } },
        },
      ],
    });
  });

  test("rendered documents (snapshot)", () => {
    const keyUse = { bucketArn: BUCKET_ARN, kmsKeyArn: KMS_KEY_ARN, region: REGION };
    const rendered = {
      eventPattern: buildkiteEventPattern(),
      routingTrust: routingTrustPolicy({ accountId: ACCOUNT, ruleArn: RULE_ARN }),
      routing: routingPolicy({ deliveryStreamArn: STREAM_ARN }),
      deliveryTrust: deliveryTrustPolicy({ accountId: ACCOUNT }),
      delivery: deliveryPolicy(keyUse),
      auditorTrust: auditorTrustPolicy({ principalArns: [AUDITOR_PRINCIPAL] }),
      auditor: auditorPolicy(keyUse),
      bucket: archiveBucketPolicy({ bucketArn: BUCKET_ARN, accountId: ACCOUNT, auditorRoleArn: AUDITOR_ROLE_ARN, deliveryRoleArn: DELIVERY_ROLE_ARN }),
      s3: deliveryS3Settings({ bucketArn: BUCKET_ARN, roleArn: DELIVERY_ROLE_ARN, kmsKeyArn: KMS_KEY_ARN }),
    };
    expect(JSON.stringify(rendered, null, 2)).toMatchSnapshot();
  });
});

describe("the bucket", () => {
  test("valid name, never force-destroyed", () => {
    const bucket = only(resources, T.bucket);
    expect(bucket.inputs.bucket).toBe(BUCKET);
    expect(BUCKET).toMatch(/^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/);
    expect(bucket.inputs.forceDestroy).toBe(false);
  });

  test("SSE-KMS with the fleet key and a bucket key; versioned; public access blocked; owner enforced", () => {
    const id = only(resources, T.bucket).outputs.id;
    expect(only(resources, T.encryption).inputs).toEqual({
      bucket: id,
      rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "aws:kms", kmsMasterKeyId: KMS_KEY_ARN }, bucketKeyEnabled: true }],
    });
    expect(only(resources, T.versioning).inputs).toEqual({ bucket: id, versioningConfiguration: { status: "Enabled" } });
    expect(only(resources, T.publicAccess).inputs).toEqual({
      bucket: id,
      blockPublicAcls: true,
      blockPublicPolicy: true,
      ignorePublicAcls: true,
      restrictPublicBuckets: true,
    });
    expect(only(resources, T.ownership).inputs).toEqual({ bucket: id, rule: { objectOwnership: "BucketOwnerEnforced" } });
    expect(only(resources, T.bucketPolicy).inputs.bucket).toBe(id);
  });

  test(`events expire after ${DEFAULT_RETENTION_DAYS} days by default, noncurrent versions too`, () => {
    expect(only(resources, T.lifecycle).inputs.rules).toEqual([
      {
        id: "expire-after-retention",
        status: "Enabled",
        filter: { prefix: "" },
        expiration: { days: 400 },
        noncurrentVersionExpiration: { noncurrentDays: 400 },
        abortIncompleteMultipartUpload: { daysAfterInitiation: 7 },
      },
    ]);
  });

  test("retentionDays sets both expiries", async () => {
    const c = await captureArchive({ ...baseArgs(), retentionDays: 30 });
    const [rule] = only(c.resources, T.lifecycle).inputs.rules as Record<string, unknown>[];
    expect(rule.expiration).toEqual({ days: 30 });
    expect(rule.noncurrentVersionExpiration).toEqual({ noncurrentDays: 30 });
  });
});

describe("the Firehose stream", () => {
  test("extended_s3 with dynamic partitioning by detail-type, an error prefix, a 64 MB buffer and the fleet key", () => {
    const stream = only(resources, T.stream);
    expect(stream.inputs.name).toBe(`ci-fleet-${STACK}-ci-events`);
    expect(stream.inputs.destination).toBe("extended_s3");
    expect(stream.inputs.serverSideEncryption).toEqual({ enabled: true, keyType: "AWS_OWNED_CMK" });
    const s3 = stream.inputs.extendedS3Configuration as Record<string, unknown>;
    expect(s3).toEqual({
      bucketArn: BUCKET_ARN,
      roleArn: DELIVERY_ROLE_ARN,
      kmsKeyArn: KMS_KEY_ARN,
      prefix: "events/detail-type=!{partitionKeyFromQuery:detail_type}/!{timestamp:yyyy/MM/dd}/",
      errorOutputPrefix: "errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/",
      bufferingSize: 64,
      bufferingInterval: 300,
      compressionFormat: "GZIP",
      dynamicPartitioningConfiguration: { enabled: true, retryDuration: 300 },
      processingConfiguration: {
        enabled: true,
        processors: [
          {
            type: "MetadataExtraction",
            parameters: [
              { parameterName: "MetadataExtractionQuery", parameterValue: '{detail_type: .["detail-type"]}' },
              { parameterName: "JsonParsingEngine", parameterValue: "JQ-1.6" },
            ],
          },
          { type: "AppendDelimiterToRecord" },
        ],
      },
    });
    expect(s3.bufferingSize as number).toBeGreaterThanOrEqual(64);
  });

  test("every partition key the prefix uses is extracted by the query", () => {
    const s3 = deliveryS3Settings({ bucketArn: BUCKET_ARN, roleArn: DELIVERY_ROLE_ARN, kmsKeyArn: KMS_KEY_ARN });
    const used = [...s3.prefix.matchAll(/!\{partitionKeyFromQuery:([a-z_]+)\}/g)].map((m) => m[1]);
    const query = s3.processingConfiguration.processors[0].parameters?.[0].parameterValue ?? "";
    const extracted = [...query.matchAll(/([a-z_]+):/g)].map((m) => m[1]);
    expect(used).toEqual(["detail_type"]);
    expect(extracted).toEqual(used);
  });
});

describe("the policy pack, run offline over the capture", () => {
  test("no violation at all", () => {
    expect(checkCapturedResources(capture.resources, STACK)).toEqual([]);
  });

  /** The same run catches each way the archive could go wrong: the check above can fail. */
  type Props = Record<string, unknown>;
  const mutate = (type: string, name: string, change: (props: Props) => void) => {
    const copy = structuredClone(capture.resources);
    const target = copy.find((r) => r.type === type && r.name === name);
    if (!target) throw new Error(`no ${type} ${name}`);
    // Stack policies read outputs over inputs: change both, as a real deployment would.
    change(target.inputs);
    change(target.outputs);
    return checkCapturedResources(copy, STACK).filter((v) => v.enforcement === "mandatory").map((v) => `${v.policy} ${v.resource}`);
  };

  test.each([
    [
      "an auditor trust of the account root",
      T.role,
      "ci-events-auditor",
      (r: Props) => {
        r.assumeRolePolicy = JSON.stringify(auditorTrustPolicy({ principalArns: [`arn:aws:iam::${ACCOUNT}:root`] }));
      },
      "iam-trust-no-wildcard-or-root ci-events-auditor",
    ],
    [
      'a role tagged "auditor"',
      T.role,
      "ci-events-auditor",
      (r: Props) => {
        r.tags = { ...(r.tags as object), "ci-fleet:role": "auditor" };
      },
      "iam-role-kind-tagged ci-events-auditor",
    ],
    [
      "an unversioned bucket",
      T.versioning,
      "ci-events-bucket-versioning",
      (r: Props) => {
        r.versioningConfiguration = { status: "Suspended" };
      },
      "s3-bucket-hardened ci-events-bucket",
    ],
  ])("%s is a mandatory violation", (_what, type, name, change, expected) => {
    expect(mutate(type, name, change)).toEqual([expected]);
  });
});

describe("arguments", () => {
  test("the base arguments have no problem", () => {
    expect(ciEventArchiveArgsProblems(baseArgs())).toEqual([]);
  });

  test("an upper-case stack is refused, with the bucket name it would give", () => {
    expect(ciEventArchiveArgsProblems({ ...baseArgs(), stack: "Prod" })).toEqual([
      'stack "Prod" is not a lower-case DNS label',
      `bucket name "ci-fleet-Prod-ci-events-${ACCOUNT}" is not a valid S3 bucket name (3-63 characters)`,
    ]);
  });

  test.each<[string, Partial<CiEventArchiveArgs>, string]>([
    ["a short account id", { accountId: "12345" }, 'accountId "12345" is not a 12-digit AWS account id'],
    ["a made-up region", { region: "moon" }, 'region "moon" is not an AWS region name'],
    ["another partner's source", { partnerEventSource: "aws.partner/example.com/x/y" }, 'partnerEventSource "aws.partner/example.com/x/y" is not a Buildkite partner event source (aws.partner/buildkite.com/<org>/<id>)'],
    ["a source with a space", { partnerEventSource: "aws.partner/buildkite.com/my org/1" }, 'partnerEventSource "aws.partner/buildkite.com/my org/1" is not a Buildkite partner event source (aws.partner/buildkite.com/<org>/<id>)'],
    ["zero retention", { retentionDays: 0 }, "retentionDays must be a positive whole number, got 0"],
    ["fractional retention", { retentionDays: 1.5 }, "retentionDays must be a positive whole number, got 1.5"],
    ["no auditor", { auditorPrincipalArns: [] }, "auditorPrincipalArns is empty: nobody could read the archive"],
    ["the account root as auditor", { auditorPrincipalArns: [`arn:aws:iam::${ACCOUNT}:root`] }, `auditor principal "arn:aws:iam::${ACCOUNT}:root" is not a named IAM role or user ARN (no account root, no wildcard)`],
    ["a wildcard auditor", { auditorPrincipalArns: [`arn:aws:iam::${ACCOUNT}:role/*`] }, `auditor principal "arn:aws:iam::${ACCOUNT}:role/*" is not a named IAM role or user ARN (no account root, no wildcard)`],
    ["a bare account id as auditor", { auditorPrincipalArns: [ACCOUNT] }, `auditor principal "${ACCOUNT}" is not a named IAM role or user ARN (no account root, no wildcard)`],
  ])("%s is refused", (_what, change, problem) => {
    expect(ciEventArchiveArgsProblems({ ...baseArgs(), ...change })).toEqual([problem]);
  });

  test("a stack name too long for the bucket and role names is refused with every problem", () => {
    const stack = "a".repeat(40);
    expect(ciEventArchiveArgsProblems({ ...baseArgs(), stack })).toEqual([
      `bucket name "ci-fleet-${stack}-ci-events-${ACCOUNT}" is not a valid S3 bucket name (3-63 characters)`,
      `EventBridge rule name "ci-fleet-${stack}-buildkite-events" is 66 characters or has characters AWS refuses; at most 64 of A-Z a-z 0-9 _ . -`,
      `role name "ci-fleet-${stack}-ci-event-auditor" is 66 characters; IAM allows at most 64`,
      `role name "ci-fleet-${stack}-ci-event-delivery" is 67 characters; IAM allows at most 64`,
      `role name "ci-fleet-${stack}-ci-event-routing" is 66 characters; IAM allows at most 64`,
    ]);
  });

  test("the component throws every problem before registering anything", () => {
    // Outside any Pulumi runtime: a registration attempt would fail differently.
    expect(() => new CiEventArchive("ci-events", { ...baseArgs(), accountId: "x", retentionDays: -1 })).toThrow(
      'CiEventArchive ci-events:\n- accountId "x" is not a 12-digit AWS account id\n- retentionDays must be a positive whole number, got -1',
    );
  });
});
