import * as aws from "@pulumi/aws";
import { ResourceValidationPolicy, validateResourceOfType } from "@pulumi/policy";
import {
  FLEET_TAGS,
  IAM_ROLE_KINDS,
  PolicyStatement,
  awsTags,
  isAccountRootPrincipal,
  isAllow,
  isRecord,
  parsePolicyDocument,
  principalStrings,
  stringList,
} from "./support";

/** The longest session a deploy role may hand out: one hour (design: short-lived credentials only). */
export const DEPLOY_ROLE_MAX_SESSION_SECONDS = 3600;

/** A deploy role trusts exactly its queue's agent role: `ci-fleet-<stack>-agent-<queue>`. */
const AGENT_ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/(.*\/)?ci-fleet-[^/]+-agent-[^/]+$/;

/** Problems of one trust policy's principals; empty when every principal is a named, non-root identity. */
export function trustPolicyProblems(assumeRolePolicy: unknown): string[] {
  const parsed = parsePolicyDocument(assumeRolePolicy);
  if (!parsed.ok) return [`the trust policy ${parsed.problem}, so its principals cannot be checked`];
  const problems: string[] = [];
  parsed.statements.forEach((statement, index) => {
    if (!isAllow(statement)) return;
    const where = statement.Sid ? `statement "${statement.Sid}"` : `statement ${index}`;
    if (statement.NotPrincipal !== undefined) {
      problems.push(`${where} allows NotPrincipal, which trusts every principal not listed`);
    }
    for (const principal of principalStrings(statement.Principal)) {
      if (principal.includes("*")) {
        problems.push(`${where} trusts the wildcard principal "${principal}"`);
      } else if (isAccountRootPrincipal(principal)) {
        problems.push(`${where} trusts the whole account "${principal}" (account root)`);
      }
    }
  });
  return problems;
}

function trustsAnAgentRole(assumeRolePolicy: unknown): boolean {
  const parsed = parsePolicyDocument(assumeRolePolicy);
  if (!parsed.ok) return false;
  return parsed.statements.some(
    (s) => isAllow(s) && principalStrings(s.Principal).some((p) => AGENT_ROLE_ARN.test(p)),
  );
}

export const iamTrustNoWildcardOrRoot: ResourceValidationPolicy = {
  name: "iam-trust-no-wildcard-or-root",
  description:
    "No IAM role of the fleet may trust a wildcard principal or a whole account (account root): only named roles and AWS services.",
  enforcementLevel: "mandatory",
  validateResource: validateResourceOfType(aws.iam.Role, (role, _args, reportViolation) => {
    for (const problem of trustPolicyProblems(role.assumeRolePolicy)) reportViolation(problem);
  }),
};

export const iamRoleKindTagged: ResourceValidationPolicy = {
  name: "iam-role-kind-tagged",
  description: `Every IAM role of the fleet carries the tag "${FLEET_TAGS.role}" (${IAM_ROLE_KINDS.join(" | ")}), so no deploy role escapes the deploy-role rules.`,
  enforcementLevel: "mandatory",
  validateResource: validateResourceOfType(aws.iam.Role, (role, _args, reportViolation) => {
    const kind = awsTags(role)[FLEET_TAGS.role];
    if (kind === undefined) {
      reportViolation(`the role has no "${FLEET_TAGS.role}" tag`);
    } else if (!(IAM_ROLE_KINDS as readonly string[]).includes(kind)) {
      reportViolation(`the role's "${FLEET_TAGS.role}" tag is "${kind}", expected one of ${IAM_ROLE_KINDS.join(", ")}`);
    }
  }),
};

export const iamDeployRoleShortSessions: ResourceValidationPolicy = {
  name: "iam-deploy-role-session-max-1h",
  description: `Deploy roles (tagged "${FLEET_TAGS.role}=deploy", or trusting a ci-fleet agent role) set maxSessionDuration explicitly, at most ${DEPLOY_ROLE_MAX_SESSION_SECONDS} seconds.`,
  enforcementLevel: "mandatory",
  validateResource: validateResourceOfType(aws.iam.Role, (role, _args, reportViolation) => {
    const tagged = awsTags(role)[FLEET_TAGS.role] === "deploy";
    if (!tagged && !trustsAnAgentRole(role.assumeRolePolicy)) return;
    const seconds = role.maxSessionDuration;
    if (seconds === undefined) {
      reportViolation(`the deploy role does not set maxSessionDuration (AWS would default to 3600 but any later change could raise it silently)`);
    } else if (seconds > DEPLOY_ROLE_MAX_SESSION_SECONDS) {
      reportViolation(`the deploy role allows sessions of ${seconds} s, more than ${DEPLOY_ROLE_MAX_SESSION_SECONDS} s`);
    }
  }),
};

