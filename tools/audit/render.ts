import { Actor, ENVIRONMENT_KEYS, Operation, ResourceChanges, SecretChangeWithUpdate } from "./model";
import { ConfigDiff, Filters, Timeline, TimelineEntry } from "./timeline";

/**
 * Human and JSON renderings of a timeline. Only key names, counts and recorded metadata
 * are printed: no config value, ciphertext or token reaches these functions.
 */

export interface RenderContext {
  project: string;
  stack: string;
  sourceDetail: string;
  /** Name of the stack file whose git history gave the secret changes. */
  stackFileName: string;
  /** Undefined when secret changes could not be read (reason in notes). */
  secretHistoryAvailable: boolean;
  notes: string[];
  filters: Filters;
  /** Operations before filtering. */
  totalOperations: number;
}

// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/g;

/** `2025-03-14 09:12:03` (UTC). */
export function humanTime(d: Date): string {
  return d.toISOString().replace("T", " ").replace(/\.\d{3}Z$/, "");
}

/** `2025-03-14T09:12:03Z`. */
export function isoTime(d: Date): string {
  return d.toISOString().replace(/\.000Z$/, "Z");
}

function versionLabel(op: { version?: number }): string {
  return op.version ? `v${op.version}` : "-";
}

function firstLine(text: string, max: number): string {
  const line = text.split(/\r?\n/).map((l) => l.trim()).find((l) => l !== "") ?? "";
  return line.length > max ? `${line.slice(0, max - 3)}...` : line;
}

function shortWho(a: Actor): string {
  return a.pulumiUser ?? a.gitAuthor ?? a.ciSystem ?? "-";
}

function person(name: string | undefined, email: string | undefined): string | undefined {
  if (name && email) return `${name} <${email}>`;
  return name ?? (email ? `<${email}>` : undefined);
}

export function describeActor(a: Actor): string {
  const parts: string[] = [];
  if (a.pulumiUser) parts.push(`Pulumi user ${a.pulumiUser}${a.pulumiUserName ? ` (${a.pulumiUserName})` : ""}`);
  const author = person(a.gitAuthor, a.gitAuthorEmail);
  if (author) parts.push(`git author ${author}`);
  const committer = person(a.gitCommitter, a.gitCommitterEmail);
  if (committer && committer !== author) parts.push(`committer ${committer}`);
  if (a.gitHead) {
    const ref = a.gitHeadName?.replace(/^refs\/heads\//, "");
    const extras = [ref, a.gitDirty === "true" ? "uncommitted changes" : undefined].filter(Boolean);
    parts.push(`commit ${a.gitHead.slice(0, 7)}${extras.length ? ` (${extras.join(", ")})` : ""}`);
  }
  if (a.vcsOwner && a.vcsRepo) parts.push(`repo ${a.vcsOwner}/${a.vcsRepo}${a.vcsKind ? ` on ${a.vcsKind}` : ""}`);
  if (a.ciSystem) {
    const build = a.ciBuildNumber ?? a.ciBuildId;
    parts.push(
      [`CI ${a.ciSystem}`, build ? `build ${build}` : undefined, a.ciBuildType, a.ciPrNumber ? `PR #${a.ciPrNumber}` : undefined, a.ciBuildUrl]
        .filter(Boolean)
        .join(" "),
    );
  }
  if (a.execKind || a.execAgent) parts.push(`via ${[a.execKind, a.execAgent ? `(${a.execAgent})` : undefined].filter(Boolean).join(" ")}`);
  return parts.join("; ");
}

export function describeResourceChanges(c: ResourceChanges): string {
  const parts: string[] = [];
  const add = (n: number, word: string) => {
    if (n > 0) parts.push(`${n} ${word}`);
  };
  add(c.created, "created");
  add(c.updated, "updated");
  add(c.replaced, "replaced");
  add(c.deleted, "deleted");
  add(c.imported, "imported");
  for (const [op, n] of Object.entries(c.other)) add(n, op);
  add(c.same, "same");
  return parts.length ? parts.join(", ") : "none";
}

export function describeConfigDiff(diff: ConfigDiff): string | undefined {
  if (diff.initial) {
    const secrets = diff.changes.filter((c) => c.secret).length;
    return `first recorded config: ${diff.changes.length} keys${secrets ? ` (${secrets} secret)` : ""}`;
  }
  const groups: Array<[string, (c: ConfigDiff["changes"][number]) => boolean]> = [
    ["added", (c) => !c.secret && c.change === "added"],
    ["changed", (c) => !c.secret && c.change === "changed"],
    ["removed", (c) => !c.secret && c.change === "removed"],
    ["secret set", (c) => c.secret && c.change === "set"],
    ["secret removed", (c) => c.secret && c.change === "removed"],
  ];
  const parts = groups
    .map(([label, pick]) => [label, diff.changes.filter(pick).map((c) => c.key)] as const)
    .filter(([, keys]) => keys.length > 0)
    .map(([label, keys]) => `${label} ${keys.join(", ")}`);
  return parts.length ? parts.join("; ") : undefined;
}

/** Consecutive changes of one kind in one commit, kept in order. */
function groupSecretChanges(changes: SecretChangeWithUpdate[]): SecretChangeWithUpdate[][] {
  const groups: SecretChangeWithUpdate[][] = [];
  for (const c of changes) {
    const last = groups[groups.length - 1];
    if (last && last[0].commit === c.commit && last[0].change === c.change) last.push(c);
    else groups.push([c]);
  }
  return groups;
}

function describeApplied(c: SecretChangeWithUpdate): string {
  if (!c.appliedBy) return "no update since";
  return `update ${versionLabel(c.appliedBy)} ${c.appliedBy.result} (by ${c.appliedBy.matchedBy})`;
}

function pad(cells: string[], widths: number[]): string {
  return cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]))).join("  ").trimEnd();
}

