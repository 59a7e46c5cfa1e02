// The netboot self-test (salt/runner/files/ci-netboot-selftest), run for real: real
// namespaces, dnsmasq, python3 http.server, QEMU and Debian's iPXE ROM. Needs root and
// the Debian packages in scripts/debian-packages.txt; without them these tests FAIL with
// the package to install, they never skip.
import { spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as YAML from "yaml";
import { forksIn, scriptFunctions } from "./fork-guard";

const SCRIPT = path.resolve(__dirname, "../../salt/runner/files/ci-netboot-selftest");

// Command the self-test runs -> Debian package that provides it.
const TOOL_PACKAGES: ReadonlyArray<[command: string, pkg: string]> = [
  ["qemu-system-x86_64", "qemu-system-x86"],
  ["dnsmasq", "dnsmasq-base"],
  ["ip", "iproute2"],
  ["python3", "python3"],
];
const IPXE_ROM = "/usr/lib/ipxe/qemu/pxe-virtio.rom";

function findOnPath(command: string, searchPath = process.env.PATH ?? ""): string | undefined {
  for (const dir of searchPath.split(":").filter(Boolean)) {
    const candidate = path.join(dir, command);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** Throws (so the test fails, naming what to install) unless a real netboot can run. */
function requireNetbootPrerequisites(): void {
  const problems: string[] = [];
  for (const [command, pkg] of TOOL_PACKAGES) {
    if (!findOnPath(command)) problems.push(`'${command}' not found: apt-get install ${pkg}`);
  }
  if (!fs.existsSync(IPXE_ROM)) problems.push(`${IPXE_ROM} not found: apt-get install ipxe-qemu`);
  if (process.getuid?.() !== 0) {
    problems.push("the netboot tests must run as root (namespaces, bridge, tap device)");
  }
  if (problems.length > 0) throw new Error(`netboot prerequisites missing:\n  ${problems.join("\n  ")}`);
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  wallMs: number;
}

interface RunOptions {
  env?: NodeJS.ProcessEnv;
  /** Send this signal `afterMs` after stdout first matches `when`: to the script's bash
   * only, or (`group`) to its whole process group, as a terminal's Ctrl-C or systemd's
   * KillMode=control-group does (QEMU, dnsmasq and the HTTP server get it too). */
  interrupt?: {
    signal: NodeJS.Signals;
    when: RegExp;
    afterMs: number;
    group?: boolean;
    onSend?: (stdout: string) => void;
  };
}

function runSelftest(args: string[], options: RunOptions = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const group = options.interrupt?.group ?? false;
    const child = spawn("bash", [SCRIPT, ...args], {
      env: options.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: group, // its own process group, so the test can signal all of it
    });
    const signalChild = (signal: NodeJS.Signals) => {
      if (group && child.pid !== undefined) process.kill(-child.pid, signal);
      else child.kill(signal);
    };
    let stdout = "";
    let stderr = "";
    let interrupted = false;
    // A run that hangs must fail the test, not outlive it.
    const hardStop = setTimeout(() => signalChild("SIGKILL"), 45_000);
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
      const interrupt = options.interrupt;
      if (interrupt && !interrupted && interrupt.when.test(stdout)) {
        interrupted = true;
        setTimeout(() => {
          interrupt.onSend?.(stdout);
          signalChild(interrupt.signal);
        }, interrupt.afterMs);
      }
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(hardStop);
      resolve({
        code,
        signal,
        stdout,
        stderr,
        wallMs: Number((process.hrtime.bigint() - started) / 1_000_000n),
      });
    });
  });
}

/** What a run says it created: parsed from its stage lines. */
interface Created {
  namespace: string;
  workdir: string;
  pids: number[];
}

