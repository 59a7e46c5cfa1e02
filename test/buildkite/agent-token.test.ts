import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { buildkiteMinions, directives, parseUnit, renderStack, unitEnvironment, type RenderedMinion, type StackRender } from "./support";

/**
 * The agent token is read by root for the agent and never by the CI user that runs jobs
 * (issue 12 point 4), from the Salt tree each production stack renders with the program's
 * pillar: which file holds it (owner, mode, directory), which uid the agent runs as and which
 * the job, how a job changes uid (sudoers, checked by the real visudo), what the job executor
 * leaves in the job's environment (the rendered script, run for real), and that nothing else
 * Salt writes names it. The computed "who can read it" over the whole machine model is
 * test/seams/buildkite-agent-token.test.ts.
 */

const UNIT = "/etc/systemd/system/buildkite-agent.service";
const CFG = "/etc/buildkite-agent/buildkite-agent.cfg";
const TOKEN_FILE = "/etc/ci-fleet/buildkite-agent/agent-token";
const START = "/usr/local/sbin/buildkite-agent-start";
const SUDOERS = "/etc/sudoers.d/ci-fleet-buildkite-agent";
const EXECUTOR = "/usr/local/sbin/buildkite-agent-job";
const HANDOFF = "/usr/local/sbin/ci-job-handoff";
const VISUDO = ["/usr/sbin/visudo", "/usr/bin/visudo"].find((p) => fs.existsSync(p));

type State = RenderedMinion["states"][string];
const stateNamed = (minion: RenderedMinion, fn: string, name: string): [string, State][] =>
  Object.entries(minion.states).filter(([, s]) => s.function === fn && s.args.name === name);

/** `key="value"` lines of buildkite-agent.cfg (cliconfig/file.go: one pair of quotes trimmed). */
function cfgOf(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\n").map((l) => l.trim())) {
    if (line === "" || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    out.set(line.slice(0, eq), line.slice(eq + 1).replace(/^"(.*)"$/, "$1"));
  }
  return out;
}