function table(header: string[], rows: string[][]): { head: string; lines: string[] } {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return { head: pad(header, widths), lines: rows.map((r) => pad(r, widths)) };
}

function detailLines(entry: TimelineEntry): string[] {
  const out: string[] = [];
  const detail = (label: string, text: string) => out.push(`    ${label.padEnd(9)}  ${text}`);
  const op = entry.op;
  if (op.resourceChanges) detail("resources", describeResourceChanges(op.resourceChanges));
  const who = describeActor(op.actor);
  if (who) detail("run by", who);
  const config = entry.config && describeConfigDiff(entry.config);
  if (config) detail("config", config);
  for (const group of groupSecretChanges(entry.secretChanges)) {
    const [first] = group;
    detail("secrets", `${first.change} ${group.map((c) => c.key).join(", ")} (commit ${first.commit.slice(0, 7)} by ${first.author})`);
  }
  return out;
}

function describeFilters(f: Filters): string {
  const parts: string[] = [];
  if (f.since) parts.push(`since ${isoTime(f.since)}`);
  if (f.user) parts.push(`user ${JSON.stringify(f.user)}`);
  if (f.kinds.length) parts.push(`kind ${f.kinds.join(",")}`);
  return parts.join(", ");
}

export function renderHuman(timeline: Timeline, ctx: RenderContext): string {
  const lines: string[] = [];
  const filters = describeFilters(ctx.filters);
  const count = filters
    ? `${timeline.entries.length} of ${ctx.totalOperations} operations (${filters})`
    : `${timeline.entries.length} operations`;
  lines.push(`Stack ${ctx.project}/${ctx.stack}: ${count}, newest first; times in UTC`);
  lines.push(`Source: ${ctx.sourceDetail}`);
  lines.push("");
  if (timeline.entries.length === 0) {
    lines.push("No operation matches the filters.");
  } else {
    const rows = timeline.entries.map(({ op }) => [
      humanTime(op.startTime),
      versionLabel(op),
      op.kind,
      op.result,
      shortWho(op.actor),
      firstLine(op.message, 72),
    ]);
    const t = table(["TIME", "VERSION", "KIND", "RESULT", "BY", "MESSAGE"], rows);
    lines.push(t.head);
    timeline.entries.forEach((entry, i) => lines.push(t.lines[i], ...detailLines(entry)));
  }
  lines.push("");
  if (!ctx.secretHistoryAvailable) {
    lines.push("Secret changes: not shown.");
  } else if (ctx.filters.kinds.length > 0 && !ctx.filters.kinds.includes("rotation")) {
    lines.push("Secret changes: not selected (add --kind rotation).");
  } else {
    lines.push(`Secret changes in the git history of ${ctx.stackFileName}, newest first (key names only):`);
    if (timeline.secretChanges.length === 0) {
      lines.push("none");
    } else {
      // A new secrets provider re-encrypts every secret: one line, not one per key.
      const collapsed = groupSecretChanges(timeline.secretChanges).flatMap((group) =>
        group[0].change === "re-encrypted" && group.length > 1 ? [{ ...group[0], key: `all ${group.length} secrets (secrets provider changed)` }] : group,
      );
      const rows = collapsed.map((c) => [
        humanTime(c.time),
        c.change,
        c.key,
        person(c.author, c.authorEmail) ?? "-",
        c.commit.slice(0, 7),
        describeApplied(c),
      ]);
      const t = table(["TIME", "CHANGE", "KEY", "BY", "COMMIT", "APPLIED BY"], rows);
      lines.push(t.head, ...t.lines);
    }
  }
  for (const note of ctx.notes) lines.push(`note: ${note}`);
  // Messages, names and keys are recorded by whoever ran pulumi: no terminal escapes.
  return lines.map((l) => l.replace(CONTROL_CHARACTERS, "\ufffd")).join("\n") + "\n";
}

