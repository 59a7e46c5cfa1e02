import { gunzipSync } from "zlib";
import { buildMinionPillar, gzipBase64, MinionPillarInput, PILLAR_MAX_BYTES, renderPillarDocument } from "../../infra/bootstrap/pillar";
import { checkFleetSettings } from "../../infra/config/check";
import { stackConfig } from "../support/preview";

/** The pillar builder alone: each role's document, by table and snapshot (secrets masked). */

function settings(provider: "equinix-metal" | "aws") {
  const values: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(stackConfig("production"))) values[k.replace(/^ci-fleet:/, "")] = v;
  values.provider = provider;
  const { settings: s, problems } = checkFleetSettings({ stack: "production", values, secretsPresent: new Set(), queueSecretPaths: {} });
  if (!s) throw new Error(JSON.stringify(problems));
  return { stack: "production", ...s };
}

const SECRET = {
  roles: "SECRET-roles-anywhere-key",
  github: "SECRET-github-app-key",
  deploy: "SECRET-deploy-key",
  connector: "SECRET-connector-client-secret",
};

function input(provider: "equinix-metal" | "aws", role: "salt-master" | "teleport" | "runner", queue?: string): MinionPillarInput {
  const hostname = role === "runner" ? `production-${queue}-r1` : `production-${role}`;
  return {
    config: settings(provider),
    machine: { hostname, role, ...(queue ? { queue } : {}), privateIpv4: "10.70.0.21" },
    masterAddress: "production-salt-master.fleet.ci.example-metal.org",
    authAddress: "production-teleport.fleet.ci.example-metal.org:3025",
    teleportPrivateIpv4: "10.70.0.6",
    minionPublicKeyPem: "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n",
    roleArn: `arn:aws:iam::210987654321:role/ci-fleet-production-${role === "runner" ? `agent-${queue}` : role}`,
    ...(provider === "equinix-metal"
      ? { rolesAnywhere: { trustAnchorArn: "arn:aws:rolesanywhere:us-east-2:210987654321:trust-anchor/t", profileArn: "arn:aws:rolesanywhere:us-east-2:210987654321:profile/p" },
          ...(role === "salt-master" ? { rolesAnywhereCa: { certificatePem: "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n", privateKeyPem: SECRET.roles, certificateHours: 720 } } : {}) }
      : {}),
    ...(role === "salt-master" ? { githubAppPrivateKey: SECRET.github, saltRepositoryDeployKey: SECRET.deploy } : {}),
    ...(role === "teleport"
      ? { teleport: { resourcesYaml: `kind: github\nspec:\n  client_secret: ${SECRET.connector}\n`, audit: { kind: "aws" as const, region: "us-east-2", stateTable: "ci-fleet-production-teleport-state", sessionsBucket: "ci-fleet-production-teleport-audit", eventsTable: "ci-fleet-production-teleport-events", retentionDays: 365 } } }
      : {}),
  };
}

function masked(doc: unknown): unknown {
  let text = JSON.stringify(doc);
  for (const s of Object.values(SECRET)) text = text.split(s).join("[secret]");
  const parsed = JSON.parse(text) as { ci_fleet: { salt: { ref: string } } };
  // The stack's pinned commit moves with every change to the Salt tree: the snapshot holds its shape.
  expect(parsed.ci_fleet.salt.ref).toMatch(/^[0-9a-f]{40}$/);
  parsed.ci_fleet.salt.ref = "<the stack's pinned commit>";
  return parsed;
}

const CASES: ["equinix-metal" | "aws", "salt-master" | "teleport" | "runner", string | undefined][] = [
  ["equinix-metal", "salt-master", undefined],
  ["equinix-metal", "teleport", undefined],
  ["equinix-metal", "runner", "default"],
  ["equinix-metal", "runner", "infra"],
  ["aws", "salt-master", undefined],
  ["aws", "runner", "release"],
];

test.each(CASES)("%s %s %s: the contract's keys, and nothing of another role", (provider, role, queue) => {
  const doc = buildMinionPillar(input(provider, role, queue));
  expect(Object.keys(doc).sort()).toEqual(["ci_fleet", ...(role === "salt-master" ? ["ci_fleet_master"] : []), ...(role === "teleport" ? ["ci_fleet_teleport"] : [])]);
  expect(doc.ci_fleet.minion_id).toBe(input(provider, role, queue).machine.hostname);
  expect(doc.ci_fleet.salt.master_address).toBe(role === "salt-master" ? "127.0.0.1" : "production-salt-master.fleet.ci.example-metal.org");
  // Agents reach the auth service by its stable name; only the firewall gets the address (pillar follows a replacement).
  expect(doc.ci_fleet.teleport.auth_address).toBe("production-teleport.fleet.ci.example-metal.org:3025");
  expect(doc.ci_fleet.teleport.proxy_private_ipv4).toBe("10.70.0.6");
  if (role !== "teleport") expect(doc.ci_fleet.teleport.node_config).toContain("auth_server: production-teleport.fleet.ci.example-metal.org:3025");
  expect(doc.ci_fleet.aws.roles_anywhere !== undefined).toBe(provider === "equinix-metal");
  expect(doc.ci_fleet.aws.ssm_prefix).toBe(role === "runner" ? `/ci-fleet/production/${queue}/` : role === "salt-master" ? "/ci-fleet/production/pillar/" : undefined);
  expect(doc.ci_fleet.runner?.queue).toBe(queue);
  expect(doc.ci_fleet.teleport.node_config !== undefined).toBe(role !== "teleport");
  expect(Buffer.byteLength(renderPillarDocument(doc))).toBeLessThan(PILLAR_MAX_BYTES);
  expect(masked(doc)).toMatchSnapshot();
});

test("a runner's pillar names its queue's agent, labels and organisation", () => {
  expect(buildMinionPillar(input("equinix-metal", "runner", "default")).ci_fleet.runner).toEqual({
    queue: "default", agent: "github-actions", trusted: false, labels: ["self-hosted", "linux", "x64", "kvm", "netboot"], runner_group: "untrusted-pr", github_organization: "example-metal",
    isolation: "vm", job_vm: expect.objectContaining({ cpus: 4, memory_mib: 16384 }),
  });
  expect(buildMinionPillar(input("aws", "runner", "release")).ci_fleet.runner).toEqual({
    queue: "release", agent: "buildkite", trusted: true, labels: ["os=linux", "arch=x64", "kvm=true"], buildkite_organization: "example-metal",
    isolation: "vm", job_vm: expect.objectContaining({ slots: 2, cpus: 8 }),
  });
});

test("the Teleport resources travel gzip'd and come back byte for byte", () => {
  const doc = buildMinionPillar(input("equinix-metal", "teleport"));
  const yaml = gunzipSync(new Uint8Array(Buffer.from(doc.ci_fleet_teleport!.resources_gzip_base64, "base64"))).toString("utf8");
  expect(yaml).toBe(`kind: github\nspec:\n  client_secret: ${SECRET.connector}\n`);
  expect(gzipBase64(yaml)).toBe(doc.ci_fleet_teleport!.resources_gzip_base64);
});

test("a document over SSM's 8 KiB is refused with its minion named", () => {
  const doc = buildMinionPillar(input("aws", "salt-master"));
  doc.ci_fleet_master!.salt_repository_deploy_key = "x".repeat(PILLAR_MAX_BYTES);
  expect(() => renderPillarDocument(doc)).toThrow(/pillar document of production-salt-master is \d+ bytes; SSM parameters hold at most 8192/);
});