function createdBy(run: Run): Created {
  const namespace = /namespace (ci-netboot-[0-9]+-[0-9a-f]+):/.exec(run.stdout)?.[1];
  const workdir = /workdir (\/\S+)/.exec(run.stdout)?.[1];
  if (!namespace || !workdir) throw new Error(`run did not report its namespace and workdir:\n${run.stdout}`);
  const pids = [/dnsmasq pid (\d+)/, /HTTP pid (\d+)/, /qemu pid (\d+)/]
    .map((re) => re.exec(run.stdout)?.[1])
    .filter((pid): pid is string => pid !== undefined)
    .map(Number);
  return { namespace, workdir, pids };
}

function processesMentioning(needles: string[]): string[] {
  const found: string[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline: string;
    try {
      cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").replace(/\0/g, " ");
    } catch {
      continue; // exited while we looked
    }
    if (needles.some((needle) => cmdline.includes(needle))) found.push(`${entry}: ${cmdline}`);
  }
  return found;
}

function expectCleanedUp(run: Run, expectedPids: number): void {
  const created = createdBy(run);
  expect(created.pids).toHaveLength(expectedPids);
  const namespaces = spawnSync("ip", ["netns", "list"], { encoding: "utf8" });
  expect(namespaces.status).toBe(0);
  expect(namespaces.stdout).not.toContain(created.namespace);
  expect(fs.existsSync(`/run/netns/${created.namespace}`)).toBe(false);
  expect(fs.existsSync(created.workdir)).toBe(false);
  // Every process it started is gone (a PID reused since would not mention the workdir).
  for (const pid of created.pids) {
    let cmdline = "";
    try {
      cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
    } catch {
      continue;
    }
    expect(cmdline).not.toContain(created.workdir);
  }
  expect(processesMentioning([created.workdir, created.namespace])).toEqual([]);
}

const STAGE_LINES: ReadonlyArray<RegExp> = [
  /^\[ *\d+\.\d\ds\] prerequisites: .* ok$/m,
  /^\[ *\d+\.\d\ds\] accelerator (kvm|tcg) \(.*\) {2}ok$/m,
  /^\[ *\d+\.\d\ds\] namespace ci-netboot-\S+: bridge br0 .* ok$/m,
  /^\[ *\d+\.\d\ds\] services: dnsmasq pid \d+ .*HTTP pid \d+ .* ok$/m,
  /^\[ *\d+\.\d\ds\] guest: qemu pid \d+, mac 52:54:00(:[0-9a-f]{2}){3}, .* ok$/m,
  /^\[ *\d+\.\d\ds\] dhcp lease 10\.99\.0\.\d+ for 52:54:00(:[0-9a-f]{2}){3} .* ok$/m,
  /^\[ *\d+\.\d\ds\] tftp sent boot\.ipxe to 10\.99\.0\.\d+ {2}ok$/m,
  /^\[ *\d+\.\d\ds\] http GET \/stage2\.ipxe 200 from 10\.99\.0\.\d+ {2}ok$/m,
  /^\[ *\d+\.\d\ds\] marker ci-netboot-selftest-marker-[0-9a-f]{16} on serial console {2}ok$/m,
  /^\[ *\d+\.\d\ds\] guest exit code 3 \(isa-debug-exit\) {2}ok$/m,
  /^\[ *\d+\.\d\ds\] PASS netboot self-test \((kvm|tcg)\)$/m,
];

const maskMarker = (text: string) => text.replace(/ci-netboot-selftest-marker-[0-9a-f]{16}/g, "<marker>");

