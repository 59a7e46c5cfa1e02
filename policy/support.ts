import { Secret } from "@pulumi/policy";

/**
 * Small, pure helpers shared by the ci-fleet policies. Nothing here reports a violation;
 * the policy files decide what is wrong.
 */

/** Tags the program puts on every machine and IAM role (see policy/README.md). */
export const FLEET_TAGS = {
  role: "ci-fleet:role",
  stack: "ci-fleet:stack",
  queue: "ci-fleet:queue",
} as const;

/** Values of `ci-fleet:role` on machines. */
export const MACHINE_ROLES = ["salt-master", "teleport", "runner"] as const;

/**
 * Values of `ci-fleet:role` on IAM roles (`host`: an aws runner's instance role, which can only
 * assume its queue's agent role). Every role of the stack carries one, so a deploy
 * role can never hide from the session-length rule by being untagged.
 */
export const IAM_ROLE_KINDS = ["agent", "host", "deploy", "salt-master", "teleport", "runner", "service"] as const;

/** What the offline preview writes in place of every secret value (docs: design.md). */
export const OFFLINE_SECRET_PLACEHOLDER = "[secret]";

export type Props = Record<string, unknown>;

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** AWS-style tags (`tags`, or `tagsAll` when the provider added default tags). */
export function awsTags(props: Props): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of ["tagsAll", "tags"]) {
    const tags = props[key];
    if (isRecord(tags)) {
      for (const [k, v] of Object.entries(tags)) {
        if (typeof v === "string") out[k] = v;
      }
    }
  }
  return out;
}

/** The stack a URN belongs to: `urn:pulumi:<stack>::<project>::<type>::<name>`. */
export function stackOfUrn(urn: string): string | undefined {
  const match = /^urn:pulumi:([^:]+)::/.exec(urn);
  return match ? match[1] : undefined;
}

/** `arn:aws:iam::123456789012:root` or a bare account id: the whole account is trusted. */
export function isAccountRootPrincipal(principal: string): boolean {
  return /^\d{12}$/.test(principal) || /^arn:aws[a-z-]*:iam::\d{12}:root$/.test(principal);
}

export interface PolicyStatement {
  Sid?: string;
  Effect?: string;
  Principal?: unknown;
  NotPrincipal?: unknown;
  Action?: unknown;
  NotAction?: unknown;
  Resource?: unknown;
  NotResource?: unknown;
  Condition?: unknown;
}

export type ParsedDocument = { ok: true; statements: PolicyStatement[] } | { ok: false; problem: string };

/** An IAM policy document given as a JSON string or as an object, exactly as the program passed it. */
export function parsePolicyDocument(document: unknown): ParsedDocument {
  let doc: unknown = document;
  if (typeof document === "string") {
    try {
      doc = JSON.parse(document);
    } catch {
      return { ok: false, problem: "is not valid JSON" };
    }
  }
  if (!isRecord(doc)) return { ok: false, problem: "is not a JSON object" };
  const statement = doc.Statement;
  const list = Array.isArray(statement) ? statement : statement === undefined ? [] : [statement];
  if (!list.every(isRecord)) return { ok: false, problem: "has a Statement that is not an object" };
  return { ok: true, statements: list as PolicyStatement[] };
}

/** A field that IAM accepts as a string or a list of strings. */
export function stringList(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === "string");
  return [];
}

/** Every principal string of `Principal: "*"` or `Principal: {AWS: [...], Service: ..., Federated: ...}`. */
export function principalStrings(principal: unknown): string[] {
  if (typeof principal === "string") return [principal];
  if (isRecord(principal)) return Object.values(principal).flatMap(stringList);
  return [];
}

export function isAllow(statement: PolicyStatement): boolean {
  return (statement.Effect ?? "Allow") === "Allow";
}

// --- secrets ---------------------------------------------------------------

/*
 * How @pulumi/policy 1.21.0 presents secrets (read from node_modules/@pulumi/policy):
 * - Analyze (validateResource, validateStack): deserializeProperties(props, false) unwraps
 *   every secret to its plain value, so a validation cannot tell a secret from a plain value.
 * - Remediate (remediateResource, run only for policies at enforcement level "remediate",
 *   before Analyze): deserializeProperties(props, true) keeps each secret as a `Secret`
 *   instance and wraps the bag in secretsPreservingProxy (which unwraps on read) inside
 *   unknownCheckingProxy. Both proxies answer "__getSpecialProxyTarget" with their target,
 *   so peeling them exposes the `Secret` instances.
 */
const SPECIAL_PROXY_FLAG = "__isSpecialProxy";
const SPECIAL_PROXY_TARGET = "__getSpecialProxyTarget";

/** The raw property bag under @pulumi/policy's proxies (the value itself when not proxied). */
export function unproxied(value: unknown): unknown {
  let current = value;
  for (let depth = 0; depth < 4 && typeof current === "object" && current !== null; depth++) {
    const bag = current as Record<string, unknown>;
    if (bag[SPECIAL_PROXY_FLAG] !== true) break;
    current = bag[SPECIAL_PROXY_TARGET];
  }
  return current;
}

/**
 * The sentinels @pulumi/policy uses for values unknown during preview (node_modules/@pulumi/policy/proxy.js).
 * Only the string one can stand for a whole userData value.
 */
export const UNKNOWN_STRING_SENTINEL = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

export type SecretState = "absent" | "secret" | "plain" | "unknown";

/** Secretness of one raw (unproxied) property value, as Remediate or the offline capture present it. */
export function secretStateOf(raw: unknown): SecretState {
  if (raw === undefined || raw === null || raw === "") return "absent";
  if (raw instanceof Secret) return "secret";
  if (raw === OFFLINE_SECRET_PLACEHOLDER) return "secret";
  // An unknown value that is secret arrives as a Secret; a bare sentinel may still become a
  // secret once known (the Node SDK drops secretness of unknowns): decide at `pulumi up`.
  if (raw === UNKNOWN_STRING_SENTINEL) return "unknown";
  return "plain";
}
