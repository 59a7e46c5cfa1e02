import * as path from "path";
import * as YAML from "yaml";
import * as fs from "fs";
import * as os from "os";
import { runPreview, PreviewRun } from "../../tools/preview/run";
import { readStackInput } from "../../tools/preview/stack-files";
import { githubClientId, githubClientSecret, rsaPrivateKeyPem } from "../config/secret-fixtures";

export const ROOT = path.resolve(__dirname, "../..");

/**
 * Planted secrets: long, unique, and searched for in every file the preview writes. Each is
 * shaped like the real value (the config check refuses malformed secrets), distinct per tag.
 */
export function plantedSecrets(tag: string): Record<string, unknown> {
  return {
    "ci-fleet:teleportGithubClientId": githubClientId(tag),
    "ci-fleet:teleportGithubClientSecret": githubClientSecret(tag),
    "ci-fleet:githubAppPrivateKey": rsaPrivateKeyPem(tag),
    "ci-fleet:queueSecrets": {
      infra: { buildkite: { "agent-token": `${tag}-bk-token-infra-5566778899` }, global: { env: { NPM_TOKEN: `${tag}-npm-token-$(rm -rf /)-'"` } } },
      release: { buildkite: { "agent-token": `${tag}-bk-token-release-1122334455` } },
    },
  };
}

/** Writes an overlay file (a stack-file-shaped `config:` map) and returns its path. */
export function overlayFile(config: Record<string, unknown>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-overlay-"));
  const file = path.join(dir, "overlay.yaml");
  fs.writeFileSync(file, YAML.stringify({ config }));
  return file;
}

/** Runs the program for a stack file of this repository (plus an optional overlay) under the mocks. */
export function previewStack(stack: string, overlay?: Record<string, unknown>): Promise<PreviewRun> {
  return runPreview(readStackInput(ROOT, stack, overlay ? overlayFile(overlay) : undefined));
}

/** The stack file's config map (for tests that change one key). */
export function stackConfig(stack: string): Record<string, unknown> {
  const doc = YAML.parse(fs.readFileSync(path.join(ROOT, `Pulumi.${stack}.yaml`), "utf8")) as { config: Record<string, unknown> };
  return doc.config;
}

export function countByType(run: PreviewRun): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of run.resources) out[r.type] = (out[r.type] ?? 0) + 1;
  return out;
}

/** The stack's pillar documents as the program writes them to SSM (`/ci-fleet/<stack>/pillar/<id>`), parsed, by minion id. */
export function pillarDocuments(run: PreviewRun): Record<string, any> {
  const prefix = `/ci-fleet/${run.config.stack}/pillar/`;
  const documents: Record<string, any> = {};
  for (const [key, inputs] of run.rawInputs) {
    const name = inputs.name as string | undefined;
    if (!key.startsWith("aws:ssm/parameter:Parameter::") || !name?.startsWith(prefix)) continue;
    const id = name.slice(prefix.length);
    if (!id.includes("/")) documents[id] = JSON.parse(inputs.value as string);
  }
  return documents;
}
