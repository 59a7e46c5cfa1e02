/**
 * Pure builders of every IAM document of the fleet's identity. Statement order is
 * fixed and inputs are sorted, so reordering config never changes a document, and
 * each statement has a Sid that says what it is for.
 */
import { arns, sidSuffix, ssmPaths, ssmViaService } from "./names";

/** `"*"` belongs only in a Deny (e.g. "no request without TLS"); the access matrix fails an Allow with it. */
/** `Federated`: an IAM OIDC provider (ci-identity deploy roles, ci-identity.ts). */
export type PolicyPrincipal = "*" | { AWS: string | string[] } | { Service: string | string[] } | { Federated: string | string[] };

export interface PolicyStatement {
  Sid: string;
  Effect: "Allow" | "Deny";
  Principal?: PolicyPrincipal;
  Action: string | string[];
  Resource?: string | string[];
  Condition?: Record<string, Record<string, string | string[]>>;
}

export interface PolicyDocument {
  Version: "2012-10-17";
  Statement: PolicyStatement[];
}

/** KMS rejects key policies over 32 KiB. */
export const KMS_KEY_POLICY_MAX_CHARS = 32768;
/** IAM's limit for all inline policies of one role together (whitespace not counted). */
export const IAM_INLINE_POLICY_MAX_CHARS = 10240;

/** Compact JSON: IAM and KMS count characters against their size limits. */
export function policyJson(document: PolicyDocument): string {
  return JSON.stringify(document);
}

function policy(statements: PolicyStatement[]): PolicyDocument {
  const sids = statements.map((s) => s.Sid);
  const duplicate = sids.find((sid, i) => sids.indexOf(sid) !== i);
  if (duplicate !== undefined) throw new Error(`duplicate statement id ${duplicate}`);
  const badSid = sids.find((sid) => !/^[A-Za-z0-9]+$/.test(sid));
  if (badSid !== undefined) throw new Error(`statement id "${badSid}" must be alphanumeric`);
  return { Version: "2012-10-17", Statement: statements };
}

const byString = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

export interface SsmScope {
  accountId: string;
  region: string;
}

/** ARN pattern of everything under an SSM path (`/ci-fleet/prod/infra` -> `...parameter/ci-fleet/prod/infra/*`). */
export function parameterArnPattern(scope: SsmScope, path: string): string {
  return `${arns.ssmParameter(scope.region, scope.accountId, path)}/*`;
}

/**
 * Decrypt only when SSM asks on the role's behalf, and only for parameters under
 * `path`: SSM passes the parameter ARN as the `PARAMETER_ARN` encryption context.
 */
function decryptViaSsmCondition(scope: SsmScope, path: string): PolicyStatement["Condition"] {
  return {
    StringEquals: { "kms:ViaService": ssmViaService(scope.region) },
    StringLike: { "kms:EncryptionContext:PARAMETER_ARN": parameterArnPattern(scope, path) },
  };
}

/** A role that reads SecureStrings under one SSM path. */
export interface KmsReader {
  /** Queue name, or `salt-master`; names the statement. */
  name: string;
  roleArn: string;
  /** `/ci-fleet/<stack>/<queue>` or `/ci-fleet/<stack>/pillar`. */
  parameterPath: string;
}

export interface KmsKeyPolicyArgs extends SsmScope {
  readers: KmsReader[];
}

/**
 * The fleet key's policy. The account root administers the key: that is how a key
 * policy delegates to IAM, so the deployer's own IAM permissions manage it. Each
 * reader may decrypt only through SSM and only its own path.
 */
export function kmsKeyPolicy(args: KmsKeyPolicyArgs): PolicyDocument {
  const readers = [...args.readers].sort((a, b) => byString(a.name, b.name));
  return policy([
    {
      Sid: "AccountRootAdministersKey",
      Effect: "Allow",
      Principal: { AWS: arns.accountRoot(args.accountId) },
      Action: "kms:*",
      Resource: "*",
    },
    ...readers.map(
      (reader): PolicyStatement => ({
        Sid: `DecryptViaSsm${sidSuffix(reader.name)}`,
        Effect: "Allow",
        Principal: { AWS: reader.roleArn },
        Action: "kms:Decrypt",
        Resource: "*",
        Condition: decryptViaSsmCondition(args, reader.parameterPath),
      }),
    ),
  ]);
}

