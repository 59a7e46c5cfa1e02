import { runUnsafeSimulation } from "@cloud-copilot/iam-simulate";
import { computeAccessMatrix } from "../../tools/preview/access-matrix";
import { buildPreview } from "../../tools/preview/main";
import { overlayFile, previewStack, ROOT, stackConfig } from "../support/preview";

/**
 * The preview at fleet scale, without a clock: deterministic cost measures (the leak scan's
 * steps, the IAM policy statements the evaluator is handed) must grow with the size of what
 * is checked, never with its square. The timed budgets live in `npm run bench`.
 */

// Every evaluation the access matrix asks for, and the policy statements it hands over.
const mockCost = { evaluations: 0, statements: 0 };
jest.mock("@cloud-copilot/iam-simulate", () => {
  const actual = jest.requireActual("@cloud-copilot/iam-simulate");
  type Doc = { Statement?: unknown[]; policyDocument?: { Statement?: unknown[] } };
  const count = (doc?: Doc) => (doc?.policyDocument ?? doc)?.Statement?.length ?? 0;
  const measure = (sim: { identityPolicies: { policy: Doc }[]; resourcePolicy?: Doc }) => {
    mockCost.evaluations++;
    mockCost.statements += sim.identityPolicies.reduce((a, p) => a + count(p.policy), 0) + count(sim.resourcePolicy);
  };
  return {
    ...actual,
    runSimulation: (sim: never, options: never) => (measure(sim), actual.runSimulation(sim, options)),
    runUnsafeSimulation: (sim: never, options: never) => (measure(sim), actual.runUnsafeSimulation(sim, options)),
  };
});

type Queues = Record<string, { runners: Record<string, unknown> }>;
const baseQueues = stackConfig("production")["ci-fleet:queues"] as Queues;

/** `runners` runners spread over the three queues of the stack file. */
function scaled(runners: number): Queues {
  const names = Object.keys(baseQueues);
  return Object.fromEntries(
    names.map((q, i) => {
      const count = Math.floor(runners / names.length) + (i < runners % names.length ? 1 : 0);
      return [q, { ...baseQueues[q], runners: Object.fromEntries(Array.from({ length: count }, (_, n) => [`${q}-${n + 1}`, { plan: "runner" }])) }];
    }),
  );
}

/** `count` queues (the stack's three, then trusted Buildkite queues like infra), one runner each. */
function manyQueues(count: number): Queues {
  const names = [...Object.keys(baseQueues), ...Array.from({ length: count - 3 }, (_, i) => `q${i + 4}`)];
  return Object.fromEntries(names.map((q) => [q, { ...(baseQueues[q] ?? baseQueues.infra), runners: { [`${q}-1`]: { plan: "runner" } } }]));
}

async function matrixCost(queues: number) {
  const run = await previewStack("production", { "ci-fleet:queues": manyQueues(queues) });
  const c = run.config;
  const ctx = { stack: c.stack, accountId: c.identity.accountId, region: c.identity.region, queues: Object.keys(c.queues).sort() };
  mockCost.evaluations = 0;
  mockCost.statements = 0;
  const matrix = await computeAccessMatrix(run.resources, ctx);
  expect(matrix.checks.filter((k) => !k.ok)).toEqual([]);
  const cells = matrix.assume.length + matrix.read.length;
  return { run, matrix, ctx, cells, ...mockCost };
}

