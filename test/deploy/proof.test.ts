import { MachineProviderName } from "../../infra/config/model";
import { AccessMatrix, accessMatrixPassed, computeAccessMatrix, deployTargetsOf, renderAccessMatrixMarkdown } from "../../tools/preview/access-matrix";
import { CapturedResource } from "../../tools/preview/mock-runtime";
import { Capture, captureIdentity, named, parsePolicy } from "../identity/capture";
import { FLEET_ACCOUNT, REGION, productionFleet } from "../identity/fleets";
import { previewStack } from "../support/preview";

/**
 * Issue 16, points 2 and 4: the program creates one OIDC provider per (account, issuer) and
 * trust policies with exact aud/sub; the IAM simulator (and the web-identity evaluator) prove
 * over the registered policies that sts:AssumeRoleWithWebIdentity is allowed exactly when intended,
 * while queue-role targets keep their proofs.
 */

const ROLE = "aws:iam/role:Role";
const OIDC = "aws:iam/openIdConnectProvider:OpenIdConnectProvider";
const WEB_ACCOUNT = "444444444444";

/** The identity test fleet plus a trusted GitHub Actions queue with ci-identity targets on both platforms. */
function fleet(provider: MachineProviderName) {
  const config = productionFleet(provider);
  config.queues.release.pipelines = ["release"];
  config.queues.release.deployTargets.artifacts.permissionsBoundaryArn = `arn:aws:iam::${config.queues.release.deployTargets.artifacts.accountId}:policy/boundary`;
  config.queues.release.deployTargets.signed = {
    accountId: WEB_ACCOUNT,
    roleName: "ci-fleet-production-deploy-signed",
    managedPolicyArns: [],
    permissionsBoundaryArn: `arn:aws:iam::${WEB_ACCOUNT}:policy/boundary`,
    trust: "ci-identity",
    identities: [{ platform: "buildkite", organization: "example-org", pipeline: "release", branch: "main" }],
  };
  config.queues.web = {
    agent: "github-actions",
    trusted: true,
    labels: ["deploy"],
    runnerGroup: "deploy",
    repositories: ["example-org/website", "example-org/docs"],
    runners: { w1: { plan: "metal" } },
    deployTargets: {
      website: {
        accountId: WEB_ACCOUNT,
        roleName: "ci-fleet-production-deploy-website",
        managedPolicyArns: [],
        permissionsBoundaryArn: `arn:aws:iam::${WEB_ACCOUNT}:policy/boundary`,
        trust: "ci-identity",
        identities: [
          { platform: "github-actions", repository: "example-org/website", ref: "refs/heads/main", workflow: ".github/workflows/release.yml@refs/heads/main", repositoryId: "812345678", ownerId: "41234567" },
          { platform: "github-actions", repository: "example-org/docs", environment: "production" },
        ],
      },
      previews: {
        accountId: WEB_ACCOUNT,
        roleName: "ci-fleet-production-deploy-previews",
        managedPolicyArns: [],
        trust: "ci-identity",
        identities: [{ platform: "github-actions", repository: "example-org/website", ref: "refs/pull/*", allowWildcard: true }],
      },
    },
  };
  return config;
}

const ctxOf = (c: Capture) => ({ stack: c.config.stack, accountId: FLEET_ACCOUNT, region: REGION, queues: Object.keys(c.config.queues), deployTargets: deployTargetsOf(c.config.queues) });
const runs = new Map<MachineProviderName, { capture: Capture; matrix: AccessMatrix }>();
beforeAll(async () => {
  for (const provider of ["aws", "equinix-metal"] as const) {
    const capture = await captureIdentity(() => fleet(provider));
    runs.set(provider, { capture, matrix: await computeAccessMatrix(capture.resources, ctxOf(capture)) });
  }
}, 120000);

