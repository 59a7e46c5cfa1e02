import {
  IAM_INLINE_POLICY_MAX_CHARS,
  KMS_KEY_POLICY_MAX_CHARS,
  PolicyDocument,
  agentPermissionsPolicy,
  deployRoleTrustPolicy,
  ec2TrustPolicy,
  kmsKeyPolicy,
  policyJson,
  rolesAnywhereTrustPolicy,
  saltMasterPermissionsPolicy,
} from "../../infra/identity/policies";
import { agentRoleName, queueNameProblems, relativeParameterPathProblem, sidSuffix } from "../../infra/identity/names";

const scope = { accountId: "111111111111", region: "us-east-1" };
const KEY = "arn:aws:kms:us-east-1:111111111111:key/0b1c2d3e-0000-4000-8000-000000000001";
const agentArn = (queue: string) => `arn:aws:iam::111111111111:role/ci-fleet-production-agent-${queue}`;
const TRUST_ANCHOR = "arn:aws:rolesanywhere:us-east-1:111111111111:trust-anchor/6f1e2d3c-0000-4000-8000-000000000002";

const pretty = (doc: PolicyDocument) => JSON.stringify(doc, null, 2);
const sids = (doc: PolicyDocument) => doc.Statement.map((s) => s.Sid);

describe("agent role permissions", () => {
  test("a queue without deploy targets has no sts statement at all", () => {
    const doc = agentPermissionsPolicy({ ...scope, stack: "production", queue: "default", kmsKeyArn: KEY, deployRoleArns: [] });
    expect(doc).toEqual({
      Version: "2012-10-17",
      Statement: [
        {
          Sid: "ReadQueueParameters",
          Effect: "Allow",
          Action: ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
          Resource: "arn:aws:ssm:us-east-1:111111111111:parameter/ci-fleet/production/default/*",
        },
        {
          Sid: "ListQueueParameterPath",
          Effect: "Allow",
          Action: "ssm:GetParametersByPath",
          Resource: "arn:aws:ssm:us-east-1:111111111111:parameter/ci-fleet/production/default",
        },
        {
          Sid: "DecryptQueueParametersViaSsm",
          Effect: "Allow",
          Action: "kms:Decrypt",
          Resource: KEY,
          Condition: {
            StringEquals: { "kms:ViaService": "ssm.us-east-1.amazonaws.com" },
            StringLike: { "kms:EncryptionContext:PARAMETER_ARN": "arn:aws:ssm:us-east-1:111111111111:parameter/ci-fleet/production/default/*" },
          },
        },
      ],
    });
    expect(JSON.stringify(doc)).not.toContain("sts:");
  });

  test("deploy role ARNs are deduplicated and sorted, so config order changes nothing", () => {
    const a = "arn:aws:iam::333333333333:role/deploy-dns";
    const b = "arn:aws:iam::222222222222:role/deploy-web";
    const one = agentPermissionsPolicy({ ...scope, stack: "production", queue: "infra", kmsKeyArn: KEY, deployRoleArns: [a, b, a] });
    const two = agentPermissionsPolicy({ ...scope, stack: "production", queue: "infra", kmsKeyArn: KEY, deployRoleArns: [b, a] });
    expect(policyJson(one)).toBe(policyJson(two));
    expect(one.Statement[3]).toEqual({ Sid: "AssumeQueueDeployRoles", Effect: "Allow", Action: "sts:AssumeRole", Resource: [b, a] });
    expect(pretty(one)).toMatchSnapshot();
  });

  test("a queue named like a prefix of another stays inside its own path", () => {
    const doc = agentPermissionsPolicy({ ...scope, stack: "production", queue: "infra", kmsKeyArn: KEY, deployRoleArns: [] });
    // `/infra/*` never matches `/infra-prod/...`: the separator is part of the pattern.
    expect(doc.Statement[0].Resource).toBe("arn:aws:ssm:us-east-1:111111111111:parameter/ci-fleet/production/infra/*");
  });
});

