import { createHook } from "async_hooks";
import { createHash } from "crypto";
import { spawnSync } from "child_process";
import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import { runUnsafeSimulation } from "@cloud-copilot/iam-simulate";
import { createFleet } from "../../infra/program";
import { computeAccessMatrix, deployTargetsOf } from "../../tools/preview/access-matrix";
import { buildPreview } from "../../tools/preview/main";
import { monitorReplyPatchPlan, PINNED_PULUMI_VERSION, runUnderMocks, structRoundTrip } from "../../tools/preview/mock-runtime";
import { Struct } from "google-protobuf/google/protobuf/struct_pb";
import { valueOf } from "../../tools/preview/run";
import { readStackInput } from "../../tools/preview/stack-files";
import { SCAN_TOTALS } from "../../tools/preview/secret-scan";
import { overlayFile, previewStack, ROOT, stackConfig } from "../support/preview";

/**
 * The preview at fleet scale, without a clock: deterministic cost measures (the leak scan's
 * steps, the IAM policy statements the evaluator is handed) must grow with the size of what
 * is checked, never with its square. The timed budgets live in `npm run bench`.
 */

// Every evaluation the access matrix asks for, and the policy statements it hands over.
const mockCost = { evaluations: 0, statements: 0, validations: 0 };
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
    runSimulation: (sim: never, options: never) => (measure(sim), mockCost.validations++, actual.runSimulation(sim, options)),
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
  const ctx = { stack: c.stack, accountId: c.identity.accountId, region: c.identity.region, queues: Object.keys(c.queues).sort(), deployTargets: deployTargetsOf(c.queues) };
  mockCost.evaluations = 0;
  mockCost.statements = 0;
  mockCost.validations = 0;
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
      // Every scanner built during the run, its building and its scans: not only the one returned.
      Object.assign(SCAN_TOTALS, { scanners: 0, buildWork: 0, work: 0, scannedChars: 0 });
      const out = await buildPreview(ROOT, "production", overlayFile({ "ci-fleet:queues": scaled(runners) }));
      expect(out.checks.filter((k) => !k.ok)).toEqual([]);
      const bytes = Object.values(out.files).reduce((a, f) => a + f.length, 0);
      const needleChars = out.scanner.needles.reduce((a, n) => a + n.length, 0);
      return { work: out.scanner.work, bytes, secrets: out.run.secretValues.size, needleChars, totals: { ...SCAN_TOTALS }, ...mockCost };
    };
    const small = await measure(30);
    const large = await measure(60);
    const cost = (m: typeof small) => m.totals.buildWork + m.totals.work;
    const size = (m: typeof small) => m.totals.scannedChars + m.needleChars;
    console.log(
      `leak scan: 30 runners ${small.work} steps over ${small.bytes} characters (${small.secrets} secrets), ${small.totals.scanners} scanner, build + scans ${cost(small)} for ${size(small)} characters scanned and looked for; ` +
        `60 runners ${large.work} steps over ${large.bytes} (${large.secrets} secrets), ${large.totals.scanners} scanner, build + scans ${cost(large)} for ${size(large)}`,
    );
    // Secrets and bytes both double; a scan comparing each with each would quadruple.
    expect(large.secrets / small.secrets).toBeGreaterThan(1.7);
    expect(large.work / small.work).toBeLessThan(2.3);
    // Each file is read as written and folded (line breaks removed): at most twice its bytes.
    expect(large.totals.scannedChars).toBeLessThanOrEqual(2 * large.bytes);
    expect(large.work).toBeLessThan(large.totals.scannedChars * 3);
    // One scanner per run, whatever the fleet (one per file made the build files × secrets),
    // and all its work, building included, linear in what it reads and what it looks for.
    expect([small.totals.scanners, large.totals.scanners]).toEqual([1, 1]);
    expect(large.needleChars / small.needleChars).toBeGreaterThan(1.7);
    expect(cost(large) / cost(small)).toBeLessThan(2.3);
    expect(cost(large)).toBeLessThan(size(large) * 4);
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

  test("more queues: requests validated grow with the queues, not with the cells; the decisions are those of validating each", async () => {
    const small = await matrixCost(4);
    const large = await matrixCost(16);
    console.log(`access matrix: 4 queues ${small.validations} of ${small.evaluations} requests validated; 16 queues ${large.validations} of ${large.evaluations}`);
    // Each principal's policies, each trust, each (action, resource) is validated once: a
    // few per role and per path. Validating every request made this queues × roles.
    expect(large.cells / small.cells).toBeGreaterThan(8);
    expect(large.validations / small.validations).toBeLessThan(4);
    expect(large.validations).toBeLessThan(large.evaluations / 4);
    const every = await computeAccessMatrix(large.run.resources, { ...large.ctx, validateEveryRequest: true });
    expect(large.matrix).toEqual(every);
  }, 120_000);

  test("the evaluator's case-insensitive comparisons (an ICU collator each) are not repeated for every request", async () => {
    const compare = jest.spyOn(String.prototype, "localeCompare");
    try {
      const large = await matrixCost(16);
      const calls = compare.mock.calls.filter(([, , options]) => (options as Intl.CollatorOptions | undefined)?.sensitivity === "accent").length;
      console.log(`access matrix: 16 queues, ${large.evaluations} evaluations, ${calls} case-insensitive comparisons by localeCompare`);
      // Each distinct pair of operator names is compared once (what remains are iam-utils'
      // characters, in the requests validated); comparing the operators anew in every
      // evaluation, about 30 times each, was a third of the matrix's time.
      expect(large.evaluations).toBeGreaterThan(1000);
      expect(calls).toBeLessThan(2 * large.evaluations);
    } finally {
      compare.mockRestore();
    }
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

/** Every resource object the program constructs, as the SDK registers it (runtime/resource.js registerResource). */
type Registered = { type: string; name: string; res: Record<string, unknown> };

/**
 * Each output property of each resource, read after the run: a digest of its value (never the
 * value: some are secret), whether it is known, whether it is secret, and the names of the
 * resources it depends on. Reading a deferred output makes it, from the registration's answer.
 */
async function outputsOf(registered: Registered[]) {
  const out: Record<string, Record<string, { value: string; known: boolean; secret: boolean; resources: string[] }>> = {};
  for (const { type, name, res } of registered) {
    const props: (typeof out)[string] = {};
    for (const k of Object.keys(res)) {
      const o = res[k];
      if (!pulumi.Output.isInstance(o)) continue;
      const i = o as unknown as { promise(): Promise<unknown>; isKnown: Promise<boolean>; isSecret: Promise<boolean>; allResources(): Promise<Set<{ __name?: string }>> };
      const [value, known, secret, deps] = await Promise.all([i.promise(), i.isKnown, i.isSecret, i.allResources()]);
      props[k] = { value: createHash("sha256").update(JSON.stringify(value) ?? "undefined").digest("hex").slice(0, 16), known, secret, resources: [...deps].map((r) => r.__name ?? "?").sort() };
    }
    out[`${type}::${name}`] = props;
  }
  return out;
}

/**
 * The program under the mocks for `stack` with `runners` runners, counting every promise made.
 * `sdk`: as with PULUMI_DEBUG_PROMISE_LEAKS=1 (runtime/debuggable.js reads it into
 * `debugPromiseLeaks` when loaded), which keeps every lean path out: the SDK's own code.
 */
async function programRun(stack: string, runners: number, mode: "lean" | "sdk" = "lean") {
  const base = stackConfig(stack)["ci-fleet:queues"] as Queues;
  const queues = Object.fromEntries(
    Object.keys(base).map((q, i) => {
      const count = Math.floor(runners / 3) + (i < runners % 3 ? 1 : 0);
      return [q, { ...base[q], runners: Object.fromEntries(Array.from({ length: count }, (_, n) => [`${q}-${n + 1}`, { plan: "runner" }])) }];
    }),
  );
  const input = readStackInput(ROOT, stack, overlayFile({ "ci-fleet:queues": queues }));
  const resourceRuntime = require("@pulumi/pulumi/runtime/resource") as { registerResource: (res: Record<string, unknown>, parent: unknown, t: string, name: string, ...rest: unknown[]) => unknown };
  const debuggable = require("@pulumi/pulumi/runtime/debuggable") as { debugPromiseLeaks: boolean };
  const register = resourceRuntime.registerResource;
  const registered: Registered[] = [];
  resourceRuntime.registerResource = (res, parent, t, name, ...rest) => (registered.push({ type: t, name, res }), register(res, parent, t, name, ...rest));
  const debugPromiseLeaks = debuggable.debugPromiseLeaks;
  if (mode === "sdk") debuggable.debugPromiseLeaks = true;
  let promises = 0;
  const hook = createHook({ init: (_id, type) => void (type === "PROMISE" && promises++) });
  hook.enable();
  try {
    const account = { accountId: "210987654321", region: "us-east-2" };
    const { result, mocks } = await runUnderMocks({ stack, account, config: input.config, secretKeys: input.secretKeys }, () => createFleet({ offlinePreview: true }));
    const userData = await Promise.all(result.fleet.machines.map(async (m) => [m.hostname, await valueOf(m.userData)] as const));
    return { promises, mocks, registered, userData: Object.fromEntries(userData) };
  } finally {
    hook.disable();
    resourceRuntime.registerResource = register;
    debuggable.debugPromiseLeaks = debugPromiseLeaks;
  }
}

describe("the mock runtime: linear, and no cost for resource outputs the program never reads", () => {
  test("twice the runners: about twice the promises; only the outputs read are made", async () => {
    for (const stack of ["production", "production-aws"]) {
      const small = await programRun(stack, 30);
      const large = await programRun(stack, 60);
      const w = large.mocks.work;
      console.log(
        `${stack}: 30 runners ${small.promises} promises, ${small.mocks.resources.length} resources; 60 runners ${large.promises} promises, ` +
          `${large.mocks.resources.length} resources, outputs made ${w.outputsMade} of ${w.outputsDeclared} declared, ${w.trackedPromises} tracked promises`,
      );
      // Every registration was answered by the monitor-reply patch (the pinned SDK: it must be in).
      expect(w.monitorReplies).toBe(large.mocks.resources.length);
      // Linear: the added runners cost what the first ones did, not more.
      expect(large.promises / small.promises).toBeLessThan(2.1);
      expect(large.mocks.work.trackedPromises / small.mocks.work.trackedPromises).toBeLessThan(2.1);
      // Each resource's class declares dozens of outputs; the program reads a few. Made
      // eagerly, they were most of the run's promises (and of its garbage collection).
      expect(w.outputsMade).toBeGreaterThan(0);
      expect(w.outputsMade / w.outputsDeclared).toBeLessThan(0.15);
    }
  }, 180_000);

  test("deferred outputs and the lean leak tracking record exactly what the SDK's own code does", async () => {
    for (const stack of ["production", "production-aws"]) {
      const lean = await programRun(stack, 5);
      const sdk = await programRun(stack, 5, "sdk");
      const recorded = (r: typeof lean) => ({
        resources: [...r.mocks.resources].sort((a, b) => (a.type + a.name < b.type + b.name ? -1 : 1)),
        rawInputs: [...r.mocks.rawInputs].sort(([a], [b]) => (a < b ? -1 : 1)),
        secretValues: [...r.mocks.secretValues].sort(),
        userData: r.userData,
      });
      expect(recorded(lean)).toEqual(recorded(sdk));
      // The lean paths were on in one run and off in the other.
      expect(lean.mocks.work.outputsMade).toBeLessThan(lean.mocks.work.outputsDeclared);
      expect(sdk.mocks.work).toEqual({ outputsDeclared: 0, outputsMade: 0, trackedPromises: 0, monitorReplies: 0 });
      expect(sdk.promises).toBeGreaterThan(lean.promises * 1.3);
      // Output by output, for every resource: the same value, known-ness, secretness and dependencies.
      const leanOutputs = await outputsOf(lean.registered);
      const sdkOutputs = await outputsOf(sdk.registered);
      expect(Object.keys(leanOutputs).length).toBe(lean.mocks.resources.length);
      expect(leanOutputs).toEqual(sdkOutputs);
      const flags = Object.values(leanOutputs).flatMap((props) => Object.values(props));
      // Not a comparison of nothing: secret outputs (keys, passwords), and thousands of outputs in all.
      expect(flags.filter((o) => o.secret).length).toBeGreaterThan(10);
      expect(flags.length).toBeGreaterThan(1000);
    }
  }, 300_000);

  test("the monitor's answer without protobuf: what Struct.fromJavaScript then toJavaScript gives", () => {
    const inherited = Object.assign(Object.create({ fromPrototype: "p" }) as Record<string, unknown>, { own: 1 });
    const values: Record<string, unknown>[] = [
      { b: 1, a: [true, null, "x", 2.5, -0, { z: [], y: {} }], "10": "ten", "9": "nine", "": "empty", Z: "upper", é: "accent" },
      { nested: { deeper: { list: [[1, 2], ["a"]], n: Number.MAX_SAFE_INTEGER } } },
      { inherited },
      {},
    ];
    for (const value of values) expect(JSON.stringify(structRoundTrip(value))).toBe(JSON.stringify(Struct.fromJavaScript(value as never).toJavaScript()));
    for (const bad of [{ u: undefined }, { f: () => 1 }, { s: Symbol("s") }]) {
      expect(() => Struct.fromJavaScript(bad as never)).toThrow();
      expect(() => structRoundTrip(bad)).toThrow();
    }
  });

  test("an output read before or after its registration, or never, behaves as the SDK's", async () => {
    const account = { accountId: "210987654321", region: "us-east-2" };
    let key!: tls.PrivateKey;
    let early!: pulumi.Output<string>;
    const { mocks } = await runUnderMocks({ stack: "scaling", account }, () => {
      key = new tls.PrivateKey("k", { algorithm: "ED25519" });
      early = key.publicKeyPem; // read while the registration is pending
    });
    const declared = mocks.work.outputsDeclared;
    expect(mocks.work.outputsMade).toBe(1);
    // Not read yet: no Output exists for it.
    expect(Object.getOwnPropertyDescriptor(key, "privateKeyOpenssh")?.get).toBeDefined();
    const late = key.privateKeyOpenssh; // read after the registration resolved
    expect(Object.getOwnPropertyDescriptor(key, "privateKeyOpenssh")).toMatchObject({ value: late, writable: true, enumerable: true });
    expect(key.privateKeyOpenssh).toBe(late);
    expect(mocks.work.outputsMade).toBe(2);
    expect(pulumi.Output.isInstance(late)).toBe(true);
    const captured = mocks.resources.find((r) => r.type === "tls:index/privateKey:PrivateKey")!;
    expect(await valueOf(early)).toBe(captured.outputs.publicKeyPem);
    expect(await valueOf(late)).toMatch(/^-----BEGIN EC PRIVATE KEY-----/);
    expect(await pulumi.isSecret(late)).toBe(true);
    expect(await pulumi.isSecret(early)).toBe(false);
    // The output still depends on its resource.
    expect((await (late as unknown as { allResources(): Promise<Set<unknown>> }).allResources()).has(key)).toBe(true);
    // Every declared property is there, enumerable, as the SDK's own fields are.
    expect(Object.keys(key)).toEqual(expect.arrayContaining(["algorithm", "privateKeyPem", "publicKeyOpenssh", "urn", "id"]));
    expect(declared).toBeGreaterThan(5);
    // An assignment replaces the property, as it would the SDK's field.
    (key as unknown as Record<string, unknown>).ecdsaCurve = "P256";
    expect(key.ecdsaCurve).toBe("P256");
    // Nothing the SDK tracks for leaks is left pending.
    const { getStore } = require("@pulumi/pulumi/runtime/state") as { getStore(): { leakCandidates: Set<unknown> } };
    expect(getStore().leakCandidates.size).toBe(0);
  });
});

describe("the mock runtime's SDK patches are never silently off", () => {
  const account = { accountId: "210987654321", region: "us-east-2" };

  test("the installed @pulumi/pulumi is the pinned one, and there every registration is answered by the monitor-reply patch", async () => {
    const pkg = require("../../package.json") as { dependencies: Record<string, string> };
    expect(PINNED_PULUMI_VERSION).toBe(pkg.dependencies["@pulumi/pulumi"]);
    expect((require("@pulumi/pulumi/package.json") as { version: string }).version).toBe(PINNED_PULUMI_VERSION);
    const { mocks } = await runUnderMocks({ stack: "patch", account }, () => {
      new tls.PrivateKey("a", { algorithm: "ED25519" });
      new tls.PrivateKey("b", { algorithm: "ED25519" });
    });
    // The stack and the two keys.
    expect(mocks.resources).toHaveLength(3);
    expect(mocks.work.monitorReplies).toBe(3);
  });

  test("the patch's rule: installed on the pinned SDK, an error there if its monitor has another shape, one warning on another SDK", () => {
    expect(monitorReplyPatchPlan("3.248.0", "3.248.0", true)).toEqual({ install: true });
    expect(() => monitorReplyPatchPlan("3.248.0", "3.248.0", false)).toThrow(/@pulumi\/pulumi 3\.248\.0 is the pinned version, but its MockMonitor .*\(run `npm ci`\)$/);
    for (const shape of [true, false]) {
      expect(monitorReplyPatchPlan("3.250.1", "3.248.0", shape)).toEqual({
        install: false,
        warning:
          "ci-fleet preview: warning: @pulumi/pulumi 3.250.1 is installed, not the pinned 3.248.0 (package.json); " +
          "the mock monitor's direct registration replies (a speed-up of the offline preview) are off, so the preview is slower. `npm ci` installs the pinned version.",
      });
    }
  });

  test("on another @pulumi/pulumi the preview prints that warning once, and runs without the patch", async () => {
    const writes: string[] = [];
    const stderr = jest.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => (writes.push(String(chunk)), true));
    try {
      let isolated!: { runtime: typeof import("../../tools/preview/mock-runtime"); tls: typeof tls };
      jest.isolateModules(() => {
        jest.doMock("@pulumi/pulumi/package.json", () => ({ ...jest.requireActual("@pulumi/pulumi/package.json"), version: "3.250.1" }));
        isolated = { runtime: require("../../tools/preview/mock-runtime"), tls: require("@pulumi/tls") };
      });
      const program = () => void new isolated.tls.PrivateKey("k", { algorithm: "ED25519" });
      const first = await isolated.runtime.runUnderMocks({ stack: "other-sdk", account }, program);
      const second = await isolated.runtime.runUnderMocks({ stack: "other-sdk", account }, program);
      for (const { mocks } of [first, second]) {
        expect(mocks.resources.map((r) => r.type)).toEqual(["pulumi:pulumi:Stack", "tls:index/privateKey:PrivateKey"]);
        expect(mocks.work.monitorReplies).toBe(0);
        // The other lean paths are not tied to the monitor's shape: still on.
        expect(mocks.work.trackedPromises).toBeGreaterThan(0);
      }
      const plan = monitorReplyPatchPlan("3.250.1", PINNED_PULUMI_VERSION, true);
      expect(plan.install).toBe(false);
      expect(writes).toEqual([`${(plan as { warning: string }).warning}\n`]);
    } finally {
      stderr.mockRestore();
      jest.dontMock("@pulumi/pulumi/package.json");
    }
  });

  /** A program under runUnderMocks in its own node process, as npm start runs it; `pending`: one resource whose input never settles. */
  function leakProbe(pending: boolean, env: Record<string, string> = {}) {
    const script = `
      const { runUnderMocks } = require("./tools/preview/mock-runtime");
      const tls = require("@pulumi/tls");
      runUnderMocks({ stack: "leak", account: ${JSON.stringify(account)} }, () => {
        new tls.PrivateKey("ok", { algorithm: "ED25519" });
        if (${pending}) new tls.PrivateKey("waits", { algorithm: new Promise(() => {}) });
      }).then(({ mocks }) => console.log("program finished: " + mocks.resources.length + " resources"));`;
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== "PULUMI_DEBUG_PROMISE_LEAKS"));
    const r = spawnSync(process.execPath, ["-r", "./tools/preview/ts-register.js", "-e", script], { cwd: ROOT, env: { ...base, ...env }, encoding: "utf8", timeout: 120_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  test("a promise left pending fails the process, under the lean leak tracking as under the SDK's own", () => {
    // Nothing pending: the run finishes and exits 0 (the probe itself works).
    expect(leakProbe(false)).toEqual({ status: 0, stdout: "program finished: 2 resources\n", stderr: "" });
    // The SDK's own tracking (PULUMI_DEBUG_PROMISE_LEAKS=1 keeps the lean paths out): exit 1, each leak named.
    const sdk = leakProbe(true, { PULUMI_DEBUG_PROMISE_LEAKS: "1" });
    expect(sdk.status).toBe(1);
    expect(sdk.stderr).toContain("Promise leak detected:\nCONTEXT(");
    expect(sdk.stderr).toContain("resolveURN(resource:waits[tls:index/privateKey:PrivateKey])");
    // The lean tracking hands the same promises to the SDK's leak set: its exit check fails the process too.
    const lean = leakProbe(true);
    expect(lean.stdout).toBe("");
    expect(lean.stderr).toMatch(/^The Pulumi runtime detected that \d+ promises were still active\nat the time that the process exited/);
    expect(lean.status).toBe(1);
  }, 300_000);
});
