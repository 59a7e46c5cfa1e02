/**
 * cloud-init user-data for every ci-fleet machine: a typed model, pure builders and a
 * deterministic renderer. No Pulumi in here: plain strings in, typed values out; the
 * program calls these inside `pulumi.all(...).apply(...)` so the result stays secret.
 *
 * User-data is readable from the metadata service by any process that can reach it, so
 * it carries only bootstrap material (a minion's Salt key pair, the master's fingerprint and
 * stable DNS name, and on the master what it needs before Salt runs; the master's own key pairs
 * come from SSM at first boot). Everything else is Salt's. No user-data names a control-plane
 * address: the control plane can be replaced without touching a runner.
 *
 * How a document is assembled (deterministic, documented in cloud-init/common.yaml):
 *   1. `cloud-init/common.yaml`, then `cloud-init/<role>.yaml` (read once at load):
 *      lists are concatenated (common first; `packages` de-duplicated), a scalar set
 *      in both must agree (else the module fails to load).
 *   2. `bootcmd` = [metadata guard, OpenSSH masking, user-data lock, role guards...]
 *      followed by the base `bootcmd`: the guards always run first, on every boot.
 *   3. `write_files` = base files, then per-machine files in builder order.
 *   4. `runcmd` = base `runcmd`, then the per-machine sequence. (The user-data lock runs in
 *      bootcmd, not runcmd: cloud-init writes its copies before bootcmd, and bootcmd runs
 *      on every boot, before any service, so no job ever sees them readable.)
 */
import { createHash, createPublicKey } from "crypto";
import { gzipSync } from "zlib";
import { readFileSync } from "fs";
import * as path from "path";
import * as YAML from "yaml";
import { MachineProviderName, MachineRole, machineNames } from "../config/model";
import { SALT_PATHS, buildSaltMinionConfig, renderSaltMasterConfig, renderSaltMasterServiceDropIn, renderSaltRepositoryGitConfig } from "./salt-config";

// ---------------------------------------------------------------------------------------
// The typed subset of cloud-config (cloud-init 22.4) this project uses.

/** A command: a string runs through `sh -c`; a list is exec'd with each element quoted. */
export type CloudCommand = string | string[];

export interface WriteFile {
  path: string;
  content: string;
  /** Always explicit: cloud-init's default is 0644. */
  permissions: string;
  owner: string;
  /** Write in the final stage (after packages), e.g. when the owner is created later. */
  defer?: boolean;
}

export interface CloudConfig {
  ssh_pwauth?: boolean;
  disable_root?: boolean;
  allow_public_ssh_keys?: boolean;
  ssh_deletekeys?: boolean;
  package_update?: boolean;
  package_upgrade?: boolean;
  packages?: string[];
  bootcmd?: CloudCommand[];
  write_files?: WriteFile[];
  runcmd?: CloudCommand[];
}

/** Rendering order of the top-level keys (the renderer never relies on insertion order). */
const CLOUD_CONFIG_KEY_ORDER: readonly (keyof CloudConfig)[] = [
  "ssh_pwauth",
  "disable_root",
  "allow_public_ssh_keys",
  "ssh_deletekeys",
  "package_update",
  "package_upgrade",
  "packages",
  "bootcmd",
  "write_files",
  "runcmd",
];
const WRITE_FILE_KEY_ORDER: readonly (keyof WriteFile)[] = ["path", "owner", "permissions", "defer", "content"];

// ---------------------------------------------------------------------------------------
// Constants that other code and tests refer to.

/**
 * Metadata service addresses, per provider: only root may reach them.
 * - aws: IMDS, IPv4 and the IPv6 endpoint (Nitro instances).
 * - equinix-metal: `metadata.platformequinix.com` resolves to 192.80.8.124 (Equinix's
 *   documented metadata address). nftables needs an address when the rule is loaded,
 *   and a rule that depends on DNS at boot could be skipped or spoofed, so the address
 *   is pinned here; if Equinix ever moved it, the metadata fetch would break loudly
 *   rather than the guard silently failing open.
 */
export const METADATA_SERVICE_ADDRESSES: Readonly<Record<MachineProviderName, readonly string[]>> = {
  aws: ["169.254.169.254", "fd00:ec2::254"],
  "equinix-metal": ["192.80.8.124"],
};

export const SALT_PORTS = [4505, 4506] as const;

/**
 * First boot happens before `pulumi up` has written the pillar documents (each holds its
 * machine's address and the Teleport auth address, so they come after every machine), and
 * Equinix Metal takes minutes per device. The master's first pillar sync waits this long
 * for its own document; every minion waits for the master longer than that.
 */
export const MASTER_PILLAR_WAIT_SECONDS = 6 * 3600;
export const MINION_MASTER_WAIT_SECONDS = 7 * 3600;
/** The wait script tries the master every 20 s. */
const MASTER_PING_INTERVAL_SECONDS = 20;
export const EC2_USER_DATA_LIMIT_BYTES = 16384;
/** What a secret looks like in masked output (preview files, snapshots). */
export const SECRET_MASK = "[secret]";

