/**
 * Access lists of one level (`allowed_pipelines`, `allowed_teams`): newline-separated
 * entries; blank lines and lines starting with `#` are ignored. A list that exists
 * but names nobody allows nobody.
 */
export function parseAccessList(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
}

/** Buildkite's team variables are colon-separated team slugs. */
export function parseTeams(value: string | undefined): string[] {
  return (value ?? "").split(":").map((t) => t.trim()).filter((t) => t !== "");
}

export interface AccessLists {
  /** undefined: the level has no such list (ParameterNotFound), which restricts nothing. */
  allowedPipelines?: string[];
  allowedTeams?: string[];
}

export interface Requester {
  pipelineSlug: string;
  /** Teams of the build's creator and of whoever unblocked it (either may grant). */
  creatorTeams: string[];
  unblockerTeams: string[];
}

export type AccessDecision = { allowed: true } | { allowed: false; reason: string };

/** Every list that exists must admit the requester. */
export function decideAccess(lists: AccessLists, who: Requester): AccessDecision {
  if (lists.allowedPipelines !== undefined && !lists.allowedPipelines.includes(who.pipelineSlug)) {
    return { allowed: false, reason: `pipeline "${who.pipelineSlug}" is not in allowed_pipelines` };
  }
  if (lists.allowedTeams !== undefined) {
    const teams = new Set([...who.creatorTeams, ...who.unblockerTeams]);
    if (!lists.allowedTeams.some((team) => teams.has(team))) {
      const held = [...teams].sort().join(", ") || "none";
      return {
        allowed: false,
        reason: `neither the build creator nor the unblocker is in a team of allowed_teams (their teams: ${held})`,
      };
    }
  }
  return { allowed: true };
}