describe("ci-netboot-selftest: the script itself", () => {
  test("is executable, valid bash and shellcheck-clean", () => {
    expect(fs.statSync(SCRIPT).mode & 0o111).toBe(0o111);
    const syntax = spawnSync("bash", ["-n", SCRIPT], { encoding: "utf8" });
    expect(syntax.stderr).toBe("");
    expect(syntax.status).toBe(0);
    if (!findOnPath("shellcheck")) throw new Error("'shellcheck' not found: apt-get install shellcheck");
    const lint = spawnSync("shellcheck", ["--shell=bash", "--severity=style", SCRIPT], { encoding: "utf8" });
    expect(lint.stdout).toBe("");
    expect(lint.status).toBe(0);
  });

  test("--help documents every option and exits 0 without root", () => {
    const help = spawnSync("bash", [SCRIPT, "--help"], { encoding: "utf8" });
    expect(help.status).toBe(0);
    for (const option of ["--accel auto|kvm|tcg", "--timeout SECONDS", "--keep-logs DIR", "--help"]) {
      expect(help.stdout).toContain(option);
    }
  });

  test.each([
    [["--accel", "vmware"], "--accel must be auto, kvm or tcg"],
    [["--timeout", "0"], "--timeout must be a whole number"],
    [["--timeout", "3s"], "--timeout must be a whole number"],
    [["--keep-logs"], "--keep-logs needs a directory"],
    [["--frobnicate"], "unknown argument: --frobnicate"],
  ])("rejects %j with exit 2", (args, message) => {
    const run = spawnSync("bash", [SCRIPT, ...args], { encoding: "utf8" });
    expect(run.status).toBe(2);
    expect(run.stderr).toContain(message);
    expect(run.stdout).toBe("");
  });

  test("rejects an unknown test fault instead of running without it", () => {
    const run = spawnSync("bash", [SCRIPT], {
      encoding: "utf8",
      env: { ...process.env, CI_NETBOOT_SELFTEST_FAULT: "bogus" },
    });
    expect(run.status).toBe(2);
    expect(run.stderr).toContain("unknown CI_NETBOOT_SELFTEST_FAULT: bogus");
  });

  // A PATH holding everything except one tool: the script must name its Debian package.
  test.each(TOOL_PACKAGES)("without %s it fails naming the Debian package %s", (missing, pkg) => {
    requireNetbootPrerequisites();
    const bin = fs.mkdtempSync(path.join(os.tmpdir(), "netboot-path-"));
    try {
      for (const command of ["bash", "id", "readlink", ...TOOL_PACKAGES.map(([c]) => c)]) {
        if (command === missing) continue;
        fs.symlinkSync(findOnPath(command)!, path.join(bin, command));
      }
      const run = spawnSync(path.join(bin, "bash"), [SCRIPT], { encoding: "utf8", env: { PATH: bin } });
      expect(run.status).toBe(2);
      expect(run.stderr).toContain(`missing command '${missing}': install the Debian package ${pkg}`);
      expect(run.stdout).toBe("");
    } finally {
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });

  test("refuses to run without root, saying why", () => {
    requireNetbootPrerequisites();
    // setpriv (util-linux, essential) drops to nobody for this one run; the script comes
    // on stdin because nobody may not be able to read the checkout.
    const run = spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-s"], {
      encoding: "utf8",
      input: fs.readFileSync(SCRIPT, "utf8"),
      cwd: "/",
    });
    expect(run.status).toBe(2);
    expect(run.stderr).toContain("must run as root");
    expect(run.stdout).toBe("");
  });
});

