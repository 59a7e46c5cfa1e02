import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";
import { buildPreview, findSecretLeaks, writePreview } from "../../tools/preview/main";
import { overlayFile, plantedSecrets, previewStack, ROOT, stackConfig } from "../support/preview";
import { githubClientId, githubClientSecret, opensshPrivateKey } from "../config/secret-fixtures";

const run = promisify(execFile);

const PLANTED = plantedSecrets("PLANTED");

const DEPLOY_KEY = (tag: string) => opensshPrivateKey(tag);

function allFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? allFiles(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

describe("the offline preview", () => {
  test("two runs with the same input write byte-identical files", async () => {
    const a = await buildPreview(ROOT, "production");
    const b = await buildPreview(ROOT, "production");
    expect(Object.keys(b.files)).toEqual(Object.keys(a.files));
    for (const f of Object.keys(a.files)) expect(b.files[f]).toBe(a.files[f]);
    expect(Object.keys(a.files).filter((f) => f.startsWith("machines/"))).toHaveLength(9);
  });

  test("the production stacks pass every check, with missing secrets listed", async () => {
    for (const stack of ["production", "production-aws"]) {
      const out = await buildPreview(ROOT, stack);
      expect(out.checks.filter((k) => !k.ok)).toEqual([]);
      expect(out.run.config.missingSecrets).toEqual([
        "ci-fleet:githubAppPrivateKey",
        "ci-fleet:queueSecrets.infra.buildkite.agent-token",
        "ci-fleet:queueSecrets.release.buildkite.agent-token",
        "ci-fleet:teleportGithubClientId",
        "ci-fleet:teleportGithubClientSecret",
      ]);
      expect(out.files["report.md"]).toContain("## Missing secrets");
      const resources = JSON.parse(out.files["resources.json"]) as { stack: string; project: string; resources: unknown[] };
      expect(resources.stack).toBe(stack);
      expect(resources.project).toBe("ci-fleet");
    }
  });

  test("a planted secret value never appears in any written file", async () => {
    const out = await buildPreview(ROOT, "production", overlayFile(PLANTED));
    expect(out.run.config.missingSecrets).toEqual([]);
    // The planted values did reach the program (in memory)...
    const ssm = [...out.run.rawInputs.entries()].filter(([k]) => k.startsWith("aws:ssm/parameter:Parameter::"));
    // (the agent tokens inside their runners' pillar documents)
    expect(ssm.some(([, inputs]) => String(inputs.value).includes("PLANTED-bk-token-infra-5566778899"))).toBe(true);
    // ...and none of them was written, in any encoding.
    const dir = await writePreview(fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-out-")), "production", out.files);
    const written = Object.fromEntries(allFiles(dir).map((f) => [f, fs.readFileSync(f, "utf8")]));
    const appKeyLine = (PLANTED["ci-fleet:githubAppPrivateKey"] as string).split("\n")[1];
    const planted = [githubClientId("PLANTED"), githubClientSecret("PLANTED"), appKeyLine, "PLANTED-bk-token", "PLANTED-npm-token"];
    for (const [file, text] of Object.entries(written)) for (const p of planted) expect({ file, leaked: text.includes(p) }).toEqual({ file, leaked: false });
    expect(findSecretLeaks(written, out.run.secretValues)).toEqual([]);
    expect(out.checks.find((k) => k.name === "no secret value in any written file")?.ok).toBe(true);
  });

  test("the leak scan catches a secret in plain, base64 or JSON-escaped form", () => {
    const secret = "line one\nline \"two\"";
    expect(findSecretLeaks({ a: "x", b: `y ${secret}`, c: Buffer.from(secret).toString("base64"), d: JSON.stringify({ s: secret }) }, [secret])).toEqual(["b", "c", "d"]);
  });

  test("rotating every secret replaces no machine: only ignored user-data and SSM values change", async () => {
    const rotated = plantedSecrets("ROTATED");
    // A private salt repository puts a secret (its deploy key) into the master's user-data.
    const saltMaster = { ...(stackConfig("production")["ci-fleet:saltMaster"] as object), repository: "git@github.com:example-metal/ci-fleet.git" };
    const before = await previewStack("production", { ...PLANTED, "ci-fleet:saltMaster": saltMaster, "ci-fleet:saltRepositoryDeployKey": DEPLOY_KEY("PLANTED") });
    const after = await previewStack("production", { ...rotated, "ci-fleet:saltMaster": saltMaster, "ci-fleet:saltRepositoryDeployKey": DEPLOY_KEY("ROTATED") });
    expect([...after.rawInputs.keys()]).toEqual([...before.rawInputs.keys()]);

    const changed: Record<string, string[]> = {};
    for (const [key, inputs] of before.rawInputs) {
      const other = after.rawInputs.get(key)!;
      const fields = [...new Set([...Object.keys(inputs), ...Object.keys(other)])].filter((f) => JSON.stringify(inputs[f]) !== JSON.stringify(other[f]));
      if (fields.length) changed[key] = fields;
    }
    const options = new Map(before.resources.map((r) => [`${r.type}::${r.name}`, r.options]));
    expect(changed).toEqual({
      "equinix-metal:index/device:Device::production-salt-master-machine": ["userData"],
      "aws:ssm/parameter:Parameter::production-identity-param-infra/global/env/NPM_TOKEN": ["value"],
      // The Buildkite agent tokens: in the pillar documents of their queues' runners only.
      "aws:ssm/parameter:Parameter::production-pillars-production-infra-infra-1": ["value"],
      "aws:ssm/parameter:Parameter::production-pillars-production-infra-infra-2": ["value"],
      "aws:ssm/parameter:Parameter::production-pillars-production-release-release-1": ["value"],
      "aws:ssm/parameter:Parameter::production-pillars-production-salt-master": ["value"],
      "aws:ssm/parameter:Parameter::production-pillars-production-teleport": ["value"],
    });
    // The machine's only change is one Pulumi is told to ignore; an SSM value is updated in place.
    expect(options.get("equinix-metal:index/device:Device::production-salt-master-machine")?.ignoreChanges).toEqual(["userData"]);
    for (const key of Object.keys(changed)) expect(options.get(key)?.replaceOnChanges ?? []).toEqual([]);
  });

  describe("the command line", () => {
    const cli = (args: string[]) => run("node", ["-r", "ts-node/register/transpile-only", "tools/preview/main.ts", ...args], { cwd: ROOT, env: { ...process.env, TS_NODE_TRANSPILE_ONLY: "1" } });

    test("invalid config exits 1 with every problem listed and no stack trace", async () => {
      const bad = overlayFile({ "ci-fleet:provider": "gce", "ci-fleet:queues": { Default: { agent: "jenkins", trusted: "yes", runners: {} } } });
      const err = await cli(["--stack", "production", "--config", bad, "--out", fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-out-"))]).catch((e: { code: number; stderr: string; stdout: string }) => e);
      expect((err as { code: number }).code).toBe(1);
      const stderr = (err as { stderr: string }).stderr;
      expect(stderr).toContain("invalid stack configuration");
      for (const line of [
        'ci-fleet:provider: expected one of equinix-metal | aws, got "gce"',
        "ci-fleet:queues.Default: name must be a DNS label",
        'ci-fleet:queues.Default.agent: expected one of github-actions | buildkite, got "jenkins"',
        'ci-fleet:queues.Default.trusted: expected true or false, got "yes"',
        "ci-fleet:queues.Default.runners: expected at least one runner",
      ]) expect(stderr).toContain(line);
      expect(stderr).not.toMatch(/\n\s+at /);
    });

    test("an unknown stack exits 2 with one line", async () => {
      const err = (await cli(["--stack", "nope"]).catch((e) => e)) as { code: number; stderr: string };
      expect(err.code).toBe(2);
      expect(err.stderr.trim()).toBe("ci-fleet: stack file for stack nope: " + path.join(ROOT, "Pulumi.nope.yaml") + " not found");
    });
  });
});
