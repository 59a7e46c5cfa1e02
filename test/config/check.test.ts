import * as fc from "fast-check";
import { checkFleetSettings, CheckInput, ConfigProblem } from "../../infra/config/check";
import { stackConfig } from "../support/preview";

/**
 * Config checking is pure: each bad input -> its message with its config path, every
 * problem of an input reported at once, and no input (however random) crashes it.
 */

type Values = Record<string, unknown>;

/** The production stack's plain settings, keys without the namespace. */
function productionValues(): Values {
  const out: Values = {};
  for (const [k, v] of Object.entries(stackConfig("production"))) out[k.replace(/^ci-fleet:/, "")] = v;
  return JSON.parse(JSON.stringify(out)) as Values;
}

function check(values: Values, stack = "production", queueSecretPaths: Record<string, string[]> = {}) {
  const input: CheckInput = { stack, values, secretsPresent: new Set(), queueSecretPaths };
  return checkFleetSettings(input);
}

function messages(problems: ConfigProblem[]): string[] {
  return problems.map((p) => `${p.path}: ${p.message}`);
}

/** Applies `edit` to a copy of the production settings. */
function withEdit(edit: (v: any) => void): Values {
  const v = productionValues();
  edit(v);
  return v;
}

test("the production settings are valid and typed", () => {
  const { problems, settings, requiredSecrets } = check(productionValues());
  expect(messages(problems)).toEqual([]);
  expect(settings?.provider).toBe("equinix-metal");
  expect(Object.keys(settings!.queues)).toEqual(["default", "infra", "release"]);
  expect(Object.keys(settings!.queues.infra.deployTargets)).toEqual(["infra-staging", "infra-production"]);
  expect(settings!.queues.default.deployTargets).toEqual({});
  expect(requiredSecrets).toEqual([
    "teleportGithubClientId",
    "teleportGithubClientSecret",
    "githubAppPrivateKey",
    "queueSecrets.infra.buildkite.agent-token",
    "queueSecrets.release.buildkite.agent-token",
  ]);
});

test("switching provider is one key: the same settings are valid on aws", () => {
  const { problems, settings } = check(withEdit((v) => (v.provider = "aws")));
  expect(messages(problems)).toEqual([]);
  expect(settings?.provider).toBe("aws");
});

