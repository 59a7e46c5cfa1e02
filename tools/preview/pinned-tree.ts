import { spawnSync } from "child_process";

/** What the Salt master would run: the files of the pinned commit that machines execute. */
export const PINNED_TREE_PATHS = ["salt", "cloud-init"];

export type PinnedTreeStatus =
  | { kind: "same"; ref: string }
  | { kind: "differs"; ref: string; files: string[] }
  | { kind: "not-in-clone"; ref: string }
  | { kind: "branch"; ref: string };

/**
 * Compares this checkout's Salt tree with the commit the stack pins. The master clones that
 * commit, and the master's first boot runs scripts from it: a checkout whose salt/ or
 * cloud-init/ differs from the pinned commit previews a fleet that `pulumi up` would not give.
 * After changing those trees, commit them, then pin that commit (saltMaster.ref).
 */
export function pinnedTreeStatus(root: string, ref: string, followBranch: boolean): PinnedTreeStatus {
  if (followBranch) return { kind: "branch", ref };
  const git = (args: string[]) => spawnSync("git", ["-C", root, ...args], { encoding: "utf8" });
  if (git(["cat-file", "-e", `${ref}^{commit}`]).status !== 0) return { kind: "not-in-clone", ref };
  const diff = git(["diff", "--name-only", ref, "--", ...PINNED_TREE_PATHS]);
  if (diff.status !== 0) throw new Error(`git diff against the pinned commit ${ref} failed: ${diff.stderr.trim()}`);
  const untracked = git(["ls-files", "--others", "--exclude-standard", "--", ...PINNED_TREE_PATHS]);
  const files = [...diff.stdout.split("\n"), ...untracked.stdout.split("\n")].map((l) => l.trim()).filter(Boolean).sort();
  return files.length === 0 ? { kind: "same", ref } : { kind: "differs", ref, files };
}

/** One line for `npm start`. */
export function pinnedTreeLine(status: PinnedTreeStatus): string {
  switch (status.kind) {
    case "same":
      return `pinned Salt tree: commit ${status.ref} has this checkout's salt/ and cloud-init/`;
    case "branch":
      return `pinned Salt tree: none (follows branch ${status.ref})`;
    case "not-in-clone":
      return `WARNING: pinned Salt tree: commit ${status.ref} is not in this clone; cannot check that the fleet runs this checkout's salt/ and cloud-init/`;
    case "differs": {
      const shown = status.files.slice(0, 5).join(", ") + (status.files.length > 5 ? `, and ${status.files.length - 5} more` : "");
      return `WARNING: pinned Salt tree: commit ${status.ref} differs from this checkout in ${status.files.length} file(s) (${shown}); machines will run the commit. Commit, then pin that commit in saltMaster.ref.`;
    }
  }
}
