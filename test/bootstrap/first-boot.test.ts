import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { BOOTSTRAP_PATHS, buildMinionCloudConfig, buildSaltMasterCloudConfig, CloudCommand, PINS, WriteFile } from "../../infra/bootstrap/cloud-config";
import { SALT_PATHS, saltMasterPkiParameterName } from "../../infra/bootstrap/salt-config";
import { renderSaltMasterPkiDocument } from "../../infra/fleet/salt-master-pki";
import { Fleet, generateFleet, masterInput, minionInput, pemBodyLines, STACK } from "./fixtures";

/**
 * First boot, across machines. `pulumi up` writes the pillar documents only once every
 * machine exists (each holds its machine's address and the Teleport auth address), so the
 * master's first pillar sync waits for its own document, and every minion waits for the
 * master longer than the master may wait: computed from what each user-data really runs.
 */

const ROOT = path.resolve(__dirname, "..", "..");
/** The wait script's argument counts steps of this many seconds of wall-clock time. */
const STEP_SECONDS = Number(/\$\(\(steps \* (\d+)\)\)/.exec(fs.readFileSync(path.join(ROOT, "cloud-init/scripts/wait-for-master-and-highstate.sh"), "utf8"))![1]);

/** `program` and its arguments from runcmd (after an `env NAME=value ...` prefix, if any). */
const command = (runcmd: CloudCommand[] | undefined, program: string): string[] => {
  const found = (runcmd ?? []).find((c) => Array.isArray(c) && c.includes(program));
  if (!Array.isArray(found)) throw new Error(`${program} is not in runcmd`);
  return found.slice(found.indexOf(program));
};
const fileIn = (files: WriteFile[] | undefined, filePath: string): string => {
  const file = (files ?? []).find((f) => f.path === filePath);
  if (!file) throw new Error(`no ${filePath} in write_files`);
  return file.content;
};

describe.each(["equinix-metal", "aws"] as const)("first boot on %s", (provider) => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await generateFleet();
  });

  test("the master waits for its own pillar document, and every minion waits for the master longer", () => {
    const master = buildSaltMasterCloudConfig(masterInput(fleet, provider));
    const [, , , masterWait] = command(master.runcmd, BOOTSTRAP_PATHS.bootstrapSaltMaster);
    expect(Number(masterWait)).toBeGreaterThanOrEqual(3600);
    for (const minionId of [...fleet.minions.keys()].filter((id) => !id.endsWith("-salt-master"))) {
      const doc = buildMinionCloudConfig(minionInput(fleet, provider, minionId));
      const [, tries] = command(doc.runcmd, BOOTSTRAP_PATHS.waitForMasterAndHighstate);
      // The master also installs packages and clones the tree before it waits: half an hour of room.
      expect({ minionId, waits: Number(tries) * STEP_SECONDS >= Number(masterWait) + 1800 }).toEqual({ minionId, waits: true });
    }
  });

  test("the bootstrap passes that wait to the pillar sync, which takes it", () => {
    const script = fs.readFileSync(path.join(ROOT, "cloud-init/scripts/bootstrap-salt-master.sh"), "utf8");
    expect(script).toMatch(/pillar_wait=\$3/);
    expect(script).toMatch(/--wait-for "\$stack-salt-master" --wait-seconds "\$pillar_wait"/);
    expect(script).toContain(`python3 ${SALT_PATHS.pillarSync} `);
    const help = spawnSync("python3", [path.join(ROOT, "salt/salt_master/files/ci_fleet_pillar_sync.py"), "--help"], { encoding: "utf8" });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/--wait-for MINION_ID/);
    expect(help.stdout).toMatch(/--wait-seconds SECONDS/);
  });
});

