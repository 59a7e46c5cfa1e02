import { decideAccess, parseAccessList, type AccessLists } from "./acl";
import type { Level, SecretsContext } from "./context";
import { JobSecretsError } from "./errors";
import { envNameFor } from "./slugs";
import { getOptionalParameter, listParameters, type Parameter, type ParameterStore } from "./ssm";

export interface EnvSecret {
  name: string;
  value: string;
  /** The SSM parameter it came from (for messages; names are not secret). */
  parameter: string;
  level: Level;
}

/** What one admitted level contributes. */
export interface LevelSecrets {
  level: Level;
  env: EnvSecret[];
  sshKey?: string;
}

export interface JobSecrets {
  /** Admitted levels that hold something, in reading order (global, repo, pipeline). */
  levels: LevelSecrets[];
  /** The merged environment, sorted by name: a later level's value wins. */
  env: EnvSecret[];
}

/**
 * Reads every level of the job's namespace. Each level's access lists are checked
 * before anything of that level is decrypted; a list that cannot be read stops the
 * job; a level that holds secrets the job may not see stops the job.
 */
export async function loadJobSecrets(
  store: ParameterStore,
  context: SecretsContext,
  log: (line: string) => void,
): Promise<JobSecrets> {
  const levels: LevelSecrets[] = [];
  for (const level of context.levels) {
    const lists = await readAccessLists(store, level);
    const decision = decideAccess(lists, context.requester);
    if (!decision.allowed) {
      // Names only, without decryption: does this level hold anything the job would miss?
      const held = classify(level, await listParameters(store, level.path, false), log, false);
      if (held.env.length > 0 || held.sshKey !== undefined) {
        const names = [...held.env.map((e) => e.parameter), ...(held.sshKey !== undefined ? [`${level.path}ssh/key`] : [])];
        throw new JobSecretsError(
          `${describeLevel(level)} holds secrets (${names.join(", ")}) that this job may not see: ${decision.reason}. ` +
            "The job stops rather than run without them; see docs/job-secrets.md.",
        );
      }
      log(`${describeLevel(level)}: access lists exclude this job (${decision.reason}); it holds no secrets, nothing to do`);
      continue;
    }
    const contents = classify(level, await listParameters(store, level.path, true), log, true);
    if (contents.env.length > 0 || contents.sshKey !== undefined) levels.push(contents);
  }
  const merged = new Map<string, EnvSecret>();
  for (const { env } of levels) for (const secret of env) merged.set(secret.name, secret);
  const env = [...merged.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { levels, env };
}

export function describeLevel(level: Level): string {
  return `${level.kind} level ${level.path}`;
}

async function readAccessLists(store: ParameterStore, level: Level): Promise<AccessLists> {
  const read = async (file: string) => {
    const text = await getOptionalParameter(store, `${level.path}${file}`).catch((error: unknown) => {
      throw error instanceof JobSecretsError
        ? new JobSecretsError(`${error.message}. The access list exists or may exist but cannot be read, so the job stops (fail closed).`)
        : error;
    });
    return text === undefined ? undefined : parseAccessList(text);
  };
  return { allowedPipelines: await read("allowed_pipelines"), allowedTeams: await read("allowed_teams") };
}

/** Sorts a level's parameters into env secrets and its deploy key. */
function classify(level: Level, parameters: Parameter[], log: (line: string) => void, decrypted: boolean): LevelSecrets {
  const contents: LevelSecrets = { level, env: [] };
  const byName = new Map<string, string>();
  for (const parameter of [...parameters].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (!parameter.name.startsWith(level.path)) {
      throw new JobSecretsError(`SSM returned ${parameter.name} when asked for ${level.path}`);
    }
    const relative = parameter.name.slice(level.path.length);
    if (relative === "allowed_pipelines" || relative === "allowed_teams") continue;
    if (relative === "ssh/key") {
      contents.sshKey = parameter.value;
    } else if (relative.startsWith("env/") && relative.length > "env/".length) {
      const name = envNameFor(parameter.name);
      const clash = byName.get(name);
      if (clash !== undefined) {
        throw new JobSecretsError(`${clash} and ${parameter.name} both set ${name}; delete one of them`);
      }
      byName.set(name, parameter.name);
      contents.env.push({ name, value: parameter.value, parameter: parameter.name, level });
    } else if (decrypted) {
      log(`ignoring ${parameter.name}: only env/<NAME>, ssh/key, allowed_pipelines and allowed_teams are used`);
    }
  }
  return contents;
}