// Each row: what is broken, the edit, and the exact problem lines expected.
const CASES: [string, (v: any) => void, string[]][] = [
  ["unknown provider", (v) => (v.provider = "hetzner"), ['ci-fleet:provider: expected one of equinix-metal | aws, got "hetzner"']],
  ["no zone for the control plane's names", (v) => delete v.dns, ["ci-fleet:dns: is required"]],
  ["a zone that is not a DNS name", (v) => (v.dns.zone = "fleet_ci"), ['ci-fleet:dns.zone: expected a DNS name such as fleet.ci.example.org (the zone the program manages), got "fleet_ci"']],
  ["a zone holding Teleport's public name", (v) => (v.dns.zone = "ci.example-metal.org"), ["ci-fleet:dns.zone: teleport.publicAddr teleport.ci.example-metal.org is inside the zone ci.example-metal.org, which holds only the control plane's private records; pick a zone that does not contain it"]],
  ["an unknown key under dns", (v) => (v.dns.ttl = 5), ["ci-fleet:dns.ttl: unknown key; expected one of zone"]],
  ["a queue name that is not a DNS label", (v) => (v.queues.Bad_Queue = v.queues.default), ["ci-fleet:queues.Bad_Queue: name must be a DNS label (a-z, 0-9, '-', at most 63)", "ci-fleet:queues.Bad_Queue.runners.pr-1: runner name pr-1 is already used in queue default; runner names must be unique across queues", "ci-fleet:queues.Bad_Queue.runners.pr-2: runner name pr-2 is already used in queue default; runner names must be unique across queues", "ci-fleet:queues.Bad_Queue.runners.pr-3: runner name pr-3 is already used in queue default; runner names must be unique across queues", "ci-fleet:queues.Bad_Queue.runners.pr-4: runner name pr-4 is already used in queue default; runner names must be unique across queues"]],
  ["the same runner name in two queues", (v) => (v.queues.release.runners["infra-1"] = { plan: "runner" }), ["ci-fleet:queues.release.runners.infra-1: runner name infra-1 is already used in queue infra; runner names must be unique across queues"]],
  ["a queue with no runners", (v) => (v.queues.release.runners = {}), ["ci-fleet:queues.release.runners: expected at least one runner (a queue with no runners runs nothing)"]],
  ["a runner plan that does not exist", (v) => (v.queues.default.runners["pr-1"].plan = "huge"), ['ci-fleet:queues.default.runners.pr-1.plan: expected one of the plans (control, runner, runner-large), got "huge"']],
  ["a malformed Equinix plan", (v) => (v.plans.runner["equinix-metal"] = "m3 large"), ['ci-fleet:plans.runner.equinix-metal: expected an Equinix Metal plan such as c3.small.x86, got "m3 large"']],
  ["a runner on a virtual EC2 type", (v) => ((v.provider = "aws"), (v.plans["runner-large"].aws = "c5.4xlarge")), ["ci-fleet:queues.default.runners.pr-4.plan: plan runner-large is c5.4xlarge on aws; runners need a bare-metal type (*.metal) for /dev/kvm", "ci-fleet:queues.release.runners.release-1.plan: plan runner-large is c5.4xlarge on aws; runners need a bare-metal type (*.metal) for /dev/kvm"]],
  ["an unknown top-level key", (v) => (v.queus = {}), ["ci-fleet:queus: unknown key; expected one of provider, equinix, aws, plans, saltMaster, teleport, identity, github, buildkite, auditArchive, queues, deployTargets, dns, teleportGithubClientId, teleportGithubClientSecret, githubAppPrivateKey, saltRepositoryDeployKey, queueSecrets"]],
  ["an unknown nested key", (v) => (v.queues.default.runners["pr-1"].size = "xl"), ["ci-fleet:queues.default.runners.pr-1.size: unknown key; expected one of plan, os"]],
  ["a reserved queue name", (v) => (v.queues.salt = { agent: "buildkite", trusted: true, runners: { s1: { plan: "runner" } } }), ["ci-fleet:queues.salt: queue name salt is reserved (it would collide with the control plane's machine names)"]],
  ["a machine name over 63 characters", (v) => (v.queues.default.runners["a-very-long-runner-name-that-goes-on-and-on-forever-x"] = { plan: "runner" }), ["ci-fleet:queues.default.runners.a-very-long-runner-name-that-goes-on-and-on-forever-x: machine name production-default-a-very-long-runner-name-that-goes-on-and-on-forever-x is 72 characters; hostnames allow at most 63"]],
  [
    "a deploy target on the untrusted queue (pull requests would hold its role)",
    (v) => (v.deployTargets["infra-staging"].queue = "default"),
    ['ci-fleet:deployTargets.infra-staging.queue: queue "default" runs untrusted code (trusted: false); a deploy target needs a trusted queue, or every pull request could deploy'],
  ],
  ["a deploy target naming an unknown queue", (v) => (v.deployTargets["infra-staging"].queue = "nightly"), ['ci-fleet:deployTargets.infra-staging.queue: expected one of the queues (default, infra, release), got "nightly"']],
  ["an invalid account id", (v) => (v.deployTargets["release-artifacts"].accountId = "5678"), ['ci-fleet:deployTargets.release-artifacts.accountId: expected a 12-digit AWS account id, got "5678"']],
  ["a role name over IAM's limit", (v) => (v.deployTargets["release-artifacts"].roleName = "r".repeat(65)), [`ci-fleet:deployTargets.release-artifacts.roleName: expected an IAM role name (at most 64 characters of [A-Za-z0-9+=,.@_-]), got "${"r".repeat(57)}" (65 characters)`]],
  ["a managed policy ARN that is not an ARN", (v) => (v.deployTargets["infra-staging"].managedPolicyArns = ["AdministratorAccess"]), ['ci-fleet:deployTargets.infra-staging.managedPolicyArns[0]: expected IAM managed policy ARNs (arn:aws:iam::aws:policy/... or arn:aws:iam::<account>:policy/...), got "AdministratorAccess"']],
  ["an agent role name over 64 characters", (v) => (v.queues["q".repeat(40)] = { agent: "buildkite", trusted: true, runners: { z: { plan: "runner" } } }), [`ci-fleet:queues.${"q".repeat(40)}: agent role name ci-fleet-production-agent-${"q".repeat(40)} is 66 characters; IAM allows at most 64`]],
  ["a subnet outside the VPC", (v) => (v.aws.subnets["us-east-2b"].privateCidr = "10.99.0.0/19"), ["ci-fleet:aws.subnets.us-east-2b.privateCidr: 10.99.0.0/19 is not inside aws.vpcCidr 10.40.0.0/16"]],
  ["a Teleport team mapped to an unknown role", (v) => (v.teleport.teamsToRoles.maintainers = ["superuser"]), ['ci-fleet:teleport.teamsToRoles.maintainers: unknown Teleport role "superuser"; expected fleet-admin | fleet-auditor | runner-operator | runner-operator-default | runner-operator-infra | runner-operator-release']],
  ["github-actions queues without github settings", (v) => delete v.github, ["ci-fleet:github: is required: a queue uses the github-actions agent"]],
  ["an event archive with nobody to read it", (v) => delete v.auditArchive.auditorPrincipalArns, ["ci-fleet:auditArchive.auditorPrincipalArns: is required when auditArchive.enabled is true: who may read the archive"]],
  ["an event archive readable by an account root", (v) => (v.auditArchive.auditorPrincipalArns = ["arn:aws:iam::210987654321:root"]), ['ci-fleet:auditArchive.auditorPrincipalArns[0]: expected named IAM role or user ARNs (never an account root), got "arn:aws:iam::210987654321:root"']],
  ["an unknown agent", (v) => (v.queues.infra.agent = "jenkins"), ['ci-fleet:queues.infra.agent: expected one of github-actions | buildkite, got "jenkins"']],
];