describe("ci-netboot-selftest: real network boots", () => {
  test("passes: DHCP, TFTP, HTTP, marker and isa-debug-exit, and cleans up", async () => {
    requireNetbootPrerequisites();
    const keep = fs.mkdtempSync(path.join(os.tmpdir(), "netboot-keep-"));
    try {
      const run = await runSelftest(["--timeout", "20", "--keep-logs", keep]);
      expect({ code: run.code, stderr: run.stderr }).toEqual({
        code: 0,
        stderr: `ci-netboot-selftest: logs kept in ${keep}\n`,
      });
      for (const line of STAGE_LINES) expect(run.stdout).toMatch(line);
      // Stages are printed in the order the guest reaches them.
      const positions = STAGE_LINES.map((line) => run.stdout.search(line));
      expect(positions).toEqual([...positions].sort((a, b) => a - b));
      expectCleanedUp(run, 3);

      // The evidence, as kept: the run's own marker reached the serial console, its MAC the lease file.
      const marker = /marker (ci-netboot-selftest-marker-[0-9a-f]{16})/.exec(run.stdout)![1];
      const mac = /mac (52:54:00(?::[0-9a-f]{2}){3})/.exec(run.stdout)![1];
      expect(fs.readFileSync(path.join(keep, "serial.log"), "utf8")).toContain(marker);
      expect(fs.readFileSync(path.join(keep, "dnsmasq.leases"), "utf8")).toContain(mac);
      expect(fs.readFileSync(path.join(keep, "http.log"), "utf8")).toMatch(/"GET \/stage2\.ipxe HTTP\/1\.[01]" 200/);

      // What the guest was served: rendered text (marker masked, it changes every run) and
      // the two 7-byte exit programs (isa-debug-exit value 1 -> QEMU exit 3; 0 -> exit 1).
      const stage2 = fs.readFileSync(path.join(keep, "http", "stage2.ipxe"), "utf8");
      expect(stage2).toContain(`echo ${marker}\n`);
      expect({
        "tftp/boot.ipxe": fs.readFileSync(path.join(keep, "tftp", "boot.ipxe"), "utf8"),
        "http/stage2.ipxe": maskMarker(stage2),
        "tftp/exit-success.bin": fs.readFileSync(path.join(keep, "tftp", "exit-success.bin")).toString("hex"),
        "tftp/exit-failure.bin": fs.readFileSync(path.join(keep, "tftp", "exit-failure.bin")).toString("hex"),
      }).toMatchSnapshot();
    } finally {
      fs.rmSync(keep, { recursive: true, force: true });
    }
  });

  test.each([
    ["missing-stage2", "http", "HTTP server log", /"GET \/stage2\.ipxe HTTP\/1\.[01]" 404/],
    ["wrong-marker", "marker", "serial console", /ci-netboot-selftest-marker-bogus[0-9a-f]{8}/],
  ])(
    "CI_NETBOOT_SELFTEST_FAULT=%s fails stage %s, shows the %s and cleans up",
    async (fault, stage, logTitle, evidence) => {
      requireNetbootPrerequisites();
      const run = await runSelftest(["--timeout", "20"], {
        env: { ...process.env, CI_NETBOOT_SELFTEST_FAULT: fault },
      });
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(new RegExp(`^\\[ *\\d+\\.\\d\\ds\\] FAIL stage ${stage}: `, "m"));
      expect(run.stderr).toContain(`--- last lines of ${logTitle}`);
      expect(run.stderr).toMatch(evidence);
      expect(run.stdout).not.toContain("PASS");
      expectCleanedUp(run, 3);
    },
  );

  // Both branches assert real behaviour: this machine decides which one applies.
  test("--accel kvm boots with KVM where the CPU has vmx/svm, and refuses where it has not", async () => {
    requireNetbootPrerequisites();
    const cpuHasVirtualization = /^flags\s*:.*\b(vmx|svm)\b/m.test(fs.readFileSync("/proc/cpuinfo", "utf8"));
    const run = await runSelftest(["--accel", "kvm", "--timeout", "20"]);
    if (cpuHasVirtualization) {
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/accelerator kvm \(.*probe guest ran\) {2}ok/);
      expect(run.stdout).toContain("PASS netboot self-test (kvm)");
      expectCleanedUp(run, 3);
    } else {
      expect(run.code).toBe(2);
      expect(run.stderr).toContain("--accel kvm requested but KVM does not work here: the CPU exposes no vmx/svm");
      expect(run.stdout).not.toContain("namespace ci-netboot-");
      const workdir = /workdir (\/\S+)/.exec(run.stdout)![1];
      expect(fs.existsSync(workdir)).toBe(false);
    }
  });

  test("--timeout names the stage it was waiting for and cleans up", async () => {
    requireNetbootPrerequisites();
    // The timeout is the guest's: the servers get their own bound to start, so however
    // loaded the machine, one second is spent on the boot, and it is never enough for a
    // DHCPACK, even under KVM: iPXE alone waits ~2 s for Ctrl-B before it configures the network.
    const run = await runSelftest(["--timeout", "1"]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/FAIL stage dhcp: timed out after 1s before a DHCPACK/);
    expect(run.stderr).toContain("--- last lines of dnsmasq log");
    expectCleanedUp(run, 3);
  });

  /** Signals a boot 0.8 s into the guest's boot (firmware running, servers waiting for it,
   * the script in its watch of the guest) and checks it ended as interrupted, cleaned up. */
  async function interruptMidBoot(signal: NodeJS.Signals, exitCode: number, group: boolean): Promise<void> {
    requireNetbootPrerequisites();
    let aliveWhenSignalled: string[] = [];
    const run = await runSelftest(["--timeout", "20"], {
      interrupt: {
        signal,
        group,
        when: /guest: qemu pid \d+/,
        afterMs: 800,
        onSend: (stdout) => {
          const workdir = /workdir (\/\S+)/.exec(stdout)![1];
          aliveWhenSignalled = processesMentioning([workdir]);
        },
      },
    });
    // dnsmasq, the HTTP server and QEMU were all running when the signal came.
    expect(aliveWhenSignalled.join("\n")).toMatch(/dnsmasq/);
    expect(aliveWhenSignalled.join("\n")).toMatch(/http\.server/);
    expect(aliveWhenSignalled.join("\n")).toMatch(/qemu-system-x86_64/);
    // Code and stderr together: a wrong code then shows what the script said. The signal
    // is all it reports: no stage failure (a QEMU killed by the same Ctrl-C), no bash error.
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: exitCode,
      stderr: expect.stringMatching(new RegExp(`^\\n\\[ *\\d+\\.\\d\\ds\\] interrupted by ${signal}: cleaning up\\n$`)),
    });
    expect(run.stdout).not.toContain("PASS");
    expectCleanedUp(run, 3);
  }

  test.each([
    ["SIGTERM", 143],
    ["SIGINT", 130],
    ["SIGHUP", 129],
  ] as const)("%s mid-boot stops everything it started and exits %d", async (signal, exitCode) => {
    await interruptMidBoot(signal, exitCode, false);
  });

  // Ctrl-C at a terminal, or systemd stopping the unit (KillMode=control-group): every
  // process gets the signal at once, and QEMU and dnsmasq may die of it before the script
  // looks at them. It must still report the signal and exit 128+N, not a failed stage.
  test.each([
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const)("%s to the whole process group mid-boot is reported as the signal, exits %d and cleans up", async (signal, exitCode) => {
    await interruptMidBoot(signal, exitCode, true);
  });
});

