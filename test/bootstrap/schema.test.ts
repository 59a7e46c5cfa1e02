/**
 * Every rendered user-data against cloud-init's own JSON schema (ajv) and the real
 * `cloud-init schema` CLI (Debian package cloud-init), and against the 16 KiB limit as each
 * provider receives user-data (equinix-metal: plain text; aws: gzip).
 */
import { execFile } from "child_process";
import { createHash } from "crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import * as path from "path";
import { promisify } from "util";
import { gunzipSync, gzipSync } from "zlib";
import type { ValidateFunction } from "ajv";
import * as YAML from "yaml";
import {
  EC2_USER_DATA_LIMIT_BYTES,
  buildMinionCloudConfig,
  gzipUserData,
  buildSaltMasterCloudConfig,
  maskCloudConfigSecrets,
  renderCloudConfig,
} from "../../infra/bootstrap/cloud-config";
import { MACHINE_PROVIDERS } from "../../infra/config/model";
import { Fleet, STACK, generateFleet, masterInput, minionInput } from "./fixtures";
import { CLOUD_CONFIG_SCHEMA_PATH as SCHEMA_PATH, cloudInitSchema, compileCloudInitSchema } from "../support/cloud-init";

const execFileAsync = promisify(execFile);

let fleet: Fleet;
let validate: ValidateFunction;
/** name -> rendered user-data (real keys; written only to a 0600 temp file, never printed). */
let userData: Record<string, string>;

beforeAll(async () => {
  validate = compileCloudInitSchema();
  fleet = await generateFleet();
  userData = {};
  for (const provider of MACHINE_PROVIDERS) {
    userData[`salt-master on ${provider}`] = renderCloudConfig(buildSaltMasterCloudConfig(masterInput(fleet, provider)));
    for (const [label, id] of [
      ["teleport", `${STACK}-teleport`],
      ["github-actions runner", `${STACK}-default-r1`],
      ["buildkite runner", `${STACK}-infra-r1`],
    ]) {
      userData[`${label} on ${provider}`] = renderCloudConfig(buildMinionCloudConfig(minionInput(fleet, provider, id!)));
    }
  }
});

/** A rendered document with one thing broken, as cloud-init would receive it. */
const BROKEN: Record<string, (doc: Record<string, unknown>) => void> = {
  "write_files entry with a misspelled key": (doc) => {
    (doc.write_files as Record<string, unknown>[])[0]!.contents = "x";
  },
  "write_files permissions as a number": (doc) => {
    (doc.write_files as Record<string, unknown>[])[0]!.permissions = 400;
  },
  "runcmd as a single string": (doc) => {
    doc.runcmd = "salt-call state.highstate";
  },
  "bootcmd entry as a mapping": (doc) => {
    (doc.bootcmd as unknown[]).unshift({ run: "nft" });
  },
  "packages empty": (doc) => {
    doc.packages = [];
  },
};

function broken(kind: string): string {
  const doc = YAML.parse(userData["github-actions runner on aws"]!) as Record<string, unknown>;
  BROKEN[kind]!(doc);
  return "#cloud-config\n" + YAML.stringify(doc, { lineWidth: 0 });
}

describe("cloud-init's JSON schema (ajv)", () => {
  it("is the one Debian's cloud-init ships", () => {
    expect(existsSync(SCHEMA_PATH)).toBe(true);
  });

  it.each(["salt-master", "teleport", "github-actions runner", "buildkite runner"].flatMap((r) => MACHINE_PROVIDERS.map((p) => `${r} on ${p}`)))(
    "accepts %s",
    (name) => {
      const doc = YAML.parse(userData[name]!);
      const ok = validate(doc);
      expect(ok ? [] : validate.errors).toEqual([]);
      // The masked preview document is valid too.
      expect(validate(YAML.parse(renderCloudConfig(maskCloudConfigSecrets(doc))))).toBe(true);
    },
  );

  it.each(Object.keys(BROKEN))("rejects a document with %s", (kind) => {
    expect(validate(YAML.parse(broken(kind)))).toBe(false);
  });
});

describe("the cloud-init CLI (`cloud-init schema --config-file`)", () => {
  it("accepts every rendered user-data and rejects every broken one", async () => {
    const brokenTexts = Object.fromEntries(Object.keys(BROKEN).map((kind) => [`broken: ${kind}`, broken(kind)]));
    const results = await cloudInitSchema({ ...userData, ...brokenTexts });
    for (const name of Object.keys(userData)) {
      // Never print the output of a valid document's check: only its verdict.
      expect({ name, code: results[name]!.code, valid: /Valid cloud-config/.test(results[name]!.output) }).toEqual({ name, code: 0, valid: true });
    }
    for (const name of Object.keys(brokenTexts)) {
      expect({ name, code: results[name]!.code }).toEqual({ name, code: 1 });
      expect(results[name]!.output).toMatch(/Invalid cloud-config|Error/);
    }
  });
});