describe("the preview's cost grows with the fleet, not with its square", () => {
  test("twice the runners: about twice the leak-scan work, the same access-matrix work", async () => {
    const measure = async (runners: number) => {
      mockCost.evaluations = 0;
      mockCost.statements = 0;
      const out = await buildPreview(ROOT, "production", overlayFile({ "ci-fleet:queues": scaled(runners) }));
      expect(out.checks.filter((k) => !k.ok)).toEqual([]);
      const bytes = Object.values(out.files).reduce((a, f) => a + f.length, 0);
      return { work: out.scanner.work, bytes, secrets: out.run.secretValues.size, ...mockCost };
    };
    const small = await measure(30);
    const large = await measure(60);
    console.log(`leak scan: 30 runners ${small.work} steps over ${small.bytes} characters (${small.secrets} secrets); 60 runners ${large.work} steps over ${large.bytes} (${large.secrets} secrets)`);
    // Secrets and bytes both double; a scan comparing each with each would quadruple.
    expect(large.secrets / small.secrets).toBeGreaterThan(1.7);
    expect(large.work / small.work).toBeLessThan(2.3);
    expect(large.work).toBeLessThan(large.bytes * 3);
    // Runners add no role and no path: the access matrix does not grow with them.
    expect(large.evaluations).toBe(small.evaluations);
    expect(large.statements).toBe(small.statements);
  }, 120_000);

  test("more queues: the access matrix costs a bounded number of policy statements per cell", async () => {
    const small = await matrixCost(4);
    const large = await matrixCost(16);
    const perCell = (m: { statements: number; cells: number }) => m.statements / m.cells;
    console.log(
      `access matrix: 4 queues ${small.cells} cells, ${small.evaluations} evaluations, ${small.statements} statements; ` +
        `16 queues ${large.cells} cells, ${large.evaluations} evaluations, ${large.statements} statements`,
    );
    // The matrix itself is queues × roles; each cell must cost the same however many queues
    // there are. (Evaluated against the whole key policy, which has a statement per reading
    // role, a cell's cost grew with the queues: queues³ in all.)
    expect(large.evaluations / large.cells).toBeLessThan((small.evaluations / small.cells) * 1.15);
    expect(perCell(large)).toBeLessThan(perCell(small) * 1.15);
  }, 120_000);

  test("kms:Decrypt decided on the key policy's statements for the role gives what the whole key policy gives", async () => {
    const { run, matrix, ctx } = await matrixCost(6);
    const key = run.resources.find((r) => r.type === "aws:kms/key:Key")!;
    const policy = JSON.parse(key.inputs.policy as string) as { Statement: unknown[] };
    expect(policy.Statement.length).toBeGreaterThan(6);
    const roles = new Map(run.resources.filter((r) => r.type === "aws:iam/role:Role").map((r) => [r.outputs.arn as string, r]));
    const rolePolicies = run.resources.filter((r) => r.type === "aws:iam/rolePolicy:RolePolicy");
    for (const row of matrix.read) {
      const role = roles.get(row.roleArn)!;
      const identity = rolePolicies
        .filter((p) => p.inputs.role === role.outputs.name || p.inputs.role === role.outputs.arn)
        .map((p) => ({ name: String(p.inputs.name), policy: typeof p.inputs.policy === "string" ? JSON.parse(p.inputs.policy) : p.inputs.policy }));
      const parameterArn = `arn:aws:ssm:${ctx.region}:${ctx.accountId}:parameter${row.path}access-matrix/probe`;
      const [, , , , account, resource] = row.roleArn.split(":");
      const whole = runUnsafeSimulation(
        {
          request: {
            principal: `arn:aws:sts::${account}:assumed-role/${resource.split("/").pop()}/access-matrix`,
            action: "kms:Decrypt",
            resource: { resource: key.outputs.arn as string, accountId: ctx.accountId },
            contextVariables: { "kms:ViaService": `ssm.${ctx.region}.amazonaws.com`, "kms:EncryptionContext:PARAMETER_ARN": parameterArn },
          },
          identityPolicies: identity,
          serviceControlPolicies: [],
          resourceControlPolicies: [],
          resourcePolicy: { __validated: true, policyDocument: policy, metadata: { name: "kms-key-policy" }, errors: [] } as never,
        },
        {},
      );
      expect({ role: row.role, path: row.path, decrypt: row.decrypt }).toEqual({ role: row.role, path: row.path, decrypt: whole });
    }
  }, 120_000);
});
