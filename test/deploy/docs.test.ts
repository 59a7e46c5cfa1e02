import * as fs from "fs";
import * as path from "path";
import * as YAML from "yaml";
import { stackConfig } from "../support/preview";

/**
 * Issue 16 review, points 4 and 6: docs/deploy.md's snippets run as documented. The Buildkite step
 * uses only commands the job VM image has (salt/runner/parameters/defaults.yaml guest_packages;
 * no AWS CLI, no jq), and the GitHub workflow has a trigger, a pinned action and labels a
 * configured queue has.
 */

const root = path.join(__dirname, "..", "..");
const doc = fs.readFileSync(path.join(root, "docs", "deploy.md"), "utf8");
const yamlBlocks = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => YAML.parse(m[1]));
const guestPackages: string[] = (() => {
  const defaults = YAML.parse(fs.readFileSync(path.join(root, "salt", "runner", "parameters", "defaults.yaml"), "utf8"));
  const found: string[][] = [];
  const walk = (x: unknown) => {
    if (x && typeof x === "object") for (const [k, v] of Object.entries(x)) (k === "guest_packages" ? found.push(v as string[]) : walk(v));
  };
  walk(defaults);
  expect(found).toHaveLength(1);
  return found[0];
})();

test("the Buildkite step calls only the agent, shell builtins and what guest_packages installs (no aws, no jq)", () => {
  const step = yamlBlocks.find((b) => Array.isArray(b?.steps))?.steps[0];
  expect(step?.command).toContain("buildkite-agent oidc request-token --audience sts.amazonaws.com");
  // Every command word at the start of a pipeline segment.
  const words = new Set<string>();
  for (const line of (step.command as string).split("\n")) {
    const code = line.replace(/#.*$/, "").trim();
    if (!code || code.startsWith("--")) continue;
    for (const segment of code.split(/\||;|&&|\$\(/)) {
      const word = segment.trim().split(/\s+/)[0].replace(/[)"']+$/, "");
      if (word && !/^[A-Z_]+=/.test(word) && !word.startsWith('"') && !word.startsWith("'") && word !== "\\") words.add(word);
    }
  }
  // Shell builtins, coreutils, the agent, the pipeline's own script (and the python one-liner's text).
  const builtins = ["", "set", "export", "trap", "mktemp", "rm", "buildkite-agent", "./release.sh", "print(\"assumed\","];
  const needed = [...words].filter((w) => !builtins.includes(w) && !w.startsWith("token_file="));
  expect(needed.sort()).toEqual(["curl", "python3"]);
  for (const command of needed) expect(guestPackages).toContain(command);
  expect(guestPackages).not.toContain("awscli");
  expect(step.command).not.toMatch(/(^|\s)(aws|jq)\s/m);
});

test("the GitHub workflow has a trigger, configure-aws-credentials pinned by commit, and labels of a configured queue", () => {
  const workflow = yamlBlocks.find((b) => b?.jobs?.deploy);
  expect(Object.keys(workflow.on)).toEqual(["push"]);
  const uses: string = workflow.jobs.deploy.steps[0].uses;
  expect(uses).toMatch(/^aws-actions\/configure-aws-credentials@[0-9a-f]{40}$/);
  expect(doc).toContain("configure-aws-credentials@e6de054238d6b7531b4efff3b6587d9aade6a06c # v6.2.3");
  // The labels are those of a github-actions queue of the example config's shape (self-hosted + the queue's label).
  const runsOn: string[] = workflow.jobs.deploy["runs-on"];
  expect(runsOn).toEqual(["self-hosted", "deploy"]);
  const queues = stackConfig("production")["ci-fleet:queues"] as Record<string, { agent: string; labels?: string[] }>;
  expect(Object.values(queues).some((q) => q.agent === "github-actions")).toBe(true);
  expect(doc).toMatch(/custom subject templates fail closed/i);
  expect(doc).toMatch(/pull_request_target/);
});