/** Trust of a role worn by an EC2 instance through its instance profile (provider `aws`). */
export function ec2TrustPolicy(): PolicyDocument {
  return policy([
    {
      Sid: "Ec2InstancesAssume",
      Effect: "Allow",
      Principal: { Service: "ec2.amazonaws.com" },
      Action: "sts:AssumeRole",
    },
  ]);
}

export interface RolesAnywhereTrustArgs {
  trustAnchorArn: string;
  /** The certificate's subject OU: the queue, `salt-master` or `teleport`. */
  organizationalUnit: string;
}

/**
 * Trust of a role worn through IAM Roles Anywhere (provider `equinix-metal`): only
 * certificates from the fleet's own trust anchor, and only with this role's OU, so a
 * runner of one queue cannot wear another queue's role with its own certificate.
 */
export function rolesAnywhereTrustPolicy(args: RolesAnywhereTrustArgs): PolicyDocument {
  return policy([
    {
      Sid: "RolesAnywhereAssumeWithFleetCertificate",
      Effect: "Allow",
      Principal: { Service: "rolesanywhere.amazonaws.com" },
      Action: ["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"],
      Condition: {
        ArnEquals: { "aws:SourceArn": args.trustAnchorArn },
        StringEquals: { "aws:PrincipalTag/x509Subject/OU": args.organizationalUnit },
      },
    },
  ]);
}

/** SSM read statements for everything under `path`, and the path itself for ByPath. */
function readParameterStatements(scope: SsmScope, sidName: string, path: string): PolicyStatement[] {
  return [
    {
      Sid: `Read${sidName}Parameters`,
      Effect: "Allow",
      Action: ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
      Resource: parameterArnPattern(scope, path),
    },
    {
      Sid: `List${sidName}ParameterPath`,
      Effect: "Allow",
      Action: "ssm:GetParametersByPath",
      Resource: arns.ssmParameter(scope.region, scope.accountId, path),
    },
  ];
}

/**
 * With the root delegating to IAM in the key policy, this identity statement alone
 * grants decryption, so it carries the same SSM-only, own-path conditions.
 */
function decryptStatement(scope: SsmScope, sidName: string, kmsKeyArn: string, path: string): PolicyStatement {
  return {
    Sid: `Decrypt${sidName}ParametersViaSsm`,
    Effect: "Allow",
    Action: "kms:Decrypt",
    Resource: kmsKeyArn,
    Condition: decryptViaSsmCondition(scope, path),
  };
}

export interface AgentPermissionsArgs extends SsmScope {
  stack: string;
  queue: string;
  kmsKeyArn: string;
  /** ARNs of this queue's deploy roles; none means no sts statement at all. */
  deployRoleArns: string[];
}

/** Inline policy of a queue's agent role: its own secrets, its own deploy roles, nothing else. */
export function agentPermissionsPolicy(args: AgentPermissionsArgs): PolicyDocument {
  const path = ssmPaths.queue(args.stack, args.queue);
  const statements = [
    ...readParameterStatements(args, "Queue", path),
    decryptStatement(args, "Queue", args.kmsKeyArn, path),
  ];
  const deployRoleArns = [...new Set(args.deployRoleArns)].sort(byString);
  if (deployRoleArns.length > 0) {
    statements.push({
      Sid: "AssumeQueueDeployRoles",
      Effect: "Allow",
      Action: "sts:AssumeRole",
      Resource: deployRoleArns,
    });
  }
  return policy(statements);
}

/** aws: the agent role's session lasts at most this long (its MaxSessionDuration is the same). */
export const AGENT_SESSION_SECONDS = 3600;

/**
 * Trust of a queue's agent role on aws: exactly that queue's host role (the runner
 * instances' role), so only root on one of the queue's runners (the only uid that reaches
 * the metadata service) can start a session of it, and a session of one hour at most
 * (the role's MaxSessionDuration). No sts:TagSession: nothing decides on session tags.
 */