describe.each(["equinix-metal", "aws"] as const)("the master's first boot on %s: who reads what", (provider) => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await generateFleet();
  });
  const script = () => fs.readFileSync(path.join(ROOT, "cloud-init/scripts/bootstrap-salt-master.sh"), "utf8");

  test("its key pairs come from the SSM parameter the program writes, read before anything uses them", () => {
    const master = buildSaltMasterCloudConfig(masterInput(fleet, provider));
    // The parameter name as the script computes it, from the environment file user-data writes.
    const env = fileIn(master.write_files, BOOTSTRAP_PATHS.awsEnvironment);
    const prefix = /^CI_FLEET_SSM_PILLAR_PREFIX=(.*)$/m.exec(env)![1];
    const argument = /--parameter "([^"]+)"/.exec(script())![1];
    const computed = spawnSync("sh", ["-c", `printf '%s' "${argument}"`], { encoding: "utf8", env: { CI_FLEET_SSM_PILLAR_PREFIX: prefix } }).stdout;
    expect(computed).toBe(saltMasterPkiParameterName(STACK));
    // It is under the master's own path, which its role (and only its role) reads.
    expect(computed.startsWith(`/ci-fleet/${STACK}/pillar/`)).toBe(true);
    // Written before the PKI is made root-only, the pillar sync and the start of either daemon.
    const order = [SALT_PATHS.masterPkiFetch, "chown -R root:root /etc/salt/pki", SALT_PATHS.pillarSync, "systemctl enable --now salt-master", "systemctl enable --now salt-minion"];
    const positions = order.map((needle) => script().indexOf(needle));
    expect(positions.every((p) => p > 0)).toBe(true);
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
  });

  test("it installs Salt from its checkout with the same pins as every minion, and waits with the minions' script", () => {
    const master = buildSaltMasterCloudConfig(masterInput(fleet, provider));
    const runner = buildMinionCloudConfig(minionInput(fleet, provider, `${STACK}-default-r1`));
    const pins = (c: CloudCommand[] | undefined, program: string) => {
      const found = (c ?? []).find((x) => Array.isArray(x) && x.includes(program)) as string[];
      return found.slice(0, found.indexOf(program));
    };
    expect(pins(master.runcmd, BOOTSTRAP_PATHS.bootstrapSaltMaster)).toEqual(pins(runner.runcmd, BOOTSTRAP_PATHS.installSalt));
    expect(pins(master.runcmd, BOOTSTRAP_PATHS.bootstrapSaltMaster)).toContain(`SALT_VERSION=${PINS.salt.version}`);
    const text = script();
    const install = /^sh (\/srv\/ci-fleet\/repo\/(\S+)) salt-master salt-minion$/m.exec(text)!;
    const wait = /^exec sh \/srv\/ci-fleet\/repo\/(\S+)$/m.exec(text)!;
    // The checkout is this repository: the scripts it runs are the ones runners get in user-data.
    expect(install[2]).toBe("cloud-init/scripts/install-salt.sh");
    expect(wait[1]).toBe("cloud-init/scripts/wait-for-master-and-highstate.sh");
    for (const rel of [install[2], wait[1], path.relative("/srv/ci-fleet/repo", SALT_PATHS.masterPkiFetch)]) expect(fs.existsSync(path.join(ROOT, rel!))).toBe(true);
    expect(text.indexOf(install[0]!)).toBeGreaterThan(text.indexOf("checkout --quiet --detach FETCH_HEAD"));
    expect(text.indexOf(install[0]!)).toBeLessThan(text.indexOf(SALT_PATHS.masterPkiFetch));
  });
});

