/**
 * Realistic fake key material for the bootstrap tests, generated fresh on every run
 * (RSA 2048 Salt keys with node's crypto, an ed25519 deploy key with ssh-keygen, an X.509
 * certificate with openssl), plus a production-sized fleet. Nothing here is a real secret,
 * and snapshots never contain it: `stableText` replaces every generated value by its name.
 */
import { execFileSync } from "child_process";
import { generateKeyPair } from "crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import * as path from "path";
import { promisify } from "util";
import {
  MinionBootstrapInput,
  SaltKeyPair,
  SaltMasterBootstrapInput,
  saltMasterFingerprint,
} from "../../infra/bootstrap/cloud-config";
import { MachineProviderName, machineNames } from "../../infra/config/model";

const generateKeyPairAsync = promisify(generateKeyPair);

/** Fail (never skip) when a Debian tool is missing, naming the package. */
export function requireTool(tool: string, debianPackage: string): string {
  for (const dir of (process.env.PATH ?? "").split(":").concat(["/usr/sbin", "/sbin"])) {
    const candidate = path.join(dir, tool);
    try {
      execFileSync("test", ["-x", candidate]);
      return candidate;
    } catch {
      // keep looking
    }
  }
  throw new Error(`${tool} not found: install the Debian package ${debianPackage} (apt-get install ${debianPackage})`);
}

export async function saltKeyPair(): Promise<SaltKeyPair> {
  const { publicKey, privateKey } = await generateKeyPairAsync("rsa", {
    modulusLength: 2048,
    publicKeyEncoding: { type: "spki", format: "pem" },
    // PKCS#1, as Salt and @pulumi/tls write RSA keys.
    privateKeyEncoding: { type: "pkcs1", format: "pem" },
  });
  return { publicKeyPem: publicKey, privateKeyPem: privateKey };
}

export interface ExternalMaterial {
  deployKeyPem: string;
  rolesAnywhereKeyPem: string;
  rolesAnywhereCertificatePem: string;
}