describe("trust policies", () => {
  test("EC2 instances assume the role through the instance profile", () => {
    expect(ec2TrustPolicy()).toEqual({
      Version: "2012-10-17",
      Statement: [{ Sid: "Ec2InstancesAssume", Effect: "Allow", Principal: { Service: "ec2.amazonaws.com" }, Action: "sts:AssumeRole" }],
    });
  });

  test("Roles Anywhere: only the fleet's trust anchor and only the role's OU", () => {
    expect(rolesAnywhereTrustPolicy({ trustAnchorArn: TRUST_ANCHOR, organizationalUnit: "infra" })).toEqual({
      Version: "2012-10-17",
      Statement: [
        {
          Sid: "RolesAnywhereAssumeWithFleetCertificate",
          Effect: "Allow",
          Principal: { Service: "rolesanywhere.amazonaws.com" },
          Action: ["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"],
          Condition: {
            ArnEquals: { "aws:SourceArn": TRUST_ANCHOR },
            StringEquals: { "aws:PrincipalTag/x509Subject/OU": "infra" },
          },
        },
      ],
    });
  });

  test("a deploy role trusts exactly the queue's agent role ARN", () => {
    expect(deployRoleTrustPolicy({ agentRoleArn: agentArn("infra") })).toEqual({
      Version: "2012-10-17",
      Statement: [{ Sid: "QueueAgentRoleAssumes", Effect: "Allow", Principal: { AWS: agentArn("infra") }, Action: "sts:AssumeRole" }],
    });
  });

  test.each([
    ["an account root", "arn:aws:iam::111111111111:root"],
    ["a wildcard", "*"],
    ["a wildcard role", "arn:aws:iam::111111111111:role/*"],
    ["an account id", "111111111111"],
    ["a user", "arn:aws:iam::111111111111:user/ci"],
  ])("a deploy role never trusts %s", (_what, principal) => {
    expect(() => deployRoleTrustPolicy({ agentRoleArn: principal })).toThrow(/exact role ARN/);
  });
});

describe("KMS key policy", () => {
  const readers = [
    { name: "release", roleArn: agentArn("release"), parameterPath: "/ci-fleet/production/release" },
    { name: "salt-master", roleArn: "arn:aws:iam::111111111111:role/ci-fleet-production-salt-master", parameterPath: "/ci-fleet/production/pillar" },
    { name: "default", roleArn: agentArn("default"), parameterPath: "/ci-fleet/production/default" },
  ];

  test("the root administers, each reader decrypts only its path through SSM", () => {
    const doc = kmsKeyPolicy({ ...scope, readers });
    expect(sids(doc)).toEqual(["AccountRootAdministersKey", "DecryptViaSsmDefault", "DecryptViaSsmRelease", "DecryptViaSsmSaltMaster"]);
    expect(doc.Statement[0]).toEqual({
      Sid: "AccountRootAdministersKey",
      Effect: "Allow",
      Principal: { AWS: "arn:aws:iam::111111111111:root" },
      Action: "kms:*",
      Resource: "*",
    });
    expect(doc.Statement[3]).toEqual({
      Sid: "DecryptViaSsmSaltMaster",
      Effect: "Allow",
      Principal: { AWS: "arn:aws:iam::111111111111:role/ci-fleet-production-salt-master" },
      Action: "kms:Decrypt",
      Resource: "*",
      Condition: {
        StringEquals: { "kms:ViaService": "ssm.us-east-1.amazonaws.com" },
        StringLike: { "kms:EncryptionContext:PARAMETER_ARN": "arn:aws:ssm:us-east-1:111111111111:parameter/ci-fleet/production/pillar/*" },
      },
    });
    expect(pretty(doc)).toMatchSnapshot();
  });

  test("reader order does not change the document", () => {
    expect(policyJson(kmsKeyPolicy({ ...scope, readers: [...readers].reverse() }))).toBe(policyJson(kmsKeyPolicy({ ...scope, readers })));
  });

  test("two readers that give the same statement id are refused", () => {
    const clash = [
      { name: "a-1", roleArn: agentArn("a-1"), parameterPath: "/ci-fleet/production/a-1" },
      { name: "a1", roleArn: agentArn("a1"), parameterPath: "/ci-fleet/production/a1" },
    ];
    expect(() => kmsKeyPolicy({ ...scope, readers: clash })).toThrow(/duplicate statement id DecryptViaSsmA1/);
  });

  test("64 queues with 10-character names fit KMS's limit; 100 do not (the component refuses those)", () => {
    const size = (count: number) =>
      policyJson(
        kmsKeyPolicy({
          ...scope,
          readers: Array.from({ length: count }, (_, i) => {
            const queue = `queue-${String(i).padStart(4, "0")}`;
            return { name: queue, roleArn: agentArn(queue), parameterPath: `/ci-fleet/production/${queue}` };
          }),
        }),
      ).length;
    expect(size(64)).toBeLessThan(KMS_KEY_POLICY_MAX_CHARS);
    expect(size(100)).toBeGreaterThan(KMS_KEY_POLICY_MAX_CHARS);
  });
});

