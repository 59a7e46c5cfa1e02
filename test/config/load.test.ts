import { FleetConfigError } from "../../infra/config/check";
import { OFFLINE_PLACEHOLDER } from "../../infra/config/load";
import { loaderError } from "./run-loader";
import { readStackInput } from "../../tools/preview/stack-files";
import { ROOT } from "../support/preview";

/** The loader as `pulumi up` runs it: a missing secret is a config error, listed with how to set it. */
const load = loaderError;

test("under pulumi up, every missing secret is one listed problem", async () => {
  const input = readStackInput(ROOT, "production");
  const error = await load(input.config, input.secretKeys, false);
  expect(error).toBeInstanceOf(FleetConfigError);
  expect((error as FleetConfigError).problems.map((p) => p.path)).toEqual([
    "ci-fleet:teleportGithubClientId",
    "ci-fleet:teleportGithubClientSecret",
    "ci-fleet:githubAppPrivateKey",
    "ci-fleet:queueSecrets.infra.buildkite.agent-token",
    "ci-fleet:queueSecrets.release.buildkite.agent-token",
  ]);
  expect((error as FleetConfigError).message).toContain("pulumi config set --secret --path ci-fleet:queueSecrets.infra.buildkite.agent-token <value>");
});

test("the offline preview lists them as missing instead", async () => {
  const input = readStackInput(ROOT, "production");
  expect(await load(input.config, input.secretKeys, true)).toBeUndefined();
});

test("a secret stored in plain text, or holding the preview's placeholder, is refused", async () => {
  const input = readStackInput(ROOT, "production");
  const config = { ...input.config, "ci-fleet:teleportGithubClientId": "Iv1.plain", "ci-fleet:teleportGithubClientSecret": OFFLINE_PLACEHOLDER };
  const error = (await load(config, [...input.secretKeys, "ci-fleet:teleportGithubClientSecret"], false)) as FleetConfigError;
  const byPath = Object.fromEntries(error.problems.map((p) => [p.path, p.message]));
  expect(byPath["ci-fleet:teleportGithubClientId"]).toBe("is stored in plain text; set it with `pulumi config set --secret ci-fleet:teleportGithubClientId`");
  expect(byPath["ci-fleet:teleportGithubClientSecret"]).toBe("holds the offline preview's placeholder, not a real secret");
});
