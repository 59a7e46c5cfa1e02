import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as YAML from "yaml";
import { ROOT } from "../support/preview";
import { buildkiteMinions, renderFixtures, renderStack, type RenderedMinion, type StackRender } from "./support";

const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");

/**
 * buildkite-agent.cfg as the pinned agent reads it (buildkite/agent@v3.123.1
 * cliconfig/file.go parseLine: `key=value`, `#` comments, one pair of quotes trimmed;
 * cliconfig/loader.go: a bool is strconv.ParseBool, a slice is split on ",").
 */
function parseAgentConfig(text: string): Map<string, string> {
  const config = new Map<string, string>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq < 0) throw new Error(`the agent cannot parse this config line: ${raw}`);
    let value = line.slice(eq + 1).trim();
    if ((value.match(/"/g) ?? []).length === 2 || (value.match(/'/g) ?? []).length === 2) value = value.replace(/^["']+|["']+$/g, "");
    config.set(line.slice(0, eq).trim(), value);
  }
  return config;
}

/**
 * The `start` flags ci-fleet may set, as named at v3.123.1 (clicommand/agent_start.go
 * AgentStartConfig `cli:` tags and clicommand/global.go shared flags). A key the agent
 * does not know is silently ignored, so a misspelt key would quietly drop a setting.
 */
const START_FLAGS = new Set([
  "name", "tags", "bootstrap-script", "build-path", "hooks-path", "plugins-path", "sockets-path", "git-clean-flags",
  "disconnect-after-job", "no-command-eval", "no-local-hooks", "no-plugins",
  // isolation vm: one worker per job slot (agent_start.go `Spawn int cli:"spawn"`).
  "spawn",
]);

const BOOL = new Set(["true", "false", "1", "0", "t", "f", "TRUE", "FALSE", "True", "False", "T", "F"]);

/** ci_fleet:runner:isolation of a minion's own pillar document (absent: host). */
const isolation = (render: StackRender, id: string): string =>
  (render.documents[id].ci_fleet.runner as unknown as { isolation?: string }).isolation ?? "host";
const slotsOf = (render: StackRender, id: string): number =>
  (render.documents[id].ci_fleet.runner as unknown as { job_vm: { slots: number } }).job_vm.slots;

describe("buildkite-agent.cfg on the production runners", () => {
  let render: StackRender;
  beforeAll(async () => {
    render = await renderStack("production");
  });

  test("every key is a start flag of the pinned agent; booleans parse", () => {
    for (const id of buildkiteMinions(render)) {
      const cfg = parseAgentConfig(render.minions[id].files["/etc/buildkite-agent/buildkite-agent.cfg"]);
      for (const [key, value] of cfg) {
        expect({ id, key, known: START_FLAGS.has(key) }).toEqual({ id, key, known: true });
        if (key.startsWith("no-") || key === "disconnect-after-job") expect({ id, key, bool: BOOL.has(value) }).toEqual({ id, key, bool: true });
      }
      expect(cfg.get("name")).toBe(id);
      // One job per agent process on the host; none on a vm host (its workers take jobs back to back).
      expect({ id, "disconnect-after-job": cfg.get("disconnect-after-job") }).toEqual({ id, "disconnect-after-job": isolation(render, id) === "host" ? "true" : undefined });
      expect(cfg.get("build-path")).toBe("/var/lib/buildkite-builds");
      expect(cfg.get("hooks-path")).toBe("/etc/buildkite-agent/hooks");
      // The job's own paths (the job process makes them in the CI user's work dir, wiped by the reset).
      expect([cfg.get("plugins-path"), cfg.get("sockets-path")]).toEqual(["/var/lib/ci-agent/work/plugins", "/var/lib/ci-agent/work/sockets"]);
      // The cfg is world-readable: never the token (`token`, clicommand/global.go AgentRegisterTokenFlag).
      expect({ id, token: cfg.has("token") }).toEqual({ id, token: false });
    }
  });

  test("tags carry the queue (the agent splits the value on commas)", () => {
    for (const id of buildkiteMinions(render)) {
      const doc = render.documents[id].ci_fleet;
      const cfg = parseAgentConfig(render.minions[id].files["/etc/buildkite-agent/buildkite-agent.cfg"]);
      const tags = cfg.get("tags")!.split(",");
      expect(tags).toContain(`queue=${doc.runner!.queue}`);
      expect(tags).toContain(`trusted=${doc.runner!.trusted}`);
    }
  });

  test("plugins stay on on trusted queues (no-plugins named explicitly)", () => {
    // v3.123.1 agent_start.go: `if (cfg.NoCommandEval || cfg.NoLocalHooks) && !isSetNoPlugins
    // { cfg.NoPlugins = true }` -- no-command-eval alone silently disables plugins unless the
    // file names no-plugins.
    for (const id of buildkiteMinions(render)) {
      expect(render.documents[id].ci_fleet.runner!.trusted).toBe(true);
      const cfg = parseAgentConfig(render.minions[id].files["/etc/buildkite-agent/buildkite-agent.cfg"]);
      expect({ id, "no-command-eval": cfg.get("no-command-eval"), "no-plugins": cfg.get("no-plugins"), "no-local-hooks": cfg.get("no-local-hooks") }).toEqual({
        id,
        "no-command-eval": "true",
        "no-plugins": "false",
        "no-local-hooks": undefined,
      });
    }
  });
});