describe.each(["aws", "equinix-metal"] as const)("on %s", (provider) => {
  test("one OIDC provider per (account, issuer), shared by the targets in that account", () => {
    const { resources } = runs.get(provider)!.capture;
    const providers = resources.filter((r) => r.type === OIDC).map((r) => ({ url: r.inputs.url, clients: r.inputs.clientIdLists, thumbprints: r.inputs.thumbprintLists, arn: r.outputs.arn }));
    expect(providers).toEqual([
      { url: "https://agent.buildkite.com", clients: ["sts.amazonaws.com"], thumbprints: undefined, arn: `arn:aws:iam::${WEB_ACCOUNT}:oidc-provider/agent.buildkite.com` },
      { url: "https://token.actions.githubusercontent.com", clients: ["sts.amazonaws.com"], thumbprints: undefined, arn: `arn:aws:iam::${WEB_ACCOUNT}:oidc-provider/token.actions.githubusercontent.com` },
    ]);
  });

  test("trust policies: exact aud and sub, both GitHub subject formats with their ids, the workflow, the Buildkite organisation", () => {
    const { resources } = runs.get(provider)!.capture;
    const trust = (name: string) => parsePolicy(named(resources, ROLE, name).inputs.assumeRolePolicy) as any;
    const gh = "token.actions.githubusercontent.com";
    expect(trust("identity-deploy-web-website").Statement).toEqual([
      {
        Sid: "GithubActionsJob1",
        Effect: "Allow",
        Principal: { Federated: `arn:aws:iam::${WEB_ACCOUNT}:oidc-provider/${gh}` },
        Action: "sts:AssumeRoleWithWebIdentity",
        Condition: {
          StringEquals: {
            [`${gh}:aud`]: "sts.amazonaws.com",
            [`${gh}:sub`]: "repo:example-org/docs:environment:production",
            [`${gh}:repository`]: "example-org/docs",
            [`${gh}:environment`]: "production",
          },
        },
      },
      {
        Sid: "GithubActionsJob2",
        Effect: "Allow",
        Principal: { Federated: `arn:aws:iam::${WEB_ACCOUNT}:oidc-provider/${gh}` },
        Action: "sts:AssumeRoleWithWebIdentity",
        Condition: {
          StringEquals: {
            [`${gh}:aud`]: "sts.amazonaws.com",
            [`${gh}:sub`]: ["repo:example-org/website:ref:refs/heads/main", "repo:example-org@41234567/website@812345678:ref:refs/heads/main"],
            [`${gh}:repository`]: "example-org/website",
            [`${gh}:ref`]: "refs/heads/main",
            [`${gh}:job_workflow_ref`]: "example-org/website/.github/workflows/release.yml@refs/heads/main",
            [`${gh}:repository_id`]: "812345678",
            [`${gh}:repository_owner_id`]: "41234567",
          },
        },
      },
    ]);
    const bk = "agent.buildkite.com";
    expect(trust("identity-deploy-release-signed").Statement).toEqual([
      {
        Sid: "BuildkiteJob1",
        Effect: "Allow",
        Principal: { Federated: `arn:aws:iam::${WEB_ACCOUNT}:oidc-provider/${bk}` },
        Action: "sts:AssumeRoleWithWebIdentity",
        Condition: {
          // Branch and pipeline as claims of their own: `commit:*` in the subject spans `:`, so a
          // branch named `main:commit:x` matches the subject (issue 16 review).
          StringEquals: { [`${bk}:aud`]: "sts.amazonaws.com", [`${bk}:organization_slug`]: "example-org", [`${bk}:pipeline_slug`]: "release", [`${bk}:build_branch`]: "main" },
          StringLike: { [`${bk}:sub`]: "organization:example-org:pipeline:release:ref:refs/heads/main:commit:*:step:*" },
        },
      },
    ]);
    for (const name of ["identity-deploy-web-website", "identity-deploy-web-previews", "identity-deploy-release-signed"]) {
      const role = named(resources, ROLE, name);
      expect(role.inputs.maxSessionDuration).toBe(3600);
      expect((role.inputs.tags as Record<string, string>)["ci-fleet:deploy-trust"]).toBe("ci-identity");
    }
  });

  test("the queue's agent role no longer names a ci-identity role; queue-role targets keep theirs", () => {
    const { resources } = runs.get(provider)!.capture;
    const statements = (queue: string) => (parsePolicy(named(resources, "aws:iam/rolePolicy:RolePolicy", `identity-agent-${queue}`).inputs.policy) as any).Statement;
    expect(statements("web").some((s: any) => s.Sid === "AssumeQueueDeployRoles")).toBe(false);
    expect(statements("release").find((s: any) => s.Sid === "AssumeQueueDeployRoles").Resource).toEqual([`arn:aws:iam::222222222222:role/ci-fleet-production-deploy-artifacts`]);
  });

  test("every check passes; agents assume only queue-role targets; every claims row decided as intended by both evaluators", () => {
    const { matrix } = runs.get(provider)!;
    expect(matrix.checks.filter((c) => !c.ok)).toEqual([]);
    expect(accessMatrixPassed(matrix)).toBe(true);
    const allowed = matrix.assume.filter((r) => r.decision === "Allowed").map((r) => `${r.queue} -> ${r.targetRoleArn.split("/").pop()}`).sort();
    expect(allowed).toEqual(["infra -> ci-fleet-production-deploy-dns", "infra -> ci-fleet-production-deploy-staging-web", "release -> ci-fleet-production-deploy-artifacts"]);
    const table = (target: string) => matrix.webIdentity.filter((r) => r.target === target).map((r) => `${r.identity} | ${r.label}: ${r.simulator}`);
    expect(table("website")).toMatchSnapshot();
    expect(table("previews")).toMatchSnapshot();
    expect(table("signed")).toMatchSnapshot();
    expect(matrix.webIdentity.every((r) => r.simulator === r.own && r.ok)).toBe(true);
    // The rows the issue asks for, each present and decided.
    const decided = (target: string, label: RegExp) => matrix.webIdentity.filter((r) => r.target === target && label.test(r.label)).map((r) => r.simulator);
    expect(decided("website", /^allowed job$/)).toEqual(["Allowed", "Allowed"]);
    expect(decided("website", /^another branch$/)).toEqual(["ImplicitlyDenied"]);
    expect(decided("website", /^a pull request$/)).toEqual(["ImplicitlyDenied", "ImplicitlyDenied"]);
    expect(decided("website", /^another repository$/)).toEqual(["ImplicitlyDenied", "ImplicitlyDenied"]);
    expect(decided("website", /^new subject format \(repo:ORG@OWNER_ID\/REPO@REPO_ID\)$/)).toEqual(["Allowed"]);
    expect(decided("website", /^missing aud$/)).toEqual(["ImplicitlyDenied", "ImplicitlyDenied"]);
    expect(decided("previews", /^a pull request$/)).toEqual(["Allowed"]);
    expect(decided("signed", /^another organisation/)).toEqual(["ImplicitlyDenied"]);
  });

  test("report: each target's binding, the claims tables, the wildcard flagged", () => {
    const text = renderAccessMatrixMarkdown(runs.get(provider)!.matrix);
    expect(text).toContain("| web/previews | `arn:aws:iam::444444444444:role/ci-fleet-production-deploy-previews` | ci-identity | github-actions example-org/website ref refs/pull/* **(allowWildcard: admits a pattern or pull requests)** | **none** |");
    expect(text).toContain("| infra/dns | `arn:aws:iam::333333333333:role/ci-fleet-production-deploy-dns` | queue-role | the queue's agent role |");
    expect(text).toContain("### web/website: sts:AssumeRoleWithWebIdentity by token claims");
  });
});