export function agentRoleTrustForHostPolicy(args: { hostRoleArn: string }): PolicyDocument {
  if (!/^arn:aws:iam::\d{12}:role\/[A-Za-z0-9+=,.@_-]+$/.test(args.hostRoleArn)) {
    throw new Error(`agent role trust needs an exact host role ARN, got "${args.hostRoleArn}"`);
  }
  return policy([
    {
      Sid: "QueueHostRoleAssumes",
      Effect: "Allow",
      Principal: { AWS: args.hostRoleArn },
      Action: "sts:AssumeRole",
    },
  ]);
}

/** Inline policy of a queue's host role: assume its own queue's agent role, nothing else. */
export function hostRolePermissionsPolicy(args: { agentRoleArn: string }): PolicyDocument {
  return policy([
    {
      Sid: "AssumeOwnQueueAgentRole",
      Effect: "Allow",
      Action: "sts:AssumeRole",
      Resource: args.agentRoleArn,
    },
  ]);
}

export interface SaltMasterPermissionsArgs extends SsmScope {
  stack: string;
  kmsKeyArn: string;
}

/** Inline policy of the Salt master's role: the pillar documents, and the runners' drain requests. */
export function saltMasterPermissionsPolicy(args: SaltMasterPermissionsArgs): PolicyDocument {
  const path = ssmPaths.pillar(args.stack);
  return policy([
    ...readParameterStatements(args, "Pillar", path),
    decryptStatement(args, "Pillar", args.kmsKeyArn, path),
    ...drainAnswerStatements(args, args.stack),
  ]);
}

/**
 * Where `pulumi up` asks the Salt master to drain a runner before deleting or replacing it
 * (infra/fleet/drain-hook.ts writes `<path>/<minion-id>`, salt/_runners/ci_fleet_drain.py
 * answers in the same parameter). String parameters: nothing in a request is secret, so no
 * KMS key is involved. Under the `salt-master` level, a reserved queue name
 * (RESERVED_QUEUE_NAMES), so no queue's secrets path and no agent role ever covers it.
 */
export function drainRequestPath(stack: string): string {
  return `/ci-fleet/${stack}/salt-master/drain`;
}

/** The master lists the requests, and answers (overwrites) or withdraws (deletes) them. Nothing else under its path. */
function drainAnswerStatements(scope: SsmScope, stack: string): PolicyStatement[] {
  const path = drainRequestPath(stack);
  return [
    {
      Sid: "AnswerDrainRequests",
      Effect: "Allow",
      Action: ["ssm:GetParameter", "ssm:GetParametersByPath", "ssm:PutParameter", "ssm:DeleteParameter"],
      Resource: parameterArnPattern(scope, path),
    },
    {
      Sid: "ListDrainRequestPath",
      Effect: "Allow",
      Action: "ssm:GetParametersByPath",
      Resource: arns.ssmParameter(scope.region, scope.accountId, path),
    },
  ];
}

/**
 * What the identity that runs `pulumi up` needs for the drain hook (README, "Replacing a
 * runner"): write a request, read the master's answer, remove the request once the machine
 * is gone. The program creates no resource from it; maintainers attach it (or hold more).
 */
export function drainRequesterPolicy(args: SsmScope & { stack: string }): PolicyDocument {
  return policy([
    {
      Sid: "RequestRunnerDrains",
      Effect: "Allow",
      Action: ["ssm:PutParameter", "ssm:GetParameter", "ssm:DeleteParameter"],
      Resource: parameterArnPattern(args, drainRequestPath(args.stack)),
    },
  ]);
}

/**
 * Trust of a deploy role in a target account: exactly the queue's agent role, never an
 * account root (which would hand the role to anyone the account's IAM allows) and never
 * a wildcard. No sts:TagSession: nothing downstream decides on session tags.
 */
export function deployRoleTrustPolicy(args: { agentRoleArn: string }): PolicyDocument {
  if (!/^arn:aws:iam::\d{12}:role\/[A-Za-z0-9+=,.@_-]+$/.test(args.agentRoleArn)) {
    throw new Error(`deploy role trust needs an exact role ARN, got "${args.agentRoleArn}"`);
  }
  return policy([
    {
      Sid: "QueueAgentRoleAssumes",
      Effect: "Allow",
      Principal: { AWS: args.agentRoleArn },
      Action: "sts:AssumeRole",
    },
  ]);
}
