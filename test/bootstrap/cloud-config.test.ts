import { execFileSync } from "child_process";
import { createHash, createPublicKey } from "crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import * as path from "path";
import * as YAML from "yaml";
import {
  BOOTSTRAP_PATHS,
  MASTER_PILLAR_WAIT_SECONDS,
  BootstrapInputError,
  CloudConfig,
  METADATA_SERVICE_ADDRESSES,
  PINS,
  SECRET_FILE_PATHS,
  SECRET_MASK,
  WriteFile,
  buildMinionCloudConfig,
  buildSaltMasterCloudConfig,
  maskCloudConfigSecrets,
  mergeCloudConfigs,
  normalizePem,
  renderCloudConfig,
  saltMasterFingerprint,
} from "../../infra/bootstrap/cloud-config";
import { BLOCKED_PUBLISH_FUNCTIONS, SALT_MINION_RECONNECT, SALT_PATHS } from "../../infra/bootstrap/salt-config";
import { renderSaltMasterPkiDocument } from "../../infra/fleet/salt-master-pki";
import { MACHINE_PROVIDERS, MachineProviderName } from "../../infra/config/model";
import {
  Fleet,
  MASTER_NAME,
  STACK,
  fleetSecrets,
  generateFleet,
  masterInput,
  minionInput,
  pemBodyLines,
  requireTool,
  stableText,
} from "./fixtures";

let fleet: Fleet;
beforeAll(async () => {
  fleet = await generateFleet();
});

/** The machines every test covers, on both providers. */
const MACHINES = [
  { label: "salt-master", minionId: `${STACK}-salt-master` },
  { label: "teleport", minionId: `${STACK}-teleport` },
  { label: "github-actions runner", minionId: `${STACK}-default-r1` },
  { label: "buildkite runner", minionId: `${STACK}-infra-r1` },
];
const CASES = MACHINES.flatMap((m) => MACHINE_PROVIDERS.map((provider) => ({ ...m, provider })));

function build(minionId: string, provider: MachineProviderName): CloudConfig {
  return minionId.endsWith("-salt-master")
    ? buildSaltMasterCloudConfig(masterInput(fleet, provider))
    : buildMinionCloudConfig(minionInput(fleet, provider, minionId));
}

const fileAt = (doc: CloudConfig, filePath: string): WriteFile => {
  const file = doc.write_files?.find((f) => f.path === filePath);
  if (!file) throw new Error(`no write_files entry for ${filePath}`);
  return file;
};

/** `sh -c SCRIPT NAME ARGS...` -> NAME */
const inlineName = (command: unknown) => (Array.isArray(command) && command[0] === "sh" ? command[3] : undefined);

