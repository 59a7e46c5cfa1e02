import { createPrivateKey } from "crypto";
import type { ConfigProblem } from "./check";

/**
 * Shape checks of secret VALUES, run once at program start on the decrypted config
 * (`pulumi.runtime.allConfig()`), before anything is created. A problem names the config
 * path and what was expected; it never contains the value, nor any part of it. The
 * program still reads every secret only through `requireSecret*` (config/load.ts).
 */

/**
 * What the offline preview puts in place of a secret it cannot decrypt (or that is unset).
 * It is still handled as a secret everywhere; only the preview can produce it, and it
 * counts as missing, never as malformed.
 */
export const OFFLINE_PLACEHOLDER = "ci-fleet-offline-preview-placeholder";

/**
 * GitHub client ids: a GitHub App's (`Iv1.` + 16 hex, or since 2024 `Iv23` + 16
 * characters) or an OAuth App's (20 hex, or since 2024 `Ov23` + 16 characters).
 */
const GITHUB_CLIENT_ID = /^(Iv1\.[0-9a-f]{16}|(Iv|Ov)23[A-Za-z0-9]{16}|[0-9a-f]{20})$/;
const GITHUB_CLIENT_SECRET = /^[0-9a-f]{40}$/;
/** Buildkite's prefixes of tokens that are not agent registration tokens (docs: Token security). */
const BUILDKITE_OTHER_TOKENS: Record<string, string> = {
  bkua_: "a Buildkite API access token (bkua_)",
  bkaa_: "a Buildkite agent session token (bkaa_)",
  bkaj_: "a Buildkite agent job token (bkaj_)",
};
const BUILDKITE_AGENT_TOKEN = /^[A-Za-z0-9._-]{20,512}$/;
/** docs/job-secrets.md: one entry per line; blank lines and `#` comments ignored. */
const PIPELINE_SLUG = /^[a-z0-9][a-z0-9-]*$/;
const TEAM_SLUG = /^[a-z0-9][a-z0-9_-]*$/;

const OPENSSH_ARMOUR = /^-----BEGIN OPENSSH PRIVATE KEY-----\n([A-Za-z0-9+/=\n]+)\n-----END OPENSSH PRIVATE KEY-----$/;
const OPENSSH_MAGIC = "openssh-key-v1\0";

/** One trailing newline and no carriage returns, as cloud-config writes a key. */
function normalize(text: string): string {
  return text.replace(/\r/g, "").trim();
}

type KeyVerdict = "ok" | "armour" | "unreadable" | "passphrase";

/**
 * Reads an `openssh-key-v1` private key far enough to be sure it is one, and that it is
 * unencrypted (OpenSSH PROTOCOL.key): armour, base64, magic, cipher and KDF `none`, one
 * key, and the private section's two check words equal (only true when not encrypted).
 */
export function opensshKeyVerdict(value: string): KeyVerdict {
  const m = OPENSSH_ARMOUR.exec(normalize(value));
  if (!m) return "armour";
  const b64 = m[1].replace(/\n/g, "");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) return "unreadable";
  const blob = Buffer.from(b64, "base64");
  if (blob.subarray(0, OPENSSH_MAGIC.length).toString("latin1") !== OPENSSH_MAGIC) return "unreadable";
  let at = OPENSSH_MAGIC.length;
  const u32 = (): number | undefined => {
    if (at + 4 > blob.length) return undefined;
    const n = blob.readUInt32BE(at);
    at += 4;
    return n;
  };
  const bytes = (): Buffer | undefined => {
    const n = u32();
    if (n === undefined || at + n > blob.length) return undefined;
    const b = blob.subarray(at, at + n);
    at += n;
    return b;
  };
  const cipher = bytes()?.toString("latin1");
  const kdf = bytes()?.toString("latin1");
  const kdfOptions = bytes();
  const keys = u32();
  const publicKey = bytes();
  const privateSection = bytes();
  if (cipher === undefined || kdf === undefined || !kdfOptions || keys !== 1 || !publicKey || !privateSection || at !== blob.length) return "unreadable";
  if (cipher !== "none" || kdf !== "none") return "passphrase";
  if (kdfOptions.length !== 0 || privateSection.length < 8 || privateSection.length % 8 !== 0) return "unreadable";
  if (privateSection.readUInt32BE(0) !== privateSection.readUInt32BE(4)) return "unreadable";
  return "ok";
}

const SSH_MESSAGES: Record<Exclude<KeyVerdict, "ok">, string> = {
  armour: "expected an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----, as ssh-keygen writes it)",
  unreadable: "is armoured as an OpenSSH private key but is not a readable openssh-key-v1 key (truncated or altered?)",
  passphrase: "is protected by a passphrase, but it is used without a prompt: remove the passphrase (ssh-keygen -p -N '' -f KEY) and set it again",
};

