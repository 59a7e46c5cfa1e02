import { checkFleetSettings, ConfigProblem } from "../../infra/config/check";
import { stackConfig } from "../support/preview";

/**
 * The AWS machine image: by default Canonical's published Ubuntu 24.04 (resolved at deploy
 * time), or an AMI id a maintainer pinned. Tutorial placeholders and malformed ids are
 * refused, and so are instance types whose architecture is not the image's (amd64).
 */

type Values = Record<string, any>;

function awsValues(edit: (v: Values) => void = () => undefined): Values {
  const out: Values = {};
  for (const [k, v] of Object.entries(stackConfig("production-aws"))) out[k.replace(/^ci-fleet:/, "")] = v;
  const v = JSON.parse(JSON.stringify(out)) as Values;
  edit(v);
  return v;
}

const check = (values: Values) => checkFleetSettings({ stack: "production-aws", values, secretsPresent: new Set(), queueSecretPaths: {} });
const messages = (problems: ConfigProblem[]) => problems.map((p) => `${p.path}: ${p.message}`);

const PLACEHOLDER = "ci-fleet:aws.imageId: ami-0c55b159cbfafe1f0 is a placeholder copied from tutorials or AWS's examples, not an image checked for this region; remove aws.imageId to use Canonical's published Ubuntu 24.04 image, or pin an AMI id you have checked";
const MALFORMED = (v: string) => `ci-fleet:aws.imageId: expected an AMI id (ami- and 8 or 17 lower-case hex digits), got ${JSON.stringify(v)}`;
const ARM = (path: string, plan: string, type: string) => `ci-fleet:${path}: plan ${plan} is ${type} on aws, an arm64 (Graviton) type; the fleet's image is Ubuntu 24.04 for amd64`;

test("the production stacks pin no image: Canonical's published one is used", () => {
  for (const stack of ["production", "production-aws"]) {
    const aws = stackConfig(stack)["ci-fleet:aws"] as Record<string, unknown>;
    expect(aws.imageId).toBeUndefined();
  }
  const { problems, settings } = check(awsValues());
  expect(messages(problems)).toEqual([]);
  expect(settings?.aws?.imageId).toBeUndefined();
});

test("a pinned, well-formed AMI id is kept", () => {
  for (const id of ["ami-05f2c7a1e9d3b4f86", "ami-7c3e91a2"]) {
    const { problems, settings } = check(awsValues((v) => (v.aws.imageId = id)));
    expect(messages(problems)).toEqual([]);
    expect(settings?.aws?.imageId).toBe(id);
  }
});

const CASES: [string, (v: Values) => void, string[]][] = [
  ["the tutorial placeholder", (v) => (v.aws.imageId = "ami-0c55b159cbfafe1f0"), [PLACEHOLDER]],
  ...["ami-0abcdef1234567890", "ami-0123456789abcdef0", "ami-1234567890abcdef0", "ami-12345678", "ami-1a2b3c4d"].map(
    (id): [string, (v: Values) => void, string[]] => [`AWS's documentation example ${id}`, (v) => (v.aws.imageId = id), [PLACEHOLDER.replace("ami-0c55b159cbfafe1f0", id)]],
  ),
  ["10 hex digits", (v) => (v.aws.imageId = "ami-0123abcd45"), [MALFORMED("ami-0123abcd45")]],
  ["16 hex digits", (v) => (v.aws.imageId = "ami-0123456789abcdef"), [MALFORMED("ami-0123456789abcdef")]],
  ["upper-case hex", (v) => (v.aws.imageId = "ami-0C55B159CBFAFE1F0"), [MALFORMED("ami-0C55B159CBFAFE1F0")]],
  ["an SSM parameter instead of an id", (v) => (v.aws.imageId = "resolve:ssm:/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"), ["ci-fleet:aws.imageId: expected an AMI id (ami- and 8 or 17 lower-case hex digits), got \"resolve:ssm:/aws/service/canonical/ubuntu/server/24.04/st\" (94 characters)"]],
  ["a Graviton runner", (v) => (v.plans.runner.aws = "c7g.metal"), ["infra-1", "infra-2", "pr-1", "pr-2", "pr-3"].map((r) => ARM(`queues.${r.startsWith("pr") ? "default" : "infra"}.runners.${r}.plan`, "runner", "c7g.metal")).sort()],
  ["a Graviton control plane", (v) => (v.plans.control.aws = "m7g.large"), [ARM("saltMaster.plan", "control", "m7g.large"), ARM("teleport.plan", "control", "m7g.large")]],
  ["a Graviton a1 runner", (v) => (v.plans["runner-large"].aws = "a1.metal"), [ARM("queues.default.runners.pr-4.plan", "runner-large", "a1.metal"), ARM("queues.release.runners.release-1.plan", "runner-large", "a1.metal")]],
];

test.each(CASES)("%s is refused", (_what, edit, expected) => {
  const result = check(awsValues(edit));
  expect(messages(result.problems).sort()).toEqual([...expected].sort());
  expect(result.settings).toBeUndefined();
});

test.each(["c5.metal", "m5zn.metal", "m5.metal", "c6i.metal", "c7i.metal-24xl", "m7a.metal-48xl", "g4dn.metal", "r7iz.metal-16xl"])("amd64 bare-metal type %s is accepted for runners", (type) => {
  const { problems } = check(awsValues((v) => (v.plans.runner.aws = type)));
  expect(messages(problems)).toEqual([]);
});
