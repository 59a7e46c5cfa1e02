import * as path from "path";
import { parseTeams, type Requester } from "./acl";
import { JobSecretsError } from "./errors";
import { pipelineLevelName, repoSlug } from "./slugs";

export type Env = Readonly<Record<string, string | undefined>>;

export type LevelKind = "global" | "repo" | "pipeline";

/** One level of the queue namespace, e.g. `/ci-fleet/production/infra/global/`. */
export interface Level {
  kind: LevelKind;
  /** `global`, the repo slug or the pipeline slug. */
  name: string;
  /** Full SSM path, with a trailing slash. */
  path: string;
}

/** What the environment hook needs, read from the agent's job environment. */
export interface SecretsContext {
  /** `/ci-fleet/<stack>/<queue>/`, from the agent's environment file written by Salt. */
  prefix: string;
  requester: Requester;
  repo?: string;
  /** In reading order: global, repo, pipeline; later ones override earlier ones. */
  levels: Level[];
}

const PREFIX = /^\/ci-fleet\/[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+\/$/;

function required(env: Env, name: string, why: string): string {
  const value = env[name];
  if (value === undefined || value === "") throw new JobSecretsError(`${name} is not set (${why})`);
  return value;
}

export function readSecretsContext(env: Env): SecretsContext {
  const prefix = required(env, "CI_FLEET_SSM_PREFIX", "Salt writes it to the agent's environment file");
  if (!PREFIX.test(prefix)) {
    throw new JobSecretsError(`CI_FLEET_SSM_PREFIX "${prefix}" is not of the form /ci-fleet/<stack>/<queue>/`);
  }
  const pipeline = pipelineLevelName(required(env, "BUILDKITE_PIPELINE_SLUG", "set by the Buildkite agent"));
  // A pipeline without a repository has no repo level.
  const repo = env.BUILDKITE_REPO === "" ? undefined : env.BUILDKITE_REPO;
  const levels: Level[] = [{ kind: "global", name: "global", path: `${prefix}global/` }];
  if (repo !== undefined) {
    const slug = repoSlug(repo);
    levels.push({ kind: "repo", name: slug, path: `${prefix}${slug}/` });
  }
  levels.push({ kind: "pipeline", name: pipeline, path: `${prefix}${pipeline}/` });
  return {
    prefix,
    repo,
    levels,
    requester: {
      pipelineSlug: pipeline,
      creatorTeams: parseTeams(env.BUILDKITE_BUILD_CREATOR_TEAMS),
      unblockerTeams: parseTeams(env.BUILDKITE_UNBLOCKER_TEAMS),
    },
  };
}

/** Where one job keeps its state file and agent sockets. */
export interface JobPaths {
  dir: string;
  stateFile: string;
  socketFor(kind: LevelKind): string;
}

/** The longest path a Unix socket can have on Linux (`sun_path` is 108 bytes with the NUL). */
const MAX_SOCKET_PATH = 107;

/**
 * `$CI_FLEET_STATE_DIR/<job-id>/` (Salt sets CI_FLEET_STATE_DIR to a directory in the
 * agent's home), else `<build-path>/../tmp/job-secrets/<job-id>/`. Kept short: the
 * agent sockets live there too.
 */
export function jobPaths(env: Env): JobPaths {
  const jobId = required(env, "BUILDKITE_JOB_ID", "set by the Buildkite agent");
  if (!/^[A-Za-z0-9-]+$/.test(jobId)) throw new JobSecretsError(`BUILDKITE_JOB_ID "${jobId}" is not a job id`);
  const root =
    env.CI_FLEET_STATE_DIR !== undefined && env.CI_FLEET_STATE_DIR !== ""
      ? env.CI_FLEET_STATE_DIR
      : path.join(required(env, "BUILDKITE_BUILD_PATH", "or set CI_FLEET_STATE_DIR"), "..", "tmp", "job-secrets");
  if (!path.isAbsolute(root)) throw new JobSecretsError(`the state directory "${root}" is not an absolute path`);
  const dir = path.join(root, jobId);
  const socketFor = (kind: LevelKind) => {
    const socket = path.join(dir, `${kind}.sock`);
    if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
      throw new JobSecretsError(`the agent socket path ${socket} is too long for a Unix socket; shorten CI_FLEET_STATE_DIR`);
    }
    return socket;
  };
  return { dir, stateFile: path.join(dir, "state.json"), socketFor };
}