test("the Salt master reads only the pillar path, and answers only drain requests", () => {
  const doc = saltMasterPermissionsPolicy({ ...scope, stack: "production", kmsKeyArn: KEY });
  expect(sids(doc)).toEqual(["ReadPillarParameters", "ListPillarParameterPath", "DecryptPillarParametersViaSsm", "AnswerDrainRequests", "ListDrainRequestPath"]);
  expect(doc.Statement[0].Resource).toBe("arn:aws:ssm:us-east-1:111111111111:parameter/ci-fleet/production/pillar/*");
  expect(pretty(doc)).toMatchSnapshot();
});

test("an agent policy with many deploy roles stays within IAM's inline limit", () => {
  const deployRoleArns = Array.from({ length: 40 }, (_, i) => `arn:aws:iam::2222222222${String(i).padStart(2, "0")}:role/ci-fleet-production-deploy-target-${i}`);
  const size = policyJson(agentPermissionsPolicy({ ...scope, stack: "production", queue: "infra", kmsKeyArn: KEY, deployRoleArns })).length;
  expect(size).toBeLessThan(IAM_INLINE_POLICY_MAX_CHARS);
});

describe("names", () => {
  test("agent role names: 64 characters pass, 65 are refused", () => {
    const stack = "s".repeat(20);
    const queue64 = "q".repeat(64 - `ci-fleet-${stack}-agent-`.length);
    expect(agentRoleName(stack, queue64)).toHaveLength(64);
    expect(() => agentRoleName(stack, `${queue64}x`)).toThrow(/is 65 characters; IAM allows at most 64/);
  });

  test.each([
    ["default", []],
    ["infra-prod", []],
    ["salt", ['queue name "salt" is reserved']],
    ["teleport", ['queue name "teleport" is reserved']],
    ["salt-master", ['queue name "salt-master" is reserved']],
    ["pillar", ['queue name "pillar" is reserved']],
    ["Infra", ['queue "Infra" is not a DNS label']],
    ["a/b", ['queue "a/b" is not a DNS label', 'agent role of queue "a/b": role name "ci-fleet-production-agent-a/b" has characters IAM does not allow']],
  ])("queue %s", (queue, problems) => {
    expect(queueNameProblems("production", queue)).toEqual(problems);
  });

  test.each([
    ["buildkite/agent-token", undefined],
    ["global/env/NPM_TOKEN", undefined],
    ["/global/env/X", '"/global/env/X" must be a relative path without empty segments'],
    ["global//X", '"global//X" must be a relative path without empty segments'],
    ["../pillar/x", '"../pillar/x" has an invalid segment ".."'],
    ["global/env/A B", '"global/env/A B" has an invalid segment "A B"'],
  ])("relative parameter path %s", (relative, problem) => {
    expect(relativeParameterPathProblem(relative)).toBe(problem);
  });

  test("statement id suffixes", () => {
    expect(sidSuffix("infra-prod")).toBe("InfraProd");
    expect(sidSuffix("salt-master")).toBe("SaltMaster");
    expect(sidSuffix("q00")).toBe("Q00");
  });
});
