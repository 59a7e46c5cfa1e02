import * as pulumi from "@pulumi/pulumi";
import { checkFleetSettings, ConfigProblem, FleetConfigError, SECRET_KEYS } from "./check";
import { FleetConfig, FleetSecrets, SecretString } from "./model";
import { checkSecretValues, OFFLINE_PLACEHOLDER, SecretValuesInput } from "./secret-values";

/**
 * The only module that reads Pulumi config. Plain settings are checked all at once
 * (config/check.ts); secrets are read only with `requireSecret*`, so every value and
 * everything derived from it stays a Pulumi secret.
 */

export const NAMESPACE = "ci-fleet";

export { OFFLINE_PLACEHOLDER };

export interface LoadOptions {
  /** Offline preview: unset or undecryptable secrets become placeholders instead of errors. */
  offlinePreview?: boolean;
}

type Obj = Record<string, unknown>;

function parseValue(raw: string): unknown {
  const t = raw.trim();
  if (t.startsWith("{") || t.startsWith("[") || t === "true" || t === "false" || /^-?\d+(\.\d+)?$/.test(t)) {
    try {
      return JSON.parse(t);
    } catch {
      return raw;
    }
  }
  return raw;
}

/** Leaf paths of the `queueSecrets` tree: queue -> ["buildkite/agent-token", "global/env/NAME", ...]. */
export function queueSecretLeaves(tree: unknown): { paths: Record<string, string[]>; placeholders: string[]; problems: ConfigProblem[] } {
  const paths: Record<string, string[]> = {};
  const placeholders: string[] = [];
  const problems: ConfigProblem[] = [];
  if (typeof tree !== "object" || tree === null || Array.isArray(tree)) {
    problems.push({ path: `${NAMESPACE}:queueSecrets`, message: "expected a map of queues (set leaves with `pulumi config set --secret --path queueSecrets.<queue>.<level>.env.<NAME>`)" });
    return { paths, placeholders, problems };
  }
  const walk = (queue: string, node: unknown, segments: string[]): void => {
    if (typeof node === "string") {
      const rel = segments.join("/");
      (paths[queue] ??= []).push(rel);
      if (node === OFFLINE_PLACEHOLDER) placeholders.push(`queueSecrets.${queue}.${segments.join(".")}`);
      return;
    }
    if (typeof node === "object" && node !== null && !Array.isArray(node)) {
      for (const [k, v] of Object.entries(node as Obj)) walk(queue, v, [...segments, k]);
      return;
    }
    problems.push({ path: `${NAMESPACE}:queueSecrets.${queue}.${segments.join(".")}`, message: "expected a string value or a map" });
  };
  for (const [queue, node] of Object.entries(tree as Obj)) {
    paths[queue] ??= [];
    walk(queue, node, []);
  }
  return { paths, placeholders, problems };
}

function isStoredAsSecret(key: string): boolean {
  const rt = pulumi.runtime as unknown as { isConfigSecret?: (k: string) => boolean };
  return rt.isConfigSecret ? rt.isConfigSecret(key) : true;
}

