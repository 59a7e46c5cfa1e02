/**
 * The runner's AWS config is not in the CI user's home any more: the agent units set
 * AWS_CONFIG_FILE to a root-owned file. This holds the SDKs to it, run for real with an empty
 * HOME: botocore (what the Buildkite token script's boto3 uses; configprovider.py
 * `config_file: AWS_CONFIG_FILE`) and the JS SDK v3 the job-secrets hooks are bundled from
 * (@smithy/shared-ini-file-loader getConfigFilepath; credential-provider-process fromProcess).
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

/** A python3 that has boto3 (Debian python3-boto3 on a runner; here the first interpreter that has it). */
const python = [process.env.CI_FLEET_PYTHON, "/usr/bin/python3", "python3"]
  .filter((p): p is string => !!p)
  .find((p) => spawnSync(p, ["-c", "import boto3"]).status === 0);

let dir: string;
let env: NodeJS.ProcessEnv;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-aws-config-"));
  const home = path.join(dir, "home");
  fs.mkdirSync(home);
  const credentials = { Version: 1, AccessKeyId: "ASIAFROMAWSCONFIGFILE", SecretAccessKey: "not-a-secret", SessionToken: "not-a-token", Expiration: "2099-01-01T00:00:00Z" };
  fs.writeFileSync(path.join(dir, "credentials.json"), JSON.stringify(credentials));
  fs.writeFileSync(path.join(dir, "aws-config"), `[default]\nregion = eu-west-1\ncredential_process = /bin/cat ${path.join(dir, "credentials.json")}\n`);
  env = { PATH: process.env.PATH, HOME: home, AWS_CONFIG_FILE: path.join(dir, "aws-config"), AWS_EC2_METADATA_DISABLED: "true" };
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test("botocore (boto3) takes region and credential_process from AWS_CONFIG_FILE, HOME has no .aws", () => {
  if (!python) throw new Error("no python3 with boto3 (Debian package python3-boto3)");
  const run = spawnSync(python, ["-c", "import boto3,json; s=boto3.session.Session(); c=s.get_credentials(); print(json.dumps([s.region_name, c.method, c.access_key]))"], { encoding: "utf8", env });
  if (run.error) throw new Error(`cannot run ${python}: ${run.error.message}`);
  expect(run.stderr).toBe("");
  expect(JSON.parse(run.stdout)).toEqual(["eu-west-1", "custom-process", "ASIAFROMAWSCONFIGFILE"]);
});

test("the JS SDK v3 (the hooks' credential chain) takes credential_process from AWS_CONFIG_FILE, HOME has no .aws", () => {
  const script = `const { defaultProvider } = require("@aws-sdk/credential-provider-node");
defaultProvider()().then((c) => console.log(JSON.stringify([c.accessKeyId])), (e) => { console.error(e.message); process.exit(1); });`;
  const run = spawnSync(process.execPath, ["-e", script], { encoding: "utf8", env, cwd: path.resolve(__dirname, "../..") });
  expect(run.stderr).toBe("");
  expect(JSON.parse(run.stdout)).toEqual(["ASIAFROMAWSCONFIGFILE"]);
});
