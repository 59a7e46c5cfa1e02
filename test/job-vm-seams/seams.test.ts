/**
 * Issue 15: the seams between the job-slot runtime (salt/runner/files/ci-job-slot, ci-job-guest)
 * and the fleet that installs it, each side computed from what is really rendered or run:
 *  - the Buildkite job input: the rendered ci-job-handoff, run as root with a realistic job
 *    environment and the job's env JSON file as the agent writes it (the pipeline's own variables),
 *    writes what `ci-job-slot handoff` passes to the guest; the real ci-job-guest parser turns it
 *    into the `buildkite-agent bootstrap` it starts (a fake agent on PATH records env and argv);
 *    a symlinked, foreign-owned, writable-by-others or missing env file fails the job;
 *  - test_guest_env.py (python3 unittest): the guest's filter of a Buildkite job's variables;
 *  - the host firewall: the base ruleset every machine gets (salt/base/files/nftables.conf.jinja,
 *    rendered with the program's pillar) and a slot's own table (`ci-job-slot render-nft` with the
 *    rendered /etc/ci-fleet/job-vm.json), loaded with the real nft in throwaway network
 *    namespaces: a reload of the base leaves the slot table in place, and a VM's packets reach the
 *    internet but not a private address or the metadata service;
 *  - one writer for NAT and net.ipv4.ip_forward: the launcher.
 * (The GitHub input of the same seam: test/orchestration/test_orchestration.py JobSlotRegistrationTest.)
 * Root, nft, ip and python3 are required: the test fails without them, never skips.
 */
import { spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as YAML from "yaml";
import { renderStack, StackRender } from "../support/salt-render";

const ROOT = path.resolve(__dirname, "../..");
const PYTHON = "/usr/bin/python3";
const LAUNCHER = path.join(ROOT, "salt/runner/files/ci-job-slot");
const GUEST = path.join(ROOT, "salt/runner/files/ci-job-guest");
const JOB_VM = YAML.parse(fs.readFileSync(path.join(ROOT, "salt/runner/parameters/defaults.yaml"), "utf8")).runner.job_vm;
const BK_AGENT_USER: string = YAML.parse(fs.readFileSync(path.join(ROOT, "salt/buildkite/parameters/defaults.yaml"), "utf8")).buildkite.agent_user.name;
// The agent's user on the test machine (buildkite-agent is not installed here): nobody.
const STAND_IN_USER = "nobody";
const standInUid = () => {
  const p = spawnSync("id", ["-u", STAND_IN_USER], { encoding: "utf8" });
  if (p.status !== 0) throw new Error(`no user ${STAND_IN_USER} on this machine`);
  return Number(p.stdout.trim());
};

let r: StackRender;
let dir: string;
beforeAll(async () => {
  r = await renderStack("production");
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "cjs-seams-"));
}, 240_000);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

type RunnerDoc = { agent: string; isolation: string; job_vm?: { slots: number } };
const runnerDoc = (id: string) => r.documents[id].ci_fleet.runner as unknown as RunnerDoc | undefined;
const vmRunners = (agent: string) => Object.keys(r.documents).filter((id) => runnerDoc(id)?.agent === agent && runnerDoc(id)?.isolation === "vm").sort();

function write(name: string, text: string, mode = 0o600): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text, { mode });
  return file;
}

function run(argv: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}) {
  const p = spawnSync(argv[0], argv.slice(1), { encoding: "utf8", env: opts.env ?? process.env, input: opts.input, timeout: 60_000 });
  if (p.error) throw new Error(`${argv[0]}: ${p.error.message}`);
  return p;
}

/** The rendered file with each `from` replaced by `to` (each must occur exactly once). */
function substituted(text: string, pairs: [string, string][]): string {
  for (const [from, to] of pairs) {
    expect({ from, count: text.split(from).length - 1 }).toEqual({ from, count: 1 });
    text = text.replace(from, to);
  }
  return text;
}

