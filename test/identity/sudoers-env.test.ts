import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { renderStack, type StackRender } from "../support/salt-render";

/**
 * The Buildkite job's sudo rule (salt/buildkite/job.sls) must ADD the agent token to sudo's
 * built-in env_delete list, not replace the list (sudoers(5): `env_delete = ...` replaces,
 * `env_delete += ...` appends). Checked on the rendered drop-in with the real sudo: a private
 * mount namespace gets throwaway passwd/group entries for the two users, a sudoers made of
 * Ubuntu's defaults plus the rendered drop-in, and a probe in place of the job executor; the
 * agent's uid then runs exactly what the Buildkite agent runs (`sudo -n -E -u ci-agent -g ci-agent`).
 * Needs root and the Debian package `sudo` (scripts/debian-packages.txt).
 */

const SUDOERS = "/etc/sudoers.d/ci-fleet-buildkite-agent";
const EXECUTOR = "/usr/local/sbin/buildkite-agent-job";
const SUDO = "/usr/bin/sudo";
const VISUDO = "/usr/sbin/visudo";
/** Ubuntu 24.04's /etc/sudoers, without its includedir (the drop-in under test is appended). */
const BASE_SUDOERS = [
  "Defaults env_reset",
  "Defaults mail_badpass",
  'Defaults secure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/snap/bin"',
  "Defaults use_pty",
  "root ALL=(ALL:ALL) ALL",
].join("\n");
/** Some of sudo's built-in env_delete entries that glibc's set-uid scrub does not remove. */
const BUILTIN_DELETED = ["BASH_ENV", "PYTHONPATH", "PERL5OPT", "RUBYOPT", "JAVA_TOOL_OPTIONS", "SHELLOPTS", "PS4"];

function requireSudo(): void {
  for (const bin of [SUDO, VISUDO]) if (!fs.existsSync(bin)) throw new Error(`${bin} not found: apt-get install sudo (Debian package sudo, listed in scripts/debian-packages.txt)`);
  if (process.getuid?.() !== 0) throw new Error("this test runs the real sudo in a private mount namespace: run it as root (npm test does)");
}

const HANDOFF = "/usr/local/sbin/ci-job-handoff";
const JOB_SUDO = [SUDO, "-n", "-E", "-u", "ci-agent", "-g", "ci-agent", "--", EXECUTOR];