// The functions that watch the guest: the loops main waits in, and everything they call.
const POLLING_FUNCTIONS = [
  "wait_for_line",
  "watch_guest",
  "advance",
  "check_stage",
  "file_has",
  "file_has_nocase",
  "file_match",
  "process_alive",
  "read_proc_stat",
  "still_running_ours",
  "proc_starttime",
  "poll_pause",
  "now_us",
  "elapsed",
  "say",
  "stage_ok",
] as const;

describe("ci-netboot-selftest: a signal always finds the watch of the guest in a builtin", () => {
  // bash defers a SIGINT that comes while it waits for a foreground child and drops it if
  // the child exits normally; a trap that runs while bash parses a command substitution
  // can fail with a syntax error (exit 2). Neither can happen in code that never forks.
  test("the polling functions contain no command substitution, pipe, subshell or external command", () => {
    const script = fs.readFileSync(SCRIPT, "utf8");
    const { bodies } = scriptFunctions(script, [...POLLING_FUNCTIONS, "main"]);
    expect(POLLING_FUNCTIONS.filter((name) => !bodies.has(name))).toEqual([]);
    const polling = new Map([...bodies].filter(([name]) => name !== "main"));
    // A call to another of the script's functions must be to one of this list (so it is checked too).
    expect(forksIn(polling, new Set(POLLING_FUNCTIONS))).toEqual([]);
    // main waits only through them: it has no loop or sleep of its own.
    const main = bodies.get("main")!.split("\n");
    expect(main.filter((line) => /^\s*(while|until|for|select)\b|\bsleep\b|\bread -t\b/.test(line))).toEqual([]);
    expect(main.filter((line) => /^\s*(wait_for_line|watch_guest) /.test(line))).toHaveLength(3);
  });

  test("the guard itself finds each way of forking, and passes builtins, keywords and checked functions", () => {
    const script = [
      "#!/usr/bin/env bash",
      "helper() { :; }",
      "unchecked() { :; }",
      "good() {",
      '  local line n=$((1 + (2 * 3))) && [[ $line =~ ^(a|b)$ ]] || return 1',
      '  case $1 in a | b) helper "x | y" ;; *) IFS= read -r -t 0.05 -u "$fd" line 2>&1 {fd}>&- ;; esac',
      `  printf -v x '%s | \`y\` $(z)' "$n"; for ((n = 0; n < 3; n++)); do (( n > 1 )) && break; done`,
      "}",
      'bad_comsub() { x=$(date +%s); }',
      'bad_quoted_comsub() { printf "%s" "$(elapsed)"; }',
      "bad_backtick() { x=`date`; }",
      "bad_pipe() { helper | helper; }",
      "bad_external() { sleep 1; }",
      "bad_subshell() { ( helper ); }",
      "bad_background() { helper & }",
      "bad_procsub() { read -r x < <(helper); }",
      "bad_eval() { eval helper; }",
      "bad_unchecked() { unchecked; }",
      "main() { :; }",
      'main "$@"',
    ].join("\n");
    const names = ["good", "bad_comsub", "bad_quoted_comsub", "bad_backtick", "bad_pipe", "bad_external",
      "bad_subshell", "bad_background", "bad_procsub", "bad_eval", "bad_unchecked"];
    const { bodies } = scriptFunctions(script, names);
    const forks = forksIn(bodies, new Set(["helper", ...names]));
    const unchecked = forksIn(new Map([["bad_unchecked", bodies.get("bad_unchecked")!]]), new Set(["helper"]));
    expect(forks.filter((fork) => fork.fn === "good")).toEqual([]);
    expect(new Set(forks.map((fork) => fork.fn))).toEqual(new Set(names.filter((name) => name !== "good")));
    expect(unchecked.map((fork) => fork.why)).toEqual(["command 'unchecked' is neither a builtin nor a checked function"]);
  });
});

test("the unit's start timeout covers the KVM probe, the servers' start and the boot, so systemd never kills a boot the test would report", () => {
  const selftest = YAML.parse(fs.readFileSync(path.resolve(__dirname, "../../salt/runner/parameters/defaults.yaml"), "utf8")).runner.selftest;
  const script = fs.readFileSync(SCRIPT, "utf8");
  const services = Number(/^readonly SERVICES_START_SECONDS=(\d+)$/m.exec(script)![1]);
  const probe = Number(/timeout (\d+) qemu-system-x86_64 -machine pc -accel kvm/.exec(script)![1]);
  const unit = fs.readFileSync(path.resolve(__dirname, "../../salt/runner/selftest.sls"), "utf8");
  expect(unit).toContain("ExecStart={{ selftest.script }} --timeout {{ selftest.boot_timeout_seconds }}");
  expect(unit).toContain("TimeoutStartSec={{ selftest.timeout_seconds }}");
  // A minute of room for package-free setup and cleanup.
  expect(probe + services + selftest.boot_timeout_seconds + 60).toBeLessThanOrEqual(selftest.timeout_seconds);
});
