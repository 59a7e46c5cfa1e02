import { createHash } from "crypto";
import * as path from "path";
import YAML from "yaml";
import { SecretChange } from "./model";
import { RunProcess } from "./sources";

/**
 * Secret changes from the git history of `Pulumi.<stack>.yaml`: a `secure:` ciphertext
 * that changes for the same key is a rotation (`pulumi config set --secret` encrypts with
 * a fresh nonce, so even re-setting a value shows). Ciphertexts are reduced to sha256
 * fingerprints as soon as they are read; only key names leave this module.
 */

/** The secret leaves of one version of the stack file. */
export interface SecretSnapshot {
  /** Leaf path -> fingerprint of its ciphertext. */
  leaves: Map<string, string>;
  /** Fingerprint of secretsprovider/encryptedkey/encryptionsalt: when it changes, every ciphertext does. */
  provider: string;
}

export const EMPTY_SNAPSHOT: SecretSnapshot = { leaves: new Map(), provider: "" };

function fingerprint(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

const PLAIN_SEGMENT = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/** `pulumi config --path` syntax: `key.child["odd/name"][0]`. */
export function formatLeafPath(topKey: string, segments: Array<string | number>): string {
  let out = topKey;
  for (const s of segments) {
    if (typeof s === "number") out += `[${s}]`;
    else if (PLAIN_SEGMENT.test(s)) out += `.${s}`;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out;
}

function isSecureLeaf(v: unknown): v is { secure: string } {
  return (
    typeof v === "object" && v !== null && !Array.isArray(v) &&
    Object.keys(v).length === 1 && typeof (v as Record<string, unknown>).secure === "string"
  );
}

function collectLeaves(value: unknown, topKey: string, segments: Array<string | number>, into: Map<string, string>): void {
  if (isSecureLeaf(value)) {
    into.set(formatLeafPath(topKey, segments), fingerprint(value.secure));
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => collectLeaves(item, topKey, [...segments, i], into));
  } else if (typeof value === "object" && value !== null) {
    for (const [k, v] of Object.entries(value)) collectLeaves(v, topKey, [...segments, k], into);
  }
}

/** Throws a message-free error on invalid YAML, so no line of the file is ever quoted. */
export function secretSnapshot(stackFileText: string): SecretSnapshot {
  let doc: unknown;
  try {
    doc = YAML.parse(stackFileText);
  } catch {
    throw new Error("not valid YAML");
  }
  const top = (typeof doc === "object" && doc !== null ? doc : {}) as Record<string, unknown>;
  const leaves = new Map<string, string>();
  const config = top.config;
  if (typeof config === "object" && config !== null && !Array.isArray(config)) {
    for (const [key, value] of Object.entries(config)) collectLeaves(value, key, [], leaves);
  }
  const provider = fingerprint(
    JSON.stringify([top.secretsprovider ?? null, top.encryptedkey ?? null, top.encryptionsalt ?? null]),
  );
  return { leaves, provider };
}

export interface CommitInfo {
  commit: string;
  author: string;
  authorEmail: string;
  time: Date;
  subject: string;
}

/** What changed between two versions of the stack file, key names only. */
export function diffSecretSnapshots(before: SecretSnapshot, after: SecretSnapshot, commit: CommitInfo): SecretChange[] {
  const reEncrypted = before.leaves.size > 0 && before.provider !== after.provider;
  const changes: SecretChange[] = [];
  const keys = [...new Set([...before.leaves.keys(), ...after.leaves.keys()])].sort();
  for (const key of keys) {
    const was = before.leaves.get(key);
    const now = after.leaves.get(key);
    let change: SecretChange["change"] | undefined;
    if (was === undefined && now !== undefined) change = "added";
    else if (was !== undefined && now === undefined) change = "removed";
    else if (was !== now) change = reEncrypted ? "re-encrypted" : "rotated";
    if (change) changes.push({ key, change, ...commit });
  }
  return changes;
}

export interface SecretHistory {
  /** Oldest first. */
  changes: SecretChange[];
  /** Why the history is incomplete or absent; never contains file content. */
  notes: string[];
  available: boolean;
}

const RECORD = "\x1e";
const FIELD = "\x1f";

/**
 * Reads every version of the stack file with `git log --follow` + `git show REV:PATH`.
 * `stackFile` is a path to the file in a work tree (it may no longer exist there).
 */
export async function readSecretHistory(stackFile: string, run: RunProcess): Promise<SecretHistory> {
  const dir = path.dirname(path.resolve(stackFile));
  const name = path.basename(stackFile);
  const git = (args: string[]) => run("git", ["-c", "core.quotepath=off", ...args], { cwd: dir });
  const unavailable = (why: string): SecretHistory => ({ changes: [], notes: [why], available: false });

  let top;
  try {
    top = await git(["rev-parse", "--show-toplevel"]);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return unavailable("git is not installed (Debian package git): secret rotations not shown");
    return unavailable(`cannot run git: secret rotations not shown`);
  }
  if (top.code !== 0) return unavailable(`${dir} is not in a git repository: secret rotations not shown`);
  const root = top.stdout.trim();

  const log = await git([
    "log", "--follow", "--no-color", "--name-only",
    `--format=${RECORD}%H${FIELD}%an${FIELD}%ae${FIELD}%aI${FIELD}%s`,
    "--", name,
  ]);
  if (log.code !== 0) return unavailable(`git log of ${name} failed: secret rotations not shown`);

  const commits: Array<CommitInfo & { path: string }> = [];
  for (const record of log.stdout.split(RECORD)) {
    if (record.trim() === "") continue;
    const [header, ...rest] = record.split("\n");
    const [commit, author, authorEmail, date, subject] = header.split(FIELD);
    const filePath = rest.map((l) => l.trim()).filter((l) => l !== "").pop();
    if (!commit || !filePath) continue;
    commits.push({ commit, author, authorEmail, time: new Date(date), subject: subject ?? "", path: filePath });
  }
  if (commits.length === 0) {
    return unavailable(`${name} has no git history: secret rotations not shown`);
  }

  const notes: string[] = [];
  const changes: SecretChange[] = [];
  let previous = EMPTY_SNAPSHOT;
  for (const c of commits.reverse()) {
    const shown = await run("git", ["show", `${c.commit}:${c.path}`], { cwd: root });
    let snapshot: SecretSnapshot;
    if (shown.code !== 0) {
      snapshot = EMPTY_SNAPSHOT; // the commit deleted the file
    } else {
      try {
        snapshot = secretSnapshot(shown.stdout);
      } catch {
        notes.push(`commit ${c.commit.slice(0, 7)}: ${c.path} is not valid YAML; skipped`);
        continue;
      }
    }
    const { path: _ignored, ...info } = c;
    changes.push(...diffSecretSnapshots(previous, snapshot, info));
    previous = snapshot;
  }
  return { changes, notes, available: true };
}