/** Deploy key (ssh-keygen, openssh-client) and Roles Anywhere certificate (openssl). */
export async function externalMaterial(): Promise<ExternalMaterial> {
  const sshKeygen = requireTool("ssh-keygen", "openssh-client");
  const openssl = requireTool("openssl", "openssl");
  const dir = mkdtempSync(path.join(tmpdir(), "ci-fleet-bootstrap-keys-"));
  try {
    execFileSync(sshKeygen, ["-q", "-t", "ed25519", "-N", "", "-C", "ci-fleet-test", "-f", path.join(dir, "deploy")]);
    const ra = await saltKeyPair();
    const keyFile = path.join(dir, "ra.key");
    writeFileSync(keyFile, ra.privateKeyPem, { mode: 0o600 });
    execFileSync(openssl, [
      "req", "-x509", "-new", "-key", keyFile, "-subj", "/CN=production-salt-master", "-days", "1",
      "-out", path.join(dir, "ra.crt"),
    ]);
    return {
      deployKeyPem: readFileSync(path.join(dir, "deploy"), "utf8"),
      rolesAnywhereKeyPem: ra.privateKeyPem,
      rolesAnywhereCertificatePem: readFileSync(path.join(dir, "ra.crt"), "utf8"),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export const STACK = "production";
/** The master's stable name (a Route53 record follows the machine); user-data never holds its address. */
export const MASTER_NAME = `${"production"}-salt-master.fleet.ci.example.org`;

/** A production-sized fleet: Teleport + 11 runners in three queues (12 minions). */
export const FLEET_RUNNERS: { queue: string; agent: "github-actions" | "buildkite"; runner: string }[] = [
  ...["r1", "r2", "r3", "r4", "r5"].map((runner) => ({ queue: "default", agent: "github-actions" as const, runner })),
  ...["r1", "r2", "r3"].map((runner) => ({ queue: "infra", agent: "buildkite" as const, runner })),
  ...["r1", "r2", "r3"].map((runner) => ({ queue: "release", agent: "buildkite" as const, runner })),
];

export interface Fleet {
  master: SaltKeyPair;
  masterMinion: SaltKeyPair;
  /** Minion id -> key pair, Teleport and every runner. */
  minions: Map<string, SaltKeyPair>;
  external: ExternalMaterial;
}

export async function generateFleet(): Promise<Fleet> {
  const ids = [machineNames.teleport(STACK), ...FLEET_RUNNERS.map((r) => machineNames.runner(STACK, r.queue, r.runner))];
  const [master, masterMinion, external, ...minionKeys] = await Promise.all([
    saltKeyPair(),
    saltKeyPair(),
    externalMaterial(),
    ...ids.map(() => saltKeyPair()),
  ]);
  return {
    master: master as SaltKeyPair,
    masterMinion: masterMinion as SaltKeyPair,
    external: external as ExternalMaterial,
    minions: new Map(ids.map((id, i) => [id, minionKeys[i] as SaltKeyPair])),
  };
}

export function masterInput(fleet: Fleet, provider: MachineProviderName): SaltMasterBootstrapInput {
  return {
    stack: STACK,
    provider,
    masterPublicKeyPem: fleet.master.publicKeyPem,
    minionNetworks: provider === "aws" ? ["10.0.0.0/16"] : ["10.0.0.0/8"],
    saltRepository: {
      url: "git@github.com:example-org/ci-fleet.git",
      ref: "main",
      deployKeyPem: fleet.external.deployKeyPem,
    },
    aws: {
      region: "us-east-1",
      roleArn: `arn:aws:iam::123456789012:role/ci-fleet-${STACK}-salt-master`,
      ssmPillarPrefix: `/ci-fleet/${STACK}/pillar/`,
      rolesAnywhere:
        provider === "equinix-metal"
          ? {
              trustAnchorArn: "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/2f6a8b1c-4d5e-4f60-8a7b-9c0d1e2f3a4b",
              profileArn: "arn:aws:rolesanywhere:us-east-1:123456789012:profile/7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f",
              certificatePem: fleet.external.rolesAnywhereCertificatePem,
              privateKeyPem: fleet.external.rolesAnywhereKeyPem,
            }
          : undefined,
    },
  };
}

export function minionInput(fleet: Fleet, provider: MachineProviderName, minionId: string): MinionBootstrapInput {
  return {
    stack: STACK,
    provider,
    role: minionId === machineNames.teleport(STACK) ? "teleport" : "runner",
    minionId,
    minionKeyPair: fleet.minions.get(minionId)!,
    masterName: MASTER_NAME,
    masterPublicKeyPem: fleet.master.publicKeyPem,
  };
}

/** Every secret of the fleet, by name (for leak checks). */
export function fleetSecrets(fleet: Fleet): Map<string, string> {
  const secrets = new Map<string, string>([
    ["master private key", fleet.master.privateKeyPem],
    ["master's minion private key", fleet.masterMinion.privateKeyPem],
    ["salt repository deploy key", fleet.external.deployKeyPem],
    ["roles anywhere private key", fleet.external.rolesAnywhereKeyPem],
  ]);
  for (const [id, keys] of fleet.minions) secrets.set(`${id} private key`, keys.privateKeyPem);
  return secrets;
}

/**
 * The base64 lines of a PEM (what would leak if any part of a key leaked), but not a short
 * last line: an RSA public key's ends in the exponent's fixed `IDAQAB` after a character or
 * two, so another key of the same size in the text matched it by chance (a flaky failure).
 * Every full line is random and still checked.
 */
export const pemBodyLines = (pem: string): string[] =>
  pem.split("\n").filter((line) => line.trim().length >= 20 && !line.startsWith("-----"));

/**
 * Text with every generated value replaced by a stable name, so snapshots are the same on
 * every run: public keys and certificates become `[public key: NAME]`, fingerprints
 * `[fingerprint: NAME]`. Snapshots are taken of masked documents, so a private key
 * still present is a leak: it becomes `[UNMASKED SECRET: NAME]`, loud in any diff.
 */
export function stableText(text: string, fleet: Fleet): string {
  const replacements: [string, string][] = [];
  const addKeyPair = (name: string, keys: SaltKeyPair) => {
    replacements.push([keys.privateKeyPem, `[UNMASKED SECRET: ${name}]\n`]);
    replacements.push([keys.publicKeyPem, `[public key: ${name}]\n`]);
    replacements.push([saltMasterFingerprint(keys.publicKeyPem), `[fingerprint: ${name}]`]);
  };
  addKeyPair("master", fleet.master);
  addKeyPair("master's minion", fleet.masterMinion);
  for (const [id, keys] of fleet.minions) addKeyPair(id, keys);
  replacements.push([fleet.external.deployKeyPem, "[UNMASKED SECRET: deploy key]\n"]);
  replacements.push([fleet.external.rolesAnywhereKeyPem, "[UNMASKED SECRET: roles anywhere key]\n"]);
  replacements.push([fleet.external.rolesAnywhereCertificatePem, "[certificate: roles anywhere]\n"]);
  let out = text;
  for (const [value, name] of replacements) {
    // PEMs appear in YAML block scalars, indented: match line by line.
    const lines = value.trimEnd().split("\n");
    if (lines.length === 1) {
      out = out.split(value).join(name);
      continue;
    }
    const indented = new RegExp(`^( *)${lines.map(escape).join("\\n(?:\\1)")}\\n`, "gm");
    out = out.replace(indented, (_m, indent: string) => `${indent}${name.trimEnd()}\n`);
    out = out.split(value).join(name);
  }
  return out;
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