export const iamDeployRoleHasBoundary: ResourceValidationPolicy = {
  name: "iam-deploy-role-permissions-boundary",
  description: `Deploy roles (tagged "${FLEET_TAGS.role}=deploy", or trusting a ci-fleet agent role) carry a permissions boundary, so a managed policy attached in the target account cannot grant more than the boundary allows.`,
  enforcementLevel: "advisory",
  validateResource: validateResourceOfType(aws.iam.Role, (role, _args, reportViolation) => {
    const tagged = awsTags(role)[FLEET_TAGS.role] === "deploy";
    if (!tagged && !trustsAnAgentRole(role.assumeRolePolicy)) return;
    if (typeof role.permissionsBoundary !== "string" || role.permissionsBoundary === "") {
      reportViolation("the deploy role has no permissions boundary (deployTargets.<name>.permissionsBoundaryArn)");
    }
  }),
};

/** `Action: "*"` (or `*:*`) on `Resource: "*"`: full administrator rights. */
export function adminStatementProblems(document: unknown, label: string): string[] {
  const parsed = parsePolicyDocument(document);
  if (!parsed.ok) return [`${label} ${parsed.problem}, so its statements cannot be checked`];
  const problems: string[] = [];
  parsed.statements.forEach((statement: PolicyStatement, index) => {
    if (!isAllow(statement)) return;
    const where = statement.Sid ? `statement "${statement.Sid}"` : `statement ${index}`;
    const allActions = stringList(statement.Action).some((a) => a === "*" || a === "*:*");
    const allResources = stringList(statement.Resource).includes("*");
    if (allActions && allResources) problems.push(`${label} ${where} allows Action "*" on Resource "*"`);
    if (statement.NotAction !== undefined && allResources) {
      problems.push(`${label} ${where} allows NotAction on Resource "*" (everything except a list)`);
    }
  });
  return problems;
}

export const iamNoAdminWildcard: ResourceValidationPolicy = {
  name: "iam-no-admin-wildcard",
  description: 'No IAM policy of the fleet allows Action "*" on Resource "*".',
  enforcementLevel: "mandatory",
  validateResource: [
    validateResourceOfType(aws.iam.Policy, (policy, _args, reportViolation) => {
      for (const p of adminStatementProblems(policy.policy, "the policy")) reportViolation(p);
    }),
    validateResourceOfType(aws.iam.RolePolicy, (policy, _args, reportViolation) => {
      for (const p of adminStatementProblems(policy.policy, "the role policy")) reportViolation(p);
    }),
    validateResourceOfType(aws.iam.Role, (role, _args, reportViolation) => {
      for (const inline of role.inlinePolicies ?? []) {
        if (!isRecord(inline) || inline.policy === undefined) continue;
        const label = `inline policy "${String(inline.name ?? "")}"`;
        for (const p of adminStatementProblems(inline.policy, label)) reportViolation(p);
      }
    }),
  ],
};

export const iamNoAccessKeys: ResourceValidationPolicy = {
  name: "iam-no-access-keys",
  description:
    "The fleet creates no IAM users or access keys: machines get short-lived credentials from roles (instance profiles, Roles Anywhere).",
  enforcementLevel: "mandatory",
  validateResource: [
    validateResourceOfType(aws.iam.AccessKey, (_key, _args, reportViolation) => {
      reportViolation("an IAM access key is a long-lived credential");
    }),
    validateResourceOfType(aws.iam.User, (_user, _args, reportViolation) => {
      reportViolation("an IAM user invites long-lived credentials");
    }),
  ],
};

export const iamPolicies: ResourceValidationPolicy[] = [
  iamTrustNoWildcardOrRoot,
  iamRoleKindTagged,
  iamDeployRoleShortSessions,
  iamDeployRoleHasBoundary,
  iamNoAdminWildcard,
  iamNoAccessKeys,
];
