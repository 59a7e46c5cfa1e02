import { jobPaths, readSecretsContext, type Env } from "../../hooks/buildkite/src/context";
import { JobSecretsError } from "../../hooks/buildkite/src/errors";
import { loadJobSecrets, type JobSecrets } from "../../hooks/buildkite/src/secrets";
import { listParameters } from "../../hooks/buildkite/src/ssm";
import { awsError, FakeSsm, kmsDenied } from "./support/fake-ssm";
import { logSink } from "./support/tools";

const Q = "/ci-fleet/production/infra/";
const GLOBAL = `${Q}global/`;
const REPO = `${Q}github.com_example-org_netboot.git/`;
const PIPELINE = `${Q}netboot-release/`;

const jobEnv = (overrides: Env = {}): Env => ({
  CI_FLEET_SSM_PREFIX: Q,
  BUILDKITE_REPO: "git@github.com:example-org/netboot.git",
  BUILDKITE_PIPELINE_SLUG: "netboot-release",
  BUILDKITE_BUILD_CREATOR_TEAMS: "maintainers:release-managers",
  BUILDKITE_UNBLOCKER_TEAMS: "",
  ...overrides,
});

async function load(ssm: FakeSsm, env: Env = jobEnv()): Promise<JobSecrets & { log: string[] }> {
  const sink = logSink();
  const secrets = await loadJobSecrets(ssm, readSecretsContext(env), sink.log);
  return { ...secrets, log: sink.lines };
}

