import * as pulumi from "@pulumi/pulumi";
import { countByType, previewStack, stackConfig } from "../support/preview";
import { runUnderMocks } from "../../tools/preview/mock-runtime";
import { readStackInput } from "../../tools/preview/stack-files";
import { createFleet } from "../../infra/program";
import { ROOT } from "../support/preview";

/**
 * The Fleet under the recording mocks: exact resources for the production fleet on both
 * providers, names from map keys, user-data secret and ignored after creation.
 */

const RUNNERS = 7; // default: 4, infra: 2, release: 1
const MACHINES = RUNNERS + 2;
const QUEUES = 3;
const DEPLOY_TARGETS = 3;
const DEPLOY_ACCOUNTS = 3;

describe("the production fleet", () => {
  test("on equinix-metal: exactly these resources", async () => {
    const run = await previewStack("production");
    const counts = countByType(run);
    expect(counts).toEqual({
      "pulumi:pulumi:Stack": 1,
      "ci-fleet:fleet:Fleet": 1,
      "ci-fleet:identity:FleetIdentity": 1,
      "ci-fleet:bootstrap:SaltKeys": 1,
      "ci-fleet:bootstrap:MinionPillars": 1,
      "ci-fleet:fleet:SaltMaster": 1,
      "ci-fleet:fleet:TeleportNode": 1,
      "ci-fleet:fleet:RunnerQueue": QUEUES,
      "ci-fleet:teleport:AuditStorage": 1,
      // the identity account's, one per deploy account
      "pulumi:providers:aws": 1 + DEPLOY_ACCOUNTS,
      "equinix-metal:index/device:Device": MACHINES,
      // Salt: the master key + one per minion; Roles Anywhere: the CA + the master's bootstrap
      // certificate (every other certificate is issued by the fleet, for a key made on the machine)
      "tls:index/privateKey:PrivateKey": 1 + MACHINES + 1 + 1,
      "tls:index/selfSignedCert:SelfSignedCert": 1,
      "tls:index/certRequest:CertRequest": 1,
      "tls:index/locallySignedCert:LocallySignedCert": 1,
      "aws:rolesanywhere/trustAnchor:TrustAnchor": 1,
      "aws:rolesanywhere/profile:Profile": QUEUES + 2,
      "aws:kms/key:Key": 1,
      "aws:kms/alias:Alias": 1,
      // agent roles, salt master, teleport, deploy roles
      // agent roles, salt master, teleport, deploy roles; the event archive's auditor, Firehose and EventBridge roles
      "aws:iam/role:Role": QUEUES + 2 + DEPLOY_TARGETS + 3,
      // issue 16: the release target's account trusts Buildkite's OIDC issuer
      "aws:iam/openIdConnectProvider:OpenIdConnectProvider": 1,
      // + Teleport's audit storage and its cluster state (two inline policies on its role)
      "aws:iam/rolePolicy:RolePolicy": QUEUES + 1 + 1 + 1 + 3,
      "aws:iam/rolePolicyAttachment:RolePolicyAttachment": 3,
      // one pillar document per machine + the master's key pairs (the Buildkite agent tokens travel
      // in their runners' pillar documents, never under a queue's path)
      "aws:ssm/parameter:Parameter": MACHINES + 1,
      "ci-fleet:fleet:SaltMasterPki": 1,
      // Stable names of the control plane: one zone, a record each for the master and Teleport
      "ci-fleet:fleet:ControlPlaneDns": 1,
      "aws:route53/zone:Zone": 1,
      "aws:route53/record:Record": 2,
      "aws:s3/bucket:Bucket": 2, // Teleport recordings, CI events
      "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": 2, // Teleport recordings, CI events
      "aws:s3/bucketOwnershipControls:BucketOwnershipControls": 2, // Teleport recordings, CI events
      "aws:s3/bucketPolicy:BucketPolicy": 2, // Teleport recordings, CI events
      "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": 2, // Teleport recordings, CI events
      "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": 2, // Teleport recordings, CI events
      "aws:s3/bucketVersioning:BucketVersioning": 2, // Teleport recordings, CI events
      "aws:dynamodb/table:Table": 2, // Teleport audit events, Teleport cluster state
      // Buildkite's events -> EventBridge -> Firehose -> S3
      "ci-fleet:audit:CiEventArchive": 1,
      "aws:cloudwatch/eventBus:EventBus": 1,
      "aws:cloudwatch/eventRule:EventRule": 1,
      "aws:cloudwatch/eventTarget:EventTarget": 1,
      "aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream": 1,
    });
  });

  test("on aws: the same machines as EC2 instances in a VPC of its own", async () => {
    // One run at a time: the mock runtime is process-global.
    const equinix = await previewStack("production");
    const aws = await previewStack("production-aws");
    const counts = countByType(aws);
    const zones = 2;
    expect(counts["aws:ec2/instance:Instance"]).toBe(MACHINES);
    expect(counts["equinix-metal:index/device:Device"]).toBeUndefined();
    expect(counts["aws:ec2/vpc:Vpc"]).toBe(1);
    expect(counts["aws:ec2/subnet:Subnet"]).toBe(2 * zones);
    expect(counts["aws:ec2/natGateway:NatGateway"]).toBe(zones);
    expect(counts["aws:ec2/securityGroup:SecurityGroup"]).toBe(3);
    expect(counts["aws:iam/instanceProfile:InstanceProfile"]).toBe(QUEUES + 2);
    expect(counts["aws:rolesanywhere/trustAnchor:TrustAnchor"]).toBeUndefined();
    // The control plane's private zone and its two records, beside the VPC.
    expect(counts["aws:route53/zone:Zone"]).toBe(1);
    expect(counts["aws:route53/record:Record"]).toBe(2);
    // Same logical machines: names differ only by the stack prefix.
    const logical = (run: typeof aws) => run.machines.map((m) => [m.hostname.slice(run.stack.length), m.role, m.queue, m.plan]);
    expect(logical(aws)).toEqual(logical(equinix));

    const instances = aws.resources.filter((r) => r.type === "aws:ec2/instance:Instance");
    for (const i of instances) {
      expect(i.inputs.metadataOptions).toEqual({ httpEndpoint: "enabled", httpTokens: "required", httpPutResponseHopLimit: 1, instanceMetadataTags: "disabled" });
      expect((i.inputs.rootBlockDevice as { encrypted: boolean }).encrypted).toBe(true);
      const isTeleport = (i.inputs.tags as Record<string, string>)["ci-fleet:role"] === "teleport";
      expect(i.inputs.associatePublicIpAddress).toBe(isTeleport);
      expect(i.outputs.publicIp === "").toBe(!isTeleport);
    }
    for (const m of aws.machines) expect(m.publicIpv4 !== undefined).toBe(m.role === "teleport");
  });

  test.each(["production", "production-aws"])("%s: every machine's user-data is secret and ignored after creation", async (stack) => {
    const run = await previewStack(stack);
    const machines = run.resources.filter((r) => r.type === "aws:ec2/instance:Instance" || r.type === "equinix-metal:index/device:Device");
    expect(machines).toHaveLength(MACHINES);
    for (const m of machines) {
      expect(m.inputs.userData ?? m.inputs.userDataBase64).toBe("[secret]");
      // EC2 also ignores the AMI: a new Canonical image never replaces a running machine.
      expect(m.options.ignoreChanges).toEqual(m.type === "aws:ec2/instance:Instance" ? ["userDataBase64", "ami"] : ["userData"]);
    }
  });

  test("user-data Outputs are Pulumi secrets", async () => {
    const input = readStackInput(ROOT, "production");
    const { result } = await runUnderMocks(
      { stack: "production", account: { accountId: "210987654321", region: "us-east-2" }, config: input.config, secretKeys: input.secretKeys },
      () => createFleet({ offlinePreview: true }),
    );
    for (const m of result.fleet.machines) {
      expect(await pulumi.isSecret(m.userData)).toBe(true);
      expect(await pulumi.isSecret(m.cloudConfig)).toBe(true);
    }
  });

  test.each(["production", "production-aws"])("%s: the master's user-data does not grow with the fleet (no minion key in it)", async (stack) => {
    const queues = stackConfig(stack)["ci-fleet:queues"] as Record<string, { runners: Record<string, unknown> }>;
    const grown = { ...queues, default: { ...queues.default, runners: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`pr-${i + 1}`, { plan: "runner" }])) } };
    const a = await previewStack(stack);
    const b = await previewStack(stack, { "ci-fleet:queues": grown });
    expect(b.machines.length).toBe(a.machines.length + 36);
    expect(b.userData[`${stack}-salt-master`]).toBe(a.userData[`${stack}-salt-master`]);
  });

  test("machine names come from map keys: reordering queues and runners renames nothing", async () => {
    const config = stackConfig("production");
    const queues = config["ci-fleet:queues"] as Record<string, { runners: Record<string, unknown> }>;
    const reversed: Record<string, unknown> = {};
    for (const q of Object.keys(queues).reverse()) {
      const runners = queues[q].runners;
      reversed[q] = { ...queues[q], runners: Object.fromEntries(Object.keys(runners).reverse().map((r) => [r, runners[r]])) };
    }
    const a = await previewStack("production");
    const b = await previewStack("production", { "ci-fleet:queues": reversed });
    const names = (run: typeof a) => run.resources.map((r) => `${r.type}::${r.name}`);
    expect(names(b)).toEqual(names(a));
    expect(JSON.stringify(b.resources)).toEqual(JSON.stringify(a.resources));
    expect(a.machines.map((m) => m.hostname)).toContain("production-default-pr-1");
  });
});