describe("saltMasterFingerprint (Salt's pem_finger with sha256)", () => {
  const vectorPath = path.join(__dirname, "fixtures", "master-vector.pub");
  const vector = readFileSync(vectorPath, "utf8");

  it("matches a fixed vector (computed with Salt's algorithm in Python and with sed | sha256sum)", () => {
    expect(saltMasterFingerprint(vector)).toBe(
      "83:db:73:12:e3:ab:06:48:e3:73:8a:de:ed:f2:27:db:d9:33:60:b1:4b:ba:45:72:cf:10:05:70:1e:3b:e5:c2",
    );
  });

  it("agrees with a line-for-line Python port of salt.utils.crypt.pem_finger on fresh keys", () => {
    const python = requireTool("python3", "python3");
    // Salt: key = b"".join([x for x in fp_.readlines() if x.strip()][1:-1]); hashlib.sha256(key)
    const portOfSalt = [
      "import hashlib, sys",
      "for p in sys.argv[1:]:",
      "    with open(p, 'rb') as fp_:",
      "        key = b''.join([x for x in fp_.readlines() if x.strip()][1:-1])",
      "    pre = hashlib.sha256(key).hexdigest()",
      "    print(':'.join(pre[i:i + 2] for i in range(0, len(pre), 2)))",
    ].join("\n");
    const dir = mkdtempSync(path.join(tmpdir(), "ci-fleet-finger-"));
    const keys = [fleet.master.publicKeyPem, fleet.masterMinion.publicKeyPem, vector];
    const files = keys.map((pem, i) => {
      const file = path.join(dir, `k${i}.pub`);
      writeFileSync(file, pem);
      return file;
    });
    const expected = execFileSync(python, ["-c", portOfSalt, ...files], { encoding: "utf8" }).trim().split("\n");
    rmSync(dir, { recursive: true });
    expect(keys.map(saltMasterFingerprint)).toEqual(expected);
  });

  it("hashes the base64 text with its newlines, not the decoded key", () => {
    const der = createPublicKey(vector).export({ type: "spki", format: "der" });
    const derFinger = createHash("sha256").update(new Uint8Array(der)).digest("hex").match(/../g)!.join(":");
    expect(saltMasterFingerprint(vector)).not.toBe(derFinger);
    // CRLF, a missing final newline and blank lines do not change it (Salt skips blank lines).
    expect(saltMasterFingerprint(vector.replace(/\n/g, "\r\n").trimEnd())).toBe(saltMasterFingerprint(vector));
    expect(saltMasterFingerprint("\n" + vector + "\n\n")).toBe(saltMasterFingerprint(vector));
  });

  it.each(MACHINE_PROVIDERS)("every minion on %s pins the master's fingerprint, the master's own minion too", (provider) => {
    const expected = saltMasterFingerprint(fleet.master.publicKeyPem);
    for (const { minionId } of MACHINES) {
      const doc = build(minionId, provider);
      const conf = YAML.parse(fileAt(doc, BOOTSTRAP_PATHS.minionConfig).content);
      expect(conf.master_finger).toBe(expected);
      expect(conf.id).toBe(minionId);
      expect(conf.hash_type).toBe("sha256");
      expect(conf.master).toEqual([minionId.endsWith("-salt-master") ? "127.0.0.1" : MASTER_NAME]);
    }
    // The fingerprint is of exactly the text the master's first boot writes as master.pub:
    // the public key of the SSM document the program writes (ci_fleet_master_pki.py copies it as is).
    const pki = JSON.parse(renderSaltMasterPkiDocument(fleet.master, fleet.masterMinion)) as { master_public_key_pem: string };
    expect(saltMasterFingerprint(pki.master_public_key_pem)).toBe(expected);
  });
});

describe("finding the master again after it is replaced", () => {
  it.each(CASES)("$label on $provider: the master by name, failover re-resolution, never giving up", ({ minionId, provider }) => {
    const conf = YAML.parse(fileAt(build(minionId, provider), BOOTSTRAP_PATHS.minionConfig).content);
    // A list: master_type failover takes a list (older minions exit on a string).
    expect(Array.isArray(conf.master)).toBe(true);
    expect(conf).toMatchObject({ master_type: "failover", master_alive_interval: 30, master_tries: -1, retry_dns: 0 });
    expect(SALT_MINION_RECONNECT).toEqual({ master_type: "failover", master_alive_interval: 30, master_tries: -1, retry_dns: 0 });
    // A runner's or Teleport's user-data names the master; no IPv4 address anywhere in it but the metadata service's.
    if (!minionId.endsWith("-salt-master")) {
      const text = renderCloudConfig(build(minionId, provider));
      const addresses = [...text.matchAll(/\b\d{1,3}(\.\d{1,3}){3}\b/g)].map((m) => m[0]);
      expect([...new Set(addresses)].sort()).toEqual(METADATA_SERVICE_ADDRESSES[provider].filter((a) => !a.includes(":")).sort());
    }
  });
});

