import { GITHUB_CONNECTOR_NAME } from "./config";

/**
 * The GitHub SSO connector (`kind: github`, `version: v3`).
 *
 * SECRET: the returned object, and any YAML rendered from it, holds the OAuth app's
 * client id and secret. Callers build it inside `pulumi.all([...]).apply(...)` and keep the
 * result a Pulumi secret (`teleportResourcesYaml` in ./resources.ts does both).
 *
 * Access is granted to GitHub TEAMS only. The input is a map keyed by team slug and the
 * output entry type has no user field, so a per-user grant cannot be expressed: people get
 * access by joining a team, and lose it by leaving, in GitHub's own audit trail.
 */

/** A GitHub team slug within `organization` (lower-case, as in the team's URL). */
export type GithubTeamSlug = string;

export interface TeamToRoles {
  organization: string;
  team: GithubTeamSlug;
  roles: string[];
}

export interface GithubConnector {
  kind: "github";
  version: "v3";
  metadata: { name: string };
  spec: {
    client_id: string;
    client_secret: string;
    display: string;
    redirect_url: string;
    teams_to_roles: TeamToRoles[];
  };
}

export interface GithubConnectorInput {
  /** Proxy public DNS name, without scheme or port. */
  publicAddr: string;
  organization: string;
  clientId: string;
  clientSecret: string;
  /** Config `teleport.teamsToRoles`: team slug -> Teleport role names. */
  teamsToRoles: Readonly<Record<GithubTeamSlug, readonly string[]>>;
  /** Names of the roles the program defines (`buildRoles`); anything else is rejected. */
  knownRoles: readonly string[];
}

const TEAM_SLUG = /^[a-z0-9][a-z0-9_-]*$/;
const ORGANIZATION = /^[A-Za-z0-9]([A-Za-z0-9-]{0,37}[A-Za-z0-9])?$/;

export function githubRedirectUrl(publicAddr: string): string {
  return `https://${publicAddr}/v1/webapi/github/callback`;
}

export function buildGithubConnector(input: GithubConnectorInput): GithubConnector {
  const problems: string[] = [];
  const known = new Set(input.knownRoles);
  if (!ORGANIZATION.test(input.organization)) problems.push(`organization ${JSON.stringify(input.organization)} is not a GitHub organisation name`);
  if (input.clientId === "") problems.push("clientId is empty");
  if (input.clientSecret === "") problems.push("clientSecret is empty");
  const teams = Object.keys(input.teamsToRoles).sort();
  if (teams.length === 0) problems.push("teamsToRoles is empty: nobody could log in");
  for (const team of teams) {
    if (!TEAM_SLUG.test(team)) {
      problems.push(`team ${JSON.stringify(team)} is not a team slug (lower-case letters, digits, - and _; no organisation prefix, no @user)`);
    }
    const roles = input.teamsToRoles[team];
    if (roles.length === 0) problems.push(`team ${team} maps to no role`);
    for (const role of roles) {
      if (!known.has(role)) problems.push(`team ${team} maps to unknown role ${JSON.stringify(role)} (known: ${[...known].sort().join(", ")})`);
    }
  }
  if (problems.length > 0) throw new Error(`teleport github connector:\n  - ${problems.join("\n  - ")}`);

  return {
    kind: "github",
    version: "v3",
    metadata: { name: GITHUB_CONNECTOR_NAME },
    spec: {
      client_id: input.clientId,
      client_secret: input.clientSecret,
      display: "GitHub",
      redirect_url: githubRedirectUrl(input.publicAddr),
      teams_to_roles: teams.map((team) => ({
        organization: input.organization,
        team,
        roles: [...new Set(input.teamsToRoles[team])].sort(),
      })),
    },
  };
}