describe("job slots that do not sit idle: disconnect-after-job by isolation (production: infra on the host, release in VMs)", () => {
  // buildkite/agent v3.123.1: agent/agent_worker_action.go runActionLoop returns after one job when
  // DisconnectAfterJob ("Job ran, and disconnect-after-job is enabled. Disconnecting..."); agent/agent_pool.go
  // Start returns only after every worker's runWorker returned; clicommand/agent_start.go usage: "When used in
  // conjunction with the --spawn flag, each worker booted will run exactly one job".
  let render: StackRender;
  beforeAll(async () => {
    render = await renderStack("production");
  });
  const cfgOf = (id: string) => parseAgentConfig(render.minions[id].files["/etc/buildkite-agent/buildkite-agent.cfg"]);

  test("production has both isolations on Buildkite queues", () => {
    const byIsolation = new Map<string, string[]>();
    for (const id of buildkiteMinions(render)) byIsolation.set(isolation(render, id), [...(byIsolation.get(isolation(render, id)) ?? []), render.documents[id].ci_fleet.runner!.queue]);
    expect([...new Set(byIsolation.get("host"))]).toEqual(["infra"]);
    expect([...new Set(byIsolation.get("vm"))]).toEqual(["release"]);
  });

  test("isolation host: one job per agent process (disconnect-after-job), one worker, the job runs as the CI user", () => {
    const hosts = buildkiteMinions(render).filter((id) => isolation(render, id) === "host");
    expect(hosts.length).toBeGreaterThan(0);
    for (const id of hosts) {
      const cfg = cfgOf(id);
      expect({ id, disconnect: cfg.get("disconnect-after-job"), spawn: cfg.get("spawn") }).toEqual({ id, disconnect: "true", spawn: undefined });
      expect(cfg.get("bootstrap-script")).toBe("/usr/bin/sudo -n -E -u ci-agent -g ci-agent -- /usr/local/sbin/buildkite-agent-job");
    }
  });

  test("isolation vm: one worker per slot, each taking jobs back to back (no disconnect-after-job), every job handed to a VM", () => {
    const vms = buildkiteMinions(render).filter((id) => isolation(render, id) === "vm");
    expect(vms.length).toBeGreaterThan(0);
    for (const id of vms) {
      const cfg = cfgOf(id);
      expect({ id, disconnect: cfg.has("disconnect-after-job"), spawn: cfg.get("spawn") }).toEqual({ id, disconnect: false, spawn: String(slotsOf(render, id)) });
      expect(slotsOf(render, id)).toBeGreaterThan(1);
      expect(cfg.get("bootstrap-script")).toBe("/usr/bin/sudo -n -u root -- /usr/local/sbin/ci-job-handoff");
    }
  });

  test("isolation vm: the handoff refuses any access token but a job-scoped one (never the agent's session to a VM)", () => {
    // Without disconnect-after-job the agent's session lives on after a job; agent/job_runner.go NewJobRunner gives
    // the job that session token when Buildkite's accept response carries no job token (`bkaj_`).
    const id = buildkiteMinions(render).find((m) => isolation(render, m) === "vm")!;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bk-handoff-"));
    try {
      const script = path.join(dir, "ci-job-handoff");
      fs.writeFileSync(script, render.minions[id].files["/usr/local/sbin/ci-job-handoff"], { mode: 0o700 });
      const env = { PATH: "/usr/bin:/bin", BUILDKITE_JOB_ID: "0190f1b2-1111-4222-8333-444455556666", BUILDKITE_AGENT_ACCESS_TOKEN: "bkaa_the-agents-session" };
      const run = spawnSync(python, [script], { env, encoding: "utf8" });
      expect({ status: run.status, stderr: run.stderr.trim() }).toEqual({
        status: 1,
        stderr: "ci-job-handoff: the job's access token is not job-scoped (bkaj_): not handing this agent's session to a VM",
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("buildkite-agent.cfg on an untrusted queue (test/salt/fixtures.py staging-default-r1)", () => {
  let minions: Record<string, RenderedMinion>;
  beforeAll(() => {
    minions = renderFixtures();
  });

  test("no command eval, no repository hooks, no plugins; only known keys", () => {
    const cfg = parseAgentConfig(minions["staging-default-r1"].files["/etc/buildkite-agent/buildkite-agent.cfg"]);
    expect(cfg.get("tags")!.split(",")).toContain("trusted=false");
    expect([cfg.get("no-command-eval"), cfg.get("no-local-hooks"), cfg.get("no-plugins")]).toEqual(["true", "true", "true"]);
    for (const key of cfg.keys()) expect({ key, known: START_FLAGS.has(key) }).toEqual({ key, known: true });
  });
});

describe("the pinned agent release", () => {
  // Buildkite's package signing key, as published in its install docs
  // (https://buildkite.com/docs/agent/v3/ubuntu: keys.openpgp.org/vks/v1/by-fingerprint/<this>).
  const FINGERPRINT = "32A37959C2FA5C3C99EFBC32A79206696452D198";
  const VERIFY = "/usr/local/sbin/ci-fleet-verify-key-fingerprint";
  const defaults = YAML.parse(fs.readFileSync(path.join(ROOT, "salt/buildkite/parameters/defaults.yaml"), "utf8")).buildkite as Record<string, any>;
  let render: StackRender;
  beforeAll(async () => {
    render = await renderStack("production");
  });

  type State = RenderedMinion["states"][string];
  const states = (id: string, fn: string): [string, State][] => Object.entries(render.minions[id].states).filter(([, s]) => s.function === fn);
  const named = (id: string, fn: string, name: string): [string, State] => {
    const found = states(id, fn).filter(([, s]) => s.args.name === name);
    expect({ id, fn, name, count: found.length }).toEqual({ id, fn, name, count: 1 });
    return found[0];
  };
  const requires = (state: State) => ((state.args.require ?? []) as Record<string, string>[]).map((r) => Object.entries(r)[0].join(":"));

  test("is 3.41 or later (OIDC)", () => {
    const [major, minor] = String(defaults.version).split(".").map(Number);
    expect(major === 3 && minor >= 41).toBe(true);
  });

  test("the agent is installed from Buildkite's signed apt repository with the pinned fingerprint, never a downloaded tarball", () => {
    expect(defaults.repo).toEqual({
      url: "https://apt.buildkite.com/buildkite-agent",
      channel: "stable",
      file: "/etc/apt/sources.list.d/buildkite-agent.list",
      key_url: `https://keys.openpgp.org/vks/v1/by-fingerprint/${FINGERPRINT}`,
      key_file: "/usr/share/keyrings/buildkite-agent-archive-keyring.asc",
      key_fingerprint: FINGERPRINT,
    });
    for (const key of ["source", "sha256", "install_dir"]) expect(defaults).not.toHaveProperty(key);
    expect(buildkiteMinions(render).length).toBeGreaterThan(0);
    for (const id of buildkiteMinions(render)) {
      const files = render.minions[id].files;
      // Nothing is downloaded and unpacked outside apt.
      expect({ id, archives: states(id, "archive.extracted"), symlinks: states(id, "file.symlink") }).toEqual({ id, archives: [], symlinks: [] });
      // The key is installed only if its fingerprint is the pinned one (check_cmd runs on the download).
      const [keyId, key] = named(id, "file.managed", defaults.repo.key_file);
      expect(key.args).toMatchObject({ source: defaults.repo.key_url, check_cmd: `${VERIFY} ${FINGERPRINT}`, replace: false, user: "root", mode: "0644" });
      const [scriptId] = named(id, "file.managed", VERIFY);
      expect(requires(key)).toContain(`file:${scriptId}`);
      // apt trusts that key, and only it, for this repository.
      const [sourcesId, sources] = named(id, "file.managed", defaults.repo.file);
      expect(files[defaults.repo.file]).toBe(`deb [signed-by=${defaults.repo.key_file}] https://apt.buildkite.com/buildkite-agent stable main`);
      expect(requires(sources)).toContain(`file:${keyId}`);
      // Pinned to the release (deb version <version>-<build number>) and held.
      const [pinId] = named(id, "file.managed", "/etc/apt/preferences.d/ci-fleet-buildkite-agent");
      expect(files["/etc/apt/preferences.d/ci-fleet-buildkite-agent"]).toContain(`Package: buildkite-agent\nPin: version ${defaults.version}-*\nPin-Priority: 1001\n`);
      const [, pkg] = named(id, "pkg.installed", "buildkite-agent");
      expect(pkg.args).toMatchObject({ version: `${defaults.version}-*`, hold: true, refresh: true });
      expect(requires(pkg)).toEqual(expect.arrayContaining([`file:${sourcesId}`, `file:${pinId}`]));
      // The tarball install is removed from machines that had it.
      const absent = states(id, "file.absent").map(([, s]) => s.args.name);
      expect(absent).toEqual(expect.arrayContaining(["/usr/local/bin/buildkite-agent", "/opt/buildkite-agent"]));
    }
  });

  test("one copy of the key-fingerprint check serves every vendor repository", () => {
    const copies: string[] = [];
    const walk = (rel: string) => {
      for (const e of fs.readdirSync(path.join(ROOT, rel), { withFileTypes: true })) {
        if (e.isDirectory()) walk(path.join(rel, e.name));
        else if (e.name === "ci-fleet-verify-key-fingerprint") copies.push(path.join(rel, e.name));
      }
    };
    walk("salt");
    expect(copies).toHaveLength(1);
  });

  test("Salt's files in /etc/buildkite-agent are written after the package, and its hook samples are cleaned away", () => {
    // The deb's postinst (buildkite/agent@v3.123.1 packaging/linux/scripts/after-install-and-upgrade.sh)
    // on install copies a template cfg and the hooks/*.sample files only where none exist, and runs
    // `chown -R buildkite-agent:buildkite-agent /etc/buildkite-agent`: Salt re-owns all of it afterwards.
    for (const id of buildkiteMinions(render)) {
      const [pkgId] = named(id, "pkg.installed", "buildkite-agent");
      const [, dir] = named(id, "file.directory", "/etc/buildkite-agent");
      expect(dir.args).toMatchObject({ user: "root", group: "root", mode: "0755" });
      const [, cfg] = named(id, "file.managed", "/etc/buildkite-agent/buildkite-agent.cfg");
      const [, hooks] = named(id, "file.recurse", "/etc/buildkite-agent/hooks");
      expect(hooks.args).toMatchObject({ clean: true, user: "root" });
      for (const state of [dir, cfg, hooks]) expect({ id, name: state.args.name, requires: requires(state) }).toEqual({ id, name: state.args.name, requires: expect.arrayContaining([`pkg:${pkgId}`]) });
    }
  });
});