/** Runs the rendered rule for real (as the agent's uid: `sudoArgv`, the job's sudo by default); returns the environment the command received. */
function runRule(dropIn: string, agentEnv: Record<string, string>, sudoArgv: string[] = JOB_SUDO): { status: number | null; stderr: string; env: Map<string, string> } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-sudoers-env-"));
  try {
    fs.chmodSync(dir, 0o755);
    const passwd = fs.readFileSync("/etc/passwd", "utf8").split("\n").filter((l) => l && !/^(buildkite-agent|ci-agent):/.test(l));
    const group = fs.readFileSync("/etc/group", "utf8").split("\n").filter((l) => l && !/^(buildkite-agent|ci-agent):/.test(l));
    fs.writeFileSync(path.join(dir, "passwd"), [...passwd, "buildkite-agent:x:61001:61001::/nonexistent:/usr/sbin/nologin", "ci-agent:x:61002:61002::/nonexistent:/usr/sbin/nologin", ""].join("\n"), { mode: 0o644 });
    fs.writeFileSync(path.join(dir, "group"), [...group, "buildkite-agent:x:61001:", "ci-agent:x:61002:", ""].join("\n"), { mode: 0o644 });
    const shadow = fs.readFileSync("/etc/shadow", "utf8").split("\n").filter((l) => l && !/^(buildkite-agent|ci-agent):/.test(l));
    fs.writeFileSync(path.join(dir, "shadow"), [...shadow, "buildkite-agent:!:20000::::::", "ci-agent:!:20000::::::", ""].join("\n"), { mode: 0o640 });
    fs.writeFileSync(path.join(dir, "sudoers"), `${BASE_SUDOERS}\n${dropIn}`, { mode: 0o440 });
    const sbin = path.join(dir, "sbin");
    fs.mkdirSync(sbin, { mode: 0o755 });
    for (const probe of [EXECUTOR, HANDOFF]) fs.writeFileSync(path.join(sbin, path.basename(probe)), "#!/bin/sh\nexec /usr/bin/env -0\n", { mode: 0o755 });
    const envArgs = Object.entries(agentEnv).map(([k, v]) => `${k}=${v}`);
    const script = [
      "set -e",
      "mount --make-rprivate /",
      `mount --bind ${dir}/passwd /etc/passwd`,
      `mount --bind ${dir}/group /etc/group`,
      `mount --bind ${dir}/shadow /etc/shadow`,
      `mount --bind ${dir}/sudoers /etc/sudoers`,
      `mount --bind ${sbin} /usr/local/sbin`,
      `${VISUDO} -c -f /etc/sudoers >&2`,
      `exec setpriv --reuid=61001 --regid=61001 --clear-groups -- /usr/bin/env -i "$@" ${sudoArgv.map((a) => `'${a}'`).join(" ")}`,
    ].join("\n");
    const proc = spawnSync("unshare", ["-m", "--", "/bin/sh", "-c", script, "sh", ...envArgs], { encoding: "utf8" });
    const env = new Map<string, string>();
    for (const item of (proc.stdout ?? "").split("\0").filter((x) => x !== "")) env.set(item.slice(0, item.indexOf("=")), item.slice(item.indexOf("=") + 1));
    return { status: proc.status, stderr: proc.stderr ?? "", env };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe("the Buildkite job's sudo rule keeps sudo's built-in env_delete list (rendered, real sudo)", () => {
  let render: StackRender;
  beforeAll(async () => {
    requireSudo();
    render = await renderStack("production");
  }, 240_000);

  test("the rendered drop-in adds to env_delete (+=), never replaces it", () => {
    const ids = Object.keys(render.minions).filter((id) => render.minions[id].top_sls.includes("buildkite"));
    expect(ids.length).toBeGreaterThan(0);
    for (const id of ids) {
      const state = Object.values(render.minions[id].states).find((s) => s.function === "file.managed" && s.args.name === SUDOERS);
      const text = String(state?.args.contents);
      expect({ id, replaces: /env_delete\s*=/.test(text), adds: /env_delete\s*\+=\s*"BUILDKITE_AGENT_TOKEN"/.test(text) }).toEqual({ id, replaces: false, adds: true });
    }
  });

  test("run as the agent's user, the job gets the agent's variables without the token or anything sudo deletes by default", () => {
    const id = Object.keys(render.minions).find((i) => render.minions[i].top_sls.includes("buildkite"))!;
    const state = Object.values(render.minions[id].states).find((s) => s.function === "file.managed" && s.args.name === SUDOERS)!;
    const given: Record<string, string> = { PATH: "/usr/bin:/bin", BUILDKITE_AGENT_TOKEN: "agent-registration-token", BUILDKITE_JOB_ID: "job-1", CI_FLEET_KEEP: "kept" };
    for (const name of BUILTIN_DELETED) given[name] = "/tmp/injected";
    const run = runRule(String(state.args.contents), given);
    expect({ status: run.status, stderr: run.stderr.replace(/.*parsed OK\n?/g, "").replace(/sudo: unable to resolve host.*\n?/g, "") }).toEqual({ status: 0, stderr: "" });
    expect({ job: run.env.get("BUILDKITE_JOB_ID"), keep: run.env.get("CI_FLEET_KEEP"), user: run.env.get("USER") ?? run.env.get("LOGNAME") ?? run.env.get("SUDO_USER") }).toEqual({ job: "job-1", keep: "kept", user: expect.any(String) });
    expect(run.env.has("BUILDKITE_AGENT_TOKEN")).toBe(false);
    expect(BUILTIN_DELETED.filter((name) => run.env.has(name))).toEqual([]);
  });

  test("the harness can fail: with env_delete replaced (=), the same variables reach the job", () => {
    const replaced = 'Defaults:buildkite-agent !use_pty, !secure_path, !env_check, env_delete = "BUILDKITE_AGENT_TOKEN"\nbuildkite-agent ALL = (ci-agent : ci-agent) NOPASSWD: SETENV: /usr/local/sbin/buildkite-agent-job ""\n';
    const given: Record<string, string> = { PATH: "/usr/bin:/bin", BUILDKITE_AGENT_TOKEN: "t" };
    for (const name of BUILTIN_DELETED) given[name] = "/tmp/injected";
    const run = runRule(replaced, given);
    expect(run.status).toBe(0);
    expect(run.env.has("BUILDKITE_AGENT_TOKEN")).toBe(false);
    expect(BUILTIN_DELETED.filter((name) => run.env.has(name))).toEqual(BUILTIN_DELETED);
  });
});

describe("the vm host's root rule for ci-job-handoff: the job's names reach root, nothing the agent's user chooses (rendered, real sudo)", () => {
  let render: StackRender;
  let dropIn: string;
  let bootstrap: string[];
  beforeAll(async () => {
    requireSudo();
    render = await renderStack("production");
    // release: the Buildkite queue with isolation vm.
    const id = Object.keys(render.minions).find((i) => /-release-1$/.test(i))!;
    dropIn = String(Object.values(render.minions[id].states).find((s) => s.function === "file.managed" && s.args.name === SUDOERS)!.args.contents);
    const cfg = render.minions[id].files["/etc/buildkite-agent/buildkite-agent.cfg"];
    bootstrap = /^bootstrap-script="([^"]+)"$/m.exec(cfg)![1].split(" ");
  }, 240_000);
  const clean = (stderr: string) => stderr.replace(/.*parsed OK\n?/g, "").replace(/sudo: unable to resolve host.*\n?/g, "");
  const jobEnv = { PATH: "/usr/bin:/bin", BUILDKITE_JOB_ID: "job-1", BUILDKITE_REPO: "https://github.com/example/x.git", BUILDKITE_AGENT_ACCESS_TOKEN: "bkaj_x", CI: "true", BUILDKITE: "true", CI_FLEET_SSM_PREFIX: "/ci-fleet/production/release" };
  const hostile = { LD_PRELOAD: "/tmp/evil.so", LD_LIBRARY_PATH: "/tmp", PYTHONPATH: "/tmp", PYTHONSTARTUP: "/tmp/x.py", BASH_ENV: "/tmp/x", OTHER: "x" };

  test("the rendered bootstrap-script, as the agent runs it: the job's names arrive (values with / included), the agent's other variables do not", () => {
    expect(bootstrap).toEqual([SUDO, "-n", "-u", "root", "--", HANDOFF]);
    const run = runRule(dropIn, { ...jobEnv, ...hostile }, bootstrap);
    expect({ status: run.status, stderr: clean(run.stderr) }).toEqual({ status: 0, stderr: "" });
    const { PATH: _path, ...wanted } = jobEnv;
    expect(Object.fromEntries(Object.keys(wanted).map((k) => [k, run.env.get(k)]))).toEqual(wanted);
    expect(Object.keys(hostile).filter((k) => run.env.has(k))).toEqual([]);
  });

  test("the agent's user cannot keep its environment for root (-E) nor set a variable on the command line", () => {
    const keep = runRule(dropIn, { ...jobEnv, ...hostile }, [SUDO, "-n", "-E", "-u", "root", "--", HANDOFF]);
    expect({ status: keep.status, ran: keep.env.size > 0, stderr: clean(keep.stderr).trim() }).toEqual({ status: 1, ran: false, stderr: "sudo: sorry, you are not allowed to preserve the environment" });
    const set = runRule(dropIn, jobEnv, [SUDO, "-n", "-u", "root", "LD_PRELOAD=/tmp/evil.so", "--", HANDOFF]);
    expect({ status: set.status, ran: set.env.size > 0, stderr: clean(set.stderr).trim() }).toEqual({ status: 1, ran: false, stderr: "sudo: sorry, you are not allowed to set the following environment variables: LD_PRELOAD" });
  });
});
