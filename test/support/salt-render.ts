import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { pillarDocuments, previewStack, ROOT } from "./preview";

/**
 * Renders the Salt tree with real Jinja2 (test/salt/render.py) for every machine of a
 * stack, with the pillar documents the program itself writes to SSM (from the offline
 * preview), and returns what each minion would get.
 */

const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");

export interface RenderedMinion {
  problems: string[];
  /** The compiled pillar is exactly this minion's own document (chosen by its id). */
  pillar_equals_own_document: boolean;
  top_sls: string[];
  state_ids: string[];
  files: Record<string, string>;
  /** Each state's function and arguments, by state id. */
  states: Record<string, { sls: string; function: string; args: Record<string, unknown> }>;
}

export interface StackRender {
  minions: Record<string, RenderedMinion>;
  /** The preview's machine names. */
  machines: string[];
  /** Pillar keys of the documents that docs/contracts.md does not declare, and keys the tree reads that it does not. */
  fixture_problems: string[];
  pillar_paths_outside_contract: string[];
  /** The pillar document (`ci_fleet` etc.) each minion was rendered with. */
  documents: Record<string, { ci_fleet: PillarCiFleet }>;
}

export interface PillarCiFleet {
  stack: string;
  minion_id: string;
  aws: { region: string; ssm_prefix?: string };
  runner?: { queue: string; agent: string; trusted: boolean };
}

export async function renderStack(stack: string): Promise<StackRender> {
  const run = await previewStack(stack);
  const documents: StackRender["documents"] = pillarDocuments(run);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-bk-pillar-"));
  const file = path.join(dir, "documents.json");
  fs.writeFileSync(file, JSON.stringify(documents), { mode: 0o600 });
  try {
    const proc = spawnSync(
      python,
      [path.join(ROOT, "test/salt/render.py"), "--salt-root", path.join(ROOT, "salt"), "--contracts", path.join(ROOT, "docs/contracts.md"), "--documents", file],
      { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 },
    );
    if (proc.error) throw new Error(`cannot run ${python} (Debian package python3): ${proc.error.message}`);
    const result = JSON.parse(proc.stdout) as { fatal?: string } & Pick<StackRender, "minions" | "fixture_problems" | "pillar_paths_outside_contract">;
    if (result.fatal) throw new Error(result.fatal);
    if (proc.status !== 0) throw new Error(`render.py exited ${proc.status}:\n${proc.stderr}`);
    return {
      minions: result.minions,
      documents,
      machines: run.machines.map((m) => m.hostname),
      fixture_problems: result.fixture_problems,
      pillar_paths_outside_contract: result.pillar_paths_outside_contract,
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Renders with test/salt/fixtures.py's pillar (it has an untrusted Buildkite queue, staging-default-r1). */
export function renderFixtures(): Record<string, RenderedMinion> {
  const proc = spawnSync(python, [path.join(ROOT, "test/salt/render.py"), "--salt-root", path.join(ROOT, "salt"), "--contracts", path.join(ROOT, "docs/contracts.md")], {
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  if (proc.error) throw new Error(`cannot run ${python} (Debian package python3): ${proc.error.message}`);
  const result = JSON.parse(proc.stdout) as { fatal?: string; minions: Record<string, RenderedMinion> };
  if (result.fatal) throw new Error(result.fatal);
  if (proc.status !== 0) throw new Error(`render.py exited ${proc.status}:\n${proc.stderr}`);
  return result.minions;
}

