import * as pulumi from "@pulumi/pulumi";
import { runUnderMocks } from "../../tools/preview/mock-runtime";
import { readStackInput } from "../../tools/preview/stack-files";
import { ROOT } from "../support/preview";

/**
 * Under `pulumi up` the program is infra/index.ts. Pulumi's Node host prints a RunError as
 * its message alone and any other error with its stack trace (cmd/run/run.js), so a config
 * problem must reach it as a RunError: one clear error, no stack trace, no object dump.
 */
test("a config error under pulumi up is a RunError whose message lists every problem", async () => {
  const input = readStackInput(ROOT, "production");
  let error: unknown;
  await runUnderMocks({ stack: "production", account: { accountId: "210987654321", region: "us-east-2" }, config: input.config, secretKeys: input.secretKeys }, () => {
    jest.isolateModules(() => {
      try {
        require("../../infra/index");
      } catch (e) {
        error = e;
      }
    });
  });
  expect(pulumi.RunError.isInstance(error)).toBe(true);
  const message = (error as Error).message;
  expect(message).toMatch(/^ci-fleet: invalid stack configuration \(5 problems\):\n/);
  expect(message).toContain("  - ci-fleet:teleportGithubClientId: secret is required");
  expect(message).not.toMatch(/\n\s+at /);
});
