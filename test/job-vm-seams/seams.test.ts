/**
 * Issue 15: the seams between the job-slot runtime (salt/runner/files/ci-job-slot, ci-job-guest)
 * and the fleet that installs it, each side computed from what is really rendered or run:
 *  - the Buildkite job input: the rendered ci-job-handoff, run with a realistic job environment,
 *    writes what `ci-job-slot handoff` passes to the guest; the real ci-job-guest parser turns it
 *    into the `buildkite-agent bootstrap` it starts (a fake agent on PATH records env and argv);
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
  test("the guest starts `buildkite-agent bootstrap` with the job's env and its per-job token, never the agent token or a host path", () => {
    const [id] = vmRunners("buildkite");
    expect(id).toBeDefined();
    const handoff = r.minions[id].files[`${JOB_VM.handoff}`];
    expect(handoff).toBeDefined();
    // A fake ci-job-slot: records its argv and the input on stdin, answers the job's exit code.
    const captured = path.join(dir, "bk-input.json");
    const args = path.join(dir, "bk-args");
    const fakeSlot = write("fake-ci-job-slot", `#!/bin/sh\nprintf '%s\\n' "$@" > ${args}\ncat > ${captured}\nexit 7\n`, 0o700);
    const script = write(
      "ci-job-handoff",
      substituted(handoff, [
        [`"${JOB_VM.launcher}"`, JSON.stringify(fakeSlot)],
        [`LOCKS = "${JOB_VM.run_dir}-handoff"`, `LOCKS = ${JSON.stringify(path.join(dir, "locks"))}`],
      ]),
      0o700,
    );
    const secret = `bkaj_${crypto.randomBytes(12).toString("hex")}`;
    const agentToken = `bkua_${crypto.randomBytes(12).toString("hex")}`;
    // What buildkite-agent 3.123.1 gives a job (agent/job_runner.go createEnvironment: the job's
    // env from Buildkite, then the agent's own settings), as sudo -E hands it to the handoff.
    const jobEnv: NodeJS.ProcessEnv = {
      PATH: "/usr/bin:/bin", HOME: "/root", LANG: "C.UTF-8", SUDO_USER: "buildkite-agent",
      CI: "true", BUILDKITE: "true",
      BUILDKITE_JOB_ID: "0190f1b2-1111-4222-8333-444455556666", BUILDKITE_BUILD_ID: "0190f1b2-aaaa-4bbb-8ccc-dddd0000eeee",
      BUILDKITE_BUILD_NUMBER: "1234", BUILDKITE_REPO: "https://github.com/example-org/netboot.git",
      BUILDKITE_COMMIT: "0123456789abcdef0123456789abcdef01234567", BUILDKITE_BRANCH: "main",
      BUILDKITE_PIPELINE_SLUG: "release", BUILDKITE_ORGANIZATION_SLUG: "example-org", BUILDKITE_COMMAND: "make test",
      BUILDKITE_PLUGINS: '[{"github.com/buildkite-plugins/docker-buildkite-plugin#v5.12.0":{"image":"debian"}}]',
      BUILDKITE_AGENT_ENDPOINT: "https://agent.buildkite.com/v3", BUILDKITE_AGENT_ACCESS_TOKEN: secret,
      BUILDKITE_AGENT_TOKEN: agentToken, // deleted by the agent; must never get further if present
      BUILDKITE_AGENT_PID: "4242", BUILDKITE_AGENT_NAME: `${id}-1`,
      BUILDKITE_BIN_PATH: "/usr/bin", BUILDKITE_CONFIG_PATH: "/etc/buildkite-agent/buildkite-agent.cfg",
      BUILDKITE_BUILD_PATH: "/var/lib/buildkite-agent/builds", BUILDKITE_HOOKS_PATH: "/etc/buildkite-agent/hooks",
      BUILDKITE_PLUGINS_PATH: "/var/lib/buildkite-agent/plugins", BUILDKITE_SOCKETS_PATH: "/var/lib/buildkite-agent/sockets",
      BUILDKITE_GIT_MIRRORS_PATH: "", BUILDKITE_ENV_FILE: "/tmp/job-env-0190f1b2", BUILDKITE_ENV_JSON_FILE: "/tmp/job-env-json-0190f1b2",
      BUILDKITE_SHELL: "/bin/bash -e -c", BUILDKITE_PLUGINS_ENABLED: "true", BUILDKITE_LOCAL_HOOKS_ENABLED: "false",
    };
    const h = run([PYTHON, script], { env: jobEnv });
    expect({ status: h.status, stderr: h.stderr }).toEqual({ status: 7, stderr: "" });
    expect(fs.readFileSync(args, "utf8").trim().split("\n")).toEqual(["handoff", "--config", JOB_VM.config, "--slot", "1"]);
    const input = fs.readFileSync(captured, "utf8");
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
    const g = run([PYTHON, driver], { input, env: { PATH: "/usr/bin:/bin" } });
    expect({ status: g.status, stderr: g.stderr }).toEqual({ status: 0, stderr: "" });
    const seen = JSON.parse(fs.readFileSync(record, "utf8")) as { argv: string[]; env: Record<string, string> };
    expect(seen.argv).toEqual(["bootstrap"]);
    expect(seen.env.BUILDKITE_AGENT_ACCESS_TOKEN).toBe(secret);
    expect(seen.env).not.toHaveProperty("BUILDKITE_AGENT_TOKEN");
    for (const k of ["BUILDKITE_JOB_ID", "BUILDKITE_REPO", "BUILDKITE_COMMIT", "BUILDKITE_BRANCH", "BUILDKITE_COMMAND", "BUILDKITE_PLUGINS", "BUILDKITE_AGENT_ENDPOINT", "CI", "BUILDKITE"]) {
      expect({ k, v: seen.env[k] }).toEqual({ k, v: jobEnv[k] });
    }
    // The VM's own paths; nothing of the host agent's (its files, hooks, binary, pid).
    expect(seen.env.BUILDKITE_BUILD_PATH).toBe("/home/ci/builds");
    expect(seen.env.BUILDKITE_PLUGINS_PATH).toBe("/home/ci/plugins");
    const hostly = Object.entries(seen.env).filter(([k, v]) => k.startsWith("BUILDKITE") && /^\/(var|etc|tmp|usr)\//.test(v));
    expect(hostly).toEqual([]);
    for (const k of ["BUILDKITE_AGENT_PID", "BUILDKITE_CONFIG_PATH", "BUILDKITE_HOOKS_PATH", "BUILDKITE_SOCKETS_PATH", "BUILDKITE_ENV_FILE", "BUILDKITE_BIN_PATH", "SUDO_USER"]) {
      expect(seen.env).not.toHaveProperty(k);
    }
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