/** Paths of the files written by bootstrap. */
export const BOOTSTRAP_PATHS = {
  masterConfig: SALT_PATHS.masterConfig,
  masterServiceDropIn: SALT_PATHS.masterServiceDropIn,
  gitSystemConfig: SALT_PATHS.gitSystemConfig,
  masterPrivateKey: "/etc/salt/pki/master/master.pem",
  masterPublicKey: "/etc/salt/pki/master/master.pub",
  acceptedMinionKey: (minionId: string) => `/etc/salt/pki/master/minions/${minionId}`,
  minionConfig: "/etc/salt/minion.d/ci-fleet.conf",
  grains: "/etc/salt/grains",
  minionPrivateKey: "/etc/salt/pki/minion/minion.pem",
  minionPublicKey: "/etc/salt/pki/minion/minion.pub",
  saltRepositoryDeployKey: SALT_PATHS.saltRepositoryDeployKey,
  saltRepositoryKnownHosts: SALT_PATHS.saltRepositoryKnownHosts,
  awsEnvironment: "/etc/ci-fleet/aws/environment",
  awsConfig: "/etc/ci-fleet/aws/config",
  rolesAnywhereCertificate: "/etc/ci-fleet/aws/roles-anywhere.crt",
  rolesAnywherePrivateKey: "/etc/ci-fleet/aws/roles-anywhere.key",
  awsSigningHelper: "/usr/local/bin/aws_signing_helper",
  installSalt: "/usr/local/sbin/ci-fleet-install-salt",
  waitForMasterAndHighstate: "/usr/local/sbin/ci-fleet-wait-for-master-and-highstate",
  bootstrapSaltMaster: "/usr/local/sbin/ci-fleet-bootstrap-salt-master",
} as const;

/** The only files whose content is secret; everything else in user-data is not. */
export const SECRET_FILE_PATHS: readonly string[] = [
  BOOTSTRAP_PATHS.masterPrivateKey,
  BOOTSTRAP_PATHS.minionPrivateKey,
  BOOTSTRAP_PATHS.saltRepositoryDeployKey,
  BOOTSTRAP_PATHS.rolesAnywherePrivateKey,
];

// ---------------------------------------------------------------------------------------
// Base documents, scripts and pins: read once, synchronously, at module load.

const CLOUD_INIT_DIR = path.join(__dirname, "..", "..", "cloud-init");
const readCloudInitFile = (name: string) => readFileSync(path.join(CLOUD_INIT_DIR, name), "utf8");

function loadBase(name: string): CloudConfig {
  const parsed = YAML.parse(readCloudInitFile(name)) as unknown;
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Error(`cloud-init/${name}: expected a mapping`);
  }
  return parsed as CloudConfig;
}

interface Pins {
  salt: { version: string; repository: string; key_url: string; key_fingerprint: string };
  aws_signing_helper: { version: string; url: string; sha256: string };
  salt_repository_known_hosts: string;
}

function loadPins(): Pins {
  const pins = YAML.parse(readCloudInitFile("pins.yaml")) as Pins;
  const problems: string[] = [];
  // The 3008 LTS line only (3007 STS is past its end of life: .conformance/salt-release.md).
  if (!/^3008\.\d+$/.test(pins.salt?.version ?? "")) problems.push("salt.version must be an exact 3008.x (LTS) version");
  if (!/^[0-9A-F]{40}$/.test(pins.salt?.key_fingerprint ?? "")) {
    problems.push("salt.key_fingerprint must be 40 upper-case hex digits");
  }
  for (const url of [pins.salt?.repository, pins.salt?.key_url, pins.aws_signing_helper?.url]) {
    if (!/^https:\/\/[^\s]+$/.test(url ?? "")) problems.push(`not an https URL: ${url}`);
  }
  if (!/^[0-9a-f]{64}$/.test(pins.aws_signing_helper?.sha256 ?? "")) {
    problems.push("aws_signing_helper.sha256 must be 64 lower-case hex digits");
  }
  if (problems.length > 0) throw new Error(`cloud-init/pins.yaml: ${problems.join("; ")}`);
  return pins;
}

export const PINS: Readonly<Pins> = loadPins();

/** The host keys the master trusts for a private Salt repository: the one text cloud-init and Salt write. */
export const saltRepositoryKnownHosts = (): string => PINS.salt_repository_known_hosts.replace(/\r/g, "").trim() + "\n";

/**
 * A script as shipped in user-data: the repository file without its comment-only and blank
 * lines (the "why" stays in cloud-init/scripts/; user-data bytes are scarce). The shebang stays.
 */
