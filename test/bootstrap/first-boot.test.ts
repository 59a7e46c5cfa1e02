import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { BOOTSTRAP_PATHS, buildMinionCloudConfig, buildSaltMasterCloudConfig, CloudCommand } from "../../infra/bootstrap/cloud-config";
import { SALT_PATHS } from "../../infra/bootstrap/salt-config";
import { Fleet, generateFleet, masterInput, minionInput } from "./fixtures";

/**
 * First boot, across machines. `pulumi up` writes the pillar documents only once every
 * machine exists (each holds its machine's address and the Teleport auth address), so the
 * master's first pillar sync waits for its own document, and every minion waits for the
 * master longer than the master may wait: computed from what each user-data really runs.
 */

const ROOT = path.resolve(__dirname, "..", "..");
const PING_SECONDS = Number(/CI_FLEET_RETRY_SECONDS:-(\d+)/.exec(fs.readFileSync(path.join(ROOT, "cloud-init/scripts/wait-for-master-and-highstate.sh"), "utf8"))![1]);

const command = (runcmd: CloudCommand[] | undefined, program: string): string[] => {
  const found = (runcmd ?? []).find((c) => Array.isArray(c) && c[0] === program);
  if (!Array.isArray(found)) throw new Error(`${program} is not in runcmd`);
  return found;
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
      expect({ minionId, waits: Number(tries) * PING_SECONDS >= Number(masterWait) + 1800 }).toEqual({ minionId, waits: true });
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

describe("the minion's first highstate", () => {
  /** Runs the real script with a fake salt-call: `script` decides each call's exit code. */
  function run(tries: number, script: string, scheduleFile?: string): { status: number | null; calls: string[] } {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-first-highstate-"));
    try {
      const log = path.join(dir, "calls");
      fs.writeFileSync(path.join(dir, "salt-call"), `#!/bin/sh\necho "$*" >> ${log}\nn=$(wc -l < ${log})\n${script}\n`, { mode: 0o755 });
      const r = spawnSync("sh", [path.join(ROOT, "cloud-init/scripts/wait-for-master-and-highstate.sh"), String(tries)], {
        encoding: "utf8",
        env: { PATH: `${dir}:/usr/bin:/bin`, CI_FLEET_RETRY_SECONDS: "0", CI_FLEET_SCHEDULE_FILE: scheduleFile ?? path.join(dir, "no-schedule") },
      });
      const calls = fs.existsSync(log) ? fs.readFileSync(log, "utf8").trim().split("\n") : [];
      return { status: r.status, calls };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  test("retries while the master is down and while it cannot serve this minion's pillar yet", () => {
    // ping fails twice; then the highstate fails twice (no pillar document yet); then it succeeds.
    const r = run(10, 'case "$*" in *test.ping*) [ "$n" -gt 2 ] ;; *) [ "$n" -ge 8 ] ;; esac');
    expect(r.status).toBe(0);
    expect(r.calls.filter((c) => c.includes("state.highstate"))).toHaveLength(3);
  });

  test("stops once Salt owns the machine (its highstate schedule is installed), even if a state failed", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-schedule-"));
    const schedule = path.join(dir, "_schedule.conf");
    fs.writeFileSync(schedule, "schedule:\n  ci-fleet-highstate:\n    function: state.apply\n");
    const r = run(10, 'case "$*" in *test.ping*) true ;; *) false ;; esac', schedule);
    fs.rmSync(dir, { recursive: true, force: true });
    expect(r.status).toBe(0);
    expect(r.calls.filter((c) => c.includes("state.highstate"))).toHaveLength(1);
  });

  test("gives up after its tries with a clear message", () => {
    const r = run(3, 'case "$*" in *test.ping*) true ;; *) false ;; esac');
    expect(r.status).toBe(1);
    expect(r.calls.filter((c) => c.includes("state.highstate"))).toHaveLength(3);
  });

  test("looks for the schedule where Salt persists it (minion.d/_schedule.conf)", () => {
    const script = fs.readFileSync(path.join(ROOT, "cloud-init/scripts/wait-for-master-and-highstate.sh"), "utf8");
    expect(script).toContain("${CI_FLEET_SCHEDULE_FILE:-/etc/salt/minion.d/_schedule.conf}");
    const schedule = fs.readFileSync(path.join(ROOT, "salt/base/schedule.sls"), "utf8");
    expect(schedule).toMatch(/- name: ci-fleet-highstate\n/);
    expect(schedule).toMatch(/- persist: True/);
  });
});
