/**
 * cloud-init's own validators, for every test that checks rendered user-data: its JSON
 * schema compiled with ajv, and the real `cloud-init schema` CLI (Debian package cloud-init).
 */
import { execFile } from "child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import * as path from "path";
import { promisify } from "util";
import Ajv from "ajv-draft-04";
import addFormats from "ajv-formats";
import type { ValidateFunction } from "ajv";
import { requireTool } from "../bootstrap/fixtures";

const execFileAsync = promisify(execFile);
export const CLOUD_CONFIG_SCHEMA_PATH = "/usr/lib/python3/dist-packages/cloudinit/config/schemas/schema-cloud-config-v1.json";

export function compileCloudInitSchema(): ValidateFunction {
  if (!existsSync(CLOUD_CONFIG_SCHEMA_PATH)) {
    throw new Error(`${CLOUD_CONFIG_SCHEMA_PATH} is missing: install the Debian package cloud-init (apt-get install cloud-init)`);
  }
  const ajv = new Ajv({ allErrors: true, strict: false });
  addFormats(ajv);
  return ajv.compile(JSON.parse(readFileSync(CLOUD_CONFIG_SCHEMA_PATH, "utf8")));
}

/** `cloud-init schema --config-file` on each text, in parallel: exit code and output. */
export async function cloudInitSchema(texts: Record<string, string>): Promise<Record<string, { code: number; output: string }>> {
  const cloudInit = requireTool("cloud-init", "cloud-init");
  const dir = mkdtempSync(path.join(tmpdir(), "ci-fleet-user-data-"));
  try {
    const results = await Promise.all(
      Object.entries(texts).map(async ([name, text]) => {
        const file = path.join(dir, name.replace(/[^a-z0-9-]+/gi, "_"));
        writeFileSync(file, text, { mode: 0o600 });
        try {
          const { stdout, stderr } = await execFileAsync(cloudInit, ["schema", "--config-file", file]);
          return [name, { code: 0, output: stdout + stderr }] as const;
        } catch (error) {
          const e = error as { code?: number; stdout?: string; stderr?: string };
          return [name, { code: typeof e.code === "number" ? e.code : -1, output: `${e.stdout ?? ""}${e.stderr ?? ""}` }] as const;
        }
      }),
    );
    return Object.fromEntries(results);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
