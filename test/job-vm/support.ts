// Shared by the job-VM tests and tools/bench/job-vm.ts: the test guest (built here from
// Debian packages, cached by their versions), the network namespaces standing in for a
// runner host, and the real launcher (salt/runner/files/ci-job-slot) run inside them.
import { spawn, spawnSync, ChildProcess } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

export const ROOT = path.resolve(__dirname, "../..");
// CI_FLEET_SALT_ROOT: another Salt tree's launcher (as test/support/load_script.py), e.g. HEAD's
// for a before/after bench.
export const LAUNCHER = path.join(process.env.CI_FLEET_SALT_ROOT ?? path.join(ROOT, "salt"), "runner/files/ci-job-slot");
export const GUEST_AGENT = path.join(ROOT, "salt/runner/files/ci-job-guest");
export const GUEST_INIT = path.join(__dirname, "fixtures/guest-init.sh");
export const PYTHON = "/usr/bin/python3";
const CACHE = path.join(ROOT, ".cache/job-vm-guest");

// Command -> Debian package that provides it.
export const TOOL_PACKAGES: ReadonlyArray<[command: string, pkg: string]> = [
  ["qemu-system-x86_64", "qemu-system-x86"],
  ["qemu-img", "qemu-utils"],
  ["nft", "nftables"],
  ["ip", "iproute2"],
  ["cpio", "cpio"],
  ["mkfs.ext4", "e2fsprogs"],
  ["apt-get", "apt"],
  ["dpkg-deb", "dpkg"],
];
const BUSYBOX = "/bin/busybox"; // busybox-static

// Loaded in this order (each after what `depends=` in its .modinfo names). The boot modules
// before the guest reports "ready"; the ext4 ones only by a job that mounts the disk.
const BOOT_MODULES = [
  "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
  "virtio_blk", "failover", "net_failover", "virtio_net", "virtio_console", "qemu_fw_cfg",
];
const DISK_MODULES = ["crc16", "mbcache", "jbd2", "crc32c_generic", "ext4"];
const GUEST_MODULES = [...BOOT_MODULES, ...DISK_MODULES];
// Bumped when the guest's build changes in a way its inputs do not show.
const GUEST_BUILD = "pvh-unsigned-2";

/** The kernel command line of the test guest. `no_timer_check`: under TCG on a loaded host the
 * IO-APIC timer check fails ("IO-APIC + timer doesn't work") and the boot panics. */
/** The smallest memory the test guest boots and runs its jobs in (measured: see docs/job-vm.md). */
export const GUEST_MEMORY_MIB = 128;

export const GUEST_APPEND = "console=ttyS0 quiet panic=-1 no_timer_check";

const SIGNATURE_MAGIC = "~Module signature appended~\n";
/** A module without its appended signature: Debian's kernel loads it (tainted, as it does not
 * enforce signatures without Secure Boot) and skips the RSA check, slow under TCG. */
export function stripModuleSignature(ko: string): string {
  // `ko` as latin1 (one char per byte).
  if (ko.length < SIGNATURE_MAGIC.length + 12 || !ko.endsWith(SIGNATURE_MAGIC)) return ko;
  const info = ko.length - SIGNATURE_MAGIC.length - 12; // struct module_signature
  const sigLen = [8, 9, 10, 11].reduce((n, i) => n * 256 + ko.charCodeAt(info + i), 0); // big-endian u32
  return ko.slice(0, info - sigLen);
}

/** The uncompressed ELF vmlinux inside a bzImage (xz payload): QEMU boots it through its PVH
 * entry (the kernel's XEN_ELFNOTE_PHYS32_ENTRY), skipping the decompression, slow under TCG. */
function extractVmlinux(bzImage: string, out: string): void {
  const script = [
    "import lzma, sys",
    "d = open(sys.argv[1], 'rb').read()",
    "i = d.find(b'\\xfd7zXZ\\x00')",
    "while i >= 0:",
    "    try:",
    "        v = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[i:])",
    "        if v[:4] == b'\\x7fELF':",
    "            open(sys.argv[2], 'wb').write(v); sys.exit(0)",
    "    except lzma.LZMAError:",
    "        pass",
    "    i = d.find(b'\\xfd7zXZ\\x00', i + 1)",
    "sys.exit('no xz-compressed ELF in ' + sys.argv[1])",
  ].join("\n");
  run([PYTHON, "-c", script, bzImage, out]);
}

