import { checkFleetSettings } from "../../infra/config/check";
import { stackConfig } from "../support/preview";

/** `<level>/env/<name>` leaves: refused here when the job hooks would refuse them (docs/job-secrets.md). */

function values(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(stackConfig("production"))) out[k.replace(/^ci-fleet:/, "")] = v;
  return JSON.parse(JSON.stringify(out)) as Record<string, unknown>;
}
const problems = (paths: string[]) =>
  checkFleetSettings({ stack: "production", values: values(), secretsPresent: new Set(), queueSecretPaths: { infra: paths } }).problems.map((p) => `${p.path}: ${p.message}`);

const CASES: [string, string[], string[]][] = [
  ["a plain variable", ["global/env/NPM_TOKEN", "deploy-docs/env/npm-token"], []],
  ["PATH", ["global/env/path"], ["ci-fleet:queueSecrets.infra.global.env.path: would set PATH, which the job hooks refuse (reserved: PATH); pick another name"]],
  ["an AWS_ variable", ["netboot-release/env/AWS_SECRET_ACCESS_KEY"], ["ci-fleet:queueSecrets.infra.netboot-release.env.AWS_SECRET_ACCESS_KEY: would set AWS_SECRET_ACCESS_KEY, which the job hooks refuse (reserved: AWS_*); pick another name"]],
  ["LD_PRELOAD", ["global/env/LD_PRELOAD"], ["ci-fleet:queueSecrets.infra.global.env.LD_PRELOAD: would set LD_PRELOAD, which the job hooks refuse (reserved: LD_*); pick another name"]],
  ["two names for one variable", ["global/env/NPM_TOKEN", "global/env/npm-token"], ["ci-fleet:queueSecrets.infra.global.env.npm-token: sets NPM_TOKEN, as queueSecrets.infra.global.env.NPM_TOKEN does; keep one"]],
];

test.each(CASES)("%s", (_what, paths, expected) => {
  expect(problems(paths)).toEqual(expected);
});
