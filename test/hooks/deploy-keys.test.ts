import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { isAlive } from "../../hooks/buildkite/src/agents";
import type { Env } from "../../hooks/buildkite/src/context";
import { runHook, type HookName } from "../../hooks/buildkite/src/hooks";
import { FakeSsm } from "./support/fake-ssm";
import { logSink, requireTool } from "./support/tools";

/**
 * The deploy-key lifecycle with real OpenSSH: ssh-agent per level, keys from
 * ssh-keygen, `git ls-remote` against local bare repositories reached through a
 * stand-in SSH transport (GIT_SSH_COMMAND) that admits a client only if its agent can
 * sign with the repository's authorised key (`ssh-add -T`), then runs the real
 * git-upload-pack. That is the decision a Git host makes, minus the network.
 */

const Q = "/ci-fleet/production/infra/";
const REPO_URL = "git@fakehost:example-org/netboot.git";
const REPO_LEVEL = `${Q}fakehost_example-org_netboot.git/`;
const JOB_ID = "0190a4b2-7c1e-4d7e-9a0b-123456789abc";

let work: string;

function sh(command: string, args: string[], options: { cwd?: string; env?: Env } = {}): string {
  const result = spawnSync(command, args, { encoding: "utf8", cwd: options.cwd, env: (options.env ?? process.env) as NodeJS.ProcessEnv });
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")} failed: ${result.stderr}`);
  return result.stdout;
}

function keygen(name: string, passphrase = ""): { privateKey: string; publicKeyFile: string } {
  const file = path.join(work, "keys", name);
  sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", passphrase, "-C", `${name}@ci-fleet-test`, "-f", file]);
  return { privateKey: fs.readFileSync(file, "utf8"), publicKeyFile: `${file}.pub` };
}

function bareRepo(name: string): string {
  const source = path.join(work, "src", name);
  const gitEnv = { ...process.env, HOME: work, GIT_CONFIG_NOSYSTEM: "1" };
  sh("git", ["init", "-q", "-b", "main", source], { env: gitEnv });
  fs.writeFileSync(path.join(source, "README"), `${name}\n`);
  sh("git", ["-c", "user.name=t", "-c", "user.email=t@example.org", "add", "README"], { cwd: source, env: gitEnv });
  sh("git", ["-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "init"], { cwd: source, env: gitEnv });
  const bare = path.join(work, "server", `${name}.git`);
  sh("git", ["clone", "-q", "--bare", source, bare], { env: gitEnv });
  return bare;
}

/** The stand-in transport: `fake-ssh [options] user@host "git-upload-pack '<path>'"`. */
function writeFakeSsh(authorised: Record<string, string>): string {
  const file = path.join(work, "fake-ssh");
  const cases = Object.entries(authorised)
    .map(([repoPath, publicKeyFile]) => `  "git-upload-pack '${repoPath}'") repo=${path.join(work, "server", path.basename(repoPath))}; key=${publicKeyFile} ;;`)
    .join("\n");
  fs.writeFileSync(
    file,
    `#!/bin/bash
command="\${@: -1}"
echo "$SSH_AUTH_SOCK $command" >> ${path.join(work, "ssh.log")}
case "$command" in
${cases}
  *) echo "fakehost: no such repository: $command" >&2; exit 128 ;;
esac
if ! ssh-add -T "$key" >/dev/null 2>&1; then echo "git@fakehost: Permission denied (publickey)." >&2; exit 255; fi
exec git-upload-pack "$repo"
`,
    { mode: 0o755 },
  );
  return file;
}

/** What the agent does with a hook's output: evaluate it and carry the environment on. */
function applyInBash(env: Env, shell: string): Env {
  const result = spawnSync("bash", ["-c", 'eval "$1" && env -0', "hook", shell], { env: env as NodeJS.ProcessEnv });
  if (result.status !== 0) throw new Error(`eval failed: ${result.stderr}`);
  const after: Record<string, string> = {};
  for (const entry of result.stdout.toString("utf8").split("\0").filter((e) => e !== "")) {
    const at = entry.indexOf("=");
    after[entry.slice(0, at)] = entry.slice(at + 1);
  }
  // bash adds a few of its own; keep only what the job had plus what the hook exported.
  for (const own of ["PWD", "SHLVL", "_", "OLDPWD"]) if (!(own in env)) delete after[own];
  return after;
}

function agentsOf(dir: string): number[] {
  return fs
    .readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p))
    .map(Number)
    .filter((pid) => {
      try {
        const argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
        return argv[0].endsWith("ssh-agent") && argv.some((a) => a.startsWith(dir)) && isAlive(pid);
      } catch {
        return false;
      }
    });
}