describe("size: every user-data fits 16 KiB as its provider receives it", () => {
  const gzipBytes = (text: string) => gzipUserData(text).length;
  /** What the provider is handed: Equinix Metal's API takes the text as is; EC2 gets gzip (its limit applies before base64). */
  const received = (provider: string, text: string) => (provider === "aws" ? gzipBytes(text) : Buffer.byteLength(text));

  it("gzipUserData is gzip at level 9 of the UTF-8 text, the same on every call, and each caller's own copy", () => {
    const text = Object.values(userData)[0]!;
    const expected = gzipSync(new TextEncoder().encode(text), { level: 9 }).toString("base64");
    const first = gzipUserData(text);
    expect(first.toString("base64")).toBe(expected);
    expect(gunzipSync(new Uint8Array(first)).toString("utf8")).toBe(text);
    first.fill(0);
    expect(gzipUserData(text).toString("base64")).toBe(expected);
    expect(gzipUserData(`${text}\n`).length).not.toBe(0);
  });

  it("every document, the master's with a deploy key and (equinix-metal) Roles Anywhere material, fits on its provider", () => {
    for (const [name, text] of Object.entries(userData)) {
      const provider = name.split(" on ")[1]!;
      const bytes = received(provider, text);
      expect({ name, bytes, fits: bytes <= EC2_USER_DATA_LIMIT_BYTES }).toEqual({ name, bytes, fits: true });
      process.stdout.write(`user-data ${name}: ${Buffer.byteLength(text)} B plain, ${gzipBytes(text)} B gzip; ${provider} receives ${bytes} B\n`);
    }
  });

  it.each(MACHINE_PROVIDERS)("on %s: the master's fits even as plain text, and a runner with a 63-character name fits", (provider) => {
    // Plain text is what equinix-metal receives; on aws it bounds the gzip from above.
    expect(Buffer.byteLength(userData[`salt-master on ${provider}`]!)).toBeLessThanOrEqual(EC2_USER_DATA_LIMIT_BYTES);
    const longest = `${STACK}-${"q".repeat(20)}-${"r".repeat(63 - STACK.length - 22)}`;
    expect(longest).toHaveLength(63);
    const doc = buildMinionCloudConfig({ ...minionInput(fleet, provider, `${STACK}-default-r1`), minionId: longest });
    expect(received(provider, renderCloudConfig(doc))).toBeLessThanOrEqual(EC2_USER_DATA_LIMIT_BYTES);
  });

  it("gzip is deterministic and cloud-init's own decompressor gives back the document", async () => {
    // Debian's python3 with Debian's cloud-init module (not a python3 earlier on PATH).
    const python = "/usr/bin/python3";
    if (!existsSync("/usr/lib/python3/dist-packages/cloudinit/util.py") || !existsSync(python)) {
      throw new Error("cloud-init's Python module is missing: install the Debian packages cloud-init and python3");
    }
    const text = userData["salt-master on aws"]!;
    const gz = gzipUserData(text);
    expect(gzipUserData(text).toString("base64")).toBe(gz.toString("base64"));
    const dir = mkdtempSync(path.join(tmpdir(), "ci-fleet-gz-"));
    try {
      const file = path.join(dir, "user-data.gz");
      writeFileSync(file, new Uint8Array(gz), { mode: 0o600 });
      const { stdout } = await execFileAsync(python, [
        "-c",
        "import sys, hashlib; from cloudinit import util; d = util.decomp_gzip(open(sys.argv[1], 'rb').read(), quiet=False); print(hashlib.sha256(d.encode()).hexdigest())",
        file,
      ]);
      expect(stdout.trim()).toBe(createHash("sha256").update(text).digest("hex"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each(MACHINE_PROVIDERS)("the master on %s: no part grows with the fleet (no minion key, no address in its input)", (provider) => {
    const input = masterInput(fleet, provider);
    // Nothing in the builder's input names another machine: the first pillar sync accepts every minion.
    expect(Object.keys(input).sort()).toEqual(["aws", "masterPublicKeyPem", "minionNetworks", "provider", "saltRepository", "stack"]);
    expect(renderCloudConfig(buildSaltMasterCloudConfig(input))).not.toMatch(/\/etc\/salt\/pki\/master\/minions\//);
  });
});