describe("a deliberately loosened trust fails the preview", () => {
  const clone = (): CapturedResource[] => JSON.parse(JSON.stringify(runs.get("aws")!.capture.resources));
  const evaluate = (resources: CapturedResource[]) => computeAccessMatrix(resources, ctxOf(runs.get("aws")!.capture));
  const failed = (m: AccessMatrix) => m.checks.filter((c) => !c.ok).map((c) => c.name);
  const edit = (resources: CapturedResource[], name: string, change: (doc: any) => void) => {
    const r = named(resources, ROLE, name);
    const doc = parsePolicy(r.inputs.assumeRolePolicy) as any;
    change(doc);
    r.inputs.assumeRolePolicy = JSON.stringify(doc);
  };

  test("a Buildkite subject without its organisation", async () => {
    const resources = clone();
    edit(resources, "identity-deploy-release-signed", (doc) => {
      doc.Statement[0].Condition.StringLike["agent.buildkite.com:sub"] = "organization:*:pipeline:release:ref:refs/heads/main:commit:*:step:*";
      delete doc.Statement[0].Condition.StringEquals["agent.buildkite.com:organization_slug"];
    });
    const m = await evaluate(resources);
    expect(failed(m)).toEqual(["ci-identity deploy roles admit exactly the intended CI identity tokens"]);
    expect(m.checks.find((c) => !c.ok)!.detail).toContain("another organisation, same pipeline and branch: simulator Allowed, own evaluator Allowed, expected denied");
    expect(renderAccessMatrixMarkdown(m)).toContain("**allow / allow (unexpected)**");
  });

  test("a GitHub subject for any branch, and no audience", async () => {
    const resources = clone();
    edit(resources, "identity-deploy-web-website", (doc) => {
      const s = doc.Statement[1];
      delete s.Condition.StringEquals["token.actions.githubusercontent.com:aud"];
      delete s.Condition.StringEquals["token.actions.githubusercontent.com:sub"];
      s.Condition.StringLike = { "token.actions.githubusercontent.com:sub": "repo:example-org/website:*" };
    });
    const m = await evaluate(resources);
    expect(failed(m).sort()).toEqual(["ci-identity deploy roles admit exactly the intended CI identity tokens", "ci-identity deploy roles trust only their account's OIDC providers, with the exact audience"]);
    const detail = m.checks.find((c) => c.name === "ci-identity deploy roles admit exactly the intended CI identity tokens")!.detail;
    const rows = ["ref refs/heads/main-x (subject only)", "ref refs/heads/main/x (subject only)", "ref refs/tags/main (the same name as a tag) (subject only)", "missing aud"];
    for (const row of rows) expect(detail).toContain(`example-org/website ref refs/heads/main workflow example-org/website/.github/workflows/release.yml@refs/heads/main (ids 41234567/812345678), ${row}: simulator Allowed`);
  });

  test("a GitHub ref claim loosened to refs/heads/main* (the subject still exact)", async () => {
    const resources = clone();
    edit(resources, "identity-deploy-web-website", (doc) => {
      const s = doc.Statement[1];
      delete s.Condition.StringEquals["token.actions.githubusercontent.com:ref"];
      s.Condition.StringLike = { "token.actions.githubusercontent.com:ref": "refs/heads/main*" };
    });
    const m = await evaluate(resources);
    expect(failed(m)).toEqual(["ci-identity deploy roles admit exactly the intended CI identity tokens"]);
    const detail = m.checks.find((c) => !c.ok)!.detail;
    expect(detail).toContain("ref refs/heads/main-x (ref claim only): simulator Allowed");
    expect(detail).toContain("ref refs/heads/main/x (ref claim only): simulator Allowed");
  });

  test("the Buildkite trust as it was before the review (subject only): a branch named main:commit:x deploys", async () => {
    const resources = clone();
    edit(resources, "identity-deploy-release-signed", (doc) => {
      delete doc.Statement[0].Condition.StringEquals["agent.buildkite.com:build_branch"];
      delete doc.Statement[0].Condition.StringEquals["agent.buildkite.com:pipeline_slug"];
    });
    const m = await evaluate(resources);
    expect(failed(m)).toEqual(["ci-identity deploy roles admit exactly the intended CI identity tokens"]);
    const detail = m.checks.find((c) => !c.ok)!.detail;
    expect(detail).toContain("branch main:commit:x: simulator Allowed, own evaluator Allowed, expected denied");
    expect(detail).toContain("branch main-x (build_branch claim only): simulator Allowed");
    expect(detail).toContain("pipeline release-x (pipeline_slug claim only): simulator Allowed");
  });

  test("the Buildkite subject loosened to refs/heads/main* (build_branch still exact)", async () => {
    const resources = clone();
    edit(resources, "identity-deploy-release-signed", (doc) => {
      doc.Statement[0].Condition.StringLike["agent.buildkite.com:sub"] = "organization:example-org:pipeline:release:ref:refs/heads/main*:commit:*:step:*";
    });
    const m = await evaluate(resources);
    expect(failed(m)).toEqual(["ci-identity deploy roles admit exactly the intended CI identity tokens"]);
    const detail = m.checks.find((c) => !c.ok)!.detail;
    expect(detail).toContain("branch main-x (subject only): simulator Allowed");
    expect(detail).toContain("branch main/x (subject only): simulator Allowed");
  });

  test("a ci-identity role that trusts the queue's agent role again", async () => {
    const resources = clone();
    const agent = named(resources, ROLE, "identity-agent-release").outputs.arn as string;
    edit(resources, "identity-deploy-release-signed", (doc) => {
      doc.Statement.push({ Sid: "Agent", Effect: "Allow", Principal: { AWS: agent }, Action: "sts:AssumeRole" });
    });
    const policy = named(resources, "aws:iam/rolePolicy:RolePolicy", "identity-agent-release");
    const p = parsePolicy(policy.inputs.policy) as any;
    p.Statement.find((s: any) => s.Sid === "AssumeQueueDeployRoles").Resource.push(`arn:aws:iam::${WEB_ACCOUNT}:role/ci-fleet-production-deploy-signed`);
    policy.inputs.policy = JSON.stringify(p);
    const m = await evaluate(resources);
    expect(failed(m).sort()).toEqual(["agent roles assume exactly their queue's deploy roles", "ci-identity deploy roles trust only their account's OIDC providers, with the exact audience"]);
  });
});

