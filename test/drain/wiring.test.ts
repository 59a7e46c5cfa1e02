/**
 * Which resources carry the drain hooks (infra/fleet/drain-hook.ts), read from what the
 * program really registers on both providers: resources.json `options.hooks`, captured by
 * the mock runtime's stack transformation (the mock monitor itself never sees options).
 */
import { ROOT, previewStack } from "../support/preview";
import { runUnderMocks, type CapturedResource, type HookNames } from "../../tools/preview/mock-runtime";
import { readStackInput } from "../../tools/preview/stack-files";
import { createFleet } from "../../infra/program";
import { DRAIN_DONE_HOOK_NAME, DRAIN_HOOK_NAME } from "../../infra/fleet/drain-hook";

const MACHINE_TYPES = ["aws:ec2/instance:Instance", "equinix-metal:index/device:Device"];

function roleOf(r: CapturedResource): string | undefined {
  const tags = r.inputs.tags;
  if (Array.isArray(tags)) return (tags as string[]).find((t) => t.startsWith("ci-fleet:role="))?.slice("ci-fleet:role=".length);
  return (tags as Record<string, string> | undefined)?.["ci-fleet:role"];
}

const hooksOf = (r: CapturedResource) => (r.options as { hooks?: HookNames }).hooks;

describe.each(["production", "production-aws"])("stack %s", (stack) => {
  let resources: CapturedResource[];
  let runnerIds: string[];
  beforeAll(async () => {
    const run = await previewStack(stack);
    resources = run.resources;
    runnerIds = run.machines.filter((m) => m.role === "runner").map((m) => m.hostname).sort();
    expect(runnerIds.length).toBeGreaterThan(0);
  });

  test("every runner machine is drained before delete, its request removed after, and it is replaced delete-before-create", () => {
    const runners = resources.filter((r) => MACHINE_TYPES.includes(r.type) && roleOf(r) === "runner");
    expect(runners).toHaveLength(runnerIds.length);
    for (const r of runners) {
      expect({ name: r.name, hooks: hooksOf(r), deleteBeforeReplace: r.options.deleteBeforeReplace }).toEqual({
        name: r.name,
        hooks: { beforeDelete: [DRAIN_HOOK_NAME], afterDelete: [DRAIN_DONE_HOOK_NAME] },
        deleteBeforeReplace: true,
      });
    }
  });

  test("no control-plane machine is drained or replaced delete-before-create", () => {
    const control = resources.filter((r) => MACHINE_TYPES.includes(r.type) && roleOf(r) !== "runner");
    expect(control.map(roleOf).sort()).toEqual(["salt-master", "teleport"]);
    for (const r of control) expect({ name: r.name, hooks: hooksOf(r), dbr: r.options.deleteBeforeReplace }).toEqual({ name: r.name, hooks: undefined, dbr: undefined });
  });

  // aws: an instanceType change is an in-place update that stops and starts the instance, which no
  // delete hook sees; made a replacement, the runner is drained first like any delete.
  test("a change that would stop a runner in place replaces it instead, so it is drained (aws: instanceType)", () => {
    const runners = resources.filter((r) => MACHINE_TYPES.includes(r.type) && roleOf(r) === "runner");
    const expected = stack === "production-aws" ? ["instanceType"] : undefined;
    for (const r of runners) expect({ name: r.name, replaceOnChanges: r.options.replaceOnChanges }).toEqual({ name: r.name, replaceOnChanges: expected });
    const control = resources.filter((r) => MACHINE_TYPES.includes(r.type) && roleOf(r) !== "runner");
    for (const r of control) expect({ name: r.name, replaceOnChanges: r.options.replaceOnChanges }).toEqual({ name: r.name, replaceOnChanges: undefined });
  });

  test("a runner's pillar document drains it before it goes (it is deleted before the machine); no other document does", () => {
    const documents = resources.filter((r) => r.type === "aws:ssm/parameter:Parameter" && (r.inputs.tags as Record<string, string> | undefined)?.["ci-fleet:role"] === "pillar");
    const hooked = documents.filter((r) => hooksOf(r)).map((r) => (r.inputs.tags as Record<string, string>)["ci-fleet:minion"]).sort();
    expect(hooked).toEqual(runnerIds);
    for (const r of documents.filter((d) => hooksOf(d))) expect(hooksOf(r)).toEqual({ beforeDelete: [DRAIN_HOOK_NAME] });
  });

  test("no other resource carries a hook", () => {
    const others = resources.filter((r) => hooksOf(r) && !MACHINE_TYPES.includes(r.type) && r.type !== "aws:ssm/parameter:Parameter");
    expect(others.map((r) => `${r.type}::${r.name}`)).toEqual([]);
  });
});

test("the program registers both hooks, by their fixed names, in every run", async () => {
  const input = readStackInput(ROOT, "production");
  const { mocks } = await runUnderMocks(
    { stack: "production", account: { accountId: "210987654321", region: "us-east-2" }, config: input.config, secretKeys: input.secretKeys },
    () => createFleet({ offlinePreview: true }),
  );
  expect([...mocks.resourceHooks.keys()].sort()).toEqual([DRAIN_DONE_HOOK_NAME, DRAIN_HOOK_NAME].sort());
  // Not on previews: `pulumi preview` asks nothing of the fleet.
  for (const hook of mocks.resourceHooks.values()) expect(hook.opts?.onDryRun ?? false).toBe(false);
  expect(mocks.resourceHooks.get(DRAIN_DONE_HOOK_NAME)?.opts?.ignoreErrors).toBe(true);
});
