import * as pulumi from "@pulumi/pulumi";
import { buildGithubConnector, type GithubConnector } from "./github-connector";
import { buildRoles, type TeleportRole } from "./roles";
import { renderYamlStream } from "./yaml";

/**
 * The dynamic resources of the cluster as one YAML stream for `tctl create -f` (roles
 * first, then the connector that refers to them): `ci_fleet_teleport.resources` in the
 * Teleport machine's pillar document.
 */
export function renderTeleportResources(roles: readonly TeleportRole[], connector: GithubConnector): string {
  return renderYamlStream([...roles, connector]);
}

export interface TeleportResourcesArgs {
  queues: readonly string[];
  publicAddr: string;
  organization: string;
  teamsToRoles: Readonly<Record<string, readonly string[]>>;
  clientId: pulumi.Input<string>;
  clientSecret: pulumi.Input<string>;
}

/**
 * The same stream as a Pulumi secret: the client id and secret are resolved only inside
 * `apply`, and the result is wrapped with `pulumi.secret` even if the inputs were not.
 * Role and team checks run before any secret is touched, so a config error surfaces as
 * an exception at program start rather than inside an apply.
 */
export function teleportResourcesYaml(args: TeleportResourcesArgs): pulumi.Output<string> {
  const roles = buildRoles({ queues: args.queues });
  const knownRoles = roles.map((role) => role.metadata.name);
  // Validate with placeholders first: fail fast, outside any apply.
  buildGithubConnector({ ...args, clientId: "unchecked", clientSecret: "unchecked", knownRoles });
  return pulumi.secret(
    pulumi.all([args.clientId, args.clientSecret]).apply(([clientId, clientSecret]) =>
      renderTeleportResources(roles, buildGithubConnector({ ...args, clientId, clientSecret, knownRoles })),
    ),
  );
}
