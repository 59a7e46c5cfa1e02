import * as fs from "fs";
import * as path from "path";
import * as YAML from "yaml";
import { OFFLINE_PLACEHOLDER } from "../../infra/config/load";

/**
 * Reads `Pulumi.yaml`, `Pulumi.<stack>.yaml` and an optional overlay into the flat config
 * map Pulumi gives a program (`<namespace>:<key>` -> string, objects JSON-encoded), the
 * list of secret keys, and the plain values of every secret (so the preview can prove
 * that none of them is ever written). `secure:` ciphertexts cannot be decrypted offline:
 * each becomes the placeholder, still a secret.
 */

export interface StackInput {
  project: string;
  stack: string;
  config: Record<string, string>;
  secretKeys: string[];
  /** Plain values of every secret leaf (never printed; used to scan output). */
  secretValues: string[];
  /** Secret config keys whose value is the placeholder (undecryptable `secure:` values). */
  undecryptable: string[];
}

export class StackFileError extends Error {}

type Obj = Record<string, unknown>;

function readYaml(file: string, what: string): Obj {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    throw new StackFileError(`${what} ${file} not found`);
  }
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (e) {
    throw new StackFileError(`${what} ${file} is not valid YAML: ${(e as Error).message.split("\n")[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== "object" || Array.isArray(doc)) throw new StackFileError(`${what} ${file} must be a YAML map`);
  return doc as Obj;
}

function isSecure(v: unknown): v is { secure: string } {
  return typeof v === "object" && v !== null && !Array.isArray(v) && Object.keys(v).length === 1 && typeof (v as Obj).secure === "string";
}

/** Replaces `secure:` leaves by the placeholder; reports whether any were found. */
function replaceSecure(v: unknown): { value: unknown; secure: boolean } {
  if (isSecure(v)) return { value: OFFLINE_PLACEHOLDER, secure: true };
  if (Array.isArray(v)) {
    const items = v.map(replaceSecure);
    return { value: items.map((i) => i.value), secure: items.some((i) => i.secure) };
  }
  if (typeof v === "object" && v !== null) {
    let secure = false;
    const out: Obj = {};
    for (const [k, x] of Object.entries(v as Obj)) {
      const r = replaceSecure(x);
      out[k] = r.value;
      secure ||= r.secure;
    }
    return { value: out, secure };
  }
  return { value: v, secure: false };
}

function leaves(v: unknown, into: string[]): void {
  if (typeof v === "string") into.push(v);
  else if (typeof v === "number" || typeof v === "boolean") into.push(String(v));
  else if (Array.isArray(v)) v.forEach((x) => leaves(x, into));
  else if (typeof v === "object" && v !== null) Object.values(v as Obj).forEach((x) => leaves(x, into));
}

function toConfigString(v: unknown): string {
  return typeof v === "string" ? v : JSON.stringify(v);
}

function qualify(project: string, key: string): string {
  return key.includes(":") ? key : `${project}:${key}`;
}

export function readStackInput(root: string, stack: string, overlayFile?: string): StackInput {
  const projectDoc = readYaml(path.join(root, "Pulumi.yaml"), "project file");
  const project = typeof projectDoc.name === "string" ? projectDoc.name : "";
  if (!project) throw new StackFileError("project file Pulumi.yaml has no name");
  const declaredSecret = new Set<string>();
  for (const [key, decl] of Object.entries((projectDoc.config as Obj | undefined) ?? {})) {
    if (typeof decl === "object" && decl !== null && (decl as Obj).secret === true) declaredSecret.add(qualify(project, key));
  }

  if (!/^[A-Za-z0-9_.-]+$/.test(stack)) throw new StackFileError(`stack name ${JSON.stringify(stack)} is not a valid Pulumi stack name`);
  const stackDoc = readYaml(path.join(root, `Pulumi.${stack}.yaml`), `stack file for stack ${stack}:`);
  const stackConfig = (stackDoc.config as Obj | undefined) ?? {};
  if (typeof stackConfig !== "object" || Array.isArray(stackConfig)) throw new StackFileError(`Pulumi.${stack}.yaml: config must be a map`);

  const merged = new Map<string, unknown>();
  for (const [k, v] of Object.entries(stackConfig)) merged.set(qualify(project, k), v);
  if (overlayFile) {
    const overlay = readYaml(overlayFile, "overlay file");
    const overlayConfig = overlay.config;
    if (typeof overlayConfig !== "object" || overlayConfig === null || Array.isArray(overlayConfig)) {
      throw new StackFileError(`overlay file ${overlayFile} must have a top-level config: map, like a stack file`);
    }
    // Key by key: an overlay value replaces the stack's value for that key as a whole.
    for (const [k, v] of Object.entries(overlayConfig as Obj)) merged.set(qualify(project, k), v);
  }

  const config: Record<string, string> = {};
  const secretKeys: string[] = [];
  const secretValues: string[] = [];
  const undecryptable: string[] = [];
  for (const key of [...merged.keys()].sort()) {
    const { value, secure } = replaceSecure(merged.get(key));
    if (value === null || value === undefined) continue;
    config[key] = toConfigString(value);
    if (secure || declaredSecret.has(key)) {
      secretKeys.push(key);
      leaves(value, secretValues);
    }
    if (secure) undecryptable.push(key);
  }
  return { project, stack, config, secretKeys, secretValues: [...new Set(secretValues)], undecryptable };
}
