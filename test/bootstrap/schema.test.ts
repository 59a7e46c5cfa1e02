/**
 * Every rendered user-data against cloud-init's own JSON schema (ajv) and the real
 * `cloud-init schema` CLI (Debian package cloud-init), and against EC2's 16 KiB limit.
 */
import { execFile } from "child_process";
import { createHash } from "crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import * as path from "path";
import { promisify } from "util";
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

describe("size (EC2 accepts at most 16 KiB of user-data)", () => {
  const gzipBytes = (text: string) => gzipUserData(text).length;

  it("every document of a production-sized fleet (12 minions) fits gzipped; Teleport and runners fit as plain text", () => {
    for (const [name, text] of Object.entries(userData)) {
      const plain = Buffer.byteLength(text);
      expect({ name, gzipFits: gzipBytes(text) <= EC2_USER_DATA_LIMIT_BYTES }).toEqual({ name, gzipFits: true });
      if (!name.startsWith("salt-master")) expect({ name, plainFits: plain <= EC2_USER_DATA_LIMIT_BYTES }).toEqual({ name, plainFits: true });
      process.stdout.write(`user-data ${name}: ${plain} B plain, ${gzipBytes(text)} B gzip\n`);
    }
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

  it.each(MACHINE_PROVIDERS)("the master on %s: growth per pre-seeded minion key, and where 16 KiB is passed", (provider) => {
    const render = (minions: number) => renderCloudConfig(buildSaltMasterCloudConfig(masterInput(fleet, provider, minions)));
    const n = fleet.minions.size;
    const [empty, full] = [render(0), render(n)];
    const perMinion = (Buffer.byteLength(full) - Buffer.byteLength(empty)) / n;
    const perMinionGzip = (gzipBytes(full) - gzipBytes(empty)) / n;
    // An RSA 2048 public key PEM is 451 bytes; its write_files entry and indentation add ~150.
    expect(perMinion).toBeGreaterThan(451);
    expect(perMinion).toBeLessThan(650);
    // Random base64 compresses to ~3/4.
    expect(perMinionGzip).toBeLessThan(perMinion);
    const plainLimit = Math.floor((EC2_USER_DATA_LIMIT_BYTES - Buffer.byteLength(empty)) / perMinion);
    const gzipLimit = Math.floor((EC2_USER_DATA_LIMIT_BYTES - gzipBytes(empty)) / perMinionGzip);
    expect(gzipLimit).toBeGreaterThanOrEqual(12);
    process.stdout.write(
      `master on ${provider}: ${Buffer.byteLength(empty)} B + ${perMinion.toFixed(1)} B/minion plain ` +
        `(${plainLimit < 0 ? "over 16 KiB with no minion" : `over 16 KiB from ${plainLimit + 1} minions`}); ${gzipBytes(empty)} B + ${perMinionGzip.toFixed(1)} B/minion gzip ` +
        `(over 16 KiB from ${gzipLimit + 1} minions)\n`,
    );
  });
});