describe("first things at boot, every role and provider", () => {
  it.each(CASES)("$label on $provider: metadata guard, OpenSSH masking, user-data lock come first", ({ minionId, provider }) => {
    const doc = build(minionId, provider);
    const bootcmd = doc.bootcmd!;
    expect(bootcmd.slice(0, 3).map(inlineName)).toEqual([
      "ci-fleet-metadata-guard",
      "ci-fleet-disable-openssh",
      "ci-fleet-lock-user-data",
    ]);
    const guard = bootcmd[0] as string[];
    expect(guard.slice(4)).toEqual([...METADATA_SERVICE_ADDRESSES[provider]]);
    expect(guard[2]).toContain("meta skuid != 0");
    const openssh = (bootcmd[1] as string[])[2]!;
    expect(openssh).toMatch(/systemctl stop ssh\.socket ssh\.service/);
    expect(openssh).toMatch(/systemctl mask ssh\.service ssh\.socket sshd\.service/);
    // The lock covers every copy cloud-init keeps of user-data.
    const lock = (bootcmd[2] as string[])[2]!;
    for (const copy of ["user-data.txt*", "cloud-config.txt", "obj.pkl", "instance-data-sensitive.json"]) expect(lock).toContain(copy);
    expect(lock).toContain('chmod 0600 "$f"');
  });

  it("pins the metadata addresses per provider", () => {
    expect(METADATA_SERVICE_ADDRESSES).toEqual({
      aws: ["169.254.169.254", "fd00:ec2::254"],
      "equinix-metal": ["192.80.8.124"],
    });
  });
});

describe("hardening every document carries", () => {
  it.each(CASES)("$label on $provider", ({ minionId, provider }) => {
    const doc = build(minionId, provider);
    const text = renderCloudConfig(doc);
    const parsed = YAML.parse(text);
    expect(parsed.ssh_pwauth).toBe(false);
    expect(parsed.disable_root).toBe(true);
    expect(parsed.allow_public_ssh_keys).toBe(false);
    expect(parsed).not.toHaveProperty("ssh_authorized_keys");
    // cloud-init's salt_minion module writes minion.pem with mode 0644 (util.write_file's
    // default): keys go through write_files with 0400 instead.
    expect(parsed).not.toHaveProperty("salt_minion");
    // Nothing is written to /tmp during boot; nothing is piped into a shell.
    expect(text).not.toMatch(/\/tmp\b/);
    expect(text).not.toMatch(/\|\s*(ba|da)?sh\b/);
    for (const file of doc.write_files!) {
      expect(file.permissions).toMatch(/^0[0-7]{3}$/);
      expect(file.owner).toBe("root:root");
      if (SECRET_FILE_PATHS.includes(file.path)) expect(file.permissions).toBe("0400");
    }
    // Salt comes from the pinned version, with the pinned key (the master installs it from its checkout, with the same pins).
    const install = doc.runcmd!.find((c) => Array.isArray(c) && (c.includes(BOOTSTRAP_PATHS.installSalt) || c.includes(BOOTSTRAP_PATHS.bootstrapSaltMaster))) as string[];
    expect(install).toContain(`SALT_VERSION=${PINS.salt.version}`);
    expect(install).toContain(`SALT_KEY_FINGERPRINT=${PINS.salt.key_fingerprint}`);
  });
});

