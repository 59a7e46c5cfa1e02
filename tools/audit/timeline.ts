import {
  AppliedBy,
  AuditError,
  ConfigValue,
  Operation,
  SecretChange,
  SecretChangeWithUpdate,
} from "./model";

/**
 * Pure assembly of the timeline: config changes between versions, secret changes tied to
 * the update that applied them, and the --since/--user/--kind filters.
 */

export interface ConfigChange {
  key: string;
  /** Plain keys: added/removed/changed. Secret keys are only ever "set" or "removed". */
  change: "added" | "removed" | "changed" | "set";
  secret: boolean;
}

export interface ConfigDiff {
  /** Version whose config this one is compared with; absent for the first recorded config. */
  baselineVersion?: number;
  initial: boolean;
  changes: ConfigChange[];
}

export interface TimelineEntry {
  op: Operation;
  config?: ConfigDiff;
  /** Secret changes from git that this update applied. */
  secretChanges: SecretChangeWithUpdate[];
}

export interface Timeline {
  /** Newest first. */
  entries: TimelineEntry[];
  /** Newest first. */
  secretChanges: SecretChangeWithUpdate[];
}

export function diffConfig(before: Map<string, ConfigValue>, after: Map<string, ConfigValue>): ConfigChange[] {
  const changes: ConfigChange[] = [];
  const keys = [...new Set([...before.keys(), ...after.keys()])].sort();
  for (const key of keys) {
    const was = before.get(key);
    const now = after.get(key);
    if (!was && now) {
      changes.push({ key, change: now.secret ? "set" : "added", secret: now.secret });
    } else if (was && !now) {
      changes.push({ key, change: "removed", secret: was.secret });
    } else if (was && now) {
      if (now.secret) {
        // A fingerprint exists only when the source gave ciphertexts (Pulumi Cloud).
        const reSet = !was.secret || (was.fingerprint !== undefined && now.fingerprint !== undefined && was.fingerprint !== now.fingerprint);
        if (reSet) changes.push({ key, change: "set", secret: true });
      } else if (was.secret || was.value !== now.value) {
        changes.push({ key, change: "changed", secret: false });
      }
    }
  }
  return changes;
}

function chronological(a: Operation, b: Operation): number {
  return a.startTime.getTime() - b.startTime.getTime() || (a.version ?? 0) - (b.version ?? 0);
}

function headMatches(gitHead: string | undefined, commit: string): boolean {
  return gitHead !== undefined && gitHead.length >= 7 && commit.toLowerCase().startsWith(gitHead.toLowerCase());
}

/** The update that carried a secret change: one run on that very commit, else the first one after it. */
export function findApplyingUpdate(change: SecretChange, ascendingOps: Operation[]): AppliedBy | undefined {
  const updates = ascendingOps.filter((op) => op.kind === "update");
  const byHead = updates.find((op) => headMatches(op.actor.gitHead, change.commit));
  if (byHead) return { version: byHead.version, result: byHead.result, startTime: byHead.startTime, matchedBy: "git.head" };
  const byTime = updates.find((op) => op.startTime.getTime() >= change.time.getTime());
  if (byTime) return { version: byTime.version, result: byTime.result, startTime: byTime.startTime, matchedBy: "time" };
  return undefined;
}

/**
 * Config of each operation is compared with the last earlier operation that was not a
 * preview: a preview shows what it would change, and does not become the baseline.
 */
export function buildTimeline(operations: Operation[], secretChanges: SecretChange[]): Timeline {
  const ascending = [...operations].sort(chronological);
  const entries: TimelineEntry[] = [];
  let baseline: { version?: number; config: Map<string, ConfigValue> } | undefined;
  for (const op of ascending) {
    const entry: TimelineEntry = { op, secretChanges: [] };
    if (op.config) {
      entry.config = {
        baselineVersion: baseline?.version,
        initial: baseline === undefined,
        changes: diffConfig(baseline?.config ?? new Map(), op.config),
      };
      if (op.kind !== "preview") baseline = { version: op.version, config: op.config };
    }
    entries.push(entry);
  }
  const withUpdates: SecretChangeWithUpdate[] = [...secretChanges]
    .sort((a, b) => a.time.getTime() - b.time.getTime())
    .map((change) => {
      const appliedBy = findApplyingUpdate(change, ascending);
      return appliedBy ? { ...change, appliedBy } : { ...change };
    });
  for (const change of withUpdates) {
    if (!change.appliedBy) continue;
    const entry = entries.find(
      (e) => e.op.kind === "update" && e.op.startTime.getTime() === change.appliedBy!.startTime.getTime() && e.op.version === change.appliedBy!.version,
    );
    entry?.secretChanges.push(change);
  }
  // Newest first; a stable sort keeps one commit's keys in name order.
  const newestFirst = [...withUpdates].sort((a, b) => b.time.getTime() - a.time.getTime());
  return { entries: entries.reverse(), secretChanges: newestFirst };
}

export const KNOWN_KINDS = ["update", "preview", "refresh", "destroy", "import", "rename", "rotation"] as const;

export interface Filters {
  since?: Date;
  /** Lower-cased. */
  user?: string;
  /** Empty: every kind. `rotation` selects the secret changes from git. */
  kinds: string[];
}

const UNIT_MS: Record<string, number> = { h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };

/** `2025-03-01`, an RFC 3339 time, or an age: `30d`, `12h`, `2w`. */
export function parseSince(text: string, now: Date): Date {
  const age = /^(\d+)([hdw])$/.exec(text.trim());
  if (age) return new Date(now.getTime() - Number(age[1]) * UNIT_MS[age[2]]);
  if (/^\d{4}-\d{2}-\d{2}$/.test(text)) {
    const t = Date.parse(`${text}T00:00:00Z`);
    if (Number.isFinite(t)) return new Date(t);
  }
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(text)) {
    const t = Date.parse(text);
    if (Number.isFinite(t)) return new Date(t);
  }
  throw new AuditError(`--since ${JSON.stringify(text)} is not a date (2025-03-01, RFC 3339) or an age (30d, 12h, 2w)`);
}

export function parseKinds(values: string[]): string[] {
  const kinds = values.flatMap((v) => v.split(",")).map((k) => k.trim().toLowerCase()).filter((k) => k !== "");
  for (const k of kinds) {
    if (!(KNOWN_KINDS as readonly string[]).includes(k)) {
      throw new AuditError(`--kind ${JSON.stringify(k)} is not one of ${KNOWN_KINDS.join(", ")}`);
    }
  }
  return [...new Set(kinds)];
}

function contains(haystack: string | undefined, needle: string): boolean {
  return haystack !== undefined && haystack.toLowerCase().includes(needle);
}

export function applyFilters(timeline: Timeline, filters: Filters): Timeline {
  const since = filters.since?.getTime();
  const user = filters.user;
  const kinds = filters.kinds;
  const entries = timeline.entries.filter(({ op }) => {
    if (since !== undefined && op.startTime.getTime() < since) return false;
    if (kinds.length > 0 && !kinds.includes(op.kind)) return false;
    if (user) {
      const a = op.actor;
      if (![a.pulumiUser, a.pulumiUserName, a.gitAuthor, a.gitAuthorEmail].some((v) => contains(v, user))) return false;
    }
    return true;
  });
  const secretChanges = timeline.secretChanges.filter((c) => {
    if (since !== undefined && c.time.getTime() < since) return false;
    if (kinds.length > 0 && !kinds.includes("rotation")) return false;
    if (user && !contains(c.author, user) && !contains(c.authorEmail, user)) return false;
    return true;
  });
  return { entries, secretChanges };
}