test.each(CASES)("%s", (_what, edit, expected) => {
  const result = check(withEdit(edit));
  expect(messages(result.problems)).toEqual(expected);
  expect(result.settings).toBeUndefined();
});

test("every problem is reported at once, each with its path", () => {
  const v = withEdit((x) => {
    x.provider = "gce";
    x.queues.release.runners = {};
    x.deployTargets["infra-staging"].accountId = "12";
    x.queus = 1;
  });
  const paths = check(v).problems.map((p) => p.path);
  expect(paths).toEqual(
    expect.arrayContaining(["ci-fleet:provider", "ci-fleet:queues.release.runners", "ci-fleet:deployTargets.infra-staging.accountId", "ci-fleet:queus"]),
  );
});

test("queue secret paths must follow the SSM scheme", () => {
  const result = check(productionValues(), "production", {
    infra: ["buildkite/agent-token", "global/env/NPM_TOKEN", "deploy-docs/ssh/key", "global/token"],
    default: ["buildkite/agent-token"],
    nightly: ["global/env/X"],
  });
  expect(messages(result.problems)).toEqual([
    "ci-fleet:queueSecrets.infra.global.token: expected buildkite.agent-token or <global|repo-slug|pipeline-slug>.{env.<NAME>, ssh.key, allowed_pipelines, allowed_teams}",
    "ci-fleet:queueSecrets.default.buildkite.agent-token: applies only to buildkite queues",
    "ci-fleet:queueSecrets.nightly: expected one of the queues (default, infra, release)",
  ]);
});

test("job secrets on a queue in VMs are valid (the golden image runs the job-secrets hooks), and still checked like any other", () => {
  // release runs its jobs in VMs in production (isolation: vm); so does any queue without isolation.
  const values = productionValues();
  expect((values.queues as any).release.isolation).toBe("vm");
  const unset = withEdit((v) => delete v.queues.release.isolation);
  const secrets = { release: ["buildkite/agent-token", "global/env/NPM_TOKEN", "netboot-release/ssh/key", "netboot-release/allowed_teams", "github.com_example-org_netboot.git/allowed_pipelines"] };
  for (const v of [values, unset]) expect(messages(check(v, "production", secrets).problems)).toEqual([]);
  // What was refused for other reasons still is, on a vm queue too.
  expect(messages(check(values, "production", { release: ["global/env/PATH", "global/env/NPM_TOKEN", "global/env/npm-token", "global/token"] }).problems)).toEqual([
    "ci-fleet:queueSecrets.release.global.env.PATH: would set PATH, which the job hooks refuse (reserved: PATH); pick another name",
    "ci-fleet:queueSecrets.release.global.env.npm-token: sets NPM_TOKEN, as queueSecrets.release.global.env.NPM_TOKEN does; keep one",
    "ci-fleet:queueSecrets.release.global.token: expected buildkite.agent-token or <global|repo-slug|pipeline-slug>.{env.<NAME>, ssh.key, allowed_pipelines, allowed_teams}",
  ]);
});

test("property: random configuration never crashes the checker and always explains a rejection", () => {
  const json = fc.jsonValue({ maxDepth: 4 });
  const mutated = fc.record({
    key: fc.constantFrom("provider", "queues", "plans", "teleport", "identity", "aws", "equinix", "deployTargets", "saltMaster", "github"),
    value: json,
  });
  fc.assert(
    fc.property(fc.oneof(fc.dictionary(fc.string(), json), mutated.map(({ key, value }) => withEdit((v) => (v[key] = value)))), (values) => {
      const result = check(values as Values);
      // Either valid settings or at least one problem, never neither and never a throw.
      expect(result.settings !== undefined || result.problems.length > 0).toBe(true);
      for (const p of result.problems) expect(p.path.startsWith("ci-fleet:")).toBe(true);
    }),
    { numRuns: 400 },
  );
});