describe("the Salt master", () => {
  const masterDoc = (provider: MachineProviderName = "aws") => buildSaltMasterCloudConfig(masterInput(fleet, provider));

  it("writes a hardened master config", () => {
    const conf = YAML.parse(fileAt(masterDoc(), BOOTSTRAP_PATHS.masterConfig).content);
    expect(conf).toMatchObject({
      auto_accept: false,
      open_mode: false,
      permissive_pki_access: false,
      publisher_acl: {},
      file_recv: false,
      pillar_opts: false,
      interface: "0.0.0.0",
      user: "root",
      file_roots: { base: [SALT_PATHS.stateTree] },
      pillar_roots: { base: [SALT_PATHS.pillarTree, SALT_PATHS.generatedPillar] },
    });
    expect(conf.publisher_acl_blacklist.modules).toEqual([...BLOCKED_PUBLISH_FUNCTIONS]);
    expect(conf.publisher_acl_blacklist.modules).toContain("cmd.*");
    for (const key of ["autosign_file", "autosign_grains_dir", "autoreject_file", "autosign_timeout"]) {
      expect(conf).not.toHaveProperty(key);
    }
    // The generated (secret) pillar is never served as files.
    for (const root of conf.file_roots.base as string[]) {
      expect(SALT_PATHS.generatedPillar.startsWith(root + "/")).toBe(false);
      expect(root.startsWith(SALT_PATHS.generatedPillar)).toBe(false);
    }
  });

  it.each(MACHINE_PROVIDERS)("on %s: carries no Salt key: its key pairs come from SSM at first boot, accepted minion keys from the pillar sync", (provider) => {
    const doc = masterDoc(provider);
    const paths = doc.write_files!.map((f) => f.path);
    for (const p of [BOOTSTRAP_PATHS.masterPrivateKey, BOOTSTRAP_PATHS.masterPublicKey, BOOTSTRAP_PATHS.minionPrivateKey, BOOTSTRAP_PATHS.minionPublicKey]) expect(paths).not.toContain(p);
    expect(paths.filter((p) => p.startsWith("/etc/salt/pki/"))).toEqual([]);
    const text = renderCloudConfig(doc);
    for (const keys of [fleet.master, fleet.masterMinion, ...fleet.minions.values()]) {
      for (const line of [...pemBodyLines(keys.privateKeyPem), ...pemBodyLines(keys.publicKeyPem)]) expect(text).not.toContain(line);
    }
  });

  it("writes its secrets root-only", () => {
    const doc = masterDoc("equinix-metal");
    expect(fileAt(doc, BOOTSTRAP_PATHS.saltRepositoryDeployKey)).toMatchObject({ permissions: "0400", owner: "root:root" });
    expect(fileAt(doc, BOOTSTRAP_PATHS.rolesAnywherePrivateKey)).toMatchObject({ permissions: "0400", owner: "root:root" });
  });

  it.each(MACHINE_PROVIDERS)("on %s: (credential helper,) clone + install + keys + pillar sync + start + highstate, in order", (provider) => {
    const doc = masterDoc(provider);
    const steps = doc.runcmd!.map((c) => (Array.isArray(c) ? (inlineName(c) ?? c.find((a) => a.startsWith("/"))) : c));
    expect(steps).toEqual([...(provider === "equinix-metal" ? ["ci-fleet-install-pinned-download"] : []), BOOTSTRAP_PATHS.bootstrapSaltMaster]);
    const bootstrap = doc.runcmd!.at(-1) as string[];
    expect(bootstrap.slice(bootstrap.indexOf(BOOTSTRAP_PATHS.bootstrapSaltMaster))).toEqual([BOOTSTRAP_PATHS.bootstrapSaltMaster, "git@github.com:example-org/ci-fleet.git", "main", String(MASTER_PILLAR_WAIT_SECONDS)]);
    // No install or wait script in the master's user-data: it runs this repository's from its checkout.
    expect(doc.write_files!.map((f) => f.path)).not.toContain(BOOTSTRAP_PATHS.installSalt);
    expect(doc.write_files!.map((f) => f.path)).not.toContain(BOOTSTRAP_PATHS.waitForMasterAndHighstate);
    const script = fileAt(doc, BOOTSTRAP_PATHS.bootstrapSaltMaster).content;
    const order = ["git -C /srv/ci-fleet/repo fetch", "cloud-init/scripts/install-salt.sh salt-master salt-minion", SALT_PATHS.masterPkiFetch, "chown -R root:root /etc/salt/pki", SALT_PATHS.pillarSync, "systemctl enable --now salt-master", "cloud-init/scripts/wait-for-master-and-highstate.sh"];
    const positions = order.map((needle) => script.indexOf(needle));
    expect(positions.every((p) => p >= 0)).toBe(true);
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
    // The master's ports: loopback and the fleet's networks only, from the first boot on.
    expect(inlineName(doc.bootcmd![3])).toBe("ci-fleet-salt-master-firewall");
    expect((doc.bootcmd![3] as string[]).slice(4)).toEqual(provider === "aws" ? ["10.0.0.0/16"] : ["10.0.0.0/8"]);
  });

  it("reaches AWS with the instance profile on aws and with Roles Anywhere on equinix-metal", () => {
    const aws = fileAt(masterDoc("aws"), BOOTSTRAP_PATHS.awsConfig).content;
    expect(aws).not.toContain("credential_process");
    const equinixDoc = masterDoc("equinix-metal");
    const equinix = fileAt(equinixDoc, BOOTSTRAP_PATHS.awsConfig).content;
    expect(equinix).toContain(`credential_process = ${BOOTSTRAP_PATHS.awsSigningHelper} credential-process`);
    expect(equinix).toContain(`--private-key ${BOOTSTRAP_PATHS.rolesAnywherePrivateKey}`);
    expect(fileAt(equinixDoc, BOOTSTRAP_PATHS.rolesAnywherePrivateKey).permissions).toBe("0400");
    const env = fileAt(equinixDoc, BOOTSTRAP_PATHS.awsEnvironment).content;
    expect(env).toContain(`CI_FLEET_SSM_PILLAR_PREFIX=/ci-fleet/${STACK}/pillar/`);
    const helper = equinixDoc.runcmd!.find((c) => inlineName(c) === "ci-fleet-install-pinned-download") as string[];
    expect(helper.slice(4)).toEqual([PINS.aws_signing_helper.url, PINS.aws_signing_helper.sha256, BOOTSTRAP_PATHS.awsSigningHelper, "0755"]);
  });

  it("is deterministic: same input, same bytes, whatever the order of minions and networks", () => {
    const input = masterInput(fleet, "equinix-metal");
    const first = renderCloudConfig(buildSaltMasterCloudConfig(input));
    const shuffled = { ...input, minionNetworks: ["192.168.0.0/16", "10.0.0.0/8"] };
    const again = renderCloudConfig(buildSaltMasterCloudConfig({ ...input, minionNetworks: ["10.0.0.0/8", "192.168.0.0/16"] }));
    expect(renderCloudConfig(buildSaltMasterCloudConfig(shuffled))).toBe(again);
    expect(renderCloudConfig(buildSaltMasterCloudConfig(input))).toBe(first);
  });
});