/** Reads and checks the whole stack configuration; throws one FleetConfigError listing every problem. */
export function loadFleetConfig(options: LoadOptions = {}): FleetConfig {
  const stack = pulumi.getStack();
  const all = pulumi.runtime.allConfig();
  const cfg = new pulumi.Config(NAMESPACE);

  const values: Record<string, unknown> = {};
  const present = new Set<string>();
  const placeholders: string[] = [];
  const problems: ConfigProblem[] = [];
  let queueSecretPaths: Record<string, string[]> = {};
  // Decrypted secret values, only for the shape checks (config/secret-values.ts): never
  // echoed, never returned; the program reads secrets through requireSecret* below.
  const secretValues: SecretValuesInput = { values: {} };

  for (const [fullKey, raw] of Object.entries(all)) {
    if (!fullKey.startsWith(`${NAMESPACE}:`)) continue;
    const key = fullKey.slice(NAMESPACE.length + 1);
    if ((SECRET_KEYS as readonly string[]).includes(key)) {
      const plain = !isStoredAsSecret(fullKey);
      if (plain) {
        problems.push({ path: fullKey, message: `is stored in plain text; set it with \`pulumi config set --secret ${fullKey}\`` });
      }
      values[key] = "(secret)";
      if (key === "queueSecrets") {
        // Walk the structure to learn which paths exist (and, below, check each value's shape).
        const tree = parseValue(raw);
        if (!plain) secretValues.queueSecrets = tree;
        const leaves = queueSecretLeaves(tree);
        queueSecretPaths = leaves.paths;
        placeholders.push(...leaves.placeholders);
        problems.push(...leaves.problems);
        for (const [q, ps] of Object.entries(leaves.paths)) ps.forEach((p) => present.add(`queueSecrets.${q}.${p.split("/").join(".")}`));
      } else {
        present.add(key);
        if (raw === OFFLINE_PLACEHOLDER) placeholders.push(key);
        else if (!plain) secretValues.values[key as keyof SecretValuesInput["values"]] = raw;
      }
      continue;
    }
    values[key] = parseValue(raw);
  }

  const checked = checkFleetSettings({ stack, values, secretsPresent: present, queueSecretPaths });
  problems.push(...checked.problems);
  problems.push(...checkSecretValues(secretValues, NAMESPACE));

  const missingSecrets = new Set(placeholders);
  for (const s of checked.requiredSecrets) {
    if (present.has(s)) continue;
    if (options.offlinePreview) missingSecrets.add(s);
    else {
      const cmd = s.startsWith("queueSecrets.") ? `pulumi config set --secret --path ${NAMESPACE}:${s} <value>` : `pulumi config set --secret ${NAMESPACE}:${s} <value>`;
      problems.push({ path: `${NAMESPACE}:${s}`, message: `secret is required; set it with \`${cmd}\`` });
    }
  }
  if (!options.offlinePreview) {
    for (const p of placeholders) problems.push({ path: `${NAMESPACE}:${p}`, message: "holds the offline preview's placeholder, not a real secret" });
  }
  if (problems.length) throw new FleetConfigError(problems);
  const settings = checked.settings;
  if (!settings) throw new FleetConfigError([{ path: NAMESPACE, message: "configuration is incomplete" }]);

  const secret = (key: (typeof SECRET_KEYS)[number]): SecretString =>
    present.has(key) ? cfg.requireSecret(key) : pulumi.secret(OFFLINE_PLACEHOLDER);

  const tree = all[`${NAMESPACE}:queueSecrets`] !== undefined ? cfg.requireSecretObject<Obj>("queueSecrets") : undefined;
  const queueParameters: FleetSecrets["queueParameters"] = {};
  for (const queue of Object.keys(settings.queues)) {
    const params: Record<string, SecretString> = {};
    for (const rel of queueSecretPaths[queue] ?? []) {
      const segments = rel.split("/");
      params[rel] = tree!.apply((t) => segments.reduce<unknown>((n, s) => (n as Obj)[s], t[queue]) as string);
    }
    // Required but unset (offline preview only): a placeholder keeps the program's shape.
    if (settings.queues[queue].agent === "buildkite" && !params["buildkite/agent-token"]) {
      params["buildkite/agent-token"] = pulumi.secret(OFFLINE_PLACEHOLDER);
    }
    queueParameters[queue] = params;
  }

  const hasGithubQueue = Object.values(settings.queues).some((q) => q.agent === "github-actions");
  const secrets: FleetSecrets = {
    teleportGithubClientId: secret("teleportGithubClientId"),
    teleportGithubClientSecret: secret("teleportGithubClientSecret"),
    ...(hasGithubQueue ? { githubAppPrivateKey: secret("githubAppPrivateKey") } : {}),
    ...(present.has("saltRepositoryDeployKey") || checked.requiredSecrets.includes("saltRepositoryDeployKey")
      ? { saltRepositoryDeployKey: secret("saltRepositoryDeployKey") }
      : {}),
    queueParameters,
  };

  return {
    project: "ci-fleet",
    stack,
    ...settings,
    secrets,
    missingSecrets: [...missingSecrets].map((s) => `${NAMESPACE}:${s}`).sort(),
  };
}
