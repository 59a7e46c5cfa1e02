import { createHash } from "crypto";
import {
  Actor,
  AuditError,
  ConfigValue,
  ENVIRONMENT_KEYS,
  Operation,
  ResourceChanges,
} from "./model";

/**
 * Pure parsers for the two documented history shapes:
 *
 * - `pulumi stack history --json --show-secrets=false`: an array, newest first, of
 *   `{version, kind, startTime, endTime, message, environment, config: {key: {value?, secret}},
 *   result, resourceChanges}`, times as strings.
 * - Pulumi Cloud `GET /api/stacks/{org}/{project}/{stack}/updates?output-type=service`:
 *   `{updates: [{info: {kind, startTime, endTime (unix seconds), message, environment,
 *   config: {key: {string, secret, object}}, result, resourceChanges, version}, updateID,
 *   version, requestedBy: {name, githubLogin}}], itemsPerPage, total}`.
 *
 * Every problem names the field (`[3].startTime`), never the value of a config entry.
 */

type Json = unknown;

function isObject(v: Json): v is Record<string, Json> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function malformed(label: string, field: string, problem: string): AuditError {
  return new AuditError(`malformed history in ${label}: ${field} ${problem}`);
}

/** Quote a value from the document for an error message, short and on one line. */
function shown(v: Json): string {
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
// Go's time.Time.String() form, printed by older CLIs: "2024-03-01 10:00:00 +0000 UTC".
const GO_TIME = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?) ([+-]\d{2})(\d{2})(?: [A-Za-z0-9+-]+)?$/;

/** RFC 3339 string, Go time string, or unix seconds (number or digit string). */
export function parseTime(v: Json): Date | undefined {
  let ms: number | undefined;
  if (typeof v === "number" && Number.isFinite(v) && v > 0) {
    ms = v * 1000;
  } else if (typeof v === "string") {
    const s = v.trim();
    const go = GO_TIME.exec(s);
    if (/^\d+$/.test(s)) ms = Number(s) * 1000;
    else if (RFC3339.test(s)) ms = Date.parse(s.replace(" ", "T"));
    else if (go) ms = Date.parse(`${go[1]}T${go[2]}${go[3]}:${go[4]}`);
  }
  return ms !== undefined && Number.isFinite(ms) ? new Date(ms) : undefined;
}

function requireTime(v: Json, label: string, field: string): Date {
  const t = parseTime(v);
  if (!t) throw malformed(label, field, `is not a time (RFC 3339 or unix seconds): ${shown(v)}`);
  return t;
}

function optionalString(v: Json, label: string, field: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw malformed(label, field, `must be a string, got ${shown(v)}`);
  return v;
}

function optionalVersion(v: Json, label: string, field: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    throw malformed(label, field, `must be a non-negative integer, got ${shown(v)}`);
  }
  return v;
}

export function parseEnvironment(v: Json, label: string, field: string): Actor {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw malformed(label, field, "must be an object of strings");
  const actor: Actor = {};
  for (const [prop, key] of ENVIRONMENT_KEYS) {
    const value = v[key];
    if (value === undefined || value === null || value === "") continue;
    if (typeof value !== "string") throw malformed(label, `${field}["${key}"]`, `must be a string, got ${shown(value)}`);
    actor[prop] = value;
  }
  return actor;
}

const CHANGE_FIELDS: Record<string, keyof Omit<ResourceChanges, "other">> = {
  create: "created",
  update: "updated",
  delete: "deleted",
  same: "same",
  replace: "replaced",
  import: "imported",
};

export function parseResourceChanges(v: Json, label: string, field: string): ResourceChanges | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw malformed(label, field, "must be an object of counts");
  const changes: ResourceChanges = { created: 0, updated: 0, deleted: 0, same: 0, replaced: 0, imported: 0, other: {} };
  for (const op of Object.keys(v).sort()) {
    const n = v[op];
    if (typeof n !== "number" || !Number.isInteger(n) || n < 0) {
      throw malformed(label, `${field}.${op}`, `must be a non-negative integer, got ${shown(n)}`);
    }
    const known = CHANGE_FIELDS[op];
    if (known) changes[known] += n;
    else changes.other[op] = n;
  }
  return changes;
}

function fingerprint(material: string): string {
  return createHash("sha256").update(material).digest("hex");
}

/**
 * `valueField` is `value` (CLI) or `string` (Cloud). A secret's value/ciphertext is reduced
 * to a fingerprint here and goes no further.
 */