describe("input checks", () => {
  it("lists every problem at once and never echoes a key", () => {
    const good = masterInput(fleet, "equinix-metal");
    const bad = {
      ...good,
      masterPublicKeyPem: fleet.master.privateKeyPem,
      minionNetworks: ["10.0.0.0/33"],
      saltRepository: { url: "https://github.com/o/r.git", ref: "--upload-pack=evil", deployKeyPem: fleet.external.deployKeyPem },
      aws: { ...good.aws, ssmPillarPrefix: "/ci-fleet/other/pillar/", rolesAnywhere: undefined },
    };
    let error: unknown;
    try {
      buildSaltMasterCloudConfig(bad);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(BootstrapInputError);
    const problems = (error as BootstrapInputError).problems;
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^masterPublicKeyPem/),
        expect.stringMatching(/10\.0\.0\.0\/33/),
        expect.stringMatching(/saltRepository\.ref/),
        expect.stringMatching(/deploy key needs an SSH URL/),
        expect.stringMatching(/ssmPillarPrefix/),
        expect.stringMatching(/rolesAnywhere is required/),
      ]),
    );
    const message = (error as Error).message;
    for (const line of [...pemBodyLines(fleet.master.privateKeyPem), ...pemBodyLines(fleet.external.deployKeyPem)]) {
      expect(message).not.toContain(line);
    }
  });

  it.each([
    ["the master's address instead of its name", { masterName: "10.0.0.5" }, /master name "10\.0\.0\.5" is not a DNS name/],
    ["a single-label master name", { masterName: "salt" }, /master name "salt" is not a DNS name/],
    ["another stack's minion id", { minionId: "staging-default-r1" }, /must be a DNS label starting with "production-"/],
    ["a Teleport machine with a runner's id", { role: "teleport" as const }, /Teleport machine's minion id/],
    ["a truncated public key", { masterPublicKeyPem: "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n" }, /does not parse/],
  ])("rejects %s", (_what, change, problem) => {
    const input = { ...minionInput(fleet, "aws", `${STACK}-default-r1`), ...change };
    expect(() => buildMinionCloudConfig(input)).toThrow(problem);
  });

  it("refuses conflicting base documents", () => {
    expect(() => mergeCloudConfigs({ ssh_pwauth: false }, { ssh_pwauth: true })).toThrow(/ssh_pwauth/);
    expect(mergeCloudConfigs({ packages: ["git", "curl"] }, { packages: ["curl", "jq"] })).toEqual({ packages: ["git", "curl", "jq"] });
  });
});

