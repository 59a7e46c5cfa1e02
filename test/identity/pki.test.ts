/**
 * The fleet's own Roles Anywhere PKI and the CI user's one-hour sessions
 * (salt/_runners/ci_fleet_pki.py, salt/aws_credentials/files/*.py): the Python tests with
 * real OpenSSL and python3-cryptography, and the values the program, the master config and
 * the Salt tree must share.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import * as YAML from "yaml";
import { buildSaltMasterConfig, SALT_MASTER_ORCHESTRATION, SALT_PATHS } from "../../infra/bootstrap/salt-config";
import {
  CERTIFICATE_ALARM_AT_REMAINING,
  CERTIFICATE_RENEW_AT_REMAINING,
  SESSION_ALARM_BEFORE_SECONDS,
  UNTRUSTED_CERTIFICATE_MAX_HOURS,
  SESSION_REFRESH_BEFORE_SECONDS,
  SESSION_SECONDS,
  credentialLifetimes,
} from "../../infra/identity/lifetimes";
import { FLEET_CERTIFICATE_HOURS_RANGE } from "../../infra/identity/identity";

const ROOT = path.resolve(__dirname, "..", "..");
const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
const read = (p: string) => fs.readFileSync(path.join(ROOT, p), "utf8");
const pyConstant = (text: string, name: string) => new RegExp(`^${name} = (.+)$`, "m").exec(text)?.[1].trim();

const signer = read("salt/_runners/ci_fleet_pki.py");
const machine = read("salt/aws_credentials/files/ci_fleet_roles_anywhere.py");
const session = read("salt/aws_credentials/files/ci_fleet_aws_session.py");

test("test/identity/test_pki.py passes (signing policy, malformed requests, 90 days on a fake clock, alarms, sessions)", () => {
  const run = spawnSync(python, [path.join(__dirname, "test_pki.py")], { encoding: "utf8", timeout: 300_000 });
  if (run.status !== 0) throw new Error(`${run.stdout}\n${run.stderr}`);
}, 320_000);

describe("seams of the PKI", () => {
  const master = buildSaltMasterConfig({ masterMinionId: "prod-salt-master" });

  test("the tag a machine sends is the tag the master's reactor listens to, and the reactor calls the signer", () => {
    const tag = SALT_MASTER_ORCHESTRATION.rolesAnywhereCsrEvent;
    expect(JSON.parse(pyConstant(machine, "EVENT_TAG")!)).toBe(tag);
    expect(JSON.parse(pyConstant(signer, "EVENT_TAG")!)).toBe(tag);
    const entries = master.reactor.filter((r) => tag in r);
    expect(entries).toEqual([{ [tag]: [SALT_MASTER_ORCHESTRATION.rolesAnywhereCsrReactor] }]);
    // Salt reads each reactor item as a one-key mapping.
    for (const item of master.reactor) expect(Object.keys(item)).toHaveLength(1);
    const reactorFile = SALT_MASTER_ORCHESTRATION.rolesAnywhereCsrReactor;
    expect(reactorFile.startsWith(`${SALT_PATHS.stateTree}/`)).toBe(true);
    const reactor = read(path.join("salt", reactorFile.slice(SALT_PATHS.stateTree.length + 1)));
    expect([...reactor.matchAll(/^\s+runner\.([a-z_]+\.[a-z_]+):\s*$/gm)].map((m) => m[1])).toEqual(["ci_fleet_pki.sign"]);
    expect(signer).toMatch(/^def sign\(minion=None, request=None\):/m);
    expect(master.runner_dirs).toEqual([SALT_MASTER_ORCHESTRATION.runnerDir]);
  });

  test("the message a machine signs is the message the master verifies", () => {
    expect(pyConstant(machine, "MESSAGE_PREFIX")).toBe(pyConstant(signer, "MESSAGE_PREFIX"));
  });

  test("the delivery state the signer publishes exists and reads the pillar key it sends", () => {
    const sls = JSON.parse(pyConstant(signer, "INSTALL_SLS")!) as string;
    const key = JSON.parse(pyConstant(signer, "INSTALL_PILLAR_KEY")!) as string;
    const text = read(`salt/${sls.replace(/\./g, "/")}.sls`);
    expect(text).toContain(`contents_pillar: ${key}:certificate_pem`);
    expect(text).toContain(`salt['pillar.get']('${key}:certificate_pem', '')`);
  });

  test("the scripts renew, refresh and alarm at the points the report states", () => {
    expect(Number(pyConstant(machine, "RENEW_AT_REMAINING"))).toBe(CERTIFICATE_RENEW_AT_REMAINING);
    expect(Number(pyConstant(machine, "ALARM_AT_REMAINING"))).toBe(CERTIFICATE_ALARM_AT_REMAINING);
    expect(eval(pyConstant(session, "SESSION_SECONDS")!)).toBe(SESSION_SECONDS);
    expect(eval(pyConstant(session, "REFRESH_BEFORE_SECONDS")!)).toBe(SESSION_REFRESH_BEFORE_SECONDS);
    expect(eval(pyConstant(session, "ALARM_BEFORE_SECONDS")!)).toBe(SESSION_ALARM_BEFORE_SECONDS);
    const [min, max] = /^MIN_LIFETIME_HOURS, MAX_LIFETIME_HOURS = (\d+), (\d+)$/m.exec(signer)!.slice(1).map(Number);
    expect({ min, max }).toEqual(FLEET_CERTIFICATE_HOURS_RANGE);
    expect(eval(pyConstant(signer, "UNTRUSTED_MAX_LIFETIME_HOURS")!)).toBe(UNTRUSTED_CERTIFICATE_MAX_HOURS);
  });

  test("the credential table names every kind with its lifetime, renewal and alarm", () => {
    const equinix = credentialLifetimes({ provider: "equinix-metal", identity: { accountId: "111111111111", region: "us-east-1", bootstrapRoleName: "b", runnerCertificateHours: 720 } });
    expect(equinix.map((r) => [r.credential, r.lifetime, r.alarm])).toEqual([
      ["CI job session (queue agent role)", "60 min", expect.stringMatching(/^15 min before expiry/)],
      ["Roles Anywhere certificate + key (every machine)", "30 d (720 h)", expect.stringMatching(/^7\.5 d \(180 h\) before expiry/)],
      ["Roles Anywhere certificate + key (runners of untrusted queues)", "3 d (72 h)", expect.stringMatching(/^18 h before expiry/)],
      ["Salt master bootstrap certificate (user-data)", "3 d (72 h)", "none (not used after first boot)"],
      ["Roles Anywhere CA (trust anchor)", "1825 d (43800 h)", expect.any(String)],
    ]);
    expect(equinix[1].renewed).toMatch(/with 15 d \(360 h\) left; no `pulumi up`/);
    const aws = credentialLifetimes({ provider: "aws", identity: { accountId: "111111111111", region: "us-east-1", bootstrapRoleName: "b", runnerCertificateHours: 720 } });
    expect(aws.map((r) => r.credential)).toEqual(["CI job session (queue agent role)", expect.stringMatching(/^instance role/)]);
  });

  test("the stack files give the fleet's certificates 30 days (a master outage of 15 days is harmless)", () => {
    for (const file of ["Pulumi.production.yaml", "Pulumi.production-aws.yaml"]) {
      const doc = YAML.parse(read(file)) as { config: Record<string, { runnerCertificateHours?: number }> };
      expect([file, doc.config["ci-fleet:identity"].runnerCertificateHours]).toEqual([file, 720]);
    }
  });
});
