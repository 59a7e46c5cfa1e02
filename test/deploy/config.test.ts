import { checkFleetSettings, CheckInput, ConfigProblem } from "../../infra/config/check";
import { ciIdentityFlags } from "../../infra/identity/ci-identity";
import { stackConfig } from "../support/preview";

/** Issue 16, point 1: each deploy target chooses its binding; config errors are clear and all reported at once. */

type Values = Record<string, any>;

function productionValues(stack = "production"): Values {
  const out: Values = {};
  for (const [k, v] of Object.entries(stackConfig(stack))) out[k.replace(/^ci-fleet:/, "")] = v;
  return JSON.parse(JSON.stringify(out)) as Values;
}
function check(values: Values) {
  const input: CheckInput = { stack: "production", values, secretsPresent: new Set(), queueSecretPaths: {} };
  return checkFleetSettings(input);
}
const messages = (problems: ConfigProblem[]) => problems.map((p) => `${p.path}: ${p.message}`);

/** Production plus a trusted GitHub Actions queue listing its repositories. */
function withGithubQueue(): Values {
  const v = productionValues();
  v.queues["gh-deploy"] = {
    agent: "github-actions",
    trusted: true,
    runnerGroup: "deploy",
    labels: ["self-hosted", "deploy"],
    repositories: ["example-metal/website", "example-metal/example-metal"],
    runners: { "gh-1": { plan: "runner" } },
  };
  return v;
}