describe("ci_fleet_master_pki.py (the master's key pairs from SSM)", () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await generateFleet();
  });

  /** Runs the real script against a fake boto3 whose SSM returns `value` (or fails `failures` times first). */
  function run(value: string, failures = 0, waitSeconds = 0): { status: number | null; stderr: string; pki: string } {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-master-pki-"));
    fs.mkdirSync(path.join(dir, "boto3"));
    fs.writeFileSync(path.join(dir, "value.json"), value, { mode: 0o600 });
    fs.writeFileSync(
      path.join(dir, "boto3", "__init__.py"),
      [
        "import os",
        "class _SSM:",
        "    calls = 0",
        "    def get_parameter(self, Name, WithDecryption):",
        "        assert WithDecryption is True and Name == os.environ['WANT']",
        "        _SSM.calls += 1",
        `        if _SSM.calls <= ${failures}: raise RuntimeError('AccessDenied')`,
        "        return {'Parameter': {'Value': open(os.environ['VALUE']).read()}}",
        "def client(service, region_name):",
        "    assert service == 'ssm' and region_name == 'us-east-1'",
        "    return _SSM()",
      ].join("\n"),
    );
    const pki = path.join(dir, "pki");
    // A retry interval of 0 would busy-loop for the whole wait and log each try: with a wait,
    // look again every second (the script's interval is whole seconds).
    const r = spawnSync("python3", [path.join(ROOT, "salt/salt_master/files/ci_fleet_master_pki.py"), "--parameter", saltMasterPkiParameterName(STACK), "--region", "us-east-1", "--pki-dir", pki, "--wait-seconds", String(waitSeconds)], {
      encoding: "utf8",
      env: { PATH: "/usr/bin:/bin", PYTHONPATH: dir, CI_FLEET_RETRY_SECONDS: waitSeconds > 0 ? "1" : "0", WANT: saltMasterPkiParameterName(STACK), VALUE: path.join(dir, "value.json") },
    });
    return { status: r.status, stderr: r.stderr, pki };
  }

  test("writes exactly the program's keys, private ones 0400, in root-only directories", () => {
    const r = run(renderSaltMasterPkiDocument(fleet.master, fleet.masterMinion));
    expect(r.status).toBe(0);
    const mode = (p: string) => (fs.statSync(path.join(r.pki, p)).mode & 0o777).toString(8);
    expect(fs.readFileSync(path.join(r.pki, "master/master.pem"), "utf8")).toBe(fleet.master.privateKeyPem);
    expect(fs.readFileSync(path.join(r.pki, "master/master.pub"), "utf8")).toBe(fleet.master.publicKeyPem);
    expect(fs.readFileSync(path.join(r.pki, "minion/minion.pem"), "utf8")).toBe(fleet.masterMinion.privateKeyPem);
    expect(fs.readFileSync(path.join(r.pki, "minion/minion.pub"), "utf8")).toBe(fleet.masterMinion.publicKeyPem);
    expect([mode("master/master.pem"), mode("master/master.pub"), mode("minion/minion.pem"), mode("minion/minion.pub"), mode("master"), mode("minion")]).toEqual(["400", "644", "400", "644", "700", "700"]);
    for (const line of pemBodyLines(fleet.master.privateKeyPem)) expect(r.stderr).not.toContain(line);
    fs.rmSync(path.dirname(r.pki), { recursive: true, force: true });
  });

  test("refuses a malformed document: nothing written, no value echoed", () => {
    const doc = JSON.parse(renderSaltMasterPkiDocument(fleet.master, fleet.masterMinion)) as Record<string, string>;
    const r = run(JSON.stringify({ ...doc, minion_private_key_pem: doc.master_public_key_pem }));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/malformed: minion_private_key_pem/);
    expect(fs.existsSync(r.pki)).toBe(false);
    for (const line of pemBodyLines(fleet.master.privateKeyPem)) expect(r.stderr).not.toContain(line);
    fs.rmSync(path.dirname(r.pki), { recursive: true, force: true });
  });

  test("looks again while its credentials or the parameter are not there yet", () => {
    const r = run(renderSaltMasterPkiDocument(fleet.master, fleet.masterMinion), 2, 60);
    expect(r.status).toBe(0);
    expect(r.stderr.match(/unreadable \(RuntimeError\); looking again/g)).toHaveLength(2);
    fs.rmSync(path.dirname(r.pki), { recursive: true, force: true });
  });

  test("fails closed when SSM stays unreadable past its wait", () => {
    const r = run(renderSaltMasterPkiDocument(fleet.master, fleet.masterMinion), 1e9, 1);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/unreadable \(RuntimeError\) after 1 s/);
    expect(fs.existsSync(r.pki)).toBe(false);
    fs.rmSync(path.dirname(r.pki), { recursive: true, force: true });
  });
});

