import * as path from "path";
import * as YAML from "yaml";
import * as fs from "fs";
import * as os from "os";
import { runPreview, PreviewRun } from "../../tools/preview/run";
import { readStackInput } from "../../tools/preview/stack-files";

export const ROOT = path.resolve(__dirname, "../..");

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