/** Why a GitHub App private key is unusable, or undefined. Parsed with node's crypto; never printed. */
export function githubAppKeyProblem(value: string): string | undefined {
  const pem = normalize(value) + "\n";
  const unparsable = "expected the GitHub App's private key as GitHub issues it (-----BEGIN RSA PRIVATE KEY-----, unencrypted), but it does not parse as one";
  if (!/^-----BEGIN (RSA |EC )?PRIVATE KEY-----\n/.test(pem)) return unparsable;
  let key;
  try {
    key = createPrivateKey({ key: pem, format: "pem" });
  } catch {
    return unparsable;
  }
  if (key.asymmetricKeyType !== "rsa") return `is an ${key.asymmetricKeyType} key; a GitHub App's private key is RSA (download a new one from the App's settings)`;
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < 2048) return `is a ${bits}-bit RSA key; GitHub issues App keys of at least 2048 bits`;
  return undefined;
}

function accessListProblem(value: string, slug: RegExp, what: string): string | undefined {
  const lines = value.replace(/\r/g, "").split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "" || line.startsWith("#")) continue;
    if (!slug.test(line)) return `line ${i + 1} is not a Buildkite ${what}; one entry per line, # for comments`;
  }
  return undefined;
}

/** The check for one leaf of `queueSecrets`, by its path relative to the queue. */
function queueLeafProblem(rel: string, value: string): string | undefined {
  if (rel === "buildkite/agent-token") {
    const other = Object.keys(BUILDKITE_OTHER_TOKENS).find((p) => value.startsWith(p));
    if (other) return `is ${BUILDKITE_OTHER_TOKENS[other]}; the agent needs an agent token from the cluster's Agent Tokens page`;
    return BUILDKITE_AGENT_TOKEN.test(value) ? undefined : "expected a Buildkite agent token (one line, at least 20 letters, digits, '.', '_' or '-')";
  }
  if (rel.endsWith("/ssh/key")) {
    const verdict = opensshKeyVerdict(value);
    return verdict === "ok" ? undefined : SSH_MESSAGES[verdict];
  }
  if (rel.endsWith("/allowed_pipelines")) return accessListProblem(value, PIPELINE_SLUG, "pipeline slug (a-z, 0-9, '-')");
  if (rel.endsWith("/allowed_teams")) return accessListProblem(value, TEAM_SLUG, "team slug (a-z, 0-9, '-', '_')");
  if (/\/env\/[^/]+$/.test(rel)) return value === "" ? "is empty" : undefined;
  return undefined; // an unknown path is reported by the plain check (config/check.ts)
}

export interface SecretValuesInput {
  /** Decrypted values of the secret keys that are set (not those stored in plain text). */
  values: Partial<Record<"teleportGithubClientId" | "teleportGithubClientSecret" | "githubAppPrivateKey" | "saltRepositoryDeployKey", string>>;
  /** The decrypted `queueSecrets` tree (parsed), if set. */
  queueSecrets?: unknown;
}

/** Checks every secret value's shape; placeholders of the offline preview are skipped (missing). */
export function checkSecretValues(input: SecretValuesInput, ns = "ci-fleet"): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const add = (path: string, message: string | undefined) => {
    if (message) problems.push({ path: `${ns}:${path}`, message });
  };
  const value = (key: keyof SecretValuesInput["values"]): string | undefined => {
    const v = input.values[key];
    return v === undefined || v === OFFLINE_PLACEHOLDER ? undefined : v;
  };

  const clientId = value("teleportGithubClientId");
  if (clientId !== undefined && !GITHUB_CLIENT_ID.test(clientId)) {
    add("teleportGithubClientId", "expected a GitHub OAuth client id (Iv1. and 16 hex digits, 20 characters starting Iv23 or Ov23, or 20 hex digits)");
  }
  const clientSecret = value("teleportGithubClientSecret");
  if (clientSecret !== undefined && !GITHUB_CLIENT_SECRET.test(clientSecret)) add("teleportGithubClientSecret", "expected a GitHub OAuth client secret (40 hex digits)");
  const appKey = value("githubAppPrivateKey");
  if (appKey !== undefined) add("githubAppPrivateKey", githubAppKeyProblem(appKey));
  const deployKey = value("saltRepositoryDeployKey");
  if (deployKey !== undefined) {
    const verdict = opensshKeyVerdict(deployKey);
    if (verdict !== "ok") add("saltRepositoryDeployKey", SSH_MESSAGES[verdict]);
  }

  const tree = input.queueSecrets;
  if (typeof tree === "object" && tree !== null && !Array.isArray(tree)) {
    const walk = (queue: string, node: unknown, segments: string[]): void => {
      if (typeof node === "string") {
        if (node !== OFFLINE_PLACEHOLDER) add(`queueSecrets.${queue}.${segments.join(".")}`, queueLeafProblem(segments.join("/"), node));
        return;
      }
      if (typeof node === "object" && node !== null && !Array.isArray(node)) {
        for (const [k, v] of Object.entries(node as Record<string, unknown>)) walk(queue, v, [...segments, k]);
      }
      // Anything else is reported by the loader (queueSecretLeaves).
    };
    for (const [queue, node] of Object.entries(tree as Record<string, unknown>)) walk(queue, node, []);
  }
  return problems;
}
