import * as pulumi from "@pulumi/pulumi";
import { teleportIamTokenName } from "./config";
import { buildGithubConnector, type GithubConnector } from "./github-connector";
import { buildRoles, type TeleportRole } from "./roles";
import { renderYamlStream } from "./yaml";

/**
 * A provision token of the `iam` join method (api/types/provisioning.go, `kind: token`,
 * `version: v2`): the joining node sends a signed sts:GetCallerIdentity request and the auth
 * service admits it only if AWS answers with an identity matching an allow rule
 * (lib/join/iamjoin `checkIAMAllowRules`: `aws_account` equal, `aws_arn` glob with `*`/`?`).
 */
export interface IamProvisionToken {
  kind: "token";
  version: "v2";
  metadata: { name: string; description: string };
  spec: { roles: ["Node"]; join_method: "iam"; allow: { aws_account: string; aws_arn: string }[] };
}

export interface IamJoinInput {
  stack: string;
  /** The account of the machines' roles (config `identity.accountId`). */
  accountId: string;
  /** The IAM role each joining machine wears through its instance profile. */
  instanceRoles: { saltMaster: string; queues: Readonly<Record<string, string>> };
}

/**
 * The ARN sts:GetCallerIdentity returns for an EC2 instance wearing `roleName` through its
 * instance profile: `arn:aws:sts::<account>:assumed-role/<role name>/<session>` (IAM
 * identifiers: an assumed-role ARN has no role path), where EC2 names the session after the
 * instance (`i-...`). `i-*` admits only such sessions: another session of the role (a session
 * name chosen by whoever called sts:AssumeRole) does not match; the roles trust only
 * ec2.amazonaws.com (test/teleport/join.test.ts), so no one else can open one.
 */
export function instanceSessionArnPattern(accountId: string, roleName: string): string {
  if (!/^\d{12}$/.test(accountId)) throw new Error(`iam join: account ${JSON.stringify(accountId)} is not 12 digits`);
  if (!/^[A-Za-z0-9+=,.@_-]{1,64}$/.test(roleName)) throw new Error(`iam join: role name ${JSON.stringify(roleName)} is not an IAM role name`);
  return `arn:aws:sts::${accountId}:assumed-role/${roleName}/i-*`;
}

/**
 * One `iam` token per AWS role the joining machines wear: the Salt master's role and each
 * queue's instance role, so a machine can join only with the token of its own role (a default
 * runner's instance session never matches the release queue's token). Nothing about them is
 * secret; a token name is useless without that role's instance credentials.
 */
export function buildIamJoinTokens(input: IamJoinInput): IamProvisionToken[] {
  const token = (name: string, roleName: string, what: string): IamProvisionToken => ({
    kind: "token",
    version: "v2",
    metadata: { name, description: `Teleport SSH service of ${what}: EC2 instance sessions of IAM role ${roleName}` },
    spec: { roles: ["Node"], join_method: "iam", allow: [{ aws_account: input.accountId, aws_arn: instanceSessionArnPattern(input.accountId, roleName) }] },
  });
  return [
    token(teleportIamTokenName({ stack: input.stack, role: "salt-master" }), input.instanceRoles.saltMaster, "the Salt master"),
    ...Object.keys(input.instanceRoles.queues)
      .sort()
      .map((queue) => token(teleportIamTokenName({ stack: input.stack, role: "runner", queue }), input.instanceRoles.queues[queue], `the runners of queue ${queue}`)),
  ];
}

/**
 * The dynamic resources of the cluster as one YAML stream for `tctl create -f` (roles
 * first, then the connector that refers to them, then the join tokens): `ci_fleet_teleport.resources`
 * in the Teleport machine's pillar document.
 */
export function renderTeleportResources(roles: readonly TeleportRole[], connector: GithubConnector, tokens: readonly IamProvisionToken[] = []): string {
  return renderYamlStream([...roles, connector, ...tokens]);
}

export interface TeleportResourcesArgs {
  /** The stack: every role that reaches machines requires its `dynamic/stack` label. */
  stack: string;
  queues: readonly string[];
  publicAddr: string;
  organization: string;
  teamsToRoles: Readonly<Record<string, readonly string[]>>;
  clientId: pulumi.Input<string>;
  clientSecret: pulumi.Input<string>;
  /** aws: the `iam` join tokens of the machines' roles. */
  iamJoin?: IamJoinInput;
}

/**
 * The same stream as a Pulumi secret: the client id and secret are resolved only inside
 * `apply`, and the result is wrapped with `pulumi.secret` even if the inputs were not.
 * Role and team checks run before any secret is touched, so a config error surfaces as
 * an exception at program start rather than inside an apply.
 */
export function teleportResourcesYaml(args: TeleportResourcesArgs): pulumi.Output<string> {
  const roles = buildRoles({ queues: args.queues, stack: args.stack });
  const knownRoles = roles.map((role) => role.metadata.name);
  const tokens = args.iamJoin ? buildIamJoinTokens(args.iamJoin) : [];
  // Validate with placeholders first: fail fast, outside any apply.
  buildGithubConnector({ ...args, clientId: "unchecked", clientSecret: "unchecked", knownRoles });
  return pulumi.secret(
    pulumi.all([args.clientId, args.clientSecret]).apply(([clientId, clientSecret]) =>
      renderTeleportResources(roles, buildGithubConnector({ ...args, clientId, clientSecret, knownRoles }), tokens),
    ),
  );
}
