import { MachineProviderName } from "../../infra/config/model";
import { CapturedResource } from "../../tools/preview/mock-runtime";
import { AccessMatrix, accessMatrixPassed, computeAccessMatrix, renderAccessMatrixMarkdown } from "../../tools/preview/access-matrix";
import { Capture, captureIdentity, named, parsePolicy } from "./capture";
import { FLEET_ACCOUNT, INFRA_ACCOUNT_B, MANY_QUEUES, REGION, manyQueueFleet, productionFleet } from "./fleets";

const PROVIDERS: MachineProviderName[] = ["aws", "equinix-metal"];
const ROLE = "aws:iam/role:Role";
const ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy";

const ctxOf = (c: Capture) => ({ stack: c.config.stack, accountId: FLEET_ACCOUNT, region: REGION, queues: Object.keys(c.config.queues) });

// The evaluator's work, counted: requests evaluated (either entry point) and requests validated
// (runSimulation). The time this takes is the bench's (`npm run bench`: the access-matrix phase).
const mockWork = { evaluations: 0, validations: 0 };
jest.mock("@cloud-copilot/iam-simulate", () => {
  const actual = jest.requireActual("@cloud-copilot/iam-simulate");
  return {
    ...actual,
    runSimulation: (sim: never, options: never) => (mockWork.evaluations++, mockWork.validations++, actual.runSimulation(sim, options)),
    runUnsafeSimulation: (sim: never, options: never) => (mockWork.evaluations++, actual.runUnsafeSimulation(sim, options)),
  };
});

const runs = new Map<string, { capture: Capture; matrix: AccessMatrix; work: typeof mockWork }>();
beforeAll(async () => {
  for (const provider of PROVIDERS) {
    for (const [fleet, make] of [["production", productionFleet], ["many", manyQueueFleet]] as const) {
      const capture = await captureIdentity(() => make(provider));
      mockWork.evaluations = 0;
      mockWork.validations = 0;
      const matrix = await computeAccessMatrix(capture.resources, ctxOf(capture));
      runs.set(`${fleet}/${provider}`, { capture, matrix, work: { ...mockWork } });
    }
  }
});
const run = (fleet: string, provider: MachineProviderName) => runs.get(`${fleet}/${provider}`)!;

/** What config says: queue -> ARNs of its deploy roles. */
function configuredDeployArns(c: Capture): Set<string> {
  const pairs = new Set<string>();
  for (const [queue, spec] of Object.entries(c.config.queues)) {
    for (const target of Object.values(spec.deployTargets)) pairs.add(`${queue} -> arn:aws:iam::${target.accountId}:role/${target.roleName}`);
  }
  return pairs;
}

describe.each(PROVIDERS)("the registered policies on %s", (provider) => {
  test.each(["production", "many"])("%s fleet: every check passes", (fleet) => {
    const { matrix } = run(fleet, provider);
    expect(matrix.checks.filter((c) => !c.ok)).toEqual([]);
    expect(matrix.checks).toHaveLength(12);
    expect(accessMatrixPassed(matrix)).toBe(true);
  });

  test.each(["production", "many"])("%s fleet: agents assume exactly the deploy roles config gives their queue", (fleet) => {
    const { capture, matrix } = run(fleet, provider);
    const allowed = matrix.assume.filter((r) => r.decision === "Allowed").map((r) => `${r.queue} -> ${r.targetRoleArn}`);
    expect(new Set(allowed)).toEqual(configuredDeployArns(capture));
    const queues = Object.keys(capture.config.queues).length;
    const roles = capture.resources.filter((r) => r.type === ROLE).length;
    expect(matrix.assume).toHaveLength(queues * (roles - 1));
    expect(matrix.assume.every((r) => r.decision === "Allowed" || r.decision === "ImplicitlyDenied")).toBe(true);
  });

  test.each(["production", "many"])("%s fleet: each role reads only its own prefix", (fleet) => {
    const { capture, matrix } = run(fleet, provider);
    const stack = capture.config.stack;
    const queues = Object.keys(capture.config.queues).sort();
    expect(matrix.read).toHaveLength((queues.length + 2) * (queues.length + 1));
    const readable = matrix.read.filter((r) => r.getParameter === "Allowed" || r.getByPath === "Allowed" || r.decrypt === "Allowed").map((r) => `${r.role} ${r.path}`);
    expect(readable.sort()).toEqual([...queues.map((q) => `agent:${q} /ci-fleet/${stack}/${q}/`), `salt-master /ci-fleet/${stack}/pillar/`].sort());
    const own = matrix.read.filter((r) => r.expected);
    expect(own.every((r) => r.getParameter === "Allowed" && r.getByPath === "Allowed" && r.decrypt === "Allowed")).toBe(true);
  });
});

