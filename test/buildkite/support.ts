
import type { StackRender } from "../support/salt-render";

/** Buildkite-specific reading of a rendered stack (the renderer is test/support/salt-render.ts). */
export { renderFixtures, renderStack, type PillarCiFleet, type RenderedMinion, type StackRender } from "../support/salt-render";

/** The minions of a render that run the buildkite formula. */
export function buildkiteMinions(render: StackRender): string[] {
  return Object.keys(render.minions)
    .filter((id) => render.minions[id].top_sls.includes("buildkite"))
    .sort();
}

/** A systemd unit file as `[section] -> [key, value][]` (values unquoted as systemd reads them). */
export function parseUnit(text: string): Map<string, [string, string][]> {
  const sections = new Map<string, [string, string][]>();
  let current: [string, string][] | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      current = [];
      sections.set(header[1], current);
      continue;
    }
    const eq = line.indexOf("=");
    if (eq < 0 || current === undefined) throw new Error(`not a unit line: ${raw}`);
    current.push([line.slice(0, eq).trim(), line.slice(eq + 1).trim()]);
  }
  return sections;
}

export function directives(unit: Map<string, [string, string][]>, section: string, key: string): string[] {
  return (unit.get(section) ?? []).filter(([k]) => k === key).map(([, v]) => v);
}

/**
 * The variables `Environment=` sets, as systemd.exec(5) parses them: space-separated
 * assignments, each optionally in double quotes.
 */
export function unitEnvironment(unit: Map<string, [string, string][]>): Map<string, string> {
  const env = new Map<string, string>();
  for (const value of directives(unit, "Service", "Environment")) {
    for (const match of value.matchAll(/"([^"]*)"|(\S+)/g)) {
      const assignment = match[1] ?? match[2];
      const eq = assignment.indexOf("=");
      if (eq <= 0) throw new Error(`Environment= assignment without a name: ${assignment}`);
      env.set(assignment.slice(0, eq), assignment.slice(eq + 1));
    }
  }
  return env;
}
