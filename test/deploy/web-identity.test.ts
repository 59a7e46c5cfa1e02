import { runSimulation } from "@cloud-copilot/iam-simulate";
import { evaluateWebIdentityTrust, iamGlob, simulateWebIdentity } from "../../tools/preview/web-identity";

/**
 * The two evaluators of the claims table, held to known cases. iam-simulate 0.1.173 does not
 * evaluate `<issuer>:aud` / `<issuer>:sub` through its validated entry point (it drops them as keys
 * sts:AssumeRoleWithWebIdentity does not have), which is why the proof validates with it and decides
 * with every key, and why a second evaluator must agree.
 */

const PROVIDER = "arn:aws:iam::444444444444:oidc-provider/token.actions.githubusercontent.com";
const ROLE = "arn:aws:iam::444444444444:role/deploy";
const GH = "token.actions.githubusercontent.com";
const trust = (condition: Record<string, Record<string, string | string[]>>, extra: object[] = []) => ({
  Version: "2012-10-17",
  Statement: [{ Effect: "Allow", Principal: { Federated: PROVIDER }, Action: "sts:AssumeRoleWithWebIdentity", Condition: condition }, ...extra],
});
const EXACT = trust({ StringEquals: { [`${GH}:aud`]: "sts.amazonaws.com", [`${GH}:sub`]: ["repo:o/r:ref:refs/heads/main", "repo:o@2/r@1:ref:refs/heads/main"] } });
const LIKE = trust({ StringEquals: { [`${GH}:aud`]: "sts.amazonaws.com" }, StringLike: { [`${GH}:sub`]: "repo:o/r:ref:refs/heads/release-?*" } });
const claims = (sub?: string, aud: string | null = "sts.amazonaws.com") => ({ ...(aud ? { [`${GH}:aud`]: aud } : {}), ...(sub ? { [`${GH}:sub`]: sub } : {}) });

test("iamGlob: * spans any characters (colons too), ? exactly one, the whole value, regex characters literal", () => {
  expect(iamGlob("organization:o:pipeline:p:ref:refs/heads/main:commit:*:step:*", "organization:o:pipeline:p:ref:refs/heads/main:commit:abc:step:x:y")).toBe(true);
  expect(iamGlob("organization:o:pipeline:p:ref:refs/heads/main:commit:*:step:*", "organization:o:pipeline:p:ref:refs/heads/feature:commit:abc:step:x:ref:refs/heads/main")).toBe(false);
  expect(iamGlob("a?c", "abc")).toBe(true);
  expect(iamGlob("a?c", "ac")).toBe(false);
  expect(iamGlob("a.c", "abc")).toBe(false);
  expect(iamGlob("main", "main-x")).toBe(false);
  expect(iamGlob("(x)+[y]", "(x)+[y]")).toBe(true);
});

const CASES: [string, object, string, Record<string, string>, string][] = [
  ["exact subject", EXACT, PROVIDER, claims("repo:o/r:ref:refs/heads/main"), "Allowed"],
  ["the other value of a multi-valued key (OR)", EXACT, PROVIDER, claims("repo:o@2/r@1:ref:refs/heads/main"), "Allowed"],
  ["another branch", EXACT, PROVIDER, claims("repo:o/r:ref:refs/heads/dev"), "ImplicitlyDenied"],
  ["a case change (StringEquals is case-sensitive)", EXACT, PROVIDER, claims("repo:O/r:ref:refs/heads/main"), "ImplicitlyDenied"],
  ["missing aud (a key the request lacks fails)", EXACT, PROVIDER, claims("repo:o/r:ref:refs/heads/main", null), "ImplicitlyDenied"],
  ["missing sub", EXACT, PROVIDER, claims(undefined), "ImplicitlyDenied"],
  ["wrong aud (keys of an operator AND)", EXACT, PROVIDER, claims("repo:o/r:ref:refs/heads/main", "https://github.com/o"), "ImplicitlyDenied"],
  ["another provider", EXACT, "arn:aws:iam::444444444444:oidc-provider/agent.buildkite.com", claims("repo:o/r:ref:refs/heads/main"), "ImplicitlyDenied"],
  ["StringLike match", LIKE, PROVIDER, claims("repo:o/r:ref:refs/heads/release-1.2"), "Allowed"],
  ["StringLike, ? needs a character", LIKE, PROVIDER, claims("repo:o/r:ref:refs/heads/release-"), "ImplicitlyDenied"],
  ["an explicit Deny wins", trust({ StringEquals: { [`${GH}:aud`]: "sts.amazonaws.com" } }, [{ Effect: "Deny", Principal: { Federated: PROVIDER }, Action: "sts:AssumeRoleWithWebIdentity", Condition: { StringLike: { [`${GH}:sub`]: "*:pull_request" } } }]), PROVIDER, claims("repo:o/r:pull_request"), "ExplicitlyDenied"],
];

test.each(CASES)("%s: both evaluators decide as AWS documents", async (_label, policy, provider, request, expected) => {
  expect(evaluateWebIdentityTrust(policy as never, provider, request)).toBe(expected);
  const errors: string[] = [];
  const platform = provider.endsWith("agent.buildkite.com") ? "buildkite" : "github-actions";
  expect(await simulateWebIdentity(policy as never, ROLE, provider, request, platform, errors)).toBe(expected);
  expect(errors).toEqual([]);
});

test("the web-identity evaluator refuses what it does not model (an error, never a guess)", () => {
  expect(evaluateWebIdentityTrust(trust({ StringEqualsIfExists: { [`${GH}:sub`]: "x" } }), PROVIDER, claims("x"))).toBe("Error");
  expect(evaluateWebIdentityTrust({ Statement: [{ Effect: "Allow", NotPrincipal: { Federated: "x" }, Action: "sts:AssumeRoleWithWebIdentity" }] }, PROVIDER, {})).toBe("Error");
});

test("iam-simulate 0.1.173's validated entry point drops exactly <issuer>:aud and <issuer>:sub (the gap the proof works around)", async () => {
  const request = { ...claims("repo:o/r:ref:refs/heads/main"), [`${GH}:job_workflow_ref`]: "o/r/.github/workflows/a.yml@refs/heads/main", "agent.buildkite.com:organization_slug": "o" };
  const result = (await runSimulation(
    {
      request: { principal: PROVIDER, action: "sts:AssumeRoleWithWebIdentity", resource: { resource: ROLE, accountId: "444444444444" }, contextVariables: request },
      identityPolicies: [],
      serviceControlPolicies: [],
      resourceControlPolicies: [],
      resourcePolicy: EXACT,
    },
    {},
  )) as { resultType: string; overallResult?: string; result?: { ignoredContextKeys?: string[] } };
  expect(result.resultType).toBe("single");
  expect([...(result.result?.ignoredContextKeys ?? [])].sort()).toEqual([`${GH}:aud`, `${GH}:sub`]);
  // With them dropped the exact, allowed request is denied: the validated entry point alone would prove nothing.
  expect(result.overallResult).toBe("ImplicitlyDenied");
});
