import * as aws from "@pulumi/aws";
import {
  iamDeployRoleShortSessions,
  iamNoAccessKeys,
  iamNoAdminWildcard,
  iamRoleKindTagged,
  iamTrustNoWildcardOrRoot,
} from "../../policy/iam";
import { fakeResourceArgs, violationsOf } from "./fake-args";
import { ACCOUNT, adminFreeManagedPolicy, agentRole, deployRole, trustDocument } from "./known-good";

const role = (props: Record<string, unknown>) => fakeResourceArgs(aws.iam.Role, props, { name: "role" });

describe("iam-trust-no-wildcard-or-root", () => {
  it.each([
    ["agent role trusting EC2 (JSON string)", agentRole()],
    ["deploy role trusting one agent role (object)", deployRole()],
    ["Roles Anywhere agent role", { ...agentRole(), assumeRolePolicy: trustDocument({ Service: "rolesanywhere.amazonaws.com" }) }],
    ["a Deny statement naming everyone", { ...deployRole(), assumeRolePolicy: { Statement: [...trustDocument({ AWS: `arn:aws:iam::${ACCOUNT}:role/ci-fleet-production-agent-infra` }).Statement, { Effect: "Deny", Principal: "*", Action: "sts:AssumeRole" }] } }],
  ])("accepts %s", (_label, props) => {
    expect(violationsOf(iamTrustNoWildcardOrRoot, role(props))).toEqual([]);
  });

  it.each([
    ['Principal "*"', "*", 'statement "Trust" trusts the wildcard principal "*"'],
    ['{AWS: "*"}', { AWS: "*" }, 'statement "Trust" trusts the wildcard principal "*"'],
    ["a * inside a role ARN", { AWS: [`arn:aws:iam::${ACCOUNT}:role/ci-fleet-*`] }, `statement "Trust" trusts the wildcard principal "arn:aws:iam::${ACCOUNT}:role/ci-fleet-*"`],
    ["an account root ARN", { AWS: `arn:aws:iam::${ACCOUNT}:root` }, `statement "Trust" trusts the whole account "arn:aws:iam::${ACCOUNT}:root" (account root)`],
    ["a bare account id", { AWS: ACCOUNT }, `statement "Trust" trusts the whole account "${ACCOUNT}" (account root)`],
    ["a GovCloud root", { AWS: `arn:aws-us-gov:iam::${ACCOUNT}:root` }, `statement "Trust" trusts the whole account "arn:aws-us-gov:iam::${ACCOUNT}:root" (account root)`],
  ])("rejects %s on the deploy role", (_label, principal, message) => {
    const props = { ...deployRole(), assumeRolePolicy: JSON.stringify(trustDocument(principal)) };
    expect(violationsOf(iamTrustNoWildcardOrRoot, role(props))).toEqual([message]);
  });

  it("rejects the same on an agent role (the rule covers every role of the stack)", () => {
    const props = { ...agentRole(), assumeRolePolicy: trustDocument({ AWS: ACCOUNT }) };
    expect(violationsOf(iamTrustNoWildcardOrRoot, role(props))).toEqual([`statement "Trust" trusts the whole account "${ACCOUNT}" (account root)`]);
  });

  it("rejects Allow with NotPrincipal", () => {
    const doc = { Statement: [{ Effect: "Allow", NotPrincipal: { AWS: `arn:aws:iam::${ACCOUNT}:role/x` }, Action: "sts:AssumeRole" }] };
    expect(violationsOf(iamTrustNoWildcardOrRoot, role({ ...agentRole(), assumeRolePolicy: doc }))).toEqual([
      "statement 0 allows NotPrincipal, which trusts every principal not listed",
    ]);
  });

  it("fails closed on a trust policy it cannot read", () => {
    expect(violationsOf(iamTrustNoWildcardOrRoot, role({ ...agentRole(), assumeRolePolicy: "{not json" }))).toEqual([
      "the trust policy is not valid JSON, so its principals cannot be checked",
    ]);
  });

  it("does not apply to other resource types", () => {
    expect(violationsOf(iamTrustNoWildcardOrRoot, fakeResourceArgs(aws.kms.Key, { enableKeyRotation: false }))).toEqual([]);
  });
});