export function compactScript(text: string): string {
  return text
    .split("\n")
    .filter((line, i) => (i === 0 && line.startsWith("#!")) || !/^\s*(#.*)?$/.test(line))
    .map((line) => line.replace(/\s+$/, ""))
    .join("\n") + "\n";
}
const script = (name: string) => compactScript(readCloudInitFile(path.join("scripts", name)));
const SCRIPTS = {
  metadataGuard: script("metadata-guard.sh"),
  disableOpenSsh: script("disable-openssh.sh"),
  lockUserData: script("lock-user-data.sh"),
  saltMasterFirewall: script("salt-master-firewall.sh"),
  installPinnedDownload: script("install-pinned-download.sh"),
  installSalt: script("install-salt.sh"),
  waitForMasterAndHighstate: script("wait-for-master-and-highstate.sh"),
  bootstrapSaltMaster: script("bootstrap-salt-master.sh"),
};

/** An inline `sh -c` command: $0 names it in logs, the rest are its arguments. */
const inlineScript = (name: string, text: string, args: readonly string[] = []): string[] => [
  "sh",
  "-c",
  text,
  name,
  ...args,
];

/** Merge two base documents (see the module comment). Throws on conflicting scalars. */
export function mergeCloudConfigs(first: CloudConfig, second: CloudConfig): CloudConfig {
  const merged: Record<string, unknown> = { ...first };
  for (const [key, value] of Object.entries(second)) {
    const existing = merged[key];
    if (existing === undefined) {
      merged[key] = value;
    } else if (Array.isArray(existing) && Array.isArray(value)) {
      merged[key] = key === "packages" ? [...new Set([...existing, ...value])] : [...existing, ...value];
    } else if (existing !== value) {
      throw new Error(`cloud-config key ${key}: ${JSON.stringify(existing)} conflicts with ${JSON.stringify(value)}`);
    }
  }
  return merged as CloudConfig;
}

const ROLE_BASES: Readonly<Record<MachineRole, CloudConfig>> = (() => {
  const common = loadBase("common.yaml");
  return {
    "salt-master": mergeCloudConfigs(common, loadBase("salt-master.yaml")),
    teleport: mergeCloudConfigs(common, loadBase("teleport.yaml")),
    runner: mergeCloudConfigs(common, loadBase("runner.yaml")),
  };
})();

// ---------------------------------------------------------------------------------------
// Inputs.

export interface SaltKeyPair {
  /** SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), as Salt writes `*.pub`. */
  publicKeyPem: string;
  /** RSA private key PEM (PKCS#1 or PKCS#8). Secret. */
  privateKeyPem: string;
}

export interface RolesAnywhereCredentials {
  trustAnchorArn: string;
  profileArn: string;
  certificatePem: string;
  /** Secret. */
  privateKeyPem: string;
}

export interface SaltMasterBootstrapInput {
  stack: string;
  provider: MachineProviderName;
  /**
   * The master's public key, for its own minion's `master_finger`. The key pairs themselves
   * (the master's and its minion's) are not in user-data: the first boot reads them from SSM
   * (`saltMasterPkiParameterName`), and the first pillar sync accepts every minion's key.
   */
  masterPublicKeyPem: string;
  /** IPv4 CIDRs allowed to reach the master's ports 4505/4506 (e.g. the VPC CIDR). */
  minionNetworks: string[];
  saltRepository: { url: string; ref: string; deployKeyPem?: string };
  aws: {
    region: string;
    roleArn: string;
    /** e.g. `/ci-fleet/production/pillar/` */
    ssmPillarPrefix: string;
    /** equinix-metal only: the master reaches AWS through IAM Roles Anywhere. */
    rolesAnywhere?: RolesAnywhereCredentials;
  };
}

export interface MinionBootstrapInput {
  stack: string;
  provider: MachineProviderName;
  role: Exclude<MachineRole, "salt-master">;
  /** `<stack>-teleport` or `<stack>-<queue>-<runner>`. */
  minionId: string;
  minionKeyPair: SaltKeyPair;
  /** The master's stable DNS name (`<stack>-salt-master.<zone>`), never an address. */
  masterName: string;
  /** The master's public key; the minion pins its fingerprint (`master_finger`). */
  masterPublicKeyPem: string;
}

export class BootstrapInputError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid bootstrap input:\n- ${problems.join("\n- ")}`);
    this.name = "BootstrapInputError";
  }
}

// ---------------------------------------------------------------------------------------
// Checks (every problem is collected, then reported at once).

const MINION_ID = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** A DNS name of two labels or more, not an address (it must survive the machine's replacement). */
const DNS_NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/;
const PUBLIC_KEY_PEM = /^-----BEGIN PUBLIC KEY-----\n[A-Za-z0-9+/=\n]+\n-----END PUBLIC KEY-----\n$/;
const PRIVATE_KEY_PEM = /^-----BEGIN (RSA |EC )?PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+\n-----END (RSA |EC )?PRIVATE KEY-----\n$/;
const CERTIFICATE_PEM = /^(-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+\n-----END CERTIFICATE-----\n)+$/;
/** A git ref or commit: no whitespace, no leading dash, nothing a shell or git would reinterpret. */
const GIT_REF = /^[A-Za-z0-9][A-Za-z0-9._/-]*$/;
const GIT_URL = /^(https:\/\/[^\s'"\\]+|ssh:\/\/[^\s'"\\]+|git@[A-Za-z0-9.-]+:[^\s'"\\]+)$/;

/** One trailing newline, no carriage returns: the exact text written and fingerprinted. */
export function normalizePem(pem: string): string {
  return pem.replace(/\r/g, "").trim() + "\n";
}

/** Parse results by PEM: every minion's check parses the same master key again otherwise. */
const publicKeyProblems = new Map<string, string | undefined>();

function publicKeyProblem(pem: string): string | undefined {
  if (!PUBLIC_KEY_PEM.test(normalizePem(pem))) return "expected a PEM public key (-----BEGIN PUBLIC KEY-----)";
  try {
    const key = createPublicKey(pem);
    return key.asymmetricKeyType === "rsa" ? undefined : `Salt keys are RSA, got ${key.asymmetricKeyType}`;
  } catch {
    return "the public key does not parse";
  }
}

function checkPublicKey(problems: string[], what: string, pem: string): void {
  if (!publicKeyProblems.has(pem)) publicKeyProblems.set(pem, publicKeyProblem(pem));
  const problem = publicKeyProblems.get(pem);
  if (problem) problems.push(`${what}: ${problem}`);
}

function checkPem(problems: string[], what: string, pem: string, shape: RegExp, expected: string): void {
  // Never echo the value: it may be a secret.
  if (!shape.test(normalizePem(pem))) problems.push(`${what}: expected ${expected}`);
}

function checkCommon(problems: string[], stack: string, provider: string): void {
  if (!MINION_ID.test(stack)) problems.push(`stack ${JSON.stringify(stack)} is not a DNS label`);
  if (!(provider in METADATA_SERVICE_ADDRESSES)) problems.push(`unknown provider ${JSON.stringify(provider)}`);
}

// ---------------------------------------------------------------------------------------
// Salt's master fingerprint.

/**
 * The fingerprint a minion compares with `master_finger`: Salt's
 * `salt.utils.crypt.pem_finger(path, sum_type="sha256")` over the master's public key file.
 * Salt reads the file's lines *with* their line endings, drops blank lines and the first
 * and last line (the PEM header and footer), joins the rest and hashes that text, i.e. the
 * base64 body including each line's "\n", NOT the decoded DER; then it writes the hex
 * digest as colon-separated pairs.
 */
export function saltMasterFingerprint(publicKeyPem: string): string {
  const lines = normalizePem(publicKeyPem).match(/[^\n]*\n/g) ?? [];
  const body = lines.filter((line) => line.trim() !== "").slice(1, -1).join("");
  const hex = createHash("sha256").update(body, "utf8").digest("hex");
  return hex.match(/../g)!.join(":");
}

// ---------------------------------------------------------------------------------------
// Building blocks.

const fileOf = (filePath: string, content: string, permissions: string): WriteFile => ({
  path: filePath,
  owner: "root:root",
  permissions,
  content,
});

const CLOUD_CONFIG_YAML = { lineWidth: 0, minContentWidth: 0, aliasDuplicateObjects: false } as const;
const CONFIG_FILE_YAML = { lineWidth: 0, aliasDuplicateObjects: false, sortMapEntries: false } as const;
/** The YAML options of user-data and of the config files in it (for tests of renderYamlMapByParts). */
export const YAML_RENDERINGS = { cloudConfig: CLOUD_CONFIG_YAML, configFile: CONFIG_FILE_YAML } as const;

/**
 * YAML of a map, as `YAML.stringify(map, options)` writes it, assembled from its entries'
 * renderings (with `splitLists`, a list entry from its items'), each rendered once per
 * content: a fleet's user-data differ in a few files and lines only, the scripts, commands and
 * options are the same in every machine's (rendering each anew was most of the preview's YAML
 * work). A top-level entry of a block map, and an item of a block list, are rendered
 * independently of their siblings; test/preview/yaml-parts.test.ts holds that both agree.
 * The memo is bounded (cleared when full).
 */
const renderedParts = new Map<string, string>();
const RENDERED_PARTS_MAX = 4096;

/**
 * The memo's key for a value: one text per value, distinct for values YAML renders apart.
 * JSON.stringify was not: null, NaN and ±Infinity all gave "null", -0 gave "0", undefined in
 * a list gave "null", so `{a: Infinity}` after `{a: null}` rendered `a: null`. Every leaf
 * carries its type; numbers by `Object.is` (-0 kept); strings JSON-quoted (so no text can
 * pass for a separator); lists and maps bracketed, map keys in their order (YAML keeps it).
 * Undefined for anything else (a function, a symbol, a hole in a list, a Date, a Map, a
 * class instance, a getter): such a part is rendered without the memo.
 */
export function renderMemoKey(value: unknown): string | undefined {
  switch (typeof value) {
    case "string":
      return JSON.stringify(value);
    case "number":
      return Object.is(value, -0) ? "n-0" : `n${String(value)}`;
    case "boolean":
      return value ? "T" : "F";
    case "undefined":
      return "U";
    case "bigint":
      return `b${String(value)}`;
    case "object": {
      if (value === null) return "N";
      if (Array.isArray(value)) {
        if (Object.getPrototypeOf(value) !== Array.prototype) return undefined;
        const items: string[] = [];
        for (let i = 0; i < value.length; i++) {
          if (!(i in value)) return undefined;
          const item = renderMemoKey(value[i]);
          if (item === undefined) return undefined;
          items.push(item);
        }
        return `[${items.join(",")}]`;
      }
      if (Object.getPrototypeOf(value) !== Object.prototype) return undefined;
      const entries: string[] = [];
      for (const k of Reflect.ownKeys(value)) {
        if (typeof k !== "string") return undefined;
        const d = Object.getOwnPropertyDescriptor(value, k)!;
        if (!d.enumerable || !("value" in d)) return undefined;
        const v = renderMemoKey(d.value);
        if (v === undefined) return undefined;
        entries.push(`${JSON.stringify(k)}:${v}`);
      }
      return `{${entries.join(",")}}`;
    }
    default:
      return undefined;
  }
}

function renderPart(options: YAML.ToStringOptions & YAML.DocumentOptions, optionsId: string, key: string, value: unknown): string {
  const valueKey = renderMemoKey(value);
  if (valueKey === undefined) return YAML.stringify({ [key]: value }, options);
  const id = `${optionsId}\u0000${key}\u0000${valueKey}`;
  let text = renderedParts.get(id);
  if (text === undefined) {
    text = YAML.stringify({ [key]: value }, options);
    if (renderedParts.size >= RENDERED_PARTS_MAX) renderedParts.clear();
    renderedParts.set(id, text);
  }
  return text;
}

export function renderYamlMapByParts(map: object, options: typeof CLOUD_CONFIG_YAML | typeof CONFIG_FILE_YAML, splitLists: boolean): string {
  const entries = Object.entries(map).filter(([, v]) => v !== undefined);
  const plain = (v: unknown) => v === null || ["string", "number", "boolean"].includes(typeof v) || (typeof v === "object" && (Array.isArray(v) || Object.getPrototypeOf(v) === Object.prototype));
  // Anything the parts cannot stand for (an empty map, a value JSON cannot key, a key YAML quotes): in one piece.
  if (entries.length === 0 || Object.getPrototypeOf(map) !== Object.prototype || !entries.every(([k, v]) => /^[a-z_][a-z0-9_]*$/.test(k) && plain(v))) return YAML.stringify(map, options);
  const optionsId = options === CLOUD_CONFIG_YAML ? "cloud-config" : "config-file";
  let text = "";
  for (const [key, value] of entries) {
    if (splitLists && Array.isArray(value) && value.length > 0) {
      text += `${key}:\n`;
      for (const item of value) text += renderPart(options, optionsId, key, [item]).slice(key.length + 2);
    } else {
      text += renderPart(options, optionsId, key, value);
    }
  }
  return text;
}

/** `# comment` + `YAML.stringify(value, CONFIG_FILE_YAML)` (each entry rendered once per content: see renderYamlMapByParts). */
const yamlConfigFile = (comment: string, value: object): string => `# ${comment}\n` + renderYamlMapByParts(value, CONFIG_FILE_YAML, false);


/** The guards that run first on every boot, for every role and provider. */
function firstBootCommands(provider: MachineProviderName): CloudCommand[] {
  return [
    inlineScript("ci-fleet-metadata-guard", SCRIPTS.metadataGuard, METADATA_SERVICE_ADDRESSES[provider]),
    inlineScript("ci-fleet-disable-openssh", SCRIPTS.disableOpenSsh),
    inlineScript("ci-fleet-lock-user-data", SCRIPTS.lockUserData),
  ];
}

/** The minion's config (master by name, reconnect options) and its grains. */
function minionConfigFiles(input: { minionId: string; role: MachineRole; masterAddress: string; masterFingerprint: string }): WriteFile[] {
  const minionConfig = buildSaltMinionConfig({
    masterAddress: input.masterAddress,
    minionId: input.minionId,
    masterFingerprint: input.masterFingerprint,
  });
  return [
    fileOf(BOOTSTRAP_PATHS.minionConfig, yamlConfigFile("ci-fleet bootstrap; Salt manages this file from now on.", minionConfig), "0644"),
    // Grains are written by the minion itself: informational only, never for targeting secrets.
    fileOf(BOOTSTRAP_PATHS.grains, yamlConfigFile("Non-authoritative: never target secrets by grain.", { ci_fleet_role: input.role }), "0644"),
  ];
}

function minionFiles(input: {
  minionId: string;
  role: MachineRole;
  masterAddress: string;
  masterFingerprint: string;
  minionKeyPair: SaltKeyPair;
}): WriteFile[] {
  return [
    ...minionConfigFiles(input),
    fileOf(BOOTSTRAP_PATHS.minionPrivateKey, normalizePem(input.minionKeyPair.privateKeyPem), "0400"),
    fileOf(BOOTSTRAP_PATHS.minionPublicKey, normalizePem(input.minionKeyPair.publicKeyPem), "0644"),
  ];
}

const saltScriptFiles = (): WriteFile[] => [
  fileOf(BOOTSTRAP_PATHS.installSalt, SCRIPTS.installSalt, "0700"),
  fileOf(BOOTSTRAP_PATHS.waitForMasterAndHighstate, SCRIPTS.waitForMasterAndHighstate, "0700"),
];

/** Install pinned Salt packages (pins from cloud-init/pins.yaml, passed explicitly). */
/** The Salt pins, as the environment the install script reads. */
const saltPinsEnvironment = (): string[] => [
  "env",
  `SALT_VERSION=${PINS.salt.version}`,
  `SALT_REPOSITORY=${PINS.salt.repository}`,
  `SALT_KEY_URL=${PINS.salt.key_url}`,
  `SALT_KEY_FINGERPRINT=${PINS.salt.key_fingerprint}`,
];
const installSaltCommand = (packages: string[]): string[] => [...saltPinsEnvironment(), BOOTSTRAP_PATHS.installSalt, ...packages];

function assemble(role: MachineRole, provider: MachineProviderName, parts: {
  bootcmd?: CloudCommand[];
  writeFiles: WriteFile[];
  runcmd: CloudCommand[];
}): CloudConfig {
  const base = ROLE_BASES[role];
  return {
    ...base,
    bootcmd: [...firstBootCommands(provider), ...(parts.bootcmd ?? []), ...(base.bootcmd ?? [])],
    write_files: [...(base.write_files ?? []), ...parts.writeFiles],
    runcmd: [...(base.runcmd ?? []), ...parts.runcmd],
  };
}

// ---------------------------------------------------------------------------------------
// Builders.

/** User-data of the Teleport machine or a runner. */
export function buildMinionCloudConfig(input: MinionBootstrapInput): CloudConfig {
  const problems: string[] = [];
  checkCommon(problems, input.stack, input.provider);
  if (!MINION_ID.test(input.minionId) || !input.minionId.startsWith(`${input.stack}-`)) {
    problems.push(`minion id ${JSON.stringify(input.minionId)} must be a DNS label starting with "${input.stack}-"`);
  }
  if (input.role === "teleport" && input.minionId !== machineNames.teleport(input.stack)) {
    problems.push(`the Teleport machine's minion id must be ${machineNames.teleport(input.stack)}`);
  }
  if (input.minionId === machineNames.saltMaster(input.stack)) problems.push("use buildSaltMasterCloudConfig for the master");
  if (!DNS_NAME.test(input.masterName)) problems.push(`master name ${JSON.stringify(input.masterName)} is not a DNS name (user-data must outlive the master's address)`);
  checkPublicKey(problems, "masterPublicKeyPem", input.masterPublicKeyPem);
  checkPublicKey(problems, "minionKeyPair.publicKeyPem", input.minionKeyPair.publicKeyPem);
  checkPem(problems, "minionKeyPair.privateKeyPem", input.minionKeyPair.privateKeyPem, PRIVATE_KEY_PEM, "a PEM private key");
  if (problems.length > 0) throw new BootstrapInputError(problems);

  return assemble(input.role, input.provider, {
    writeFiles: [
      ...minionFiles({
        minionId: input.minionId,
        role: input.role,
        masterAddress: input.masterName,
        masterFingerprint: saltMasterFingerprint(input.masterPublicKeyPem),
        minionKeyPair: input.minionKeyPair,
      }),
      ...saltScriptFiles(),
    ],
    runcmd: [
      installSaltCommand(["salt-minion"]),
      ["systemctl", "enable", "--now", "salt-minion"],
      [BOOTSTRAP_PATHS.waitForMasterAndHighstate, String(MINION_MASTER_WAIT_SECONDS / MASTER_PING_INTERVAL_SECONDS)],
    ],
  });
}

function awsFiles(aws: SaltMasterBootstrapInput["aws"]): WriteFile[] {
  const environment = [
    "# Sourced by the Salt master's bootstrap before the first pillar sync.",
    `AWS_CONFIG_FILE=${BOOTSTRAP_PATHS.awsConfig}`,
    `AWS_REGION=${aws.region}`,
    `AWS_DEFAULT_REGION=${aws.region}`,
    `CI_FLEET_AWS_ROLE_ARN=${aws.roleArn}`,
    `CI_FLEET_SSM_PILLAR_PREFIX=${aws.ssmPillarPrefix}`,
    `CI_FLEET_PILLAR_DIR=${SALT_PATHS.generatedPillar}`,
    "",
  ].join("\n");
  const config = ["[default]", `region = ${aws.region}`];
  const files = [fileOf(BOOTSTRAP_PATHS.awsEnvironment, environment, "0644")];
  if (aws.rolesAnywhere) {
    const ra = aws.rolesAnywhere;
    config.push(
      `credential_process = ${BOOTSTRAP_PATHS.awsSigningHelper} credential-process` +
        ` --certificate ${BOOTSTRAP_PATHS.rolesAnywhereCertificate}` +
        ` --private-key ${BOOTSTRAP_PATHS.rolesAnywherePrivateKey}` +
        ` --trust-anchor-arn ${ra.trustAnchorArn} --profile-arn ${ra.profileArn} --role-arn ${aws.roleArn}`,
    );
    files.push(
      fileOf(BOOTSTRAP_PATHS.rolesAnywhereCertificate, normalizePem(ra.certificatePem), "0644"),
      fileOf(BOOTSTRAP_PATHS.rolesAnywherePrivateKey, normalizePem(ra.privateKeyPem), "0400"),
    );
  } else {
    config.push("# Credentials: the instance profile (IMDS, root only).");
  }
  files.splice(1, 0, fileOf(BOOTSTRAP_PATHS.awsConfig, config.join("\n") + "\n", "0644"));
  return files;
}

const ARN = /^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:\d{0,12}:[A-Za-z0-9+=,.@_/:-]+$/;
const IPV4_CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d|[12]\d|3[0-2])$/;

/** User-data of the Salt master `<stack>-salt-master`. */
export function buildSaltMasterCloudConfig(input: SaltMasterBootstrapInput): CloudConfig {
  const problems: string[] = [];
  checkCommon(problems, input.stack, input.provider);
  const masterMinionId = machineNames.saltMaster(input.stack);
  checkPublicKey(problems, "masterPublicKeyPem", input.masterPublicKeyPem);
  if (input.minionNetworks.length === 0) problems.push("minionNetworks: at least one CIDR");
  for (const cidr of input.minionNetworks) {
    const m = IPV4_CIDR.exec(cidr);
    if (!m || m.slice(1, 5).some((octet) => Number(octet) > 255)) problems.push(`minionNetworks: ${JSON.stringify(cidr)} is not an IPv4 CIDR`);
  }
  const repo = input.saltRepository;
  if (!GIT_URL.test(repo.url)) problems.push(`saltRepository.url ${JSON.stringify(repo.url)}: expected https://, ssh:// or git@host:path`);
  if (!GIT_REF.test(repo.ref)) problems.push(`saltRepository.ref ${JSON.stringify(repo.ref)} is not a plain git ref`);
  // The key's shape is checked with every other secret value, before anything is created
  // (infra/config/secret-values.ts); an unset key in the offline preview is a placeholder.
  if (repo.deployKeyPem !== undefined && repo.url.startsWith("https://")) problems.push("saltRepository: a deploy key needs an SSH URL");
  const aws = input.aws;
  if (!/^[a-z]{2}(-[a-z]+)+-\d$/.test(aws.region)) problems.push(`aws.region ${JSON.stringify(aws.region)} is not a region`);
  if (!ARN.test(aws.roleArn)) problems.push(`aws.roleArn ${JSON.stringify(aws.roleArn)} is not an ARN`);
  if (aws.ssmPillarPrefix !== `/ci-fleet/${input.stack}/pillar/`) {
    problems.push(`aws.ssmPillarPrefix must be /ci-fleet/${input.stack}/pillar/ (docs/contracts.md)`);
  }
  if (input.provider === "equinix-metal" && !aws.rolesAnywhere) problems.push("aws.rolesAnywhere is required on equinix-metal");
  if (input.provider === "aws" && aws.rolesAnywhere) problems.push("aws.rolesAnywhere is for equinix-metal; on aws the instance profile is used");
  if (aws.rolesAnywhere) {
    const ra = aws.rolesAnywhere;
    if (!ARN.test(ra.trustAnchorArn)) problems.push("aws.rolesAnywhere.trustAnchorArn is not an ARN");
    if (!ARN.test(ra.profileArn)) problems.push("aws.rolesAnywhere.profileArn is not an ARN");
    checkPem(problems, "aws.rolesAnywhere.certificatePem", ra.certificatePem, CERTIFICATE_PEM, "a PEM certificate");
    checkPem(problems, "aws.rolesAnywhere.privateKeyPem", ra.privateKeyPem, PRIVATE_KEY_PEM, "a PEM private key");
  }
  if (problems.length > 0) throw new BootstrapInputError(problems);

  const writeFiles: WriteFile[] = [
    // The same text salt_master.config writes later (from pillar ci_fleet_master:master_config).
    fileOf(BOOTSTRAP_PATHS.masterConfig, renderSaltMasterConfig({ masterMinionId }), "0600"),
    // Before salt-master is installed: its first start already runs as root (salt_master.service later).
    fileOf(BOOTSTRAP_PATHS.masterServiceDropIn, renderSaltMasterServiceDropIn(), "0644"),
    // No key material: master.pem/master.pub and the master's minion.pem/minion.pub come from
    // SSM at first boot (ci_fleet_master_pki.py, run by the bootstrap), accepted minion keys
    // from the first pillar sync. So the master's user-data does not grow with the fleet.
    ...minionConfigFiles({
      minionId: masterMinionId,
      role: "salt-master",
      masterAddress: "127.0.0.1",
      masterFingerprint: saltMasterFingerprint(input.masterPublicKeyPem),
    }),
  ];
  if (repo.deployKeyPem !== undefined) {
    writeFiles.push(
      fileOf(BOOTSTRAP_PATHS.saltRepositoryDeployKey, normalizePem(repo.deployKeyPem), "0400"),
      fileOf(BOOTSTRAP_PATHS.saltRepositoryKnownHosts, saltRepositoryKnownHosts(), "0644"),
      // core.sshCommand: the deploy key, and only the pinned host keys (salt_master.repository later).
      fileOf(BOOTSTRAP_PATHS.gitSystemConfig, renderSaltRepositoryGitConfig(), "0644"),
    );
  }
  // The master clones this repository first, so it runs the install and wait scripts from the
  // checkout (cloud-init/scripts/, with the pins from here): fewer bytes in its user-data.
  writeFiles.push(...awsFiles(aws), fileOf(BOOTSTRAP_PATHS.bootstrapSaltMaster, SCRIPTS.bootstrapSaltMaster, "0700"));

  const runcmd: CloudCommand[] = [];
  if (aws.rolesAnywhere) {
    runcmd.push(
      inlineScript("ci-fleet-install-pinned-download", SCRIPTS.installPinnedDownload, [
        PINS.aws_signing_helper.url,
        PINS.aws_signing_helper.sha256,
        BOOTSTRAP_PATHS.awsSigningHelper,
        "0755",
      ]),
    );
  }
  runcmd.push([...saltPinsEnvironment(), BOOTSTRAP_PATHS.bootstrapSaltMaster, repo.url, repo.ref, String(MASTER_PILLAR_WAIT_SECONDS)]);

  return assemble("salt-master", input.provider, {
    bootcmd: [inlineScript("ci-fleet-salt-master-firewall", SCRIPTS.saltMasterFirewall, [...input.minionNetworks].sort())],
    writeFiles,
    runcmd,
  });
}

// ---------------------------------------------------------------------------------------
// Rendering and masking.

/** The document with every secret file's content replaced by `[secret]`. */
export function maskCloudConfigSecrets(doc: CloudConfig): CloudConfig {
  return {
    ...doc,
    write_files: doc.write_files?.map((file) =>
      SECRET_FILE_PATHS.includes(file.path) ? { ...file, content: SECRET_MASK } : file,
    ),
  };
}

function ordered<T extends object>(value: T, order: readonly (keyof T)[]): Partial<T> {
  const unknown = Object.keys(value).filter((key) => !order.includes(key as keyof T));
  if (unknown.length > 0) throw new Error(`cloud-config: unsupported keys ${unknown.join(", ")}`);
  const out: Partial<T> = {};
  for (const key of order) if (value[key] !== undefined) out[key] = value[key];
  return out;
}

/**
 * `#cloud-config` + YAML: fixed key order, no anchors or aliases, no line folding.
 * Same document, same bytes. The YAML is `YAML.stringify` of the whole document, assembled
 * from the renderings of its parts (a top-level map's entries, a block list's items, are
 * rendered independently of their siblings; test/preview/yaml-parts.test.ts holds it).
 */
export function renderCloudConfig(doc: CloudConfig): string {
  const normalized = ordered(doc, CLOUD_CONFIG_KEY_ORDER);
  if (normalized.write_files) normalized.write_files = normalized.write_files.map((f) => ordered(f, WRITE_FILE_KEY_ORDER) as WriteFile);
  return "#cloud-config\n" + renderYamlMapByParts(normalized, CLOUD_CONFIG_YAML, true);
}

/** The same text as renderCloudConfig, rendered in one piece (for the test that both agree). */
export function renderCloudConfigWhole(doc: CloudConfig): string {
  const normalized = ordered(doc, CLOUD_CONFIG_KEY_ORDER);
  if (normalized.write_files) normalized.write_files = normalized.write_files.map((f) => ordered(f, WRITE_FILE_KEY_ORDER) as WriteFile);
  return "#cloud-config\n" + YAML.stringify(normalized, CLOUD_CONFIG_YAML);
}

/**
 * User-data as EC2 receives it (`userDataBase64` of aws.ec2.Instance): gzip, which
 * cloud-init detects and decompresses, so the master's key-heavy document fits EC2's
 * 16 KiB limit. Deterministic: zlib writes no file name and a zero timestamp.
 */
export function gzipUserData(rendered: string): Buffer {
  let gzipped = gzipMemo.get(rendered);
  if (!gzipped) {
    gzipped = gzipSync(new TextEncoder().encode(rendered), { level: 9 });
    if (gzipMemo.size >= GZIP_MEMO_ENTRIES) gzipMemo.delete(gzipMemo.keys().next().value as string);
    gzipMemo.set(rendered, gzipped);
  }
  return Buffer.from(gzipped as Uint8Array);
}

/**
 * The user-data gzipped last (at most GZIP_MEMO_ENTRIES, the oldest dropped first): the
 * preview's size check measures the very documents the aws machines gzipped, and gzip at
 * level 9 was a third of a second at 1000 runners each time. Callers get a copy.
 */
const gzipMemo = new Map<string, Buffer>();
const GZIP_MEMO_ENTRIES = 4096;
