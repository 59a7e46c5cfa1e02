import * as fs from "fs";
import * as path from "path";
import type { LevelKind } from "./context";
import { JobSecretsError } from "./errors";

/** One ssh-agent the environment hook started (no key material: that lives in the agent). */
export interface StartedAgent {
  level: LevelKind;
  pid: number;
  socket: string;
}

/**
 * What later hooks of the same job need to undo the environment hook's work. Kept in
 * a per-job file (mode 0600, directory 0700), never in the job's environment, which
 * the job itself could change.
 */
export interface JobState {
  version: 1;
  jobId: string;
  /** Variables the environment hook exported (pre-exit unsets them). */
  exported: string[];
  agents: StartedAgent[];
  /** The socket later steps and plugin checkouts use: the global level's agent, if any. */
  defaultSocket: string | null;
  /** SSH_AUTH_SOCK as the job had it before the hooks, restored when no global agent exists and at exit. */
  originalSshAuthSock: string | null;
}

/** Creates the job's private directory; refuses one that is not ours or not private. */
export function createJobDir(dir: string): void {
  fs.mkdirSync(path.dirname(dir), { recursive: true, mode: 0o700 });
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  }
  const stat = fs.lstatSync(dir);
  const uid = process.getuid?.();
  if (!stat.isDirectory() || (uid !== undefined && stat.uid !== uid)) {
    throw new JobSecretsError(`${dir} is not a directory owned by this user; refusing to keep job state there`);
  }
  fs.chmodSync(dir, 0o700);
}

/** Atomic write (temp file + rename), mode 0600. */
export function writeJobState(file: string, state: JobState): void {
  const temp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600, flag: "wx" });
  fs.renameSync(temp, file);
}

/** The job's state, or undefined when the environment hook left none. */
export function readJobState(file: string): JobState | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new JobSecretsError(`cannot read the job state ${file}: ${(error as Error).message}`);
  }
  let state: JobState;
  try {
    state = JSON.parse(text) as JobState;
  } catch {
    throw new JobSecretsError(`the job state ${file} is not valid JSON`);
  }
  if (state.version !== 1 || !Array.isArray(state.agents) || !Array.isArray(state.exported)) {
    throw new JobSecretsError(`the job state ${file} has an unknown shape`);
  }
  return state;
}

export function removeJobDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}
