import { spawnSync, type SpawnSyncOptionsWithStringEncoding, type SpawnSyncReturns } from "child_process";
import * as fs from "fs";
import { JobSecretsError } from "./errors";
import type { Env } from "./context";

/**
 * Real ssh-agent processes, one per level that has a deploy key. Keys go to ssh-add on
 * stdin, so a private key never touches the disk.
 */

function run(
  command: string,
  args: string[],
  options: { env?: Env; input?: string; timeoutMs?: number },
  debianPackage: string,
): SpawnSyncReturns<string> {
  const spawnOptions: SpawnSyncOptionsWithStringEncoding & { detached: boolean } = {
    env: options.env as NodeJS.ProcessEnv | undefined,
    input: options.input,
    encoding: "utf8",
    timeout: options.timeoutMs ?? 30_000,
    // A new session (setsid; Node honours it but its types omit it): no controlling
    // terminal, so nothing can prompt for a passphrase.
    detached: true,
    stdio: ["pipe", "pipe", "pipe"],
  };
  const result = spawnSync(command, args, spawnOptions);
  if (result.error && (result.error as NodeJS.ErrnoException).code === "ENOENT") {
    throw new JobSecretsError(`${command} is not installed (Debian package ${debianPackage})`);
  }
  return result;
}

/** Starts `ssh-agent -a <socket>` (it daemonises) and returns its pid. */
export function startAgent(socket: string, env: Env): number {
  const result = run("ssh-agent", ["-s", "-a", socket], { env }, "openssh-client");
  const pid = /^SSH_AGENT_PID=(\d+);/m.exec(result.stdout ?? "");
  if (result.status !== 0 || pid === null) {
    throw new JobSecretsError(`ssh-agent did not start on ${socket}: ${(result.stderr ?? "").trim() || `exit ${result.status}`}`);
  }
  return Number(pid[1]);
}

/** Adds one private key (given as text) to the agent on `socket`. */
export function addKey(socket: string, key: string, what: string, env: Env): void {
  const result = run(
    "ssh-add",
    ["-q", "-"],
    {
      env: { ...env, SSH_AUTH_SOCK: socket, SSH_ASKPASS_REQUIRE: "never", DISPLAY: undefined },
      input: key.endsWith("\n") ? key : `${key}\n`,
    },
    "openssh-client",
  );
  if (result.status !== 0) {
    // ssh-add's message names "(stdin)" and the problem, never the key.
    throw new JobSecretsError(`${what} is not a usable unencrypted private key: ${(result.stderr ?? "").trim()}`);
  }
}

/** True if the process is alive (a zombie is dead: it only waits for its parent to reap it). */
export function isAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // Field 3, after the parenthesised command name, is the state.
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** True if `pid` is still the ssh-agent we started on `socket` (pids are reused). */
function isOurAgent(pid: number, socket: string): boolean {
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return /(^|\/)ssh-agent$/.test(argv[0]) && argv.includes(socket);
  } catch {
    return false;
  }
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Stops one agent: SIGTERM, then SIGKILL if it is still alive after 2 s. Returns false
 * when there was nothing to stop (already gone, or the pid now belongs to another process).
 */
export function stopAgent(pid: number, socket: string): boolean {
  if (!isAlive(pid) || !isOurAgent(pid, socket)) return false;
  for (const [signal, waitMs] of [["SIGTERM", 2000], ["SIGKILL", 2000]] as const) {
    try {
      process.kill(pid, signal);
    } catch {
      return true; // it went away between the check and the signal
    }
    for (let waited = 0; waited < waitMs; waited += 20) {
      if (!isAlive(pid)) return true;
      sleep(20);
    }
  }
  throw new JobSecretsError(`ssh-agent ${pid} on ${socket} did not stop`);
}

/**
 * Can the key in the agent on `socket` read the repository? `git ls-remote` with that
 * agent only, non-interactive. GIT_SSH_COMMAND from the job's environment is honoured.
 */
export function canReach(repo: string, socket: string, env: Env): boolean {
  const result = run(
    "git",
    ["ls-remote", "--", repo, "HEAD"],
    {
      env: {
        ...env,
        SSH_AUTH_SOCK: socket,
        GIT_TERMINAL_PROMPT: "0",
        GIT_SSH_COMMAND: env.GIT_SSH_COMMAND ?? "ssh -o BatchMode=yes -o ConnectTimeout=15 -o StrictHostKeyChecking=accept-new",
      },
      timeoutMs: 60_000,
    },
    "git",
  );
  return result.status === 0;
}