/** The error a load rejects with (the test fails if it resolves). */
async function failureOf(loading: Promise<unknown>): Promise<Error> {
  try {
    await loading;
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected the job to stop, but the secrets loaded");
}

const envOf = (secrets: JobSecrets) => Object.fromEntries(secrets.env.map((s) => [s.name, s.value]));

describe("levels and override order", () => {
  test("reads global, repo, pipeline in that order; pipeline beats repo beats global", async () => {
    const ssm = new FakeSsm()
      .put(`${GLOBAL}env/shared`, "from-global")
      .put(`${GLOBAL}env/only-global`, "g")
      .put(`${REPO}env/shared`, "from-repo")
      .put(`${REPO}env/only-repo`, "r")
      .put(`${PIPELINE}env/shared`, "from-pipeline")
      .put(`${PIPELINE}env/Only-Pipeline`, "p");
    const secrets = await load(ssm);
    expect(envOf(secrets)).toEqual({ SHARED: "from-pipeline", ONLY_GLOBAL: "g", ONLY_REPO: "r", ONLY_PIPELINE: "p" });
    expect(secrets.env.map((s) => s.name)).toEqual(["ONLY_GLOBAL", "ONLY_PIPELINE", "ONLY_REPO", "SHARED"]);
    expect(secrets.env.find((s) => s.name === "SHARED")?.parameter).toBe(`${PIPELINE}env/shared`);
    const listed = ssm.calls.filter((c) => c.operation === "getParametersByPath" && c.nextToken === undefined).map((c) => c.target);
    expect(listed).toEqual([GLOBAL, REPO, PIPELINE].map((p) => p.slice(0, -1)));
  });

  test("repo beats global when the pipeline level is empty", async () => {
    const ssm = new FakeSsm().put(`${GLOBAL}env/token`, "g").put(`${REPO}env/token`, "r");
    expect(envOf(await load(ssm))).toEqual({ TOKEN: "r" });
  });

  test("a pipeline without a repository has no repo level", async () => {
    const ssm = new FakeSsm().put(`${REPO}env/token`, "r").put(`${GLOBAL}env/token`, "g");
    expect(envOf(await load(ssm, jobEnv({ BUILDKITE_REPO: "" })))).toEqual({ TOKEN: "g" });
  });

  test("each level's deploy key is kept with its level", async () => {
    const ssm = new FakeSsm().put(`${GLOBAL}ssh/key`, "global-key").put(`${PIPELINE}ssh/key`, "pipeline-key");
    const secrets = await load(ssm);
    expect(secrets.levels.map((l) => [l.level.kind, l.sshKey])).toEqual([
      ["global", "global-key"],
      ["pipeline", "pipeline-key"],
    ]);
  });

  test("follows NextToken through every page", async () => {
    const ssm = new FakeSsm(2);
    for (let i = 0; i < 7; i++) ssm.put(`${GLOBAL}env/var-${i}`, `value-${i}`);
    const secrets = await load(ssm);
    expect(secrets.env).toHaveLength(7);
    const pages = ssm.calls.filter((c) => c.operation === "getParametersByPath" && c.target === GLOBAL.slice(0, -1));
    expect(pages.map((c) => c.nextToken)).toEqual([undefined, "page:2:/ci-fleet/production/infra/global", "page:4:/ci-fleet/production/infra/global", "page:6:/ci-fleet/production/infra/global"]);
    expect(pages.every((c) => c.withDecryption)).toBe(true);
  });

  test("listParameters stops a store that never stops paginating", async () => {
    const endless = {
      getParameter: async () => ({}),
      getParametersByPath: async () => ({ Parameters: [], NextToken: "again" }),
    };
    await expect(listParameters(endless, "/x/", true)).rejects.toThrow(/more than 1000 pages/);
  });

  test("ignores unknown parameters at a level, saying so", async () => {
    const ssm = new FakeSsm().put(`${GLOBAL}notes`, "x").put(`${GLOBAL}env/a`, "1");
    const secrets = await load(ssm);
    expect(envOf(secrets)).toEqual({ A: "1" });
    expect(secrets.log).toContain(`ignoring ${GLOBAL}notes: only env/<NAME>, ssh/key, allowed_pipelines and allowed_teams are used`);
  });

  test("two parameters of one level that give the same name stop the job", async () => {
    const ssm = new FakeSsm().put(`${GLOBAL}env/npm-token`, "1").put(`${GLOBAL}env/NPM_TOKEN`, "2");
    await expect(load(ssm)).rejects.toThrow(`${GLOBAL}env/NPM_TOKEN and ${GLOBAL}env/npm-token both set NPM_TOKEN`);
  });

  test("an env name that is not a shell identifier stops the job, naming the parameter", async () => {
    const ssm = new FakeSsm().put(`${REPO}env/npm.token`, "1");
    await expect(load(ssm)).rejects.toThrow(`parameter ${REPO}env/npm.token gives the variable name "NPM.TOKEN"`);
  });
});

describe("access lists", () => {
  test.each([
    ["no lists", {}, true],
    ["pipeline listed", { allowed_pipelines: "other\nnetboot-release\n" }, true],
    ["pipeline listed with comments and blank lines", { allowed_pipelines: "# release\n\n  netboot-release  \n" }, true],
    ["pipeline not listed", { allowed_pipelines: "other\nnetboot-release-2" }, false],
    ["prefix is not a match", { allowed_pipelines: "netboot" }, false],
    ["empty list allows nobody", { allowed_pipelines: "\n# nobody yet\n" }, false],
    ["creator team listed", { allowed_teams: "release-managers" }, true],
    ["no team in common", { allowed_teams: "security\ninfra" }, false],
    ["both lists pass", { allowed_pipelines: "netboot-release", allowed_teams: "maintainers" }, true],
    ["pipeline passes, teams do not", { allowed_pipelines: "netboot-release", allowed_teams: "security" }, false],
    ["teams pass, pipeline does not", { allowed_pipelines: "other", allowed_teams: "maintainers" }, false],
  ])("%s", async (_, lists: Record<string, string>, allowed) => {
    const ssm = new FakeSsm().put(`${REPO}env/token`, "secret-value");
    for (const [file, text] of Object.entries(lists)) ssm.put(`${REPO}${file}`, text);
    const loading = load(ssm);
    if (allowed) {
      expect(envOf(await loading)).toEqual({ TOKEN: "secret-value" });
    } else {
      await expect(loading).rejects.toThrow(`repo level ${REPO} holds secrets (${REPO}env/token) that this job may not see`);
    }
  });

  test("the unblocker's teams grant access too", async () => {
    const ssm = new FakeSsm().put(`${PIPELINE}allowed_teams`, "release-managers").put(`${PIPELINE}env/token`, "t");
    const env = jobEnv({ BUILDKITE_BUILD_CREATOR_TEAMS: "contributors", BUILDKITE_UNBLOCKER_TEAMS: "qa:release-managers" });
    expect(envOf(await load(ssm, env))).toEqual({ TOKEN: "t" });
    await expect(load(ssm, jobEnv({ BUILDKITE_BUILD_CREATOR_TEAMS: "contributors" }))).rejects.toThrow(
      "neither the build creator nor the unblocker is in a team of allowed_teams (their teams: contributors)",
    );
  });

  test("a build with no teams at all is denied by any team list", async () => {
    const ssm = new FakeSsm().put(`${GLOBAL}allowed_teams`, "maintainers").put(`${GLOBAL}ssh/key`, "k");
    const env = jobEnv({ BUILDKITE_BUILD_CREATOR_TEAMS: undefined, BUILDKITE_UNBLOCKER_TEAMS: undefined });
    await expect(load(ssm, env)).rejects.toThrow(`global level ${GLOBAL} holds secrets (${GLOBAL}ssh/key)`);
    await expect(load(ssm, env)).rejects.toThrow("(their teams: none)");
  });

  test("a denied level's values are never decrypted, and a denied empty level is not an error", async () => {
    const ssm = new FakeSsm().put(`${REPO}allowed_pipelines`, "other").put(`${GLOBAL}env/a`, "1");
    const secrets = await load(ssm);
    expect(envOf(secrets)).toEqual({ A: "1" });
    expect(secrets.log).toContain(
      `repo level ${REPO}: access lists exclude this job (pipeline "netboot-release" is not in allowed_pipelines); it holds no secrets, nothing to do`,
    );
    const repoListing = ssm.calls.filter((c) => c.operation === "getParametersByPath" && c.target === REPO.slice(0, -1));
    expect(repoListing.map((c) => c.withDecryption)).toEqual([false]);
  });

  test("a denied level with secrets stops the job without decrypting them", async () => {
    const ssm = new FakeSsm()
      .put(`${PIPELINE}allowed_teams`, "security")
      .put(`${PIPELINE}env/deploy-token`, "top-secret", { kmsDenied: true })
      .put(`${GLOBAL}env/a`, "1");
    const error = await failureOf(load(ssm));
    expect(error).toBeInstanceOf(JobSecretsError);
    expect(error.message).toContain(`pipeline level ${PIPELINE} holds secrets (${PIPELINE}env/deploy-token) that this job may not see`);
    expect(error.message).not.toContain("top-secret");
    expect(ssm.calls.filter((c) => c.target.startsWith(PIPELINE.slice(0, -1)) && c.operation === "getParametersByPath").map((c) => c.withDecryption)).toEqual([false]);
  });

  test("access lists are read before anything of their level", async () => {
    const ssm = new FakeSsm().put(`${PIPELINE}env/a`, "1");
    await load(ssm);
    const pipelineCalls = ssm.calls.filter((c) => c.target.startsWith(PIPELINE.slice(0, -1))).map((c) => `${c.operation} ${c.target}`);
    expect(pipelineCalls).toEqual([
      `getParameter ${PIPELINE}allowed_pipelines`,
      `getParameter ${PIPELINE}allowed_teams`,
      `getParametersByPath ${PIPELINE.slice(0, -1)}`,
    ]);
  });
});

describe("fail closed", () => {
  const throttled = () => awsError("ThrottlingException", "Rate exceeded");
  const iamDenied = () => awsError("AccessDeniedException", "User: arn:aws:sts::123456789012:assumed-role/r/i is not authorized to perform: ssm:GetParameter");

  test.each([
    ["throttling on allowed_pipelines", "getParameter", `${REPO}allowed_pipelines`, throttled, "ThrottlingException: Rate exceeded"],
    ["IAM denial on allowed_teams", "getParameter", `${GLOBAL}allowed_teams`, iamDenied, "AccessDeniedException: User:"],
    ["KMS denial on allowed_pipelines", "getParameter", `${PIPELINE}allowed_pipelines`, kmsDenied, "AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/ci-fleet-production-agent-infra/i-0 is not authorized to perform: kms:Decrypt"],
    ["a network error on allowed_teams", "getParameter", `${PIPELINE}allowed_teams`, () => awsError("TimeoutError", "socket hang up"), "TimeoutError: socket hang up"],
  ] as const)("%s stops the job", async (_, operation, target, error, shown) => {
    const ssm = new FakeSsm().put(`${GLOBAL}env/a`, "1").fail(operation, target, error);
    const failure = await failureOf(load(ssm));
    expect(failure).toBeInstanceOf(JobSecretsError);
    expect(failure.message).toContain(`cannot read ${target}: ${shown}`);
    expect(failure.message).toContain("cannot be read, so the job stops (fail closed)");
  });

  test("an access list whose KMS key the role may not use stops the job", async () => {
    const ssm = new FakeSsm().put(`${REPO}allowed_pipelines`, "netboot-release", { kmsDenied: true }).put(`${REPO}env/a`, "1");
    await expect(load(ssm)).rejects.toThrow(`cannot read ${REPO}allowed_pipelines: AccessDeniedException`);
  });

  test("a KMS denial while decrypting a level's secrets stops the job", async () => {
    const ssm = new FakeSsm().put(`${REPO}env/a`, "1").put(`${REPO}env/b`, "2").put(`${REPO}env/c`, "3", { kmsDenied: true });
    await expect(load(ssm)).rejects.toThrow(`cannot list ${REPO.slice(0, -1)}/: AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/ci-fleet-production-agent-infra/i-0 is not authorized to perform: kms:Decrypt`);
  });

  test("throttling on a later page stops the job rather than returning part of a level", async () => {
    const ssm = new FakeSsm(1).put(`${GLOBAL}env/a`, "1").put(`${GLOBAL}env/b`, "2");
    const flaky = {
      getParameter: ssm.getParameter.bind(ssm),
      getParametersByPath: async (input: Parameters<FakeSsm["getParametersByPath"]>[0]) => {
        if (input.NextToken !== undefined) throw awsError("ThrottlingException", "Rate exceeded");
        return ssm.getParametersByPath(input);
      },
    };
    await expect(loadJobSecrets(flaky, readSecretsContext(jobEnv()), () => undefined)).rejects.toThrow(
      `cannot list ${GLOBAL.slice(0, -1)}/: ThrottlingException: Rate exceeded`,
    );
  });

  test("only ParameterNotFound means there is no list", async () => {
    const ssm = new FakeSsm().put(`${GLOBAL}env/a`, "1");
    const secrets = await load(ssm);
    expect(envOf(secrets)).toEqual({ A: "1" });
    expect(ssm.calls.filter((c) => c.operation === "getParameter")).toHaveLength(6);
  });
});

describe("job context", () => {
  test.each([
    [{ CI_FLEET_SSM_PREFIX: undefined }, "CI_FLEET_SSM_PREFIX is not set"],
    [{ CI_FLEET_SSM_PREFIX: "/ci-fleet/production/" }, "is not of the form /ci-fleet/<stack>/<queue>/"],
    [{ CI_FLEET_SSM_PREFIX: "/ci-fleet/production/infra" }, "is not of the form /ci-fleet/<stack>/<queue>/"],
    [{ BUILDKITE_PIPELINE_SLUG: undefined }, "BUILDKITE_PIPELINE_SLUG is not set"],
    [{ BUILDKITE_REPO: "/local/path" }, "neither a URL nor user@host:path"],
  ])("%j: %s", (overrides, message) => {
    expect(() => readSecretsContext(jobEnv(overrides))).toThrow(message);
  });
});

describe("job state paths", () => {
  const job = "0190a4b2-7c1e-4d7e-9a0b-123456789abc";

  test("CI_FLEET_STATE_DIR/<job-id>, else a sibling of the agent's build path", () => {
    expect(jobPaths({ BUILDKITE_JOB_ID: job, CI_FLEET_STATE_DIR: "/var/lib/ci-agent/work/tmp/job-secrets" }).stateFile).toBe(
      `/var/lib/ci-agent/work/tmp/job-secrets/${job}/state.json`,
    );
    const fallback = jobPaths({ BUILDKITE_JOB_ID: job, BUILDKITE_BUILD_PATH: "/var/lib/ci-agent/work/builds" });
    expect(fallback.dir).toBe(`/var/lib/ci-agent/work/tmp/job-secrets/${job}`);
    expect(fallback.socketFor("pipeline")).toBe(`/var/lib/ci-agent/work/tmp/job-secrets/${job}/pipeline.sock`);
  });

  test.each([
    [{ BUILDKITE_JOB_ID: "../../etc", CI_FLEET_STATE_DIR: "/s" }, "is not a job id"],
    [{ BUILDKITE_JOB_ID: job }, "BUILDKITE_BUILD_PATH is not set (or set CI_FLEET_STATE_DIR)"],
    [{ BUILDKITE_JOB_ID: job, CI_FLEET_STATE_DIR: "relative/dir" }, "is not an absolute path"],
  ])("%j: %s", (env, message) => {
    expect(() => jobPaths(env)).toThrow(message);
  });

  test("a socket path that cannot fit a Unix socket is refused before any agent starts", () => {
    const paths = jobPaths({ BUILDKITE_JOB_ID: job, CI_FLEET_STATE_DIR: `/${"d".repeat(60)}` });
    expect(() => paths.socketFor("pipeline")).toThrow("too long for a Unix socket");
    expect(() => jobPaths({ BUILDKITE_JOB_ID: job, CI_FLEET_STATE_DIR: `/${"d".repeat(40)}` }).socketFor("pipeline")).not.toThrow();
  });
});