test("the production matrix, rendered (snapshot)", () => {
  const text = renderAccessMatrixMarkdown(run("production", "aws").matrix);
  expect(text).toMatchSnapshot();
  // Same trust boundaries whichever way machines wear their roles (aws has one host role more
  // per queue, so more (agent, role) pairs are evaluated; none is allowed on either).
  const tables = (markdown: string) => markdown.slice(0, markdown.indexOf("## Checks")).replace(/Other roles: 0 of \d+ /, "Other roles: 0 of N ");
  expect(tables(renderAccessMatrixMarkdown(run("production", "equinix-metal").matrix))).toBe(tables(text));
});

test(`the ${MANY_QUEUES}-queue matrix: a few evaluations per cell, and requests validated once per principal, trust and target, not per cell`, () => {
  for (const provider of PROVIDERS) {
    const small = run("production", provider);
    const large = run("many", provider);
    const cells = (m: AccessMatrix) => m.assume.length + m.read.length;
    console.log(
      `${provider}: production ${cells(small.matrix)} cells, ${small.work.evaluations} evaluations, ${small.work.validations} validated; ` +
        `${MANY_QUEUES} queues ${cells(large.matrix)} cells, ${large.work.evaluations} evaluations, ${large.work.validations} validated`,
    );
    for (const { matrix, work: w } of [small, large]) {
      // An assume cell is one request, a read cell three (GetParameter, GetParametersByPath,
      // kms:Decrypt), plus the probes of the checks.
      expect(w.evaluations).toBeGreaterThanOrEqual(cells(matrix));
      expect(w.evaluations).toBeLessThan(4 * cells(matrix));
    }
    // The cells grow with queues × roles; the validated requests only with the queues (each
    // principal's policies, each trust, each action on each path once).
    expect(cells(large.matrix) / cells(small.matrix)).toBeGreaterThan(10);
    expect(large.work.validations / small.work.validations).toBeLessThan(MANY_QUEUES / 3 + 1);
    expect(large.work.validations).toBeLessThan(large.work.evaluations / 4);
  }
});

