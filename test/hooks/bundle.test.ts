import { execFileSync, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as http from "http";
import type { AddressInfo } from "net";
import * as os from "os";
import * as path from "path";
import { isAlive } from "../../hooks/buildkite/src/agents";
import { buildHookFiles, OUTPUT_DIR, REPO_ROOT } from "../../hooks/buildkite/build";
import { renderHookWrapper } from "../../hooks/buildkite/src/wrappers";
import { awsError, FakeSsm } from "./support/fake-ssm";
import { requireTool } from "./support/tools";

/**
 * The committed files Salt installs: rebuilt from source they match byte for byte, and
 * the real wrappers + bundle (with the real AWS SDK) work end to end against a local
 * endpoint that speaks SSM's JSON protocol.
 */

describe("committed bundle and wrappers", () => {
  test("rebuilding from hooks/buildkite/src reproduces salt/buildkite/files/hooks byte for byte", async () => {
    const built = await buildHookFiles();
    expect(built.map((f) => f.name).sort()).toEqual(fs.readdirSync(OUTPUT_DIR).sort());
    for (const file of built) {
      const committed = fs.readFileSync(path.join(OUTPUT_DIR, file.name), "utf8");
      // Not toBe: a 380 kB diff helps nobody; the name of the stale file does.
      if (committed !== file.contents) throw new Error(`${file.name} is out of date: run npm run build:hooks and commit`);
    }
    // git keeps the wrappers executable.
    const modes = spawnSync("git", ["ls-files", "-s", "--", path.relative(REPO_ROOT, OUTPUT_DIR)], { cwd: REPO_ROOT, encoding: "utf8" });
    const tracked = Object.fromEntries(modes.stdout.trim().split("\n").map((l) => [path.basename(l.split("\t")[1]), l.split(" ")[0]]));
    expect(tracked).toEqual({
      "ci-fleet-job-secrets.js": "100644",
      environment: "100755",
      "pre-checkout": "100755",
      "post-checkout": "100755",
      "pre-exit": "100755",
    });
  }, 120_000);

  test("the environment wrapper", () => {
    expect(renderHookWrapper("environment")).toMatchSnapshot();
  });
});

/** Serves FakeSsm over SSM's awsJson1_1 protocol, as the SDK expects it. */
async function serveSsm(ssm: FakeSsm): Promise<{ url: string; close: () => Promise<void>; targets: string[]; authorizations: string[] }> {
  const targets: string[] = [];
  const authorizations: string[] = [];
  const server = http.createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      const target = String(request.headers["x-amz-target"] ?? "");
      targets.push(target);
      authorizations.push(String(request.headers.authorization ?? ""));
      const input = JSON.parse(body || "{}");
      const call =
        target === "AmazonSSM.GetParameter"
          ? ssm.getParameter(input)
          : target === "AmazonSSM.GetParametersByPath"
            ? ssm.getParametersByPath(input)
            : Promise.reject(awsError("UnknownOperationException", target));
      call.then(
        (answer) => {
          response.writeHead(200, { "content-type": "application/x-amz-json-1.1" });
          response.end(JSON.stringify(answer));
        },
        (error: Error) => {
          response.writeHead(400, { "content-type": "application/x-amz-json-1.1" });
          response.end(JSON.stringify({ __type: error.name, message: error.message }));
        },
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    targets,
    authorizations,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function bash(script: string, env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", script], { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/**
 * The hooks run under the runners' own Node: Ubuntu 24.04's nodejs package is 18.19.1, so
 * the bundle is proven on that exact release, not only on the Node running these tests.
 * `npm test` (scripts/test.sh) installs it, pinned and checksummed, into .cache/.
 */
const RUNNER_NODE = process.env.CI_FLEET_RUNNER_NODE ?? path.join(__dirname, "../../.cache/runner-node-18.19.1/bin/node");

test("the end-to-end runs use the runners' Node (18.19.1)", () => {
  if (!fs.existsSync(RUNNER_NODE)) throw new Error(`${RUNNER_NODE} is missing: run \`npm test\` once (scripts/test.sh installs the runners' Node 18.19.1)`);
  expect(execFileSync(RUNNER_NODE, ["--version"], { encoding: "utf8" }).trim()).toBe("v18.19.1");
});

describe("the installed hooks, end to end (real SDK, local SSM endpoint)", () => {
  const Q = "/ci-fleet/production/infra/";
  let work: string;

  beforeAll(() => {
    requireTool("bash", "bash");
    requireTool("ssh-agent", "openssh-client");
  });
  beforeEach(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), "cf-e2e-"));
  });
  afterEach(() => fs.rmSync(work, { recursive: true, force: true }));

  function agentEnv(endpoint: string): Record<string, string> {
    return {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: work,
      CI_FLEET_NODE: RUNNER_NODE,
      CI_FLEET_SSM_PREFIX: Q,
      CI_FLEET_STATE_DIR: path.join(work, "state"),
      AWS_REGION: "us-east-1",
      AWS_ENDPOINT_URL_SSM: endpoint,
      AWS_ACCESS_KEY_ID: "AKIAIOSFODNN7EXAMPLE",
      AWS_SECRET_ACCESS_KEY: "not-a-real-secret-key",
      AWS_MAX_ATTEMPTS: "1",
      AWS_EC2_METADATA_DISABLED: "true",
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
      BUILDKITE_JOB_ID: "0190a4b2-7c1e-4d7e-9a0b-00000000e2e0",
      BUILDKITE_REPO: "https://github.com/example-org/netboot.git",
      BUILDKITE_PIPELINE_SLUG: "netboot-release",
      BUILDKITE_BUILD_CREATOR_TEAMS: "maintainers",
    };
  }

  const hooks = (name: string) => JSON.stringify(path.join(OUTPUT_DIR, name));

  test("environment, pre-checkout, post-checkout, pre-exit sourced in turn, as the agent does", async () => {
    const key = path.join(work, "key");
    spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
    const hostile = "multi\nline 'quoted' $(touch pwned) `touch pwned` ; done";
    const ssm = new FakeSsm(1)
      .put(`${Q}global/ssh/key`, fs.readFileSync(key, "utf8"))
      .put(`${Q}global/env/npm-token`, "from-global")
      .put(`${Q}github.com_example-org_netboot.git/env/npm-token`, "from-repo")
      .put(`${Q}netboot-release/allowed_teams`, "maintainers")
      .put(`${Q}netboot-release/env/hostile`, hostile);
    // Credentials and region the way Salt sets them up on runners: ~/.aws/config with a credential_process.
    fs.mkdirSync(path.join(work, ".aws"));
    const credentials = { Version: 1, AccessKeyId: "ASIAFROMCREDPROCESS", SecretAccessKey: "not-a-real-secret", SessionToken: "not-a-real-token", Expiration: "2099-01-01T00:00:00Z" };
    fs.writeFileSync(path.join(work, "credentials.json"), JSON.stringify(credentials));
    fs.writeFileSync(path.join(work, ".aws", "config"), `[default]\nregion = eu-west-1\ncredential_process = /bin/cat ${path.join(work, "credentials.json")}\n`);
    const env = agentEnv("");
    for (const name of ["AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]) delete env[name];
    const server = await serveSsm(ssm);
    try {
      const result = await bash(
        `cd ${JSON.stringify(work)}
. ${hooks("environment")} || exit 11
printf '%s\\0' "$NPM_TOKEN" "$HOSTILE" "$SSH_AUTH_SOCK" > after-environment
cp "$CI_FLEET_STATE_DIR/$BUILDKITE_JOB_ID/state.json" state-after-environment.json
. ${hooks("pre-checkout")} || exit 12
. ${hooks("post-checkout")} || exit 13
. ${hooks("pre-exit")} || exit 14
printf '%s' "\${NPM_TOKEN-unset} \${HOSTILE-unset} \${SSH_AUTH_SOCK-unset}"`,
        { ...env, AWS_ENDPOINT_URL_SSM: server.url },
      );
      expect(result.stderr).not.toContain("from-global");
      expect(result.code).toBe(0);
      const [npmToken, hostileRead, socket] = fs.readFileSync(path.join(work, "after-environment"), "utf8").split("\0");
      expect(npmToken).toBe("from-repo");
      expect(hostileRead).toBe(hostile);
      expect(socket).toBe(path.join(work, "state", "0190a4b2-7c1e-4d7e-9a0b-00000000e2e0", "global.sock"));
      expect(result.stdout).toBe("unset unset unset");
      const state = JSON.parse(fs.readFileSync(path.join(work, "state-after-environment.json"), "utf8"));
      expect(state.agents).toEqual([{ level: "global", pid: expect.any(Number), socket }]);
      expect(isAlive(state.agents[0].pid)).toBe(false);
      expect(fs.existsSync(path.dirname(socket))).toBe(false);
      expect(fs.readdirSync(work).filter((f) => f.startsWith("pwned"))).toEqual([]);
      // The real SDK paginated (page size 1) and read every access list.
      expect(server.targets.filter((t) => t === "AmazonSSM.GetParameter")).toHaveLength(6);
      expect(server.targets.filter((t) => t === "AmazonSSM.GetParametersByPath").length).toBeGreaterThan(3);
      // Signed with the credential_process credentials for the config file's region.
      expect(server.authorizations.every((a) => a.includes("Credential=ASIAFROMCREDPROCESS/") && a.includes("/eu-west-1/ssm/aws4_request"))).toBe(true);
    } finally {
      await server.close();
    }
  }, 60_000);

  test("a throttled access list fails the environment hook and exports nothing", async () => {
    const ssm = new FakeSsm()
      .put(`${Q}global/env/npm-token`, "from-global")
      .fail("getParameter", `${Q}github.com_example-org_netboot.git/allowed_pipelines`, () => awsError("ThrottlingException", "Rate exceeded"));
    const server = await serveSsm(ssm);
    try {
      const result = await bash(`. ${hooks("environment")}; status=$?; printf '%s %s' "$status" "\${NPM_TOKEN-unset}"`, agentEnv(server.url));
      expect(result.stdout).toBe("1 unset");
      expect(result.stderr).toContain(
        `ci-fleet job-secrets: cannot read ${Q}github.com_example-org_netboot.git/allowed_pipelines: ThrottlingException: Rate exceeded. The access list exists or may exist but cannot be read, so the job stops (fail closed).`,
      );
      expect(result.stderr).toContain("ci-fleet job-secrets: the environment hook failed; see the lines above");
    } finally {
      await server.close();
    }
  }, 60_000);

  test("a wrapper whose Node is missing fails instead of evaluating anything", async () => {
    const result = await bash(`. ${hooks("pre-exit")}; echo "status=$?"`, { ...agentEnv("http://127.0.0.1:9"), CI_FLEET_NODE: "/nonexistent/node" });
    expect(result.stdout).toBe("status=1\n");
  });
});
