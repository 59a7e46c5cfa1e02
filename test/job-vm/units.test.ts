// The launcher's pieces that need no VM: the nftables ruleset it renders (loaded with the
// real `nft -c`), config checking, and the handoff a job source uses. Root for nft and the slot's
// root-only directories; fails (never skips) without them.
import { ChildProcess, spawn, spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { LAUNCHER, PYTHON, requireJobVmPrerequisites } from "./support";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cjt-units-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function config(overrides: Record<string, unknown> = {}): string {
  const file = path.join(dir, `cfg-${crypto.randomBytes(3).toString("hex")}.json`);
  fs.writeFileSync(
    file,
    JSON.stringify({
      image: "/var/lib/ci-fleet/images/golden.qcow2", cpus: 4, memoryMiB: 8192, diskGiB: 60, maxJobSeconds: 21600,
      accel: "kvm", stateDir: path.join(dir, "state"), runDir: path.join(dir, "run"),
      network: { base: "10.213.0.0/16", blockedCidrs: ["169.254.169.254/32", "10.0.0.0/8", "172.16.0.0/12"], dns: ["1.1.1.1"] },
      ...overrides,
    }),
  );
  return file;
}

const launcher = (args: string[], env: NodeJS.ProcessEnv = {}, input?: string) =>
  spawnSync(PYTHON, [LAUNCHER, ...args], { encoding: "utf8", env: { ...process.env, ...env }, input });

describe("the slot's nftables table", () => {
  beforeAll(() => requireJobVmPrerequisites());

  test("slot 3's ruleset: its own table, drops to the host, blocked networks, other slots and taps, NAT out", () => {
    const r = launcher(["render-nft", "--config", config(), "--slot", "3"]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatchSnapshot();
    expect(r.stdout).toContain("table inet ci_job_slot_3 {");
    expect(r.stdout).toContain('iifname "cijs3" drop'); // input: nothing to the host itself
    expect(r.stdout).toContain('iifname "cijs3" ip saddr != 10.213.0.14 drop'); // no spoofing
    expect(r.stdout).toContain('iifname "cijs3" oifname "cijs*" drop');
    expect(r.stdout).toContain('iifname "cijs3" ip daddr 10.213.0.0/16 drop');
    expect(r.stdout).toContain("elements = { 169.254.169.254/32, 10.0.0.0/8, 172.16.0.0/12 }");
    expect(r.stdout).toContain('ip saddr 10.213.0.14 oifname != "cijs3" masquerade');
  });

  test.each([["as rendered", {}], ["without blocked networks", { network: { base: "10.213.0.0/16" } }]])(
    "the real nft accepts it (%s) in a throwaway namespace",
    (_what, overrides) => {
      const rules = launcher(["render-nft", "--config", config(overrides), "--slot", "0"]).stdout;
      const ns = `cjt-nft-${process.pid}-${crypto.randomBytes(2).toString("hex")}`;
      expect(spawnSync("ip", ["netns", "add", ns]).status).toBe(0);
      try {
        const check = spawnSync("ip", ["netns", "exec", ns, "nft", "-c", "-f", "-"], { input: rules, encoding: "utf8" });
        expect(check.stderr).toBe("");
        expect(check.status).toBe(0);
        // And a broken ruleset is refused, so the check can fail.
        const broken = spawnSync("ip", ["netns", "exec", ns, "nft", "-c", "-f", "-"], {
          input: rules.replace("masquerade", "masqerade"),
          encoding: "utf8",
        });
        expect(broken.status).not.toBe(0);
      } finally {
        spawnSync("ip", ["netns", "delete", ns]);
      }
    },
  );

  test("the no-filter test fault keeps NAT and drops nothing", () => {
    const r = launcher(["render-nft", "--config", config(), "--slot", "0"], { CI_JOB_SLOT_FAULT: "no-filter" });
    expect(r.stdout).not.toContain("drop");
    expect(r.stdout).toContain("masquerade");
  });

  test("test faults combine (comma-separated): launcher.test.ts's control slot runs no-filter and reuse-overlay at once", () => {
    const r = launcher(["render-nft", "--config", config(), "--slot", "0"], { CI_JOB_SLOT_FAULT: "no-filter,reuse-overlay" });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).not.toContain("drop");
    expect(r.stdout).toContain("masquerade");
  });
});

describe("config checking", () => {
  test.each([
    [{ accel: "hvf" }, "accel must be kvm or tcg"],
    [{ cpus: 0 }, "cpus must be between 1 and 256"],
    [{ diskGiB: "60" }, "diskGiB must be a int"],
    [{ image: "golden.qcow2" }, "image must be an absolute path"],
    [{ network: { base: "10.213.0.0/30" } }, "network.base must be /28 or larger"],
    [{ network: { base: "10.213.0.0/16", blockedCidrs: ["metadata"] } }, "network.blockedCidrs: 'metadata'"],
    [{ initrd: "/boot/initrd" }, "initrd and append need kernel"],
    [{ bogus: 1 }, "unknown key 'bogus'"],
  ])("%j is refused with exit 2", (overrides, message) => {
    const r = launcher(["render-nft", "--config", config(overrides), "--slot", "0"]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(message);
  });

  test("a slot outside network.base is refused", () => {
    const r = launcher(["render-nft", "--config", config({ network: { base: "10.213.0.0/28" } }), "--slot", "4"]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("slot 4 does not fit in network.base 10.213.0.0/28");
  });

  test("an unknown test fault is refused rather than ignored", () => {
    const r = launcher(["render-nft", "--config", config(), "--slot", "0"], { CI_JOB_SLOT_FAULT: "bogus" });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("unknown CI_JOB_SLOT_FAULT: bogus");
  });
});

describe("handoff", () => {
  /** The name the handoff renamed its input to in `inbox`, waited for up to 60 s (Python compiles
   * the whole launcher first; a loaded host is slow), or undefined once the child has exited. The
   * rename comes after the handoff installs its signal handlers, so it also says a SIGTERM is caught. */
  async function renamedInto(inbox: string, child: ChildProcess): Promise<string | undefined> {
    let exited = child.exitCode !== null || child.signalCode !== null;
    child.once("exit", () => (exited = true));
    const deadline = Date.now() + 60_000;
    for (;;) {
      const name = fs.readdirSync(inbox).find((f) => !f.startsWith("."));
      if (name !== undefined || exited || Date.now() > deadline) return name;
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  test("renames the input into the inbox (never a partial file), waits for its outcome and exits with its code", async () => {
    requireJobVmPrerequisites();
    const cfg = config();
    const inbox = path.join(dir, "run/7/inbox");
    const outbox = path.join(dir, "run/7/outbox");
    fs.mkdirSync(inbox, { recursive: true });
    fs.mkdirSync(outbox, { recursive: true });
    const child = spawn(PYTHON, [LAUNCHER, "handoff", "--config", cfg, "--slot", "7"], { stdio: ["pipe", "ignore", "pipe"] });
    child.stdin.end('{"kind":"buildkite","env":{"BUILDKITE_JOB_ID":"j-1"}}');
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const done = new Promise<number | null>((resolve) => child.on("close", resolve));
    const name = await renamedInto(inbox, child);
    expect({ name, stderr }).toEqual({ name: expect.any(String), stderr: expect.any(String) }); // stderr says why not
    expect(name).toMatch(/^handoff-\d+-\d+-[0-9a-f]{8}$/);
    expect(fs.statSync(path.join(inbox, name!)).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(path.join(inbox, name!), "utf8")).toContain("j-1");
    fs.rmSync(path.join(inbox, name!)); // what the slot does when it takes it
    fs.writeFileSync(path.join(outbox, `${name}.exit`), "42 exited\n");
    expect(await done).toBe(42);
    expect(fs.existsSync(path.join(outbox, `${name}.exit`))).toBe(false);
  }, 120_000);

  test("stopped before the slot took the input, it takes the input back", async () => {
    const cfg = config();
    const inbox = path.join(dir, "run/8/inbox");
    fs.mkdirSync(inbox, { recursive: true });
    fs.mkdirSync(path.join(dir, "run/8/outbox"), { recursive: true });
    const child = spawn(PYTHON, [LAUNCHER, "handoff", "--config", cfg, "--slot", "8"], { stdio: ["pipe", "ignore", "pipe"] });
    child.stdin.end("x");
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const done = new Promise<number | null>((resolve) => child.on("close", resolve));
    // Signalled only once the input is in the inbox: the slot could take it from then on, and the
    // handoff's handler is in place (a SIGTERM before it would just kill Python).
    const name = await renamedInto(inbox, child);
    expect({ name, stderr }).toEqual({ name: expect.stringMatching(/^handoff-/), stderr: expect.any(String) }); // stderr says why not
    child.kill("SIGTERM");
    expect(await done).toBe(143);
    expect(fs.readdirSync(inbox)).toEqual([]);
  }, 120_000);
});

// The launcher's own steps around each VM (issue 15, 9: its overhead per job): the host commands
// of prepare and destroy run side by side, and QEMU is ended at the guest's exit report, not after
// its power-off. test_launcher_steps.py (python3 unittest, root): the real launcher with stand-in
// commands and socketpairs for the VM.
describe("test/job-vm/test_launcher_steps.py", () => {
  test("passes", () => {
    requireJobVmPrerequisites();
    const run = spawnSync(PYTHON, [path.join(__dirname, "test_launcher_steps.py")], { encoding: "utf8", timeout: 300_000 });
    if (run.error) throw new Error(`cannot run ${PYTHON}: ${run.error.message}`);
    expect(run.stderr).toMatch(/Ran \d+ tests/);
    expect([run.status, run.stderr.split("\n").filter((l) => /FAIL|ERROR|Error/.test(l))]).toEqual([0, []]);
  }, 330_000);
});

// The slot's outbox keeps no uncollected outcome or handoff log past an hour. test_outbox.py
// (python3 unittest): the real launcher imported as a module, no VM.
describe("test/job-vm/test_outbox.py", () => {
  test("passes", () => {
    if (!fs.existsSync(PYTHON)) throw new Error(`${PYTHON} not found: apt-get install python3`);
    const run = spawnSync(PYTHON, [path.join(__dirname, "test_outbox.py")], { encoding: "utf8", timeout: 60_000 });
    if (run.error) throw new Error(`cannot run ${PYTHON}: ${run.error.message}`);
    expect(run.stderr).toMatch(/Ran 4 tests/);
    expect([run.status, run.stderr.split("\n").filter((l) => /FAIL|ERROR|Error/.test(l))]).toEqual([0, []]);
  });
});

describe("the slot's tap, made without `ip tuntap`", () => {
  test("tap_add makes the persistent tap `ip tuntap add dev <name> mode tap` makes (tap, no packet info); tap_delete removes it (a throwaway namespace)", () => {
    requireJobVmPrerequisites();
    const ns = `cjt-tap-${process.pid}-${crypto.randomBytes(2).toString("hex")}`;
    expect(spawnSync("ip", ["netns", "add", ns]).status).toBe(0);
    try {
      const script = [
        "import sys",
        `sys.path.insert(0, ${JSON.stringify(path.join(__dirname, "../support"))})`,
        "from load_script import LAUNCHER, load",
        "m = load('ci_job_slot_tap', LAUNCHER)",
        "m.tap_add('cijs7')",
        "print(open('/sys/class/net/cijs7/tun_flags').read().strip(), open('/sys/class/net/cijs7/type').read().strip())",
        "m.tap_delete('cijs7')",
        "print(m.link_exists('cijs7'))",
      ].join("\n");
      const r = spawnSync("ip", ["netns", "exec", ns, PYTHON, "-c", script], { encoding: "utf8" });
      expect(r.stderr).toBe("");
      // The same as iproute2's tap: IFF_TAP | IFF_NO_PI | IFF_PERSIST (0x1802), ARPHRD_ETHER (1); then gone.
      expect(spawnSync("ip", ["-n", ns, "tuntap", "add", "dev", "cijs6", "mode", "tap"]).status).toBe(0);
      const ip = spawnSync("ip", ["netns", "exec", ns, "cat", "/sys/class/net/cijs6/tun_flags", "/sys/class/net/cijs6/type"], { encoding: "utf8" });
      expect(ip.stdout).toBe("0x1802\n1\n");
      expect(r.stdout).toBe("0x1802 1\nFalse\n");
    } finally {
      spawnSync("ip", ["netns", "delete", ns]);
    }
  });
});