describe("the minion's first highstate", () => {
  /**
   * Runs the real script with a fake salt-call (`script` decides each call's exit code) on a fake
   * wall clock: `date +%s` reads it, `sleep N` advances it, and a fake call may advance it
   * (`took N`); real timeout(1) still bounds each ping. `elapsed` is the clock's seconds.
   */
  function run(steps: number, script: string, scheduleFile?: string, env: Record<string, string> = {}): { status: number | null; calls: string[]; stderr: string; seconds: number; elapsed: number } {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-first-highstate-"));
    try {
      const log = path.join(dir, "calls");
      const clock = path.join(dir, "clock");
      fs.writeFileSync(clock, "1000000\n");
      const took = `took() { echo $(( $(cat ${clock}) + $1 )) > ${clock}; }`;
      fs.writeFileSync(path.join(dir, "salt-call"), `#!/bin/sh\n${took}\necho "$*" >> ${log}\nn=$(wc -l < ${log})\n${script}\n`, { mode: 0o755 });
      fs.writeFileSync(path.join(dir, "date"), `#!/bin/sh\n[ "$1" = +%s ] || exit 2\ncat ${clock}\n`, { mode: 0o755 });
      fs.writeFileSync(path.join(dir, "sleep"), `#!/bin/sh\n${took}\ntook "$1"\n`, { mode: 0o755 });
      const started = Date.now();
      const r = spawnSync("sh", [path.join(ROOT, "cloud-init/scripts/wait-for-master-and-highstate.sh"), String(steps)], {
        encoding: "utf8",
        env: { PATH: `${dir}:/usr/bin:/bin`, CI_FLEET_SCHEDULE_FILE: scheduleFile ?? path.join(dir, "no-schedule"), ...env },
        timeout: 60_000,
      });
      const calls = fs.existsSync(log) ? fs.readFileSync(log, "utf8").trim().split("\n") : [];
      return { status: r.status, calls, stderr: r.stderr, seconds: (Date.now() - started) / 1000, elapsed: Number(fs.readFileSync(clock, "utf8")) - 1000000 };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  const pings = (r: { calls: string[] }) => r.calls.filter((c) => c.includes("test.ping")).length;
  const highstates = (r: { calls: string[] }) => r.calls.filter((c) => c.includes("state.highstate")).length;

  test("retries while the master is down and while it cannot serve this minion's pillar yet", () => {
    // ping fails twice; then the highstate fails twice (no pillar document yet); then it succeeds.
    const r = run(10, 'case "$*" in *test.ping*) [ "$n" -gt 2 ] ;; *) [ "$n" -ge 8 ] ;; esac');
    expect(r.status).toBe(0);
    expect(highstates(r)).toBe(3);
  });

  test("stops once Salt owns the machine (its highstate schedule is installed), even if a state failed", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-schedule-"));
    const schedule = path.join(dir, "_schedule.conf");
    fs.writeFileSync(schedule, "schedule:\n  ci-fleet-highstate:\n    function: state.apply\n");
    const r = run(10, 'case "$*" in *test.ping*) true ;; *) false ;; esac', schedule);
    fs.rmSync(dir, { recursive: true, force: true });
    expect(r.status).toBe(0);
    expect(highstates(r)).toBe(1);
  });

  test("gives up at its deadline with a clear message", () => {
    // 3 steps of 20 s: tries at 0, 20 and 40 s, then the deadline.
    const r = run(3, 'case "$*" in *test.ping*) true ;; *) false ;; esac');
    expect(r.status).toBe(1);
    expect(highstates(r)).toBe(3);
    expect(r.elapsed).toBe(60);
    expect(r.stderr).toMatch(/ci-fleet: no highstate from the Salt master succeeded within 60 s/);
  });

  // Review of issue 13: a name that resolves to a master that does not answer costs each ping its
  // whole bound (120 s); counted in tries, the 7 h wait of user-data lasted ~49 h.
  test("the wait is bounded by wall-clock time: an hour of pings that each hang for their whole bound ends after an hour", () => {
    // (A count of 180 tries of 120 + 20 s would last 7 h; user-data's 1260 steps, ~49 h.)
    const hour = 3600;
    const r = run(hour / 20, 'case "$*" in *test.ping*) took 120; exit 124 ;; *) true ;; esac');
    expect(r.status).toBe(1);
    expect(r.elapsed).toBeGreaterThanOrEqual(hour);
    expect(r.elapsed).toBeLessThanOrEqual(hour + 120);
    expect(pings(r)).toBeLessThanOrEqual(Math.ceil(hour / 140) + 1);
    expect(highstates(r)).toBe(0);
  }, 120_000);

  test("the wait user-data passes is 7 h, and the master's own bootstrap waits 30 min", () => {
    const script = fs.readFileSync(path.join(ROOT, "cloud-init/scripts/wait-for-master-and-highstate.sh"), "utf8");
    expect(script).toMatch(/^wait_seconds=\$\{CI_FLEET_WAIT_SECONDS:-\$\(\(steps \* 20\)\)\}$/m);
    expect(script).toMatch(/^steps=\$\{1:-90\}$/m);
  });

  // master_tries: -1 makes a salt-call wait for the master forever (SMinion's eval_master): the
  // ping is bounded, and a ping that hits its bound is logged as such.
  test("a ping that never returns (master unreachable, master_tries: -1) is stopped at its bound and logged", () => {
    const r = run(2, 'case "$*" in *test.ping*) exec /bin/sleep 600 ;; *) true ;; esac', undefined, { CI_FLEET_PING_TIMEOUT_SECONDS: "1" });
    expect(r.status).toBe(1);
    expect(pings(r)).toBe(2);
    expect(highstates(r)).toBe(0);
    expect(r.stderr.match(/ci-fleet: test\.ping: no answer within 1 s/g)).toHaveLength(2);
    expect(r.stderr).toMatch(/ci-fleet: no highstate from the Salt master succeeded/);
    expect(r.seconds).toBeLessThan(30);
  });

  // Review of issue 13: timeout(1) signals the whole process group (TERM, then KILL): a dpkg
  // under the highstate killed mid-install leaves the package database interrupted.
  test("a long highstate is never stopped: it runs to its end, its children unsignalled", () => {
    const marker = path.join(os.tmpdir(), `ci-fleet-highstate-done-${process.pid}`);
    const signalled = `${marker}.signalled`;
    fs.rmSync(marker, { force: true });
    fs.rmSync(signalled, { force: true });
    // The highstate's child (think dpkg) records any TERM; the highstate outlasts the old 1 s bound.
    const highstate = `sh -c 'trap "touch ${signalled}; exit 143" TERM; /bin/sleep 3; touch ${marker}' ; wait`;
    const r = run(3, `case "$*" in *test.ping*) true ;; *) ${highstate} ;; esac`, undefined, { CI_FLEET_HIGHSTATE_TIMEOUT_SECONDS: "1" });
    try {
      expect(r.status).toBe(0);
      expect(highstates(r)).toBe(1);
      expect(fs.existsSync(marker)).toBe(true);
      expect(fs.existsSync(signalled)).toBe(false);
      expect(r.stderr).not.toMatch(/state\.highstate: no answer/);
    } finally {
      fs.rmSync(marker, { force: true });
      fs.rmSync(signalled, { force: true });
    }
  });

  test("a failing salt-call is logged with its exit status", () => {
    const r = run(1, 'case "$*" in *test.ping*) exit 42 ;; *) true ;; esac');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/ci-fleet: test\.ping: salt-call exited 42/);
    const h = run(1, 'case "$*" in *test.ping*) true ;; *) exit 2 ;; esac');
    expect(h.stderr).toMatch(/ci-fleet: state\.highstate: salt-call exited 2/);
  });

  test("in the first-boot scripts every test.ping is bounded by timeout(1) and no highstate is", () => {
    const seen = { ping: 0, highstate: 0 };
    for (const name of fs.readdirSync(path.join(ROOT, "cloud-init/scripts"))) {
      const lines = fs.readFileSync(path.join(ROOT, "cloud-init/scripts", name), "utf8").split("\n").filter((l) => !/^\s*#/.test(l));
      // An invocation: salt-call followed by an option or a module.function.
      for (const line of lines.filter((l) => /\bsalt-call\s+(--|[a-z_]+\.[a-z_]+)/.test(l))) {
        if (/\btest\.ping\b/.test(line)) {
          seen.ping++;
          expect({ name, line, bounded: /\btimeout --kill-after=\d+ "\$bound" salt-call\b/.test(line) }).toEqual({ name, line, bounded: true });
        } else {
          seen.highstate += /state\.(highstate|apply)/.test(line) ? 1 : 0;
          expect({ name, line, unbounded: !/\btimeout\b/.test(line) }).toEqual({ name, line, unbounded: true });
        }
      }
    }
    expect(seen).toEqual({ ping: 1, highstate: 1 });
  });

  test("looks for the schedule where Salt persists it (minion.d/_schedule.conf)", () => {
    const script = fs.readFileSync(path.join(ROOT, "cloud-init/scripts/wait-for-master-and-highstate.sh"), "utf8");
    expect(script).toContain("${CI_FLEET_SCHEDULE_FILE:-/etc/salt/minion.d/_schedule.conf}");
    const schedule = fs.readFileSync(path.join(ROOT, "salt/base/schedule.sls"), "utf8");
    expect(schedule).toMatch(/- name: ci-fleet-highstate\n/);
    expect(schedule).toMatch(/- persist: True/);
  });
});