function visudoCheck(contents: string): { status: number | null; output: string } {
  if (!VISUDO) throw new Error("visudo not found: apt-get install sudo (the test validates sudoers with the real visudo)");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-bk-sudoers-"));
  const file = path.join(dir, "drop-in");
  fs.writeFileSync(file, contents, { mode: 0o440 });
  try {
    const proc = spawnSync(VISUDO, ["-c", "-f", file], { encoding: "utf8" });
    return { status: proc.status, output: `${proc.stdout}${proc.stderr}`.replaceAll(file, "<drop-in>") };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The rendered executor, run for real with `env` in place of the Buildkite binary (setpriv stays real). */
function runExecutor(text: string, env: Record<string, string>): { status: number | null; env: Map<string, string>; noNewPrivs: string | undefined; stderr: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-bk-exec-"));
  try {
    const file = path.join(dir, "executor");
    const probe = path.join(dir, "probe");
    fs.writeFileSync(probe, "#!/bin/sh\ngrep '^NoNewPrivs:' /proc/self/status\nexec /usr/bin/env -0\n", { mode: 0o755 });
    expect(text).toContain(" -- /usr/bin/buildkite-agent bootstrap\n");
    fs.writeFileSync(file, text.replace(" -- /usr/bin/buildkite-agent bootstrap\n", ` -- ${probe}\n`), { mode: 0o755 });
    const proc = spawnSync(file, [], { encoding: "utf8", env });
    const [first, ...rest] = proc.stdout.split("\n");
    const out = new Map<string, string>();
    for (const item of rest.join("\n").split("\0").filter((x) => x !== "")) out.set(item.slice(0, item.indexOf("=")), item.slice(item.indexOf("=") + 1));
    return { status: proc.status, env: out, noNewPrivs: /^NoNewPrivs:\s*(\d)/.exec(first)?.[1], stderr: proc.stderr };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe.each(["production", "production-aws"])("the Buildkite agent token on the runners of %s", (stack) => {
  let render: StackRender;
  const inVm = (id: string) => (render.documents[id].ci_fleet.runner as unknown as { isolation: string }).isolation === "vm";
  let minions: string[];
  beforeAll(async () => {
    render = await renderStack(stack);
    minions = buildkiteMinions(render);
    // Production has both kinds (infra on the host, release in VMs): both paths are judged.
    expect([...new Set(minions.map(inVm))].sort()).toEqual([false, true]);
  });

  test("the stack has Buildkite runners", () => {
    expect(minions.length).toBeGreaterThan(0);
  });

  test("the token comes from the runner's own pillar into one root-only file in a root-only directory, never in a state's arguments or a diff", () => {
    for (const id of minions) {
      const m = render.minions[id];
      const doc = render.documents[id].ci_fleet as unknown as { runner: { buildkite_agent_token?: string } };
      expect({ id, inPillar: typeof doc.runner.buildkite_agent_token }).toEqual({ id, inPillar: "string" });
      const [[, dir]] = stateNamed(m, "file.directory", path.dirname(TOKEN_FILE));
      expect({ id, dir: [dir.args.user, dir.args.group, dir.args.mode] }).toEqual({ id, dir: ["root", "root", "0700"] });
      const files = stateNamed(m, "file.managed", TOKEN_FILE);
      expect({ id, count: files.length }).toEqual({ id, count: 1 });
      const [, file] = files[0];
      expect({ id, args: file.args }).toEqual({
        id,
        args: expect.objectContaining({ contents_pillar: "ci_fleet:runner:buildkite_agent_token", user: "root", group: "root", mode: "0600", show_changes: false }),
      });
      // A rendered highstate (state.show_sls) never carries the token.
      expect({ id, inArgs: JSON.stringify(m.states).includes(doc.runner.buildkite_agent_token!) }).toEqual({ id, inArgs: false });
    }
  });

  test("the start script hands the credential to the agent and nothing else (run for real)", () => {
    const id = minions[0];
    const text = render.minions[id].files[START];
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-bk-start-"));
    try {
      const creds = path.join(dir, "credentials");
      fs.mkdirSync(creds, { mode: 0o500 });
      fs.writeFileSync(path.join(creds, "agent-token"), "bkat-0123456789abcdefghij\n", { mode: 0o400 });
      const probe = path.join(dir, "probe");
      fs.writeFileSync(probe, '#!/bin/sh\necho "argv: $*"\nexec /usr/bin/env -0\n', { mode: 0o755 });
      const script = path.join(dir, "start");
      expect(text).toContain("\nexec /usr/bin/buildkite-agent start\n");
      fs.writeFileSync(script, text.replace("\nexec /usr/bin/buildkite-agent start\n", `\nexec ${probe} start\n`), { mode: 0o755 });
      const run = (env: Record<string, string>) => spawnSync(script, [], { encoding: "utf8", env: { PATH: "/usr/bin:/bin", ...env } });
      const ok = run({ CREDENTIALS_DIRECTORY: creds });
      const [argv, rest] = [ok.stdout.split("\n")[0], ok.stdout.split("\n").slice(1).join("\n")];
      const env = new Map(rest.split("\0").filter((x) => x !== "").map((x) => [x.slice(0, x.indexOf("=")), x.slice(x.indexOf("=") + 1)] as [string, string]));
      expect({ status: ok.status, stderr: ok.stderr, argv, token: env.get("BUILDKITE_AGENT_TOKEN"), credentialsDir: env.has("CREDENTIALS_DIRECTORY") }).toEqual({
        status: 0,
        stderr: "",
        argv: "argv: start",
        token: "bkat-0123456789abcdefghij",
        credentialsDir: false,
      });
      // No credential, or an empty one: the agent is not started.
      expect(run({}).status).not.toBe(0);
      fs.chmodSync(path.join(creds, "agent-token"), 0o600);
      fs.writeFileSync(path.join(creds, "agent-token"), "");
      const empty = run({ CREDENTIALS_DIRECTORY: creds });
      expect({ status: empty.status, started: empty.stdout.includes("argv:") }).toEqual({ status: 1, started: false });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the agent runs as its own system user; every job as the CI user; neither is in the other's group", () => {
    for (const id of minions) {
      const m = render.minions[id];
      const unit = parseUnit(m.files[UNIT]);
      expect({ id, user: directives(unit, "Service", "User"), group: directives(unit, "Service", "Group") }).toEqual({ id, user: ["buildkite-agent"], group: ["buildkite-agent"] });
      // systemd (root) loads the token file as a credential of the agent's unit (systemd.exec(5) LoadCredential=).
      expect({ id, credentials: directives(unit, "Service", "LoadCredential") }).toEqual({ id, credentials: [`agent-token:${TOKEN_FILE}`] });
      const [[, agentUser]] = stateNamed(m, "user.present", "buildkite-agent");
      expect({ id, args: agentUser.args }).toEqual({
        id,
        args: expect.objectContaining({ system: true, shell: "/usr/sbin/nologin", groups: [], remove_groups: true, password: "!" }),
      });
      const [[, ciUser]] = stateNamed(m, "user.present", "ci-agent");
      expect({ id, ciGroups: ciUser.args.groups }).toEqual({ id, ciGroups: ["kvm"] });
      // isolation vm (every production queue): bootstrap-script hands the job to a slot's VM as root
      // (runner.job_vm_host_agent); no job code runs on the host. isolation host: it changes to
      // ci-agent before any job code (hooks included) runs.
      const cfg = cfgOf(m.files[CFG]);
      const bootstrap = inVm(id) ? `/usr/bin/sudo -n -u root -- ${HANDOFF}` : `/usr/bin/sudo -n -E -u ci-agent -g ci-agent -- ${EXECUTOR}`;
      expect({ id, bootstrap: cfg.get("bootstrap-script") }).toEqual({ id, bootstrap });
      expect({ id, token: cfg.has("token"), inCfg: /BUILDKITE_AGENT_TOKEN|agent[-_]token/i.test(m.files[CFG].replace(/^#.*$/gm, "")) }).toEqual({ id, token: false, inCfg: false });
    }
  });

  test("sudo lets the agent's user run exactly the job executor, with no arguments, as ci-agent only; visudo accepts it", () => {
    for (const id of minions) {
      const m = render.minions[id];
      const [[, state]] = stateNamed(m, "file.managed", SUDOERS);
      expect({ id, perms: [state.args.user, state.args.group, state.args.mode], check: state.args.check_cmd }).toEqual({ id, perms: ["root", "root", "0440"], check: "/usr/sbin/visudo -c -f" });
      const text = String(state.args.contents);
      expect({ id, visudo: visudoCheck(text) }).toEqual({ id, visudo: { status: 0, output: expect.stringContaining("parsed OK") } });
      // The root rule exists only where jobs go to VMs: a host queue's agent gets no way to root.
      expect(text.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("#"))).toEqual([
        'Defaults:buildkite-agent !use_pty, !secure_path, !env_check, env_delete += "BUILDKITE_AGENT_TOKEN"',
        `buildkite-agent ALL = (ci-agent : ci-agent) NOPASSWD: SETENV: ${EXECUTOR} ""`,
        // Root without SETENV: the agent's user cannot set LD_* or keep its environment (-E) for
        // root; sudo keeps only the job's names (test/identity/sudoers-env.test.ts runs it).
        ...(inVm(id) ? [`Defaults!${HANDOFF} env_keep = "BUILDKITE_* CI_FLEET_* CI BUILDKITE"`, `buildkite-agent ALL = (root) NOPASSWD: ${HANDOFF} ""`] : []),
      ]);
      if (!inVm(id)) {
        expect({ id, handoff: stateNamed(m, "file.managed", HANDOFF) }).toEqual({ id, handoff: [] });
        continue;
      }
      // The handoff is root's too, runs Python isolated from the agent's PYTHON* variables and
      // starts the launcher with an environment of its own, not the agent's.
      const [[, handoff]] = stateNamed(m, "file.managed", HANDOFF);
      expect({ id, handoff: [handoff.args.user, handoff.args.group, handoff.args.mode] }).toEqual({ id, handoff: ["root", "root", "0755"] });
      expect(String(handoff.args.contents).split("\n")[0]).toBe("#!/usr/bin/python3 -I");
      expect(String(handoff.args.contents)).toContain("env=LAUNCHER_ENV");
      // The executor is root's: the agent's user cannot change what it runs as ci-agent.
      const [[, exe]] = stateNamed(m, "file.managed", EXECUTOR);
      expect({ id, exe: [exe.args.user, exe.args.group, exe.args.mode] }).toEqual({ id, exe: ["root", "root", "0755"] });
    }
  });

  test("visudo refuses a broken drop-in (the check above can fail)", () => {
    expect(visudoCheck("buildkite-agent ALL = (ci-agent : ci-agent) NOPASSWD SETENV: /usr/local/sbin/buildkite-agent-job\n").status).not.toBe(0);
  });

  test("the job executor keeps the job's environment, drops the agent token, moves HOME to the CI user's and runs the job with no_new_privs", () => {
    for (const id of minions.slice(0, 1)) {
      const m = render.minions[id];
      const unitEnv = unitEnvironment(parseUnit(m.files[UNIT]));
      // What sudo -E hands the executor: the agent's environment (its own token included, in case it were there) plus the job's.
      const given: Record<string, string> = {
        ...Object.fromEntries(unitEnv),
        PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        HOME: "/var/lib/buildkite-agent",
        USER: "ci-agent",
        BUILDKITE_AGENT_TOKEN: "agent-registration-token",
        BUILDKITE_AGENT_ACCESS_TOKEN: "bkaj_job-token",
        BUILDKITE_JOB_ID: "0190f6d6-1c6e-4a52-9b7a-0123456789ab",
        BUILDKITE_ENV_FILE: "/nonexistent/job-env",
        SUDO_USER: "buildkite-agent",
      };
      const run = runExecutor(m.files[EXECUTOR], given);
      expect({ id, status: run.status, stderr: run.stderr, noNewPrivs: run.noNewPrivs }).toEqual({ id, status: 0, stderr: "", noNewPrivs: "1" });
      expect({ id, agentToken: run.env.has("BUILDKITE_AGENT_TOKEN"), jobToken: run.env.get("BUILDKITE_AGENT_ACCESS_TOKEN"), envFile: run.env.has("BUILDKITE_ENV_FILE"), sudo: run.env.has("SUDO_USER") }).toEqual({
        id,
        agentToken: false,
        jobToken: "bkaj_job-token",
        envFile: false,
        sudo: false,
      });
      expect([run.env.get("HOME"), run.env.get("USER"), run.env.get("LOGNAME")]).toEqual(["/var/lib/ci-agent", "ci-agent", "ci-agent"]);
      // Everything the hooks need from the unit reaches them unchanged.
      for (const name of ["CI_FLEET_SSM_PREFIX", "AWS_REGION", "CI_FLEET_STATE_DIR", "AWS_CONFIG_FILE", "BUILDKITE_JOB_ID"]) {
        expect({ id, name, value: run.env.get(name) }).toEqual({ id, name, value: given[name] });
      }
    }
  });

  test("build-path is the job's, made afresh by the root reset; the agent may only enter it", () => {
    for (const id of minions) {
      const m = render.minions[id];
      const build = cfgOf(m.files[CFG]).get("build-path")!;
      const reset = m.files["/usr/local/sbin/ci-agent-reset"];
      const lines = reset.split("\n").map((l) => l.trim());
      const at = (line: string) => lines.indexOf(line);
      expect({ id, build, parent: path.dirname(build) }).toEqual({ id, build: "/var/lib/buildkite-builds", parent: "/var/lib" });
      expect(at(`builds=${build}`)).toBeGreaterThan(at("pkill -KILL -u \"$user\" || true"));
      expect(at('rm -rf -- "$builds"')).toBeGreaterThan(at(`builds=${build}`));
      expect(at('mkdir -m 0710 "$builds"')).toBeGreaterThan(at('rm -rf -- "$builds"'));
      expect(at('chown -h "$user:buildkite-agent" "$builds"')).toBeGreaterThan(at('mkdir -m 0710 "$builds"'));
    }
  });

  test("no file Salt renders names the token or sets BUILDKITE_AGENT_TOKEN, except the start script that reads the credential", () => {
    for (const id of minions) {
      const m = render.minions[id];
      const token = (render.documents[id].ci_fleet as unknown as { runner: { buildkite_agent_token: string } }).runner.buildkite_agent_token;
      const holders = Object.entries(m.files)
        .filter(([, text]) => text.includes(token) || /BUILDKITE_AGENT_TOKEN=/.test(text))
        .map(([p]) => p);
      expect({ id, holders }).toEqual({ id, holders: [START] });
      expect(m.files[START]).toMatch(/^BUILDKITE_AGENT_TOKEN=\$\(cat -- "\$credential"\)$/m);
    }
  });
});