async function hook(name: HookName, env: Env, ssm = new FakeSsm()): Promise<{ env: Env; shell: string; log: string[] }> {
  const sink = logSink();
  const shell = await runHook(name, { env, store: () => ssm, log: sink.log });
  return { env: applyInBash(env, shell), shell, log: sink.lines };
}

beforeAll(() => {
  requireTool("ssh-agent", "openssh-client");
  requireTool("ssh-add", "openssh-client");
  requireTool("ssh-keygen", "openssh-client");
  requireTool("git", "git");
  requireTool("git-upload-pack", "git");
});

beforeEach(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), "cf-keys-"));
  fs.mkdirSync(path.join(work, "keys"));
});

afterEach(() => {
  // Never leave an agent behind, even when a test failed half-way.
  for (const pid of agentsOf(work)) process.kill(pid, "SIGKILL");
  fs.rmSync(work, { recursive: true, force: true });
});

function jobEnv(extra: Env = {}): Env {
  return {
    PATH: process.env.PATH,
    HOME: work,
    GIT_CONFIG_NOSYSTEM: "1",
    // Tells git the transport is OpenSSH, so it does not first run `fake-ssh -G` to find out.
    GIT_SSH_VARIANT: "ssh",
    CI_FLEET_SSM_PREFIX: Q,
    CI_FLEET_STATE_DIR: path.join(work, "state"),
    BUILDKITE_JOB_ID: JOB_ID,
    BUILDKITE_REPO: REPO_URL,
    BUILDKITE_PIPELINE_SLUG: "netboot-release",
    BUILDKITE_BUILD_CREATOR_TEAMS: "maintainers",
    SSH_AUTH_SOCK: "/run/user/1000/original-agent.sock",
    ...extra,
  };
}

