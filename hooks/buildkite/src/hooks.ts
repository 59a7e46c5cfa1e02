import { addKey, canReach, startAgent, stopAgent } from "./agents";
import { jobPaths, readSecretsContext, type Env, type LevelKind } from "./context";
import { JobSecretsError } from "./errors";
import { describeLevel, loadJobSecrets } from "./secrets";
import { renderShell, type ShellStatement } from "./shell";
import { parseRepoUrl } from "./slugs";
import type { ParameterStore } from "./ssm";
import { createJobDir, readJobState, removeJobDir, writeJobState, type JobState, type StartedAgent } from "./state";

export const HOOK_NAMES = ["environment", "pre-checkout", "post-checkout", "pre-exit"] as const;
export type HookName = (typeof HOOK_NAMES)[number];

export interface HookDeps {
  /** The job's environment as the agent gives it to the hook. */
  env: Env;
  /** Made only when needed (the environment hook), so other hooks never touch AWS. */
  store: () => ParameterStore;
  /** One line to the job log (stderr); never given a secret value. */
  log: (line: string) => void;
}

/** Runs one hook and returns the shell code its wrapper evaluates. */
export async function runHook(hook: HookName, deps: HookDeps): Promise<string> {
  switch (hook) {
    case "environment":
      return renderShell(await environmentHook(deps));
    case "pre-checkout":
      return renderShell(preCheckoutHook(deps));
    case "post-checkout":
      return renderShell(postCheckoutHook(deps));
    case "pre-exit":
      return renderShell(preExitHook(deps));
  }
}

/** Order in which pre-checkout offers keys to the repository: most specific first. */
const CHECKOUT_ORDER: readonly LevelKind[] = ["pipeline", "repo", "global"];

/**
 * Reads the namespace, exports the merged env secrets, starts one ssh-agent per level
 * with a deploy key and makes the global one the default (plugin checkouts use it).
 */
export async function environmentHook(deps: HookDeps): Promise<ShellStatement[]> {
  const paths = jobPaths(deps.env);
  cleanUpEarlierRun(paths.stateFile, paths.dir, deps);
  const context = readSecretsContext(deps.env);
  const secrets = await loadJobSecrets(deps.store(), context, deps.log);
  const statements: ShellStatement[] = secrets.env.map((s) => ({ export: s.name, value: s.value }));
  for (const s of secrets.env) deps.log(`exporting ${s.name} from ${s.parameter}`);

  const keyed = secrets.levels.filter((l) => l.sshKey !== undefined);
  if (statements.length === 0 && keyed.length === 0) {
    deps.log("no secrets for this job");
    return [];
  }
  createJobDir(paths.dir);
  const state: JobState = {
    version: 1,
    jobId: deps.env.BUILDKITE_JOB_ID ?? "",
    exported: secrets.env.map((s) => s.name),
    agents: [],
    defaultSocket: null,
    originalSshAuthSock: deps.env.SSH_AUTH_SOCK ?? null,
  };
  writeJobState(paths.stateFile, state);
  try {
    for (const level of keyed) {
      const socket = paths.socketFor(level.level.kind);
      const pid = startAgent(socket, deps.env);
      // Recorded before the key goes in, so pre-exit stops it whatever happens next.
      state.agents.push({ level: level.level.kind, pid, socket });
      writeJobState(paths.stateFile, state);
      addKey(socket, level.sshKey as string, `${level.level.path}ssh/key`, deps.env);
      deps.log(`deploy key of the ${describeLevel(level.level)} loaded into ssh-agent ${pid}`);
    }
  } catch (error) {
    stopAll(state.agents, deps);
    removeJobDir(paths.dir);
    throw error;
  }
  const global = state.agents.find((a) => a.level === "global");
  if (global !== undefined) {
    state.defaultSocket = global.socket;
    writeJobState(paths.stateFile, state);
    statements.push({ export: "SSH_AUTH_SOCK", value: global.socket });
  }
  return statements;
}

/** Points SSH_AUTH_SOCK at the first agent (pipeline, repo, global) whose key can read the repository. */
export function preCheckoutHook(deps: HookDeps): ShellStatement[] {
  const state = readJobState(jobPaths(deps.env).stateFile);
  if (state === undefined || state.agents.length === 0) return [];
  const candidates = CHECKOUT_ORDER.flatMap((kind) => state.agents.filter((a) => a.level === kind));
  const repo = deps.env.BUILDKITE_REPO ?? "";
  let chosen: StartedAgent | undefined;
  if (repo === "" || !parseRepoUrl(repo).overSsh) {
    deps.log("the repository is not fetched over SSH: deploy keys are not used for the checkout");
  } else if (candidates.length === 1) {
    chosen = candidates[0]; // nothing to choose between: save a round trip
  } else {
    chosen = candidates.find((agent) => canReach(repo, agent.socket, deps.env));
    if (chosen === undefined) deps.log("no deploy key can read the repository; the checkout keeps the default agent");
  }
  if (chosen === undefined) return [];
  deps.log(`checkout uses the ${chosen.level} level's deploy key`);
  return [{ export: "SSH_AUTH_SOCK", value: chosen.socket }];
}

/** Back to the default agent, so plugin checkouts and later steps keep working. */
export function postCheckoutHook(deps: HookDeps): ShellStatement[] {
  const state = readJobState(jobPaths(deps.env).stateFile);
  if (state === undefined || state.agents.length === 0) return [];
  return [restoreSshAuthSock(state, state.defaultSocket)];
}

/** Stops every agent the job started and unsets everything the environment hook exported. */
export function preExitHook(deps: HookDeps): ShellStatement[] {
  const paths = jobPaths(deps.env);
  const state = readJobState(paths.stateFile);
  if (state === undefined) return [];
  stopAll(state.agents, deps);
  removeJobDir(paths.dir);
  const statements: ShellStatement[] = state.exported.map((name) => ({ unset: name }));
  if (state.agents.length > 0) statements.push(restoreSshAuthSock(state, null));
  return statements;
}

function restoreSshAuthSock(state: JobState, socket: string | null): ShellStatement {
  const value = socket ?? state.originalSshAuthSock;
  return value === null ? { unset: "SSH_AUTH_SOCK" } : { export: "SSH_AUTH_SOCK", value };
}

/** A retried environment hook of the same job: undo the earlier attempt first. */
function cleanUpEarlierRun(stateFile: string, dir: string, deps: HookDeps): void {
  const earlier = readJobState(stateFile);
  if (earlier !== undefined) stopAll(earlier.agents, deps);
  removeJobDir(dir);
}

function stopAll(agents: readonly StartedAgent[], deps: HookDeps): void {
  const failures: string[] = [];
  for (const agent of agents) {
    try {
      deps.log(
        stopAgent(agent.pid, agent.socket)
          ? `stopped ssh-agent ${agent.pid} (${agent.level} level)`
          : `ssh-agent ${agent.pid} (${agent.level} level) had already gone`,
      );
    } catch (error) {
      failures.push((error as Error).message);
    }
  }
  if (failures.length > 0) throw new JobSecretsError(failures.join("; "));
}