describe("iam-role-kind-tagged", () => {
  it("accepts tagged agent and deploy roles", () => {
    expect(violationsOf(iamRoleKindTagged, role(agentRole()))).toEqual([]);
    expect(violationsOf(iamRoleKindTagged, role(deployRole()))).toEqual([]);
  });
  it("rejects a role without the tag", () => {
    expect(violationsOf(iamRoleKindTagged, role({ ...deployRole(), tags: { "ci-fleet:stack": "production" } }))).toEqual([
      'the role has no "ci-fleet:role" tag',
    ]);
  });
  it("rejects an unknown kind", () => {
    expect(violationsOf(iamRoleKindTagged, role({ ...deployRole(), tags: { "ci-fleet:role": "admin" } }))).toEqual([
      'the role\'s "ci-fleet:role" tag is "admin", expected one of agent, host, deploy, salt-master, teleport, runner, service',
    ]);
  });
});

describe("iam-deploy-role-session-max-1h", () => {
  it("accepts a deploy role with 3600 s and ignores agent roles", () => {
    expect(violationsOf(iamDeployRoleShortSessions, role(deployRole()))).toEqual([]);
    expect(violationsOf(iamDeployRoleShortSessions, role({ ...agentRole(), maxSessionDuration: 43200 }))).toEqual([]);
  });
  it("rejects a deploy role allowing 2 hours", () => {
    expect(violationsOf(iamDeployRoleShortSessions, role({ ...deployRole(), maxSessionDuration: 7200 }))).toEqual([
      "the deploy role allows sessions of 7200 s, more than 3600 s",
    ]);
  });
  it("rejects a deploy role that leaves maxSessionDuration unset", () => {
    const { maxSessionDuration: _dropped, ...props } = deployRole();
    expect(violationsOf(iamDeployRoleShortSessions, role(props))).toEqual([
      "the deploy role does not set maxSessionDuration (AWS would default to 3600 but any later change could raise it silently)",
    ]);
  });
  it("recognises an untagged role that trusts an agent role as a deploy role", () => {
    const props = { ...deployRole(), tags: {}, maxSessionDuration: 43200 };
    expect(violationsOf(iamDeployRoleShortSessions, role(props))).toEqual(["the deploy role allows sessions of 43200 s, more than 3600 s"]);
  });
});

describe("iam-no-admin-wildcard", () => {
  const admin = JSON.stringify({ Statement: [{ Sid: "All", Effect: "Allow", Action: "*", Resource: "*" }] });
  it("accepts scoped policies", () => {
    expect(violationsOf(iamNoAdminWildcard, fakeResourceArgs(aws.iam.Policy, adminFreeManagedPolicy()))).toEqual([]);
    expect(violationsOf(iamNoAdminWildcard, role(agentRole()))).toEqual([]);
  });
  it('rejects Action "*" on Resource "*" in a managed policy', () => {
    expect(violationsOf(iamNoAdminWildcard, fakeResourceArgs(aws.iam.Policy, { ...adminFreeManagedPolicy(), policy: admin }))).toEqual([
      'the policy statement "All" allows Action "*" on Resource "*"',
    ]);
  });
  it("rejects it in a role policy and in an inline policy", () => {
    expect(violationsOf(iamNoAdminWildcard, fakeResourceArgs(aws.iam.RolePolicy, { role: "r", policy: admin }))).toEqual([
      'the role policy statement "All" allows Action "*" on Resource "*"',
    ]);
    const props = { ...agentRole(), inlinePolicies: [{ name: "admin", policy: admin }] };
    expect(violationsOf(iamNoAdminWildcard, role(props))).toEqual(['inline policy "admin" statement "All" allows Action "*" on Resource "*"']);
  });
  it('rejects NotAction on Resource "*"', () => {
    const doc = { Statement: [{ Effect: "Allow", NotAction: "iam:*", Resource: "*" }] };
    expect(violationsOf(iamNoAdminWildcard, fakeResourceArgs(aws.iam.Policy, { policy: doc }))).toEqual([
      'the policy statement 0 allows NotAction on Resource "*" (everything except a list)',
    ]);
  });
});

describe("iam-no-access-keys", () => {
  it("rejects IAM users and access keys", () => {
    expect(violationsOf(iamNoAccessKeys, fakeResourceArgs(aws.iam.AccessKey, { user: "u" }))).toEqual(["an IAM access key is a long-lived credential"]);
    expect(violationsOf(iamNoAccessKeys, fakeResourceArgs(aws.iam.User, { name: "u" }))).toEqual(["an IAM user invites long-lived credentials"]);
    expect(violationsOf(iamNoAccessKeys, role(agentRole()))).toEqual([]);
  });
});
