// Non-interference: what the preview writes and prints must not depend on any secret value.
// Two runs of each production stack differ only in their secrets: every secret the stack can
// hold, wholly different values of different lengths (no shared prefix or suffix), and every
// secret the program generates (the mocks' private keys, generatedSecretSeed, in the main run
// and the replacement drill's). Every written file and the printed summary must come out byte
// for byte the same. Unlike the leak scan, this needs no list of forms a secret may take: a
// fragment, a hash, a re-encoding of a secret would each make the runs differ. Not covered:
// error paths (a refused config prints problems; test/preview/secret-errors.test.ts masks them).
import * as crypto from "crypto";
import { buildPreview, PreviewOutput, printedSummary } from "../../tools/preview/main";
import * as runModule from "../../tools/preview/run";
import { overlayFile, ROOT, stackConfig } from "../support/preview";
import { githubClientId, githubClientSecret, hex, opensshPrivateKey, rsaPrivateKeyPem } from "../config/secret-fixtures";

const STACKS = ["production", "production-aws"];
const PRIVATE_KEY_PEM = /^-----BEGIN (RSA |EC )?PRIVATE KEY-----\n/;
const sha = (s: string) => crypto.createHash("sha256").update(s).digest("hex");

/**
 * Every secret the stack can hold, under `tag`, tokens `length` long: a private salt repository
 * (so the master's user-data carries its deploy key), a pipeline's env value and SSH key too.
 */
function secretsTagged(stack: string, tag: string, length: number): string {
  const saltMaster = { ...(stackConfig(stack)["ci-fleet:saltMaster"] as object), repository: "git@github.com:example-metal/ci-fleet.git" };
  return overlayFile({
    "ci-fleet:teleportGithubClientId": githubClientId(tag),
    "ci-fleet:teleportGithubClientSecret": githubClientSecret(tag),
    "ci-fleet:githubAppPrivateKey": rsaPrivateKeyPem(tag),
    "ci-fleet:queueSecrets": {
      infra: {
        buildkite: { "agent-token": hex(tag, "bk-infra", length) },
        global: { env: { NPM_TOKEN: `${hex(tag, "npm", length)}-$(rm -rf /)-'"` } },
        infrastructure: { env: { DEPLOY_TOKEN: hex(tag, "deploy", length) }, ssh: { key: opensshPrivateKey(`${tag}-pipeline`) } },
      },
      release: { buildkite: { "agent-token": hex(tag, "bk-release", length) } },
    },
    "ci-fleet:saltMaster": saltMaster,
    "ci-fleet:saltRepositoryDeployKey": opensshPrivateKey(tag),
  });
}

/**
 * The user-data sizes the 16 KiB check reports ("largest: equinix-metal 12737 bytes (host)"),
 * and the machine table's: published by design (the limit is on them), they tell the length of
 * a machine's secrets (on aws, through gzip, a little of their redundancy), never their value.
 * The only figures that may depend on a secret.
 */
const USER_DATA_SIZE = /\b(equinix-metal|aws) \d+ bytes \([^)]*\)/g;

/**
 * `report` with the named columns of the table whose header row is `header` blanked ("N"): the
 * same sizes per machine, and which machine is largest (chosen by them).
 */
function withoutColumns(report: string, header: string, columns: string[]): string {
  const lines = report.split("\n");
  const at = lines.indexOf(header);
  expect({ header, found: at > -1 }).toEqual({ header, found: true });
  const names = header.split("|").map((c) => c.trim());
  const blanked = columns.map((c) => names.indexOf(c));
  expect({ columns, found: blanked.every((i) => i > 0) }).toEqual({ columns, found: true });
  for (let i = at + 2; i < lines.length && lines[i].startsWith("| "); i++) {
    const cells = lines[i].split("|");
    for (const c of blanked) cells[c] = " N ";
    lines[i] = cells.join("|");
  }
  return lines.join("\n");
}

const MACHINE_TABLE = "| machine | role | queue | plan | instance type | private IPv4 | public IPv4 | user-data bytes (equinix-metal receives these) | gzip bytes (EC2 receives these) |";
const SIZE_TABLE = "| provider | role | largest | bytes received | base64 characters | within 16 KiB |";