describe.each(["production", "production-aws"])("example stack %s", (stack) => {
  test("the release target on ci-identity with one Buildkite provider; queue-role targets unchanged; the preview's matrix passes", async () => {
    const run = await previewStack(stack);
    const c = run.config;
    expect(run.resources.filter((r) => r.type === OIDC).map((r) => r.outputs.arn)).toEqual(["arn:aws:iam::567890123456:oidc-provider/agent.buildkite.com"]);
    const matrix = await computeAccessMatrix(run.resources, { stack: c.stack, accountId: c.identity.accountId, region: c.identity.region, queues: Object.keys(c.queues).sort(), deployTargets: deployTargetsOf(c.queues) });
    expect(matrix.checks.filter((k) => !k.ok)).toEqual([]);
    expect(matrix.bindings.map((b) => `${b.queue}/${b.target} ${b.trust} ${b.permissionsBoundary ? "boundary" : "none"}`)).toEqual([
      "infra/infra-production queue-role boundary",
      "infra/infra-staging queue-role boundary",
      "release/release-artifacts ci-identity boundary",
    ]);
    expect(matrix.webIdentity.filter((r) => r.simulator === "Allowed").map((r) => r.label)).toEqual(["allowed job", "allowed job, another step and commit"]);
    expect(matrix.assume.filter((r) => r.decision === "Allowed").map((r) => `${r.queue} -> ${r.targetRoleArn}`).sort()).toEqual([
      "infra -> arn:aws:iam::345678901234:role/ci-fleet-deploy-infra",
      "infra -> arn:aws:iam::456789012345:role/ci-fleet-deploy-infra",
    ]);
  }, 120000);
});