describe("the Buildkite job input: rendered ci-job-handoff -> ci-job-slot handoff -> ci-job-guest", () => {
  const secret = `bkaj_${crypto.randomBytes(12).toString("hex")}`;
  const agentToken = `bkua_${crypto.randomBytes(12).toString("hex")}`;
  const captured = () => path.join(dir, "bk-input.json");
  const args = () => path.join(dir, "bk-args");
  let id: string;
  let script: string;
  beforeAll(() => {
    if (process.getuid?.() !== 0) throw new Error("root is required (the handoff runs as root; the env file is chowned to the agent's stand-in)");
    [id] = vmRunners("buildkite");
    expect(id).toMatch(/-release-1$/);
    const handoff = r.minions[id].files[`${JOB_VM.handoff}`];
    expect(handoff).toBeDefined();
    // A fake ci-job-slot: records its argv and the input on stdin, answers the job's exit code.
    const fakeSlot = write("fake-ci-job-slot", `#!/bin/sh\nprintf '%s\\n' "$@" > ${args()}\ncat > ${captured()}\nexit 7\n`, 0o700);
    script = write(
      "ci-job-handoff",
      substituted(handoff, [
        [`"${JOB_VM.launcher}"`, JSON.stringify(fakeSlot)],
        [`LOCKS = "${JOB_VM.run_dir}-handoff"`, `LOCKS = ${JSON.stringify(path.join(dir, "locks"))}`],
        // The formula's agent user (the one that writes the env file), here a stand-in.
        [`AGENT_USER = "${BK_AGENT_USER}"`, `AGENT_USER = "${STAND_IN_USER}"`],
      ]),
      0o700,
    );
  });

  // What Buildkite sends as the job's env (agent/job_runner.go createEnvironment: r.conf.Job.Env), pipeline,
  // build and step `env:` included; the agent writes exactly this to BUILDKITE_ENV_JSON_FILE (createJobEnvFiles).
  const buildkiteEnv: Record<string, string> = {
    CI: "true", BUILDKITE: "true",
    BUILDKITE_JOB_ID: "0190f1b2-1111-4222-8333-444455556666", BUILDKITE_BUILD_ID: "0190f1b2-aaaa-4bbb-8ccc-dddd0000eeee",
    BUILDKITE_BUILD_NUMBER: "1234", BUILDKITE_REPO: "https://github.com/example-org/netboot.git",
    BUILDKITE_COMMIT: "0123456789abcdef0123456789abcdef01234567", BUILDKITE_BRANCH: "main",
    BUILDKITE_PIPELINE_SLUG: "release", BUILDKITE_ORGANIZATION_SLUG: "example-org", BUILDKITE_COMMAND: "make test",
    BUILDKITE_PLUGINS: '[{"github.com/buildkite-plugins/docker-buildkite-plugin#v5.12.0":{"image":"debian"}}]',
    // The pipeline's own (steps' `env:`): what never reached a VM before.
    NODE_ENV: "test", GREETING: "hello world, a=b == c", MAKEFLAGS: "-j8",
    // A pipeline may set these too; in the VM they are the guest's (or nobody's).
    LD_PRELOAD: "/tmp/evil.so", BUILDKITE_BUILD_PATH: "/var/lib/evil", PATH: "/tmp/evil-bin",
  };
  function envFile(name: string, opts: { uid?: number; mode?: number; text?: string } = {}): string {
    const file = write(name, opts.text ?? `${JSON.stringify(buildkiteEnv)}\n`, opts.mode ?? 0o600);
    fs.chmodSync(file, opts.mode ?? 0o600);
    fs.chownSync(file, opts.uid ?? standInUid(), opts.uid ?? standInUid());
    return file;
  }
  // The bootstrap-script's environment: the agent's job env (the job's, then its own settings over it,
  // createEnvironment) and its unit's CI_FLEET_*, as sudo's env_keep passes them to root.
  const processEnv = (envJson: string | undefined): NodeJS.ProcessEnv => ({
    PATH: "/usr/bin:/bin", HOME: "/root", LANG: "C.UTF-8", SUDO_USER: "buildkite-agent",
    ...Object.fromEntries(Object.entries(buildkiteEnv).filter(([k]) => k.startsWith("BUILDKITE") || k === "CI")),
    BUILDKITE_AGENT_ENDPOINT: "https://agent.buildkite.com/v3", BUILDKITE_AGENT_ACCESS_TOKEN: secret,
    BUILDKITE_AGENT_TOKEN: agentToken, // deleted by the agent; must never get further if present
    BUILDKITE_AGENT_PID: "4242", BUILDKITE_AGENT_NAME: `${id}-1`,
    BUILDKITE_BIN_PATH: "/usr/bin", BUILDKITE_CONFIG_PATH: "/etc/buildkite-agent/buildkite-agent.cfg",
    BUILDKITE_BUILD_PATH: "/var/lib/buildkite-agent/builds", BUILDKITE_HOOKS_PATH: "/etc/buildkite-agent/hooks",
    BUILDKITE_PLUGINS_PATH: "/var/lib/buildkite-agent/plugins", BUILDKITE_SOCKETS_PATH: "/var/lib/buildkite-agent/sockets",
    BUILDKITE_GIT_MIRRORS_PATH: "", BUILDKITE_ENV_FILE: "/tmp/job-env-0190f1b2",
    ...(envJson === undefined ? {} : { BUILDKITE_ENV_JSON_FILE: envJson }),
    BUILDKITE_SHELL: "/bin/bash -e -c", BUILDKITE_PLUGINS_ENABLED: "true", BUILDKITE_LOCAL_HOOKS_ENABLED: "false",
    CI_FLEET_SSM_PREFIX: "/ci-fleet/production/release/", CI_FLEET_STATE_DIR: "/var/lib/buildkite-agent/job-secrets",
  });
  const runHandoff = (envJson: string | undefined) => {
    fs.rmSync(args(), { force: true });
    fs.rmSync(captured(), { force: true });
    return run([PYTHON, script], { env: processEnv(envJson) });
  };

  test("the guest starts `buildkite-agent bootstrap` with the job's env and its per-job token, never the agent token or a host path", () => {
    const h = runHandoff(envFile("job-env-json-0190f1b2"));
    expect({ status: h.status, stderr: h.stderr }).toEqual({ status: 7, stderr: "" });
    expect(fs.readFileSync(args(), "utf8").trim().split("\n")).toEqual(["handoff", "--config", JOB_VM.config, "--slot", "1"]);
    const input = fs.readFileSync(captured(), "utf8");
    expect(input).not.toContain(agentToken);

    // The guest's own parser, then its command run with a fake buildkite-agent on PATH.
    const bin = path.join(dir, "bin");
    fs.mkdirSync(bin, { recursive: true });
    const record = path.join(dir, "bk-agent-record.json");
    write("bin/buildkite-agent", `#!${PYTHON}\nimport json, os, sys\njson.dump({"argv": sys.argv[1:], "env": dict(os.environ)}, open(${JSON.stringify(record)}, "w"))\n`, 0o700);
    const driver = write(
      "guest-driver.py",
      [
        "import importlib.machinery, importlib.util, subprocess, sys",
        `loader = importlib.machinery.SourceFileLoader("guest", ${JSON.stringify(GUEST)})`,
        "spec = importlib.util.spec_from_loader(loader.name, loader); guest = importlib.util.module_from_spec(spec); loader.exec_module(guest)",
        "job = guest.parse_job(sys.stdin.buffer.read())",
        `argv, env = guest.job_command(job, {"HOME": "/home/ci", "USER": "ci", "PATH": ${JSON.stringify(bin)} + ":/usr/bin:/bin"})`,
        "sys.exit(subprocess.run(argv, env=env, stdin=subprocess.DEVNULL).returncode)",
      ].join("\n"),
    );
    const g = run([PYTHON, "-B", driver], { input, env: { PATH: "/usr/bin:/bin" } });
    expect({ status: g.status, stderr: g.stderr }).toEqual({ status: 0, stderr: "" });
    const seen = JSON.parse(fs.readFileSync(record, "utf8")) as { argv: string[]; env: Record<string, string> };
    expect(seen.argv).toEqual(["bootstrap"]);
    expect(seen.env.BUILDKITE_AGENT_ACCESS_TOKEN).toBe(secret);
    expect(seen.env).not.toHaveProperty("BUILDKITE_AGENT_TOKEN");
    const jobEnv = processEnv(undefined);
    for (const k of ["BUILDKITE_JOB_ID", "BUILDKITE_REPO", "BUILDKITE_COMMIT", "BUILDKITE_BRANCH", "BUILDKITE_COMMAND", "BUILDKITE_PLUGINS", "BUILDKITE_AGENT_ENDPOINT", "CI", "BUILDKITE"]) {
      expect({ k, v: seen.env[k] }).toEqual({ k, v: jobEnv[k] });
    }
    // The pipeline's own variables, values with spaces and `=` intact.
    expect({ NODE_ENV: seen.env.NODE_ENV, GREETING: seen.env.GREETING, MAKEFLAGS: seen.env.MAKEFLAGS }).toEqual({ NODE_ENV: "test", GREETING: "hello world, a=b == c", MAKEFLAGS: "-j8" });
    // The VM's own paths and PATH; nothing of the host agent's (its files, hooks, binary, pid, state dir).
    expect(seen.env.BUILDKITE_BUILD_PATH).toBe("/home/ci/builds");
    expect(seen.env.BUILDKITE_PLUGINS_PATH).toBe("/home/ci/plugins");
    expect(seen.env.PATH).toBe(`${bin}:/usr/bin:/bin`);
    // The hooks path is the guest's own (the image's job-secrets hooks); CI_FLEET_* come from the seed, not the input.
    expect(seen.env.BUILDKITE_HOOKS_PATH).toBe("/etc/buildkite-agent/hooks");
    expect(seen.env.CI_FLEET_STATE_DIR).toBe("/home/ci/job-secrets");
    const hostly = Object.entries(seen.env).filter(([k, v]) => k !== "PATH" && k !== "BUILDKITE_HOOKS_PATH" && /^\/(var|etc|tmp|usr|root)\//.test(v));
    expect(hostly).toEqual([]);
    for (const k of ["CI_FLEET_SSM_PREFIX", "BUILDKITE_AGENT_PID", "BUILDKITE_CONFIG_PATH", "BUILDKITE_SOCKETS_PATH", "BUILDKITE_ENV_FILE", "BUILDKITE_ENV_JSON_FILE", "BUILDKITE_BIN_PATH", "SUDO_USER", "LD_PRELOAD"]) {
      expect(seen.env).not.toHaveProperty(k);
    }
  });

  test("the job fails, and no slot is asked, when the env file is missing, a link, another user's, writable by others, too big or not an object of strings", () => {
    const good = envFile("job-env-json-good");
    const link = path.join(dir, "job-env-json-link");
    fs.rmSync(link, { force: true });
    fs.symlinkSync(good, link);
    const big = envFile("job-env-json-big", { text: JSON.stringify({ ...buildkiteEnv, BIG: "x".repeat(800 << 10) }) });
    const cases: [string, string | undefined, RegExp][] = [
      ["absent", undefined, /is not named \(BUILDKITE_ENV_JSON_FILE\)/],
      ["gone", path.join(dir, "job-env-json-gone"), /cannot be opened \(No such file or directory/],
      ["link", link, /cannot be opened \(Too many levels of symbolic links; a symbolic link is refused\)/],
      ["root's", envFile("job-env-json-root", { uid: 0 }), /is not a regular file of nobody that only it can write/],
      ["group-writable", envFile("job-env-json-gw", { mode: 0o620 }), /is not a regular file of nobody that only it can write/],
      ["a directory", (() => { const d = path.join(dir, "job-env-json-dir"); fs.mkdirSync(d, { recursive: true }); fs.chownSync(d, standInUid(), standInUid()); return d; })(), /is not a regular file of nobody/],
      ["too big", big, /is larger than \d+ bytes/],
      ["not JSON", envFile("job-env-json-bad", { text: "NODE_ENV=test\n" }), /is not JSON/],
      ["a list", envFile("job-env-json-list", { text: "[]" }), /is not a JSON object of strings/],
      ["a number", envFile("job-env-json-num", { text: '{"N": 1}' }), /is not a JSON object of strings/],
    ];
    for (const [what, file, why] of cases) {
      const h = runHandoff(file);
      expect({ what, status: h.status, slotAsked: fs.existsSync(args()) }).toEqual({ what, status: 1, slotAsked: false });
      expect({ what, stderr: h.stderr.trim() }).toEqual({ what, stderr: expect.stringMatching(/^ci-job-handoff: the job's environment file .*: not running the job without its pipeline's environment$/) });
      expect({ what, stderr: h.stderr }).toEqual({ what, stderr: expect.stringMatching(why) });
    }
    // The same file, not a link and the stand-in's: handed off.
    expect(runHandoff(good).status).toBe(7);
  });

  test("test_guest_env.py: the guest's filter of a Buildkite job's variables (python3 unittest)", () => {
    const p = run([PYTHON, "-B", path.join(__dirname, "test_guest_env.py")]);
    expect(p.stderr).toMatch(/Ran \d+ tests/);
    expect([p.status, p.stderr.split("\n").filter((l) => /FAIL|ERROR/.test(l))]).toEqual([0, []]);
  });
});

/** Shell as root in the initial namespace; every namespace it creates is named with `tag` and removed after. */
function netnsScript(tag: string, body: string): { status: number | null; stdout: string; stderr: string } {
  const script = `set -eu\ncleanup() { for n in H V I; do ip netns del ${tag}$n 2>/dev/null || true; done; }\ntrap cleanup EXIT\n${body}`;
  const p = spawnSync("sh", ["-c", script], { encoding: "utf8", timeout: 120_000 });
  if (p.error) throw p.error;
  return { status: p.status, stdout: p.stdout, stderr: p.stderr };
}

describe("the host firewall: the base ruleset and the slots' tables together (real nft, throwaway namespaces)", () => {
  beforeAll(() => {
    if (process.getuid?.() !== 0) throw new Error("root is required (network namespaces, nft)");
    for (const tool of ["nft", "ip"]) if (run(["sh", "-c", `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing: apt-get install nftables iproute2`);
  });

  const vmHost = () => vmRunners("github-actions")[0];
  const slotTable = (id: string, slot: number) => {
    const cfg = write(`job-vm-${id}.json`, r.minions[id].files[JOB_VM.config]);
    const p = run([PYTHON, LAUNCHER, "render-nft", "--config", cfg, "--slot", String(slot)]);
    expect({ status: p.status, stderr: p.stderr }).toEqual({ status: 0, stderr: "" });
    return p.stdout;
  };

  test("the base ruleset replaces only its own table, and lets the slots' taps forward only on vm hosts", () => {
    for (const [id, m] of Object.entries(r.minions)) {
      const rules = m.files["/etc/nftables.conf"];
      expect({ id, flush: /flush ruleset/.test(rules) }).toEqual({ id, flush: false });
      expect({ id, tables: [...rules.matchAll(/^table (\S+ \S+)/gm)].map((t) => t[1]) }).toEqual({ id, tables: ["inet ci_fleet", "inet ci_fleet"] });
      expect(rules).toMatch(/^delete table inet ci_fleet$/m);
      const vm = runnerDoc(id)?.isolation === "vm";
      expect({ id, taps: /cijs/.test(rules) }).toEqual({ id, taps: vm });
    }
  });

  test("base, slot table, base again (a reload): the slot table survives; a VM reaches the internet, not a private address or the metadata service", () => {
    const id = vmHost();
    const base = write("base-vm.nft", r.minions[id].files["/etc/nftables.conf"]);
    const control = write("base-master.nft", r.minions[Object.keys(r.minions).find((m) => m.endsWith("-salt-master"))!].files["/etc/nftables.conf"]);
    const slot = write("slot1.nft", slotTable(id, 1));
    const cfg = JSON.parse(r.minions[id].files[JOB_VM.config]) as { network: { base: string } };
    // Slot 1: host side base+5/30, guest base+6/30 (ci-job-slot Slot).
    const octets = cfg.network.base.split("/")[0].split(".").map(Number);
    const at = (k: number) => [octets[0], octets[1], octets[2], octets[3] + k].join(".");
    const [hostIp, guestIp] = [at(5), at(6)];
    const tag = `cjs${process.pid % 10000}${crypto.randomBytes(1).toString("hex")}`;
    const probe = `${PYTHON} -c 'import socket,sys\ntry:\n  socket.create_connection((sys.argv[1], 8080), timeout=2).close(); print(sys.argv[1], "open")\nexcept OSError: print(sys.argv[1], "blocked")'`;
    const out = netnsScript(
      tag,
      `
for n in H V I; do ip netns add ${tag}$n; ip -n ${tag}$n link set lo up; done
ip link add cijs1 netns ${tag}H type veth peer name eth0 netns ${tag}V
ip link add wan0 netns ${tag}H type veth peer name eth0 netns ${tag}I
ip -n ${tag}H addr add ${hostIp}/30 dev cijs1; ip -n ${tag}H link set cijs1 up
ip -n ${tag}V addr add ${guestIp}/30 dev eth0; ip -n ${tag}V link set eth0 up
ip -n ${tag}V route add default via ${hostIp}
ip -n ${tag}H addr add 198.51.100.1/24 dev wan0; ip -n ${tag}H link set wan0 up
ip -n ${tag}I addr add 198.51.100.2/24 dev eth0; ip -n ${tag}I link set eth0 up
# The "internet" also answers for a fleet private address and the metadata service.
ip -n ${tag}I addr add 10.77.0.9/32 dev lo; ip -n ${tag}I addr add 169.254.169.254/32 dev lo
ip -n ${tag}H route add 10.77.0.9/32 via 198.51.100.2; ip -n ${tag}H route add 169.254.169.254/32 via 198.51.100.2
ip netns exec ${tag}H sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'   # what the launcher does
ip netns exec ${tag}I ${PYTHON} -c 'import socket,threading,time
for a in ("198.51.100.2","10.77.0.9","169.254.169.254"):
    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((a,8080)); s.listen(8)
    threading.Thread(target=lambda s=s: [s.accept()[0].close() for _ in iter(int,1)], daemon=True).start()
time.sleep(60)' & listener=$!
sleep 0.5
probe() { for a in 198.51.100.2 10.77.0.9 169.254.169.254; do ip netns exec ${tag}V ${probe} $a; done; }
echo "== control: a host without job VMs (base forward policy drop)"
ip netns exec ${tag}H nft -c -f ${control}
ip netns exec ${tag}H nft -f ${control}
probe
echo "== base"
ip netns exec ${tag}H nft -c -f ${base}
ip netns exec ${tag}H nft -f ${base}
echo "== slot"
ip netns exec ${tag}H nft -c -f ${slot}
ip netns exec ${tag}H nft -f ${slot}
echo "== reload"
ip netns exec ${tag}H nft -c -f ${base}
ip netns exec ${tag}H nft -f ${base}
ip netns exec ${tag}H nft list tables
probe
echo "== without: the slot table deleted, the base alone still keeps the VM off private and metadata addresses"
ip netns exec ${tag}H nft delete table inet ci_job_slot_1
probe
kill $listener
`,
    );
    expect({ status: out.status, stderr: out.stderr }).toEqual({ status: 0, stderr: "" });
    const sections = Object.fromEntries(out.stdout.split(/^== /m).filter(Boolean).map((s) => [s.split("\n")[0].split(":")[0], s.split("\n").slice(1).filter(Boolean)]));
    expect(sections.control).toEqual(["198.51.100.2 blocked", "10.77.0.9 blocked", "169.254.169.254 blocked"]);
    expect(sections.reload.filter((l) => l.startsWith("table")).sort()).toEqual(["table inet ci_fleet", "table inet ci_job_slot_1"]);
    expect(sections.reload.filter((l) => !l.startsWith("table"))).toEqual(["198.51.100.2 open", "10.77.0.9 blocked", "169.254.169.254 blocked"]);
    // (No NAT without the slot table: the internet cannot answer, which is not what this checks.)
    expect(sections.without.slice(1)).toEqual(["10.77.0.9 blocked", "169.254.169.254 blocked"]);
  });

  test("one writer for NAT and net.ipv4.ip_forward: the launcher (only vm hosts run it); no Salt state, no base ruleset", () => {
    for (const [id, m] of Object.entries(r.minions)) {
      expect({ id, nat: /masquerade|snat|type nat/.test(m.files["/etc/nftables.conf"]) }).toEqual({ id, nat: false });
      const writers = Object.entries(m.states)
        .filter(([, s]) => s.function.startsWith("sysctl.") || JSON.stringify(s.args).includes("ip_forward"))
        .map(([sid]) => sid);
      expect({ id, writers }).toEqual({ id, writers: [] });
      const files = Object.entries(m.files).filter(([, text]) => /net\.ipv4\.ip_forward|ipv4\/ip_forward/.test(text)).map(([f]) => f);
      expect({ id, files }).toEqual({ id, files: [] });
    }
    const launcher = fs.readFileSync(LAUNCHER, "utf8");
    expect(launcher.match(/"\/proc\/sys\/net\/ipv4\/ip_forward"/g)).toHaveLength(1);
    expect(slotTable(vmHost(), 1)).toMatch(/type nat hook postrouting .*\n.*masquerade/);
  });
});