function withoutSizes(report: string): string {
  const machines = withoutColumns(report, MACHINE_TABLE, ["user-data bytes (equinix-metal receives these)", "gzip bytes (EC2 receives these)"]);
  return withoutColumns(machines, SIZE_TABLE, ["largest", "bytes received", "base64 characters"]).replace(USER_DATA_SIZE, "$1 N bytes (N)");
}

/** What a user sees: every file and the printed summary, with the user-data sizes and the drill's milliseconds (a timing) set aside. */
function visible(out: PreviewOutput): Record<string, string> {
  const printed = printedSummary(out, "out/stack").replace(/both providers, \d+ ms\)/, "both providers, N ms)");
  return { ...out.files, "report.md": withoutSizes(out.files["report.md"]), "(printed summary)": printed.replace(USER_DATA_SIZE, "$1 N bytes (N)") };
}

/** Each file that differs, with its first differing line number (never the lines: they may hold a secret). */
function differences(a: Record<string, string>, b: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
    if (a[f] === b[f]) continue;
    if (a[f] === undefined || b[f] === undefined) {
      out[f] = a[f] === undefined ? "only in the second run" : "only in the first run";
      continue;
    }
    const la = a[f].split("\n");
    const lb = b[f].split("\n");
    let i = 0;
    while (la[i] === lb[i]) i++;
    out[f] = `line ${i + 1} differs`;
  }
  return out;
}

describe.each(STACKS)("the %s preview does not depend on any secret value", (stack) => {
  let first: PreviewOutput;
  let second: PreviewOutput;
  beforeAll(async () => {
    first = await buildPreview(ROOT, stack, secretsTagged(stack, "FIRST", 32), { generatedSecretSeed: "first" });
    second = await buildPreview(ROOT, stack, secretsTagged(stack, "SECOND", 47), { generatedSecretSeed: "second" });
  }, 300_000);

  test("the two runs really hold different secrets: every machine's user-data and every generated key differ, no secret is missing", () => {
    expect(first.run.config.missingSecrets).toEqual([]);
    expect(second.run.config.missingSecrets).toEqual([]);
    const hosts = Object.keys(first.run.userData).sort();
    expect(Object.keys(second.run.userData).sort()).toEqual(hosts);
    expect(hosts.length).toBe(9);
    for (const h of hosts) expect({ h, same: first.run.userData[h] === second.run.userData[h] }).toEqual({ h, same: false });
    // Every private key the mocks generated is another in the second run (by hash: never a value in a failure).
    const privateKeys = (out: PreviewOutput) => [...out.run.secretValues].filter((v) => PRIVATE_KEY_PEM.test(v)).map(sha);
    const secondKeys = new Set(privateKeys(second));
    expect(privateKeys(first).length).toBeGreaterThanOrEqual(9);
    expect(privateKeys(first).filter((h) => secondKeys.has(h))).toEqual([]);
  });

  test("every written file and the printed summary are byte-identical", () => {
    const a = visible(first);
    const b = visible(second);
    expect(Object.keys(a).filter((f) => f.startsWith("machines/"))).toHaveLength(9);
    expect(differences(a, b)).toEqual({});
    expect(first.checks.filter((k) => !k.ok)).toEqual([]);
  });
});

test("the check sees a value derived from a secret: a sha256 of the GitHub client secret in a resource's plain input (which the leak scan cannot find) makes the runs differ", async () => {
  const real = runModule.runPreview;
  const spy = jest.spyOn(runModule, "runPreview").mockImplementation(async (input, options) => {
    const run = await real(input, options);
    const secret = input.config["ci-fleet:teleportGithubClientSecret"];
    const [first] = run.resources;
    first.inputs = { ...first.inputs, secretDigest: crypto.createHash("sha256").update(secret).digest("hex") };
    return run;
  });
  try {
    const a = await buildPreview(ROOT, "production", secretsTagged("production", "FIRST", 32), { generatedSecretSeed: "first" });
    const b = await buildPreview(ROOT, "production", secretsTagged("production", "SECOND", 47), { generatedSecretSeed: "second" });
    expect(a.checks.find((k) => k.name === "no secret value in any written file")?.ok).toBe(true);
    expect(differences(visible(a), visible(b))).toEqual({ "resources.json": expect.stringMatching(/^line \d+ differs$/) });
  } finally {
    spy.mockRestore();
  }
}, 300_000);