test("agents per level: pre-checkout picks the key that reads the repo, post-checkout restores global, pre-exit stops them all", async () => {
  const globalKey = keygen("global");
  const repoKey = keygen("repo");
  const pipelineKey = keygen("pipeline");
  bareRepo("netboot");
  bareRepo("plugin");
  // The repository admits only the repo level's key; a plugin repository only the global one.
  const fakeSsh = writeFakeSsh({ "example-org/netboot.git": repoKey.publicKeyFile, "example-org/plugin.git": globalKey.publicKeyFile });
  const ssm = new FakeSsm()
    .put(`${Q}global/ssh/key`, globalKey.privateKey)
    .put(`${REPO_LEVEL}ssh/key`, repoKey.privateKey)
    .put(`${Q}netboot-release/ssh/key`, pipelineKey.privateKey)
    .put(`${Q}netboot-release/env/deploy-token`, "tok'en $(id)");
  const stateDir = path.join(work, "state", JOB_ID);
  const socket = (kind: string) => path.join(stateDir, `${kind}.sock`);
  let env = jobEnv({ GIT_SSH_COMMAND: fakeSsh });

  // environment: three agents, the global one is the default, the env secret is exported.
  const environment = await hook("environment", env, ssm);
  env = environment.env;
  expect(env.DEPLOY_TOKEN).toBe("tok'en $(id)");
  expect(env.SSH_AUTH_SOCK).toBe(socket("global"));
  const pids = agentsOf(work);
  expect(pids).toHaveLength(3);
  for (const [kind, key] of [["global", globalKey], ["repo", repoKey], ["pipeline", pipelineKey]] as const) {
    const listed = sh("ssh-add", ["-L"], { env: { PATH: process.env.PATH, SSH_AUTH_SOCK: socket(kind) } });
    expect(listed.trim()).toBe(fs.readFileSync(key.publicKeyFile, "utf8").trim());
  }
  // Private state: directory 0700, file 0600, and no key material in it.
  expect(fs.statSync(stateDir).mode & 0o777).toBe(0o700);
  expect(fs.statSync(path.join(stateDir, "state.json")).mode & 0o777).toBe(0o600);
  const stateText = fs.readFileSync(path.join(stateDir, "state.json"), "utf8");
  expect(stateText).not.toContain("PRIVATE KEY");
  expect(stateText).not.toContain("tok'en");
  expect(environment.log.join("\n")).not.toMatch(/PRIVATE KEY|tok'en/);

  // Plugin checkouts (after the environment hook, before pre-checkout) use the global key.
  sh("git", ["ls-remote", "git@fakehost:example-org/plugin.git"], { env });

  // pre-checkout: pipeline's key is tried first and refused, the repo level's key works.
  fs.rmSync(path.join(work, "ssh.log"), { force: true });
  const preCheckout = await hook("pre-checkout", env);
  env = preCheckout.env;
  expect(env.SSH_AUTH_SOCK).toBe(socket("repo"));
  const probes = fs.readFileSync(path.join(work, "ssh.log"), "utf8").trim().split("\n").map((l) => l.split(" ")[0]);
  expect(probes).toEqual([socket("pipeline"), socket("repo")]);
  expect(preCheckout.log).toContain("checkout uses the repo level's deploy key");
  // The checkout itself now works with that agent.
  sh("git", ["clone", "-q", REPO_URL, path.join(work, "checkout")], { env });
  expect(fs.readFileSync(path.join(work, "checkout", "README"), "utf8")).toBe("netboot\n");

  // post-checkout: back to the global agent for later steps and plugin checkouts.
  env = (await hook("post-checkout", env)).env;
  expect(env.SSH_AUTH_SOCK).toBe(socket("global"));

  // pre-exit: every agent stopped, everything exported unset, the original socket back.
  const preExit = await hook("pre-exit", env);
  env = preExit.env;
  for (const pid of pids) expect(isAlive(pid)).toBe(false);
  expect(agentsOf(work)).toEqual([]);
  expect(env.DEPLOY_TOKEN).toBeUndefined();
  expect(env.SSH_AUTH_SOCK).toBe("/run/user/1000/original-agent.sock");
  expect(fs.existsSync(stateDir)).toBe(false);
  expect(preExit.shell).toBe("unset DEPLOY_TOKEN\nexport SSH_AUTH_SOCK='/run/user/1000/original-agent.sock'\n");

  // A second pre-exit (or one after a job that had no secrets) has nothing to do.
  expect((await hook("pre-exit", env)).shell).toBe("");
});

test("without a global key the job's own SSH_AUTH_SOCK stays the default, and is unset at exit if it had none", async () => {
  const pipelineKey = keygen("pipeline");
  const otherKey = keygen("other");
  bareRepo("netboot");
  const fakeSsh = writeFakeSsh({ "example-org/netboot.git": otherKey.publicKeyFile });
  const ssm = new FakeSsm().put(`${Q}netboot-release/ssh/key`, pipelineKey.privateKey);
  let env = jobEnv({ GIT_SSH_COMMAND: fakeSsh, SSH_AUTH_SOCK: undefined });

  env = (await hook("environment", env, ssm)).env;
  expect(env.SSH_AUTH_SOCK).toBeUndefined();
  // One agent: nothing to choose between, so no probe is made.
  const pre = await hook("pre-checkout", env);
  expect(fs.existsSync(path.join(work, "ssh.log"))).toBe(false);
  expect(pre.env.SSH_AUTH_SOCK).toBe(path.join(work, "state", JOB_ID, "pipeline.sock"));
  const post = await hook("post-checkout", pre.env);
  expect(post.shell).toBe("unset SSH_AUTH_SOCK\n");
  const exit = await hook("pre-exit", post.env);
  expect(exit.shell).toBe("unset SSH_AUTH_SOCK\n");
  expect(agentsOf(work)).toEqual([]);
});

test("when no key can read the repository, pre-checkout keeps the default and says so", async () => {
  const [a, b, nobody] = [keygen("a"), keygen("b"), keygen("nobody")];
  bareRepo("netboot");
  const fakeSsh = writeFakeSsh({ "example-org/netboot.git": nobody.publicKeyFile });
  const ssm = new FakeSsm().put(`${Q}global/ssh/key`, a.privateKey).put(`${Q}netboot-release/ssh/key`, b.privateKey);
  const env = (await hook("environment", jobEnv({ GIT_SSH_COMMAND: fakeSsh }), ssm)).env;
  const pre = await hook("pre-checkout", env);
  expect(pre.shell).toBe("");
  expect(pre.log).toContain("no deploy key can read the repository; the checkout keeps the default agent");
  await hook("pre-exit", env);
  expect(agentsOf(work)).toEqual([]);
});

test("an https repository never gets a deploy key for its checkout", async () => {
  const [a, b] = [keygen("a"), keygen("b")];
  const ssm = new FakeSsm().put(`${Q}global/ssh/key`, a.privateKey).put(`${Q}netboot-release/ssh/key`, b.privateKey);
  const env = (await hook("environment", jobEnv({ BUILDKITE_REPO: "https://github.com/example-org/netboot.git" }), ssm)).env;
  const pre = await hook("pre-checkout", env);
  expect(pre.shell).toBe("");
  await hook("pre-exit", env);
  expect(agentsOf(work)).toEqual([]);
});

test("a key that cannot be loaded stops the job and leaves no agent behind", async () => {
  const good = keygen("good");
  const locked = keygen("locked", "a passphrase");
  const ssm = new FakeSsm().put(`${Q}global/ssh/key`, good.privateKey).put(`${Q}netboot-release/ssh/key`, locked.privateKey);
  const failure = hook("environment", jobEnv(), ssm);
  await expect(failure).rejects.toThrow(`${Q}netboot-release/ssh/key is not a usable unencrypted private key`);
  expect(agentsOf(work)).toEqual([]);
  expect(fs.existsSync(path.join(work, "state", JOB_ID))).toBe(false);
});

test("a retried environment hook stops the agents of the earlier attempt first", async () => {
  const key = keygen("global");
  const ssm = new FakeSsm().put(`${Q}global/ssh/key`, key.privateKey);
  await hook("environment", jobEnv(), ssm);
  const first = agentsOf(work);
  await hook("environment", jobEnv(), ssm);
  const second = agentsOf(work);
  expect(first).toHaveLength(1);
  expect(second).toHaveLength(1);
  expect(second).not.toEqual(first);
  await hook("pre-exit", jobEnv());
  expect(agentsOf(work)).toEqual([]);
});

test("pre-exit never kills a process that is not the agent it started (pids are reused)", async () => {
  const key = keygen("global");
  await hook("environment", jobEnv(), new FakeSsm().put(`${Q}global/ssh/key`, key.privateKey));
  const stateFile = path.join(work, "state", JOB_ID, "state.json");
  const [agent] = agentsOf(work);
  const bystander = spawnSync("bash", ["-c", "sleep 30 >/dev/null 2>&1 & echo $!"], { encoding: "utf8" });
  const bystanderPid = Number(bystander.stdout.trim());
  const state = JSON.parse(fs.readFileSync(stateFile, "utf8"));
  state.agents[0].pid = bystanderPid; // as if the agent had died and its pid were reused
  fs.writeFileSync(stateFile, JSON.stringify(state));
  const preExit = await hook("pre-exit", jobEnv());
  expect(isAlive(bystanderPid)).toBe(true);
  expect(preExit.log).toEqual([`ssh-agent ${bystanderPid} (global level) had already gone`]);
  process.kill(bystanderPid, "SIGKILL");
  process.kill(agent, "SIGKILL");
});

test("the environment hook's output (secrets masked)", async () => {
  const key = keygen("global");
  const values = { "global/env/npm-token": "npm_abc'def", "netboot-release/env/sentry-dsn": "https://k@sentry/1\n" };
  const ssm = new FakeSsm().put(`${Q}global/ssh/key`, key.privateKey);
  for (const [name, value] of Object.entries(values)) ssm.put(`${Q}${name}`, value);
  const { shell, log } = await hook("environment", jobEnv(), ssm);
  let masked = shell.split(work).join("<work>");
  for (const value of Object.values(values)) masked = masked.split(value.replace(/'/g, `'\\''`)).join("[secret]");
  expect(masked).toMatchSnapshot();
  expect(log.map((l) => l.replace(/\d+$/, "<pid>"))).toMatchSnapshot();
  await hook("pre-exit", jobEnv());
});