describe("an OIDC provider that already exists in the target account (oidcProviderArn)", () => {
  test("is trusted as configured: the stack registers no provider for it, and the proof passes", async () => {
    const existing = `arn:aws:iam::${WEB_ACCOUNT}:oidc-provider/agent.buildkite.com`;
    const capture = await captureIdentity(() => {
      const config = fleet("aws");
      config.queues.release.deployTargets.signed.oidcProviderArn = existing;
      return config;
    });
    const providers = capture.resources.filter((r) => r.type === OIDC).map((r) => r.outputs.arn);
    expect(providers).toEqual([`arn:aws:iam::${WEB_ACCOUNT}:oidc-provider/token.actions.githubusercontent.com`]);
    const trust = parsePolicy(named(capture.resources, ROLE, "identity-deploy-release-signed").inputs.assumeRolePolicy) as any;
    expect(trust.Statement.map((s: any) => s.Principal.Federated)).toEqual([existing]);
    const matrix = await computeAccessMatrix(capture.resources, ctxOf(capture));
    expect(matrix.checks.filter((c) => !c.ok)).toEqual([]);
    expect(matrix.webIdentity.filter((r) => r.target === "signed" && r.simulator === "Allowed").map((r) => r.label)).toEqual(["allowed job", "allowed job, another step and commit"]);
    // Without the config, the same roles fail the structural check: the principal is no provider the program registered.
    const unconfigured = await computeAccessMatrix(capture.resources, { ...ctxOf(capture), deployTargets: ctxOf(capture).deployTargets.map(({ oidcProviderArn: _, ...t }) => t) });
    expect(unconfigured.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(["ci-identity deploy roles trust only their account's OIDC providers, with the exact audience"]);
  }, 120000);
});
