import { renderStack, type StackRender } from "../support/salt-render";

/**
 * The contract between the program and the Salt tree, end to end: the pillar documents the
 * program writes to SSM (taken from the offline preview, secrets as placeholders) are
 * served as the master's pillar sync serves them, and every sls of the tree renders with
 * them, for every machine of both production stacks, using only keys the contract declares.
 */

describe.each(["production", "production-aws"])("the Salt tree with the pillar %s's program writes", (stack) => {
  let result: StackRender;
  let machines: string[];
  beforeAll(async () => {
    result = await renderStack(stack);
    machines = result.machines;
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
    // isolation: vm: jobs run in the slots' VMs; a GitHub queue's host runs no runner of its own,
    // a Buildkite host keeps its agent, which hands each job to a slot.
    expect(top("-default-pr-1")).toEqual(expect.arrayContaining(["runner", "runner.job_vm", "teleport.node"]));
    expect(top("-default-pr-1")).not.toContain("github_runner");
    expect(top("-release-release-1")).toEqual(expect.arrayContaining(["runner", "runner.job_vm", "buildkite", "teleport.node"]));
  });
});
