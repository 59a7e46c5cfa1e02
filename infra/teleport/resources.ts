import * as pulumi from "@pulumi/pulumi";
import { teleportEc2TokenName } from "./config";
import { buildGithubConnector, type GithubConnector } from "./github-connector";
import { buildRoles, type TeleportRole } from "./roles";
import { renderYamlStream } from "./yaml";

/**
 * How long after an instance starts it may join with the `ec2` token (`aws_iid_ttl`; Teleport's
 * default is 5 minutes, api/types/provisioning.go `CheckAndSetDefaults`). The auth service
 * refuses an identity document whose `pendingTime` is older (lib/join/ec2join
 * `checkPendingTime`). A bare-metal instance boots, runs cloud-init and its first highstate,
 * and waits for the cluster's CA pins (the master's next 5-minute round after the auth service
 * runs) before its agent starts: on a fresh stack that can take an hour or more. The document
 * is readable only by root on the instance itself (IMDS answers uid 0 only) and only ever yields
 * that instance's own host id, so a longer window admits no other machine. A machine that has
 * not joined within it must be stopped and started (a new pendingTime) or replaced.
 */
export const TELEPORT_EC2_IID_TTL = "6h";

/**
 * A provision token of the `ec2` join method (api/types/provisioning.go, `kind: token`,
 * `version: v2`): the joining node sends its EC2 instance identity document; the auth service
 * verifies AWS's signature, the allow rules (`aws_account` equal, `aws_regions` containing the
 * document's region), that the instance is running (ec2:DescribeInstances with its own
 * credentials), and gives the node the host id `<account>-<instance id>` (lib/join/ec2join
 * `CheckEC2Request`; a requested host id that differs is refused).
 */
export interface Ec2ProvisionToken {
  kind: "token";
  version: "v2";
  metadata: { name: string; description: string };
  spec: { roles: ["Node"]; join_method: "ec2"; aws_iid_ttl: string; allow: { aws_account: string; aws_regions: [string] }[] };
}

export interface Ec2JoinInput {
  stack: string;
  /** The account the machines run in (config `identity.accountId`). */
  accountId: string;
  /** The region the machines run in (config `aws.region`). */
  region: string;
}

/**
 * The one `ec2` token of an aws stack. The `ec2` method cannot tell instance roles apart (its
 * allow rules know account and region only), so every machine of the account and region may
 * join with it, each only as itself: labels, hence access, come from the master's assignment
 * by hostname and address (salt/_runners/ci_fleet.py), never from the token, and a node the
 * master does not know is locked. Nothing about the token is secret.
 */
export function buildEc2JoinToken(input: Ec2JoinInput): Ec2ProvisionToken {
  if (!/^\d{12}$/.test(input.accountId)) throw new Error(`ec2 join: account ${JSON.stringify(input.accountId)} is not 12 digits`);
  if (!/^[a-z]{2}(-[a-z]+)+-\d$/.test(input.region)) throw new Error(`ec2 join: region ${JSON.stringify(input.region)} is not an AWS region name`);
  return {
    kind: "token",
    version: "v2",
    metadata: { name: teleportEc2TokenName(input.stack), description: `Teleport SSH service of the machines of stack ${input.stack}: EC2 instances of account ${input.accountId} in ${input.region}, each as itself` },
    spec: { roles: ["Node"], join_method: "ec2", aws_iid_ttl: TELEPORT_EC2_IID_TTL, allow: [{ aws_account: input.accountId, aws_regions: [input.region] }] },
  };
}

/**
 * What the auth service needs to check an `ec2` join: ec2:DescribeInstances (no resource-level
 * permissions; `*`), in the machines' region only (lib/join/ec2join `checkInstanceRunning`
 * calls it with the auth service's own credentials when the rule names no `aws_role`).
 */
export function teleportEc2JoinPolicy(region: string): object {
  return {
    Version: "2012-10-17",
    Statement: [
      {
        Sid: "Ec2JoinInstanceIsRunning",
        Effect: "Allow",
        Action: "ec2:DescribeInstances",
        Resource: "*",
        Condition: { StringEquals: { "aws:RequestedRegion": region } },
      },
    ],
  };
}

/**
 * The dynamic resources of the cluster as one YAML stream for `tctl create -f` (roles
 * first, then the connector that refers to them, then the join tokens): `ci_fleet_teleport.resources`
 * in the Teleport machine's pillar document.
 */
export function renderTeleportResources(roles: readonly TeleportRole[], connector: GithubConnector, tokens: readonly Ec2ProvisionToken[] = []): string {
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
  /** aws: the `ec2` join token of the stack's machines. */
  ec2Join?: Ec2JoinInput;
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
  const tokens = args.ec2Join ? [buildEc2JoinToken(args.ec2Join)] : [];
  // Validate with placeholders first: fail fast, outside any apply.
  buildGithubConnector({ ...args, clientId: "unchecked", clientSecret: "unchecked", knownRoles });
  return pulumi.secret(
    pulumi.all([args.clientId, args.clientSecret]).apply(([clientId, clientSecret]) =>
      renderTeleportResources(roles, buildGithubConnector({ ...args, clientId, clientSecret, knownRoles }), tokens),
    ),
  );
}
