/**
 * The normalised activity history of a stack, whatever source it came from
 * (`pulumi stack history --json`, the Pulumi Cloud REST API, or a saved file).
 *
 * Secret material never enters this model: a secret config value is kept only as a
 * sha256 fingerprint of whatever the source gave (ciphertext, or a value a careless
 * export included), so two versions can be compared without holding the secret.
 */

/** A one-line, user-facing failure: printed without a stack trace, exit code 2. */
export class AuditError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AuditError";
  }
}

export type ConfigValue =
  | { secret: false; value: string }
  | { secret: true; fingerprint?: string };

/** Who ran an operation, from `requestedBy` (Pulumi Cloud) and the recorded `environment`. */
export interface Actor {
  pulumiUser?: string;
  pulumiUserName?: string;
  gitAuthor?: string;
  gitAuthorEmail?: string;
  gitCommitter?: string;
  gitCommitterEmail?: string;
  gitHead?: string;
  gitHeadName?: string;
  gitDirty?: string;
  vcsOwner?: string;
  vcsRepo?: string;
  vcsKind?: string;
  ciSystem?: string;
  ciBuildId?: string;
  ciBuildNumber?: string;
  ciBuildType?: string;
  ciBuildUrl?: string;
  ciPrNumber?: string;
  execKind?: string;
  execAgent?: string;
}

/** The Pulumi `environment` keys we read, in the order the Actor lists them. */
export const ENVIRONMENT_KEYS: ReadonlyArray<[keyof Actor, string]> = [
  // Not a key the Pulumi CLI records; accepted when a wrapper adds it.
  ["pulumiUser", "pulumi.user"],
  ["gitAuthor", "git.author"],
  ["gitAuthorEmail", "git.author.email"],
  ["gitCommitter", "git.committer"],
  ["gitCommitterEmail", "git.committer.email"],
  ["gitHead", "git.head"],
  ["gitHeadName", "git.headName"],
  ["gitDirty", "git.dirty"],
  ["vcsOwner", "vcs.owner"],
  ["vcsRepo", "vcs.repo"],
  ["vcsKind", "vcs.kind"],
  ["ciSystem", "ci.system"],
  ["ciBuildId", "ci.build.id"],
  ["ciBuildNumber", "ci.build.number"],
  ["ciBuildType", "ci.build.type"],
  ["ciBuildUrl", "ci.build.url"],
  ["ciPrNumber", "ci.pr.number"],
  ["execKind", "exec.kind"],
  ["execAgent", "exec.agent"],
];

export interface ResourceChanges {
  created: number;
  updated: number;
  deleted: number;
  same: number;
  replaced: number;
  imported: number;
  /** Any other engine operation counted (read, refresh, discard, create-replacement...). */
  other: Record<string, number>;
}

export interface Operation {
  /** Stack version the operation produced or ran against; absent for some previews. */
  version?: number;
  updateId?: string;
  /** update | preview | refresh | destroy | import | rename ... as the backend recorded it. */
  kind: string;
  /** succeeded | failed | in-progress | not-started ... */
  result: string;
  startTime: Date;
  endTime?: Date;
  message: string;
  actor: Actor;
  resourceChanges?: ResourceChanges;
  /** Config the operation ran with; absent when the source did not record it. */
  config?: Map<string, ConfigValue>;
}

export type SourceKind = "cli" | "cloud" | "file";

export interface History {
  source: SourceKind;
  /** Human description of where the data came from (never contains a token). */
  sourceDetail: string;
  operations: Operation[];
}

/** A change to a `secure:` leaf of the stack file, found in its git history. */
export interface SecretChange {
  /** Leaf path in `pulumi config --path` syntax, e.g. `ci-fleet:queueSecrets.default["buildkite/agent-token"]`. */
  key: string;
  /**
   * added: a new secret; rotated: its ciphertext changed; removed: gone (or now plain);
   * re-encrypted: ciphertext changed because the secrets provider/key changed in the same commit.
   */
  change: "added" | "rotated" | "removed" | "re-encrypted";
  commit: string;
  author: string;
  authorEmail: string;
  time: Date;
  subject: string;
}

export interface AppliedBy {
  version?: number;
  result: string;
  startTime: Date;
  /** git.head: the update ran on exactly this commit; time: the first update after the commit. */
  matchedBy: "git.head" | "time";
}

export interface SecretChangeWithUpdate extends SecretChange {
  appliedBy?: AppliedBy;
}