describe("deliberately broken policies fail their checks", () => {
  const base = () => run("production", "aws");
  const clone = (): CapturedResource[] => JSON.parse(JSON.stringify(base().capture.resources));
  const evaluate = (resources: CapturedResource[]) => computeAccessMatrix(resources, ctxOf(base().capture));
  const failed = (m: AccessMatrix) => m.checks.filter((c) => !c.ok).map((c) => c.name).sort();
  const detailOf = (m: AccessMatrix, name: string) => m.checks.find((c) => c.name === name)?.detail ?? "";
  const setPolicy = (resources: CapturedResource[], type: string, name: string, field: string, edit: (doc: any) => void) => {
    const r = named(resources, type, name);
    const doc = parsePolicy(r.inputs[field]) as any;
    edit(doc);
    r.inputs[field] = JSON.stringify(doc);
  };

  test("an agent policy reading every queue's path", async () => {
    const resources = clone();
    setPolicy(resources, ROLE_POLICY, "identity-agent-default", "policy", (doc) => {
      doc.Statement[0] = { Sid: "ReadEverything", Effect: "Allow", Action: "ssm:GetParameter*", Resource: `arn:aws:ssm:${REGION}:${FLEET_ACCOUNT}:parameter/ci-fleet/production/*` };
    });
    const m = await evaluate(resources);
    expect(failed(m)).toEqual(["each role reads only its own SSM prefix"]);
    const detail = detailOf(m, "each role reads only its own SSM prefix");
    for (const path of ["infra", "release", "pillar"]) expect(detail).toContain(`agent:default on /ci-fleet/production/${path}/: GetParameter Allowed`);
    expect(renderAccessMatrixMarkdown(m)).toContain("**allow / allow / - (unexpected)**");
  });

  const TRUST_FAILURES = ["deploy roles trust only their queue's exact agent role ARN", "no other principal can assume a deploy role"];
  test.each([
    ["the fleet account's root", `arn:aws:iam::${FLEET_ACCOUNT}:root`, TRUST_FAILURES],
    // The infra agent (fleet account) is then locked out as well.
    ["the target account's root", `arn:aws:iam::${INFRA_ACCOUNT_B}:root`, ["agent roles assume exactly their queue's deploy roles", ...TRUST_FAILURES]],
    ["a bare account id", FLEET_ACCOUNT, TRUST_FAILURES],
  ])("a deploy role trusting %s", async (_what, principal, failures) => {
    const resources = clone();
    setPolicy(resources, ROLE, "identity-deploy-infra-dns", "assumeRolePolicy", (doc) => {
      doc.Statement[0].Principal = { AWS: principal };
    });
    const m = await evaluate(resources);
    expect(failed(m)).toEqual(failures);
    expect(detailOf(m, "no other principal can assume a deploy role")).toContain(`-> arn:aws:iam::${INFRA_ACCOUNT_B}:role/ci-fleet-production-deploy-dns: Allowed`);
  });

  test("a deploy role trusting everyone", async () => {
    const resources = clone();
    setPolicy(resources, ROLE, "identity-deploy-release-artifacts", "assumeRolePolicy", (doc) => {
      doc.Statement[0].Principal = "*";
    });
    const m = await evaluate(resources);
    expect(failed(m)).toEqual([
      "deploy roles trust only their queue's exact agent role ARN",
      "no other principal can assume a deploy role",
      'no wildcard principal and no Action "*" on Resource "*"',
    ]);
  });

  test("a Deny for everyone (e.g. deny without TLS) is not a wildcard grant", async () => {
    const resources = clone();
    setPolicy(resources, ROLE, "identity-deploy-release-artifacts", "assumeRolePolicy", (doc) => {
      doc.Statement.push({ Sid: "DenyInsecure", Effect: "Deny", Principal: "*", Action: "sts:AssumeRole", Condition: { Bool: { "aws:SecureTransport": "false" } } });
    });
    expect(failed(await evaluate(resources))).toEqual([]);
  });

  test("a deploy role also trusting the untrusted queue's agent role", async () => {
    const resources = clone();
    setPolicy(resources, ROLE, "identity-deploy-infra-dns", "assumeRolePolicy", (doc) => {
      doc.Statement.push({ Sid: "Oops", Effect: "Allow", Principal: { AWS: `arn:aws:iam::${FLEET_ACCOUNT}:role/ci-fleet-production-agent-default` }, Action: "sts:AssumeRole" });
    });
    // Cross-account: the trust alone is not enough while the default agent's own policy has no sts statement...
    const trustOnly = await evaluate(resources);
    expect(failed(trustOnly)).toEqual(["deploy roles trust only their queue's exact agent role ARN"]);
    // ...and with both, the matrix shows the escalation.
    setPolicy(resources, ROLE_POLICY, "identity-agent-default", "policy", (doc) => {
      doc.Statement.push({ Sid: "AssumeAnything", Effect: "Allow", Action: "sts:AssumeRole", Resource: "*" });
    });
    const both = await evaluate(resources);
    expect(failed(both)).toEqual(["agent roles assume exactly their queue's deploy roles", "deploy roles trust only their queue's exact agent role ARN"]);
    expect(detailOf(both, "agent roles assume exactly their queue's deploy roles")).toBe(
      `agent:default -> arn:aws:iam::${INFRA_ACCOUNT_B}:role/ci-fleet-production-deploy-dns: Allowed, expected denied`,
    );
  });

  test("an untrusted agent allowed to assume anything is still refused by every trust policy", async () => {
    const resources = clone();
    setPolicy(resources, ROLE_POLICY, "identity-agent-default", "policy", (doc) => {
      doc.Statement.push({ Sid: "AssumeAnything", Effect: "Allow", Action: "sts:AssumeRole", Resource: "*" });
    });
    expect(failed(await evaluate(resources))).toEqual([]);
  });

  test("a key policy letting an agent decrypt outside SSM", async () => {
    const resources = clone();
    setPolicy(resources, "aws:kms/key:Key", "identity-key", "policy", (doc) => {
      delete doc.Statement.find((s: { Sid: string }) => s.Sid === "DecryptViaSsmDefault").Condition;
    });
    const m = await evaluate(resources);
    expect(failed(m)).toEqual(["each role reads only its own SSM prefix", "kms:Decrypt is denied unless kms:ViaService is SSM"]);
    expect(detailOf(m, "kms:Decrypt is denied unless kms:ViaService is SSM")).toBe(
      "agent:default with ec2.us-east-1.amazonaws.com: Allowed; agent:default with no kms:ViaService: Allowed",
    );
  });

  test("an admin statement", async () => {
    const resources = clone();
    setPolicy(resources, ROLE_POLICY, "identity-salt-master", "policy", (doc) => {
      doc.Statement.push({ Sid: "Admin", Effect: "Allow", Action: "*", Resource: "*" });
    });
    const m = await evaluate(resources);
    // With the root delegating to IAM, an identity "*" also decrypts outside SSM.
    expect(failed(m)).toEqual(["each role reads only its own SSM prefix", "kms:Decrypt is denied unless kms:ViaService is SSM", 'no wildcard principal and no Action "*" on Resource "*"']);
  });

  test("a misspelled action is an evaluator error, not a silent deny", async () => {
    const resources = clone();
    setPolicy(resources, ROLE_POLICY, "identity-agent-infra", "policy", (doc) => {
      doc.Statement[0].Action = ["ssm:GetParamter"];
    });
    const m = await evaluate(resources);
    expect(failed(m)).toEqual(["each role reads only its own SSM prefix", "the evaluator accepted every request"]);
    expect(detailOf(m, "the evaluator accepted every request")).toBe('action ssm:GetParamter written in a policy: {"message":"invalid.action"}');
  });

  test("a policy the matrix cannot read, a managed policy on an agent, a missing role", async () => {
    const resources = clone();
    named(resources, ROLE_POLICY, "identity-agent-release").inputs.policy = "[secret]";
    resources.push({ type: "aws:iam/rolePolicyAttachment:RolePolicyAttachment", name: "admin", parent: "identity", inputs: { role: "ci-fleet-production-agent-default", policyArn: "arn:aws:iam::aws:policy/AdministratorAccess" }, outputs: {}, options: {} });
    const withoutTeleport = resources.filter((r) => !(r.type === ROLE && r.name === "identity-teleport"));
    const m = await evaluate(withoutTeleport);
    expect(failed(m)).toEqual([
      // the release agent, its policy unreadable, loses its own deploy role and path
      "agent roles assume exactly their queue's deploy roles",
      "each role reads only its own SSM prefix",
      "every policy is readable",
      "fleet identity registered",
      "fleet roles have only inline policies the matrix evaluated",
    ]);
    expect(detailOf(m, "fleet identity registered")).toBe("Teleport role");
    expect(renderAccessMatrixMarkdown(m)).toContain("| fleet identity registered | **FAILED** | Teleport role |");
  });
});