export function findOnPath(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(":").concat(["/usr/sbin", "/sbin"]).filter(Boolean)) {
    const candidate = path.join(dir, command);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Throws (the test fails, naming what to install) unless job VMs can really run here. */
export function requireJobVmPrerequisites(): void {
  const problems: string[] = [];
  for (const [command, pkg] of TOOL_PACKAGES) {
    if (!findOnPath(command)) problems.push(`'${command}' not found: apt-get install ${pkg}`);
  }
  if (!fs.existsSync(BUSYBOX) || spawnSync("ldd", [BUSYBOX], { encoding: "utf8" }).stdout.includes("=>")) {
    problems.push(`${BUSYBOX} (static) not found: apt-get install busybox-static`);
  }
  if (!fs.existsSync(PYTHON)) problems.push(`${PYTHON} not found: apt-get install python3`);
  if (process.getuid?.() !== 0) problems.push("the job-VM tests must run as root (namespaces, taps, nftables)");
  if (!fs.existsSync("/dev/net/tun")) problems.push("/dev/net/tun missing: modprobe tun");
  if (problems.length > 0) throw new Error(`job-VM test prerequisites missing:\n  ${problems.join("\n  ")}`);
}

function run(argv: string[], options: { cwd?: string; input?: string } = {}): string {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: "utf8", cwd: options.cwd, input: options.input, maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${argv.join(" ")}: exit ${r.status}: ${r.stderr}`);
  return r.stdout;
}

function candidateVersion(pkg: string): string {
  const out = run(["apt-cache", "policy", pkg]);
  const m = /Candidate: (\S+)/.exec(out);
  if (!m || m[1] === "(none)") throw new Error(`apt knows no candidate for ${pkg}: run apt-get update`);
  return m[1];
}

export interface Guest {
  kernel: string;
  initrd: string;
  key: string;
}

/**
 * The test guest: Debian's kernel (linux-image-amd64 and the versioned package it depends
 * on, unpacked with dpkg-deb, never installed), its virtio/ext4/fw_cfg modules, busybox-static
 * and the fixture init in a gzip'd newc cpio. Cached under .cache/job-vm-guest/<key>.
 */
export function buildGuest(): Guest {
  const init = fs.readFileSync(GUEST_INIT, "utf8");
  const busyboxVersion = run(["dpkg-query", "-W", "-f=${Version}", "busybox-static"]);
  const kernelMeta = candidateVersion("linux-image-amd64");
  const key = crypto
    .createHash("sha256")
    .update([GUEST_BUILD, kernelMeta, busyboxVersion, BOOT_MODULES.join(","), DISK_MODULES.join(","), Buffer.from(init).toString("base64")].join("\n"))
    .digest("hex")
    .slice(0, 16);
  const dir = path.join(CACHE, `${kernelMeta}-${key}`);
  const guest = { kernel: path.join(dir, "vmlinux"), initrd: path.join(dir, "initrd.gz"), key };
  if (fs.existsSync(path.join(dir, "complete"))) return guest;

  fs.mkdirSync(CACHE, { recursive: true });
  const work = fs.mkdtempSync(path.join(CACHE, ".build-"));
  try {
    const debs = path.join(work, "debs");
    fs.mkdirSync(debs);
    fs.chmodSync(work, 0o755);
    fs.chmodSync(debs, 0o777); // apt-get download drops to _apt
    run(["apt-get", "download", "-q", `linux-image-amd64=${kernelMeta}`], { cwd: debs });
    const meta = fs.readdirSync(debs).find((f) => f.startsWith("linux-image-amd64_"))!;
    const depends = run(["dpkg-deb", "-f", path.join(debs, meta), "Depends"]).trim();
    const dep = /^(linux-image-[0-9][^ ]*-amd64) \(= ([^)]+)\)$/.exec(depends);
    if (!dep) throw new Error(`unexpected Depends of ${meta}: ${depends}`);
    run(["apt-get", "download", "-q", `${dep[1]}=${dep[2]}`], { cwd: debs });
    const image = fs.readdirSync(debs).find((f) => f.startsWith(`${dep[1]}_`))!;
    const unpacked = path.join(work, "kernel");
    run(["dpkg-deb", "-x", path.join(debs, image), unpacked]);
    const vmlinuz = fs.readdirSync(path.join(unpacked, "boot")).find((f) => f.startsWith("vmlinuz-"))!;
    const modulesRoot = path.join(unpacked, "lib/modules", vmlinuz.slice("vmlinuz-".length));

    const rootfs = path.join(work, "rootfs");
    for (const d of ["bin", "dev", "proc", "sys", "mnt", "run", "tmp", "lib/modules"]) {
      fs.mkdirSync(path.join(rootfs, d), { recursive: true });
    }
    fs.copyFileSync(BUSYBOX, path.join(rootfs, "bin/busybox"));
    fs.chmodSync(path.join(rootfs, "bin/busybox"), 0o755);
    fs.writeFileSync(path.join(rootfs, "init"), init, { mode: 0o755 });
    const all = run(["find", modulesRoot, "-name", "*.ko"]).trim().split("\n");
    const loaded = new Set<string>();
    for (const name of GUEST_MODULES) {
      const file = all.find((f) => path.basename(f) === `${name}.ko`);
      if (!file) throw new Error(`module ${name}.ko not in ${image}`);
      const deps = /depends=([a-z0-9_,-]*)\0/.exec(fs.readFileSync(file, "latin1"))?.[1] ?? "";
      for (const d of deps.split(",").filter(Boolean)) {
        if (!loaded.has(d)) throw new Error(`module ${name} depends on ${d}, not loaded before it`);
      }
      fs.writeFileSync(path.join(rootfs, "lib/modules", `${name}.ko`), stripModuleSignature(fs.readFileSync(file, "latin1")), "latin1");
      loaded.add(name);
    }
    fs.writeFileSync(path.join(rootfs, "modules.order"), BOOT_MODULES.join("\n") + "\n");
    fs.writeFileSync(path.join(rootfs, "modules.disk"), DISK_MODULES.join("\n") + "\n");
    run(["mknod", "-m", "600", path.join(rootfs, "dev/console"), "c", "5", "1"]);
    const files = run(["find", ".", "-mindepth", "1"], { cwd: rootfs }).trim().split("\n").sort().join("\n") + "\n";
    const cpio = spawnSync("cpio", ["--quiet", "-o", "-H", "newc", "-R", "0:0"], { cwd: rootfs, input: files, maxBuffer: 1 << 28 });
    if (cpio.status !== 0) throw new Error(`cpio: ${cpio.stderr}`);
    const out = path.join(work, "out");
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, "initrd.gz"), require("zlib").gzipSync(cpio.stdout));
    extractVmlinux(path.join(unpacked, "boot", vmlinuz), path.join(out, "vmlinux"));
    fs.writeFileSync(path.join(out, "complete"), `${meta}\n${image}\nbusybox-static ${busyboxVersion}\n`);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(out, dir);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return guest;
}

/** A small golden image: ext4 with an empty /home/ci, as qcow2 (the launcher's backing file). */
export function makeBaseImage(dir: string): string {
  const tree = path.join(dir, "image-tree");
  fs.mkdirSync(path.join(tree, "home/ci"), { recursive: true });
  const raw = path.join(dir, "base.raw");
  run(["mkfs.ext4", "-q", "-F", "-L", "golden", "-d", tree, raw, "64M"]);
  const image = path.join(dir, "golden.qcow2");
  run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, image]);
  fs.rmSync(raw);
  fs.rmSync(tree, { recursive: true });
  fs.chmodSync(image, 0o444);
  return image;
}

// --- a runner host in namespaces -----------------------------------------------------------

export const NET = {
  base: "10.213.0.0/16",
  uplinkHost: "198.51.100.1",
  uplinkPeer: "198.51.100.2",
  internet: "203.0.113.10",
  metadata: "169.254.169.254",
  fleetHost: "10.77.0.1",
  fleetPeer: "10.77.0.2",
  fleetCidr: "10.77.0.0/16",
  guest: (n: number) => `10.213.0.${4 * n + 2}`,
  hostSide: (n: number) => `10.213.0.${4 * n + 1}`,
};

export interface Host {
  id: string;
  ns: string; // the runner host
  inet: string; // "the internet" (and, behind it, a metadata address)
  fleet: string; // a fleet private network
  dir: string;
  image: string;
  guest: Guest;
  config(overrides?: Record<string, unknown>): string;
  destroy(): void;
}

const ip = (...args: string[]) => run(["ip", ...args]);

/**
 * A runner host in a network namespace: an uplink veth to an "internet" namespace (which
 * also answers for 169.254.169.254, reachable by routing, so only the slot's firewall keeps
 * a guest from it) and a veth to a "fleet private" namespace. The internet namespace has no
 * route back to the slots' subnets: a guest reaches it only through the slot's NAT.
 */
export function makeHost(prefix: string): Host {
  const id = `${prefix}${process.pid % 10000}${crypto.randomBytes(2).toString("hex")}`;
  const ns = `cjt-${id}-h`, inet = `cjt-${id}-i`, fleet = `cjt-${id}-f`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `cjt-${id}-`));
  const created: string[] = [];
  const host: Host = {
    id, ns, inet, fleet, dir, image: "", guest: { kernel: "", initrd: "", key: "" },
    config(overrides = {}) {
      const file = path.join(dir, `job-vm-${crypto.randomBytes(3).toString("hex")}.json`);
      const cfg = {
        image: host.image,
        kernel: host.guest.kernel,
        initrd: host.guest.initrd,
        append: GUEST_APPEND,
        cpus: 1,
        memoryMiB: GUEST_MEMORY_MIB,
        diskGiB: 1,
        // Generous bounds: a boot that takes longer is retried by the launcher (vm-failed);
        // a test that needs a short job limit sets its own.
        maxJobSeconds: 600,
        bootTimeoutSeconds: 600,
        accel: "tcg",
        stateDir: path.join(dir, "state"),
        runDir: path.join(dir, "run"),
        network: { base: NET.base, blockedCidrs: [`${NET.metadata}/32`, NET.fleetCidr], dns: [] },
        ...overrides,
      };
      fs.writeFileSync(file, JSON.stringify(cfg, null, 2));
      return file;
    },
    destroy() {
      for (const n of created.reverse()) spawnSync("ip", ["netns", "delete", n]);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    for (const n of [ns, inet, fleet]) {
      ip("netns", "add", n);
      created.push(n);
      ip("-n", n, "link", "set", "lo", "up");
    }
    ip("-n", ns, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", inet);
    ip("-n", ns, "address", "add", `${NET.uplinkHost}/24`, "dev", "up0");
    ip("-n", inet, "address", "add", `${NET.uplinkPeer}/24`, "dev", "eth0");
    ip("-n", inet, "address", "add", `${NET.internet}/32`, "dev", "lo");
    ip("-n", inet, "address", "add", `${NET.metadata}/32`, "dev", "lo");
    ip("-n", ns, "link", "add", "fl0", "type", "veth", "peer", "name", "eth0", "netns", fleet);
    ip("-n", ns, "address", "add", `${NET.fleetHost}/24`, "dev", "fl0");
    ip("-n", fleet, "address", "add", `${NET.fleetPeer}/24`, "dev", "eth0");
    for (const [n, dev] of [[ns, "up0"], [ns, "fl0"], [inet, "eth0"], [fleet, "eth0"]]) ip("-n", n, "link", "set", dev, "up");
    ip("-n", ns, "route", "add", "default", "via", NET.uplinkPeer);
    ip("-n", fleet, "route", "add", "default", "via", NET.fleetHost);
    host.guest = buildGuest();
    host.image = makeBaseImage(dir);
  } catch (e) {
    host.destroy();
    throw e;
  }
  return host;
}

// --- the launcher --------------------------------------------------------------------------

export interface GuestEvent {
  t: number;
  slot: string;
  event: string;
  [k: string]: unknown;
}

export interface Launcher {
  child: ChildProcess;
  events: string;
  stderr(): string;
  read(): GuestEvent[];
  waitFor(pred: (e: GuestEvent) => boolean, timeoutMs: number, what: string): Promise<GuestEvent>;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function startLauncher(host: Host, args: string[], env: NodeJS.ProcessEnv = {}): Launcher {
  const events = path.join(host.dir, `events-${crypto.randomBytes(3).toString("hex")}.jsonl`);
  fs.writeFileSync(events, "");
  const withEvents = args[0] === "run" || args[0] === "once" ? ["--events", events] : [];
  const child = spawn("ip", ["netns", "exec", host.ns, PYTHON, LAUNCHER, ...args, ...withEvents], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (err += c));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("close", (code, signal) => resolve({ code, signal })),
  );
  let exited = false;
  void done.then(() => (exited = true));
  // Complete lines only: the launcher may be mid-write of the last one (parsing it would throw
  // and end the waiting test while the launcher goes on).
  const read = () =>
    fs
      .readFileSync(events, "utf8")
      .split("\n")
      .slice(0, -1)
      .filter(Boolean)
      .map((l) => JSON.parse(l) as GuestEvent);
  return {
    child,
    events,
    stderr: () => err,
    read,
    done,
    async waitFor(pred, timeoutMs, what) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = read().find(pred);
        if (found) return found;
        if (exited || Date.now() > deadline) {
          throw new Error(`${exited ? "launcher exited" : "timed out"} waiting for ${what}; stderr:\n${err.slice(-6000)}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

/** Puts a job input into slot N's inbox the way writers must: written aside, renamed in. */
export function submit(host: Host, slot: number, name: string, lines: Record<string, string>): void {
  const inbox = path.join(host.dir, "run", String(slot), "inbox");
  fs.mkdirSync(inbox, { recursive: true, mode: 0o700 });
  const body = Object.entries(lines)
    .map(([k, v]) => `${k}=${v}\n`)
    .join("");
  fs.writeFileSync(path.join(inbox, `.${name}`), body, { mode: 0o600 });
  fs.renameSync(path.join(inbox, `.${name}`), path.join(inbox, name));
}

export function outcome(host: Host, slot: number, name: string): string | undefined {
  const file = path.join(host.dir, "run", String(slot), "outbox", `${name}.exit`);
  return fs.existsSync(file) ? fs.readFileSync(file, "utf8") : undefined;
}

export function reports(events: GuestEvent[], vm?: number): string[] {
  return events.filter((e) => e.event === "guest" && (vm === undefined || e.vm === vm)).map((e) => String(e.report));
}

/** Everything a slot could leave behind, as seen in the host namespace and the filesystem. */
export function leftovers(host: Host, slot: number): string[] {
  const found: string[] = [];
  const links = spawnSync("ip", ["-n", host.ns, "-o", "link", "show"], { encoding: "utf8" }).stdout;
  if (new RegExp(`: cijs${slot}[:@]`).test(links)) found.push(`tap cijs${slot}`);
  const tables = spawnSync("ip", ["netns", "exec", host.ns, "nft", "list", "tables"], { encoding: "utf8" }).stdout;
  if (tables.includes(`ci_job_slot_${slot}`)) found.push(`nft table ci_job_slot_${slot}`);
  const stateDir = path.join(host.dir, "state", String(slot));
  if (fs.existsSync(stateDir)) found.push(...fs.readdirSync(stateDir).map((f) => `state/${slot}/${f}`));
  const vmDir = path.join(host.dir, "run", String(slot), "vm");
  if (fs.existsSync(vmDir)) found.push(`run/${slot}/vm`);
  if (fs.existsSync(path.join(host.dir, "run", String(slot), "state.json"))) found.push(`run/${slot}/state.json`);
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8");
      if (cmdline.includes(`ci-job-slot-${slot},process=`) && cmdline.includes(host.dir)) found.push(`qemu pid ${entry}`);
    } catch {
      // exited while we looked
    }
  }
  return found;
}

/** The VM that took an input, from the launcher's event log (a failed boot is retried with a
 * new VM number, so VM numbers are never counted). */
export function vmOf(events: GuestEvent[], input: string): number {
  const e = events.find((x) => x.event === "input-taken" && x.input === input);
  if (!e) throw new Error(`no input-taken event for ${input}`);
  return Number(e.vm);
}

export function qemuPid(events: GuestEvent[], vm: number): number {
  const e = events.find((x) => x.event === "vm-started" && x.vm === vm);
  if (!e) throw new Error(`no vm-started for vm ${vm}`);
  return Number(e.pid);
}