describe("secrets", () => {
  /** Every string in the document, with where it is. */
  function leaves(value: unknown, where: string, out: { where: string; text: string }[] = []) {
    if (typeof value === "string") out.push({ where, text: value });
    else if (Array.isArray(value)) value.forEach((v, i) => leaves(v, `${where}[${i}]`, out));
    else if (value && typeof value === "object") for (const [k, v] of Object.entries(value)) leaves(v, `${where}.${k}`, out);
    return out;
  }

  it.each(CASES)("$label on $provider: each secret only in its own file, and only in its own machine's user-data", ({ minionId, provider }) => {
    const rendered = YAML.parse(renderCloudConfig(build(minionId, provider))) as CloudConfig;
    const isMaster = minionId.endsWith("-salt-master");
    const expectedHere = new Map<string, string>(
      isMaster
        ? [
            // No Salt key at all: the master's pairs come from SSM.
            ["salt repository deploy key", BOOTSTRAP_PATHS.saltRepositoryDeployKey],
            ...(provider === "equinix-metal" ? [["roles anywhere private key", BOOTSTRAP_PATHS.rolesAnywherePrivateKey] as [string, string]] : []),
          ]
        : [[`${minionId} private key`, BOOTSTRAP_PATHS.minionPrivateKey]],
    );
    const all = leaves(rendered, "$");
    for (const [name, secret] of fleetSecrets(fleet)) {
      const body = pemBodyLines(secret);
      const holders = all.filter((leaf) => body.some((line) => leaf.text.includes(line)));
      const allowedPath = expectedHere.get(name);
      if (allowedPath === undefined) {
        expect({ name, holders: holders.map((h) => h.where) }).toEqual({ name, holders: [] });
        continue;
      }
      const index = rendered.write_files!.findIndex((f) => f.path === allowedPath);
      expect(holders.map((h) => h.where)).toEqual([`$.write_files[${index}].content`]);
      expect(holders[0]!.text).toBe(normalizePem(secret));
    }
  });

  it.each(CASES)("$label on $provider: the masked document holds no secret", ({ minionId, provider }) => {
    const masked = renderCloudConfig(maskCloudConfigSecrets(build(minionId, provider)));
    for (const secret of fleetSecrets(fleet).values()) {
      for (const line of pemBodyLines(secret)) expect(masked).not.toContain(line);
    }
    expect(masked).toContain(SECRET_MASK);
  });
});

describe("rendering", () => {
  it.each(CASES)("$label on $provider: snapshot (private keys [secret], generated keys named)", ({ minionId, provider }) => {
    const text = stableText(renderCloudConfig(maskCloudConfigSecrets(build(minionId, provider))), fleet);
    expect(text).not.toContain("UNMASKED SECRET");
    expect(text).not.toMatch(/BEGIN (RSA |OPENSSH )?PRIVATE KEY/);
    expect(text).toMatchSnapshot();
  });

  it("starts with #cloud-config, has no anchors or aliases, and renders the same bytes twice", () => {
    for (const { minionId, provider } of CASES) {
      const doc = build(minionId, provider);
      const text = renderCloudConfig(doc);
      expect(text.startsWith("#cloud-config\n")).toBe(true);
      const parsed = YAML.parseDocument(text);
      let aliases = 0;
      YAML.visit(parsed, { Alias: () => void aliases++ });
      expect(aliases).toBe(0);
      expect(parsed.errors).toEqual([]);
      expect(text).toBe(renderCloudConfig(build(minionId, provider)));
      expect(parsed.toJS()).toEqual(JSON.parse(JSON.stringify(doc)));
    }
  });

  it("refuses keys outside the typed model", () => {
    expect(() => renderCloudConfig({ ...({ salt_minion: {} } as object) } as CloudConfig)).toThrow(/unsupported keys salt_minion/);
  });
});
