import { runSimulation } from "@cloud-copilot/iam-simulate";
import { previewStack } from "../support/preview";
import { drainRequestPath, drainRequesterPolicy } from "../../infra/identity/policies";

/**
 * The drain path's IAM, evaluated by an IAM policy engine against the policies the program
 * really registers, on both providers: the Salt master may list, answer and withdraw drain
 * requests and nothing more than it could before; no CI job (agent role) may touch them; and
 * the requester policy README documents for maintainers allows what the hook calls (SSM
 * PutParameter, GetParameter, DeleteParameter: infra/fleet/drain-hook.ts awsDrainSsm) there only.
 */
type Policy = { name: string; policy: object };
const asObject = (p: unknown) => (typeof p === "string" ? JSON.parse(p) : p) as object;

async function decide(principal: string, action: string, resource: string, accountId: string, identityPolicies: Policy[]): Promise<string> {
  const result = await runSimulation(
    {
      request: { principal, action, resource: { resource, accountId }, contextVariables: {} },
      identityPolicies,
      serviceControlPolicies: [],
      resourceControlPolicies: [],
    },
    {},
  );
  if (result.resultType === "error") throw new Error(`${action} ${resource}: ${JSON.stringify(result.errors)}`);
  return result.overallResult;
}

describe.each(["production", "production-aws"])("stack %s", (stack) => {
  let accountId: string;
  let region: string;
  let roles: { name: string; arn: string; policies: Policy[] }[];
  const param = (path: string) => `arn:aws:ssm:${region}:${accountId}:parameter${path}`;
  const drain = () => drainRequestPath(stack);

  beforeAll(async () => {
    const run = await previewStack(stack);
    accountId = run.config.identity.accountId;
    region = run.config.identity.region;
    roles = run.resources
      .filter((r) => r.type === "aws:iam/role:Role" && String(r.inputs.name).startsWith(`ci-fleet-${stack}-`))
      .map((r) => ({
        name: r.inputs.name as string,
        arn: r.outputs.arn as string,
        policies: run.resources
          .filter((p) => p.type === "aws:iam/rolePolicy:RolePolicy" && (p.outputs.role ?? p.inputs.role) === r.inputs.name)
          .map((p) => ({ name: p.inputs.name as string, policy: asObject(p.inputs.policy) })),
      }));
    expect(roles.map((r) => r.name)).toContain(`ci-fleet-${stack}-salt-master`);
  });

  const master = () => roles.find((r) => r.name === `ci-fleet-${stack}-salt-master`)!;

  test("the Salt master lists, answers and withdraws drain requests", async () => {
    const m = master();
    const request = param(`${drain()}/${stack}-default-r1`);
    for (const action of ["ssm:GetParameter", "ssm:PutParameter", "ssm:DeleteParameter"]) {
      expect([action, await decide(m.arn, action, request, accountId, m.policies)]).toEqual([action, "Allowed"]);
    }
    expect(await decide(m.arn, "ssm:GetParametersByPath", param(drain()), accountId, m.policies)).toBe("Allowed");
  });

  test.each([
    ["write a minion's pillar document", "ssm:PutParameter", (s: string) => `/ci-fleet/${s}/pillar/${s}-default-r1`],
    ["delete a minion's pillar document", "ssm:DeleteParameter", (s: string) => `/ci-fleet/${s}/pillar/${s}-default-r1`],
    ["write a queue secret", "ssm:PutParameter", (s: string) => `/ci-fleet/${s}/default/global/env/NPM_TOKEN`],
    ["write next to the drain path", "ssm:PutParameter", (s: string) => `/ci-fleet/${s}/salt-master/other`],
    ["write the drain path itself", "ssm:PutParameter", (s: string) => `/ci-fleet/${s}/salt-master/drain`],
    ["write another stack's drain requests", "ssm:PutParameter", () => `/ci-fleet/staging/salt-master/drain/staging-default-r1`],
  ])("the Salt master may not %s", async (_what, action, path) => {
    const m = master();
    expect(await decide(m.arn, action, param(path(stack)), accountId, m.policies)).toBe("ImplicitlyDenied");
  });

  test("the master cannot answer a drain request in another region", async () => {
    const m = master();
    const elsewhere = `arn:aws:ssm:eu-west-1:${accountId}:parameter${drain()}/${stack}-default-r1`;
    expect(await decide(m.arn, "ssm:PutParameter", elsewhere, accountId, m.policies)).toBe("ImplicitlyDenied");
  });

  test("no other fleet role (no CI job) may read or write drain requests", async () => {
    const others = roles.filter((r) => r.name !== master().name);
    expect(others.length).toBeGreaterThan(0);
    for (const role of others) {
      for (const action of ["ssm:GetParameter", "ssm:PutParameter", "ssm:DeleteParameter"]) {
        expect([role.name, action, await decide(role.arn, action, param(`${drain()}/${stack}-default-r1`), accountId, role.policies)]).toEqual([role.name, action, "ImplicitlyDenied"]);
      }
      expect([role.name, await decide(role.arn, "ssm:GetParametersByPath", param(drain()), accountId, role.policies)]).toEqual([role.name, "ImplicitlyDenied"]);
    }
  });

  test("the requester policy for maintainers allows the hook's three calls on drain requests, and nothing else", async () => {
    const maintainer = `arn:aws:iam::${accountId}:role/maintainer`;
    const policies = [{ name: "ci-fleet-drain-requests", policy: drainRequesterPolicy({ accountId, region, stack }) }];
    const request = param(`${drain()}/${stack}-default-r1`);
    for (const action of ["ssm:PutParameter", "ssm:GetParameter", "ssm:DeleteParameter"]) {
      expect([action, await decide(maintainer, action, request, accountId, policies)]).toEqual([action, "Allowed"]);
    }
    expect(await decide(maintainer, "ssm:PutParameter", param(`/ci-fleet/${stack}/pillar/${stack}-default-r1`), accountId, policies)).toBe("ImplicitlyDenied");
    expect(await decide(maintainer, "ssm:GetParameter", param(`/ci-fleet/${stack}/default/global/env/NPM_TOKEN`), accountId, policies)).toBe("ImplicitlyDenied");
    expect(await decide(maintainer, "ssm:GetParametersByPath", param(drain()), accountId, policies)).toBe("ImplicitlyDenied");
  });
});