function actorJson(a: Actor): Record<string, string> {
  const out: Record<string, string> = {};
  const order: Array<keyof Actor> = ["pulumiUser", "pulumiUserName", ...ENVIRONMENT_KEYS.map(([k]) => k).filter((k) => k !== "pulumiUser")];
  for (const k of order) if (a[k] !== undefined) out[k] = a[k]!;
  return out;
}

function resourceChangesJson(c: ResourceChanges) {
  return { created: c.created, updated: c.updated, deleted: c.deleted, same: c.same, replaced: c.replaced, imported: c.imported, other: c.other };
}

function operationJson(entry: TimelineEntry) {
  const op: Operation = entry.op;
  return {
    version: op.version ?? null,
    updateId: op.updateId ?? null,
    kind: op.kind,
    result: op.result,
    startTime: isoTime(op.startTime),
    endTime: op.endTime ? isoTime(op.endTime) : null,
    message: op.message,
    runBy: actorJson(op.actor),
    resourceChanges: op.resourceChanges ? resourceChangesJson(op.resourceChanges) : null,
    config: entry.config
      ? {
          baselineVersion: entry.config.baselineVersion ?? null,
          initial: entry.config.initial,
          changes: entry.config.changes.map((c) => ({ key: c.key, change: c.change, secret: c.secret })),
        }
      : null,
    secretChanges: entry.secretChanges.map((c) => ({ key: c.key, change: c.change, commit: c.commit })),
  };
}

function secretChangeJson(c: SecretChangeWithUpdate) {
  return {
    time: isoTime(c.time),
    key: c.key,
    change: c.change,
    commit: c.commit,
    author: c.author,
    authorEmail: c.authorEmail,
    subject: c.subject,
    appliedBy: c.appliedBy
      ? { version: c.appliedBy.version ?? null, result: c.appliedBy.result, startTime: isoTime(c.appliedBy.startTime), matchedBy: c.appliedBy.matchedBy }
      : null,
  };
}

export function renderJson(timeline: Timeline, ctx: RenderContext): string {
  const doc = {
    project: ctx.project,
    stack: ctx.stack,
    source: ctx.sourceDetail,
    filters: {
      since: ctx.filters.since ? isoTime(ctx.filters.since) : null,
      user: ctx.filters.user ?? null,
      kinds: ctx.filters.kinds,
    },
    totalOperations: ctx.totalOperations,
    operations: timeline.entries.map(operationJson),
    secretChanges: ctx.secretHistoryAvailable ? timeline.secretChanges.map(secretChangeJson) : null,
    notes: ctx.notes,
  };
  return JSON.stringify(doc, null, 2) + "\n";
}