describe.each(["production", "production-aws"])("stack %s", (stack) => {
  test("the release target is bound to one Buildkite pipeline and branch; the infra targets keep queue-role", () => {
    const { problems, settings } = check(productionValues(stack));
    expect(messages(problems)).toEqual([]);
    const release = settings!.queues.release;
    expect(release.pipelines).toEqual(["release"]);
    expect(release.deployTargets["release-artifacts"]).toMatchObject({
      trust: "ci-identity",
      identities: [{ platform: "buildkite", organization: "example-metal", pipeline: "release", branch: "main" }],
      permissionsBoundaryArn: "arn:aws:iam::567890123456:policy/ci-fleet-boundary",
    });
    for (const target of Object.values(settings!.queues.infra.deployTargets)) expect(target.trust ?? "queue-role").toBe("queue-role");
    expect(settings!.queues.default.repositories).toEqual(["example-metal/example-metal"]);
    // Every example deploy role has a permissions boundary.
    for (const q of Object.values(settings!.queues)) for (const t of Object.values(q.deployTargets)) expect(t.permissionsBoundaryArn).toMatch(/^arn:aws:iam::\d{12}:policy\//);
  });
});

test("GitHub identities: ref or environment, workflow, immutable ids; the organisation defaults for Buildkite", () => {
  const v = withGithubQueue();
  v.deployTargets.website = {
    queue: "gh-deploy",
    accountId: "678901234567",
    roleName: "ci-fleet-deploy-website",
    trust: "ci-identity",
    identities: [
      { repository: "example-metal/website", ref: "refs/heads/main", workflow: ".github/workflows/release.yml@refs/heads/main", repositoryId: 812345678, ownerId: "41234567" },
      // Also on the untrusted default queue: accepted only when marked (and then flagged).
      { repository: "example-metal/example-metal", environment: "production", allowOtherQueues: true },
    ],
  };
  v.deployTargets["release-artifacts"].identities = [{ pipeline: "release", branch: "main" }];
  const { problems, settings } = check(v);
  expect(messages(problems)).toEqual([]);
  expect(settings!.queues["gh-deploy"].deployTargets.website.identities).toEqual([
    { platform: "github-actions", repository: "example-metal/website", ref: "refs/heads/main", workflow: ".github/workflows/release.yml@refs/heads/main", repositoryId: "812345678", ownerId: "41234567" },
    { platform: "github-actions", repository: "example-metal/example-metal", environment: "production", allowOtherQueues: true },
  ]);
  expect(settings!.queues.release.deployTargets["release-artifacts"].identities).toEqual([{ platform: "buildkite", organization: "example-metal", pipeline: "release", branch: "main" }]);
});

test("every problem of the deploy targets' bindings is reported at once, with its path", () => {
  const v = withGithubQueue();
  v.queues.infra.repositories = ["example-metal/infra"]; // a buildkite queue lists pipelines
  v.queues["gh-deploy"].pipelines = ["website"]; // a github-actions queue lists repositories
  v.deployTargets["release-artifacts"].identities = [
    { repository: "example-metal/website", ref: "refs/heads/main" }, // GitHub on a Buildkite queue
    { pipeline: "infrastructure", branch: "main" }, // runs on infra, not on release
    { pipeline: "release", branch: "*" }, // any branch, not marked
    { organization: "someone-else", pipeline: "release", branch: "main" }, // another organisation
  ];
  v.deployTargets["infra-staging"].identities = [{ pipeline: "infrastructure", branch: "main" }]; // queue-role target
  v.deployTargets["infra-production"].trust = "oidc"; // not a binding
  v.deployTargets.website = {
    queue: "gh-deploy",
    accountId: "678901234567",
    roleName: "ci-fleet-deploy-website",
    trust: "ci-identity",
    identities: [
      { repository: "example-metal/website", ref: "refs/pull/*" }, // pull requests, not marked
      { repository: "example-metal/private", ref: "refs/heads/main" }, // not on the queue
      { repository: "other-org/website", ref: "refs/heads/main" }, // not the fleet's organisation
      { repository: "example-metal/website", ref: "refs/heads/main", environment: "production" }, // both
      { repository: "example-metal/website", ref: "refs/heads/main", allowWildcard: true }, // nothing to allow
      { repository: "example-metal/website", ref: "refs/heads/main", repositoryId: "1" }, // ids go together
      { repository: "example-metal/website", ref: "refs/heads/${aws:username}" }, // a policy variable
    ],
  };
  v.deployTargets.empty = { queue: "gh-deploy", accountId: "678901234567", roleName: "ci-fleet-deploy-empty", trust: "ci-identity" };
  const { problems, settings } = check(v);
  expect(settings).toBeUndefined();
  const text = messages(problems);
  const expected = [
    "ci-fleet:queues.infra.repositories: applies only to github-actions queues",
    "ci-fleet:queues.gh-deploy.pipelines: applies only to buildkite queues",
    "ci-fleet:deployTargets.release-artifacts.identities[0]: is a GitHub repository, but queue \"release\" runs the buildkite agent",
    "ci-fleet:deployTargets.release-artifacts.identities[1].pipeline: infrastructure is not in queues.release.pipelines (release)",
    "ci-fleet:deployTargets.release-artifacts.identities[2]: organization:example-metal:pipeline:release:ref:refs/heads/*:commit:*:step:* admits any branch",
    "ci-fleet:deployTargets.release-artifacts.identities[3].organization: someone-else is not buildkite.organization example-metal",
    "ci-fleet:deployTargets.infra-staging.identities: applies only with trust: ci-identity",
    "ci-fleet:deployTargets.infra-production.trust: expected one of queue-role | ci-identity, got \"oidc\"",
    "ci-fleet:deployTargets.website.identities[0]: repo:example-metal/website:pull_request admits pull requests",
    "ci-fleet:deployTargets.website.identities[1].repository: example-metal/private is not in queues.gh-deploy.repositories",
    "ci-fleet:deployTargets.website.identities[2].repository: other-org/website is not in github.organization example-metal",
    "ci-fleet:deployTargets.website.identities[3]: expected exactly one of ref (refs/heads/main) and environment (production)",
    "ci-fleet:deployTargets.website.identities[4].allowWildcard: is set, but nothing here is a pattern or pull requests",
    "ci-fleet:deployTargets.website.identities[5]: repositoryId and ownerId go together",
    "ci-fleet:deployTargets.website.identities[6].ref: expected a full ref such as refs/heads/main",
    "ci-fleet:deployTargets.empty.identities: trust ci-identity needs a list of at least one identity",
  ];
  for (const e of expected) expect(text.some((m) => m.startsWith(e))).toBe(true);
});

test("a pattern or pull requests are accepted when marked allowWildcard", () => {
  const v = withGithubQueue();
  v.deployTargets["release-artifacts"].identities = [{ pipeline: "release", branch: "release-*", allowWildcard: true }];
  v.deployTargets.previews = {
    queue: "gh-deploy",
    accountId: "678901234567",
    roleName: "ci-fleet-deploy-previews",
    trust: "ci-identity",
    identities: [{ repository: "example-metal/website", ref: "refs/pull/*", allowWildcard: true }],
  };
  const { problems, settings } = check(v);
  expect(messages(problems)).toEqual([]);
  expect(settings!.queues["gh-deploy"].deployTargets.previews.identities).toEqual([{ platform: "github-actions", repository: "example-metal/website", ref: "refs/pull/*", allowWildcard: true }]);
});

describe("an identity whose repository or pipeline also runs on another queue (issue 16 review)", () => {
  test("is refused: a job there (a pull request's runner on the untrusted queue) mints a token with the same claims", () => {
    const v = withGithubQueue();
    v.deployTargets.website = {
      queue: "gh-deploy",
      accountId: "678901234567",
      roleName: "ci-fleet-deploy-website",
      trust: "ci-identity",
      identities: [{ repository: "example-metal/example-metal", ref: "refs/heads/main", workflow: ".github/workflows/release.yml@refs/heads/main" }],
    };
    v.queues.infra.pipelines = ["infrastructure", "release"]; // release also runs on infra
    const { problems, settings } = check(v);
    expect(settings).toBeUndefined();
    const text = messages(problems);
    expect(text.some((m) => m.startsWith("ci-fleet:deployTargets.website.identities[0]: example-metal/example-metal is also listed on queue default (untrusted): a job there gets a token with the same claims"))).toBe(true);
    expect(text.some((m) => m.startsWith("ci-fleet:deployTargets.release-artifacts.identities[0]: release is also listed on queue infra: a job there gets a token with the same claims"))).toBe(true);
    expect(text.join("\n")).toContain("mark it allowOtherQueues: true (the report flags it)");
  });

  test("is accepted when marked allowOtherQueues, which is refused where nothing is shared; the report flags it", () => {
    const v = withGithubQueue();
    v.queues.infra.pipelines = ["infrastructure", "release"];
    v.deployTargets["release-artifacts"].identities = [{ pipeline: "release", branch: "main", allowOtherQueues: true }];
    const ok = check(v);
    expect(messages(ok.problems)).toEqual([]);
    const identity = ok.settings!.queues.release.deployTargets["release-artifacts"].identities![0];
    expect(identity).toEqual({ platform: "buildkite", organization: "example-metal", pipeline: "release", branch: "main", allowOtherQueues: true });
    expect(ciIdentityFlags(identity)).toEqual(["allowOtherQueues: the pipeline also runs on other queues, whose jobs get the same token"]);
    v.queues.infra.pipelines = ["infrastructure"];
    expect(messages(check(v).problems)).toEqual(["ci-fleet:deployTargets.release-artifacts.identities[0].allowOtherQueues: is set, but release runs on no other queue: remove it"]);
  });

  test("a GitHub ref binding without workflow is flagged (pull_request_target, workflow_run, issue_comment run on the default branch)", () => {
    expect(ciIdentityFlags({ platform: "github-actions", repository: "o/r", ref: "refs/heads/main" })).toEqual([
      "ref without workflow: pull_request_target, workflow_run and issue_comment workflows run on the default branch with its ref; prefer environment (with deployment-branch protection) or workflow",
    ]);
    expect(ciIdentityFlags({ platform: "github-actions", repository: "o/r", ref: "refs/heads/main", workflow: ".github/workflows/a.yml@refs/heads/main" })).toEqual([]);
    expect(ciIdentityFlags({ platform: "github-actions", repository: "o/r", environment: "production" })).toEqual([]);
  });
});

describe("deployTargets.<name>.oidcProviderArn: reuse a provider that already exists (issue 16 review)", () => {
  const existing = "arn:aws:iam::567890123456:oidc-provider/agent.buildkite.com";
  test("is accepted for the target's account and issuer and reaches the target", () => {
    const v = productionValues();
    v.deployTargets["release-artifacts"].oidcProviderArn = existing;
    const { problems, settings } = check(v);
    expect(messages(problems)).toEqual([]);
    expect(settings!.queues.release.deployTargets["release-artifacts"].oidcProviderArn).toBe(existing);
  });

  test("is refused for another account or issuer, on a queue-role target, and where targets of one account disagree", () => {
    const v = withGithubQueue();
    v.deployTargets["release-artifacts"].oidcProviderArn = "arn:aws:iam::567890123456:oidc-provider/token.actions.githubusercontent.com";
    v.deployTargets["infra-staging"].oidcProviderArn = "arn:aws:iam::345678901234:oidc-provider/agent.buildkite.com";
    v.deployTargets.signed = { ...v.deployTargets["release-artifacts"], roleName: "ci-fleet-deploy-signed", oidcProviderArn: existing };
    v.deployTargets.unsigned = { ...v.deployTargets["release-artifacts"], roleName: "ci-fleet-deploy-unsigned" };
    delete v.deployTargets.unsigned.oidcProviderArn;
    const text = messages(check(v).problems);
    expect(text).toEqual(
      expect.arrayContaining([
        "ci-fleet:deployTargets.release-artifacts.oidcProviderArn: expected arn:aws:iam::567890123456:oidc-provider/agent.buildkite.com (the buildkite issuer's provider in the target's account), got arn:aws:iam::567890123456:oidc-provider/token.actions.githubusercontent.com",
        "ci-fleet:deployTargets.infra-staging.oidcProviderArn: applies only with trust: ci-identity",
      ]),
    );
    expect(text.some((m) => m.startsWith("ci-fleet:deployTargets.unsigned.oidcProviderArn: deploy target ") && m.includes("one account has one buildkite OIDC provider"))).toBe(true);
  });
});