export function parseConfig(
  v: Json,
  label: string,
  field: string,
  valueField: "value" | "string",
): Map<string, ConfigValue> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw malformed(label, field, "must be an object keyed by config key");
  const config = new Map<string, ConfigValue>();
  for (const key of Object.keys(v).sort()) {
    const entry = v[key];
    const where = `${field}["${key}"]`;
    if (!isObject(entry)) throw malformed(label, where, "must be an object like {value, secret}");
    const secret = entry.secret;
    if (secret !== undefined && typeof secret !== "boolean") throw malformed(label, `${where}.secret`, "must be true or false");
    // Either field name is accepted, so a Cloud response and a CLI export both read.
    const raw = entry[valueField] ?? entry[valueField === "value" ? "string" : "value"];
    if (raw !== undefined && raw !== null && typeof raw !== "string") {
      // Never show the value itself: it may be a secret.
      throw malformed(label, `${where}.${valueField}`, "must be a string");
    }
    if (secret === true) {
      config.set(key, typeof raw === "string" && raw !== "" ? { secret: true, fingerprint: fingerprint(raw) } : { secret: true });
    } else {
      config.set(key, { secret: false, value: typeof raw === "string" ? raw : "" });
    }
  }
  return config;
}

interface RawInfo {
  version?: Json;
  kind?: Json;
  startTime?: Json;
  endTime?: Json;
  message?: Json;
  environment?: Json;
  config?: Json;
  result?: Json;
  resourceChanges?: Json;
}

function parseInfo(
  info: RawInfo,
  label: string,
  at: string,
  valueField: "value" | "string",
  extra: { version?: number; updateId?: string; requestedBy?: Json },
): Operation {
  const kind = optionalString(info.kind, label, `${at}.kind`);
  if (!kind) throw malformed(label, `${at}.kind`, "is missing");
  const version = optionalVersion(info.version, label, `${at}.version`) ?? extra.version;
  const endTime = info.endTime === undefined || info.endTime === null || info.endTime === 0 || info.endTime === ""
    ? undefined
    : requireTime(info.endTime, label, `${at}.endTime`);
  const actor = parseEnvironment(info.environment, label, `${at}.environment`);
  if (extra.requestedBy !== undefined && extra.requestedBy !== null) {
    if (!isObject(extra.requestedBy)) throw malformed(label, "requestedBy", "must be an object");
    const login = optionalString(extra.requestedBy.githubLogin, label, "requestedBy.githubLogin");
    const name = optionalString(extra.requestedBy.name, label, "requestedBy.name");
    if (login || name) actor.pulumiUser = login || name;
    if (name && name !== actor.pulumiUser) actor.pulumiUserName = name;
  }
  const op: Operation = {
    kind,
    result: optionalString(info.result, label, `${at}.result`) || "unknown",
    startTime: requireTime(info.startTime, label, `${at}.startTime`),
    message: optionalString(info.message, label, `${at}.message`) ?? "",
    actor,
  };
  // Stack versions start at 1; previews are recorded with version 0, i.e. none.
  if (version) op.version = version;
  if (extra.updateId) op.updateId = extra.updateId;
  if (endTime) op.endTime = endTime;
  const changes = parseResourceChanges(info.resourceChanges, label, `${at}.resourceChanges`);
  if (changes) op.resourceChanges = changes;
  const config = parseConfig(info.config, label, `${at}.config`, valueField);
  if (config) op.config = config;
  return op;
}

/** `pulumi stack history --json` output. */
export function parseCliHistory(doc: Json, label: string): Operation[] {
  if (!Array.isArray(doc)) throw malformed(label, "the document", "must be a JSON array of updates");
  return doc.map((entry, i) => {
    if (!isObject(entry)) throw malformed(label, `[${i}]`, "must be an object");
    return parseInfo(entry, label, `[${i}]`, "value", {});
  });
}

export interface CloudPage {
  operations: Operation[];
  itemsPerPage?: number;
  total?: number;
}

/** One page of the Pulumi Cloud `.../updates?output-type=service` response. */
export function parseCloudPage(doc: Json, label: string): CloudPage {
  if (!isObject(doc)) throw malformed(label, "the document", "must be an object with an `updates` array");
  if (!Array.isArray(doc.updates)) throw malformed(label, "updates", "must be an array");
  const operations = doc.updates.map((entry, i) => {
    const at = `updates[${i}]`;
    if (!isObject(entry)) throw malformed(label, at, "must be an object");
    if (!isObject(entry.info)) throw malformed(label, `${at}.info`, "must be an object");
    return parseInfo(entry.info, label, `${at}.info`, "string", {
      version: optionalVersion(entry.version, label, `${at}.version`),
      updateId: optionalString(entry.updateID, label, `${at}.updateID`),
      requestedBy: entry.requestedBy,
    });
  });
  const page: CloudPage = { operations };
  if (typeof doc.itemsPerPage === "number") page.itemsPerPage = doc.itemsPerPage;
  if (typeof doc.total === "number") page.total = doc.total;
  return page;
}

/** A saved file of either shape, told apart by its top level. */
export function parseSavedHistory(doc: Json, label: string): { shape: "cli" | "cloud"; operations: Operation[] } {
  if (Array.isArray(doc)) return { shape: "cli", operations: parseCliHistory(doc, label) };
  if (isObject(doc) && "updates" in doc) return { shape: "cloud", operations: parseCloudPage(doc, label).operations };
  throw malformed(
    label,
    "the document",
    "is neither `pulumi stack history --json` output (an array) nor a Pulumi Cloud response (an object with `updates`)",
  );
}
