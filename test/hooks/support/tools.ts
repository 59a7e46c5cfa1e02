import { spawnSync } from "child_process";

/**
 * Fails (never skips) when a Debian tool the test needs is missing, naming the
 * package to install (scripts/debian-packages.txt lists them).
 */
export function requireTool(command: string, debianPackage: string): void {
  const found = spawnSync("sh", ["-c", `command -v ${command}`], { encoding: "utf8" });
  if (found.status !== 0) {
    throw new Error(`${command} is missing: install the Debian package ${debianPackage} (apt-get install ${debianPackage})`);
  }
}

/** Collects log lines for assertions (and proves no secret value was logged). */
export function logSink(): { lines: string[]; log: (line: string) => void } {
  const lines: string[] = [];
  return { lines, log: (line: string) => lines.push(line) };
}
