import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { previewStack, ROOT } from "../support/preview";

/**
 * The contract between the program and the Salt tree, end to end: the pillar documents the
 * program writes to SSM (taken from the offline preview, secrets as placeholders) are
 * served as the master's pillar sync serves them, and every sls of the tree renders with
 * them, for every machine of both production stacks, using only keys the contract declares.
 */

const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");

interface RenderResult {
  fatal?: string;
  minions: Record<string, { problems: string[]; top_sls: string[]; pillar_equals_own_document: boolean; state_ids: string[] }>;
  fixture_problems: string[];
  pillar_paths_outside_contract: string[];
}

describe.each(["production", "production-aws"])("the Salt tree with the pillar %s's program writes", (stack) => {
  let result: RenderResult;
  let machines: string[];
  beforeAll(async () => {
    const run = await previewStack(stack);
    machines = run.machines.map((m) => m.hostname);
    const documents: Record<string, unknown> = {};
    for (const [key, inputs] of run.rawInputs) {
      const name = inputs.name as string | undefined;
      if (key.startsWith("aws:ssm/parameter:Parameter::") && name?.startsWith(`/ci-fleet/${stack}/pillar/`)) {
        documents[name.slice(`/ci-fleet/${stack}/pillar/`.length)] = JSON.parse(inputs.value as string);
      }
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-pillar-"));
    const file = path.join(dir, "documents.json");
    fs.writeFileSync(file, JSON.stringify(documents), { mode: 0o600 });
    try {
      const proc = spawnSync(python, [path.join(__dirname, "render.py"), "--salt-root", path.join(ROOT, "salt"), "--contracts", path.join(ROOT, "docs/contracts.md"), "--documents", file], {
        encoding: "utf8",
        maxBuffer: 64 * 1024 * 1024,
      });
      if (proc.error) throw new Error(`cannot run ${python} (Debian package python3): ${proc.error.message}`);
      result = JSON.parse(proc.stdout) as RenderResult;
      if (result.fatal) throw new Error(result.fatal);
      if (proc.status !== 0) throw new Error(`render.py exited ${proc.status}:\n${proc.stderr}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("one document per machine, each served to its own minion only", () => {
    expect(Object.keys(result.minions).sort()).toEqual([...machines].sort());
    for (const [id, m] of Object.entries(result.minions)) expect({ id, own: m.pillar_equals_own_document }).toEqual({ id, own: true });
  });

  test("every document uses only keys docs/contracts.md declares, and the tree reads no others", () => {
    expect(result.fixture_problems).toEqual([]);
    expect(result.pillar_paths_outside_contract).toEqual([]);
  });

  test("every sls renders for every machine, with unique state ids and real Salt functions", () => {
    for (const [id, m] of Object.entries(result.minions)) {
      expect({ id, problems: m.problems }).toEqual({ id, problems: [] });
      expect(m.state_ids.length).toBeGreaterThan(10);
    }
  });

  test("each role gets its formulas", () => {
    const top = (suffix: string) => Object.entries(result.minions).find(([id]) => id.endsWith(suffix))![1].top_sls;
    expect(top("-salt-master")).toContain("salt_master");
    expect(top("-teleport")).toContain("teleport.auth");
    expect(top("-default-pr-1")).toEqual(expect.arrayContaining(["runner", "github_runner", "teleport.node"]));
    expect(top("-release-release-1")).toEqual(expect.arrayContaining(["runner", "buildkite", "teleport.node"]));
  });
});
