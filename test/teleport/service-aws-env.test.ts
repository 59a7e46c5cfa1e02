import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";

/**
 * Teleport (17 and 18) reaches its audit storage (DynamoDB events, S3 recordings) with the AWS SDK
 * for Go v2's default chain. Its packaged unit (teleport.service: no User=, no HOME) runs
 * it as root with no HOME, so on equinix-metal the SDK would never find root's shared config
 * (Roles Anywhere credential_process). The Teleport machine's highstate must point the
 * service at exactly the file the aws_credentials formula writes there.
 */

const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
const ROOT = path.resolve(__dirname, "../..");

type Minion = { errors: string[]; states: Record<string, { functions: Array<{ function: string; args: Record<string, any> }> }> };

function highstates(): Record<string, Minion> {
  const proc = spawnSync(python, [path.join(ROOT, "test/access/highstate.py"), "--salt-root", path.join(ROOT, "salt")], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  if (proc.status !== 0) throw new Error(`highstate.py exited ${proc.status}:\n${proc.stderr}`);
  return JSON.parse(proc.stdout);
}

function fileManaged(minion: Minion): Array<{ id: string; args: Record<string, any> }> {
  return Object.entries(minion.states).flatMap(([id, s]) => s.functions.filter((f) => f.function === "file.managed").map((f) => ({ id, args: f.args })));
}

/** `Environment=` assignments of a systemd drop-in's [Service] section. */
function serviceEnvironment(unit: string): Record<string, string> {
  const env: Record<string, string> = {};
  let section = "";
  for (const line of unit.split("\n").map((l) => l.trim())) {
    if (line.startsWith("[")) section = line;
    else if (section === "[Service]" && line.startsWith("Environment=")) {
      for (const pair of line.slice("Environment=".length).split(/\s+/)) {
        const [k, ...v] = pair.split("=");
        env[k] = v.join("=");
      }
    }
  }
  return env;
}

const DROPIN = "/etc/systemd/system/teleport.service.d/ci-fleet-aws.conf";

describe("teleport.service environment for the AWS SDK", () => {
  const minions = highstates();

  test("equinix-metal: a drop-in names root's shared config, the one aws_credentials writes, and restarts Teleport", () => {
    const minion = minions["production-teleport"];
    expect(minion.errors).toEqual([]);
    const dropIn = fileManaged(minion).find((f) => f.args.name === DROPIN);
    expect(dropIn).toBeDefined();
    expect(serviceEnvironment(dropIn!.args.contents)).toEqual({ AWS_CONFIG_FILE: "/root/.aws/config", AWS_SDK_LOAD_CONFIG: "1", AWS_REGION: "us-east-1" });
    // The seam: a file by that name is written on this machine by aws_credentials.
    const written = fileManaged(minion).filter((f) => f.args.name === "/root/.aws/config" && f.id.startsWith("aws_credentials-"));
    expect(written.map((f) => f.id)).toHaveLength(1);
    expect(written[0].args.contents).toMatch(/^\[default\]$/m);
    expect(written[0].args.contents).toMatch(/^credential_process = /m);
    const service = minion.states["teleport-auth-service-running"].functions[0].args;
    expect(service.watch).toContainEqual({ file: dropIn!.id });
  });

  test("aws: no drop-in (root gets the instance profile through IMDS)", () => {
    const minion = minions["staging-teleport"];
    expect(fileManaged(minion).find((f) => f.args.name === DROPIN)).toBeUndefined();
  });
});
