import * as fs from "fs";
import * as path from "path";
import { ROOT, stackConfig } from "../support/preview";
import { buildkiteMinions, directives, parseUnit, renderStack, unitEnvironment, type StackRender } from "./support";

/**
 * The seam between the job-secrets hooks (hooks/buildkite/src) and the agent's systemd
 * unit (salt/buildkite/service.sls): every environment variable the hooks read must
 * reach them on a real runner. The hooks run in the job process that `buildkite-agent start`
 * starts, whose own environment (the unit's) is passed to every job and hook
 * (buildkite/agent@v3.123.1 agent/job_runner.go: `processEnv := append(os.Environ(), env...)`)
 * and kept by the privilege drop to the CI user (sudo -E; test/buildkite/agent-token.test.ts).
 */

const SRC = path.join(ROOT, "hooks/buildkite/src");

interface EnvUse {
  name: string;
  required: boolean;
  where: string[];
}

/** Every variable the hooks' TypeScript reads, from the source: `required(env, "X"`, `env.X`, `env["X"]`, `process.env.X`, and `${X:-…}` in the generated wrappers. */
export function hookEnvironmentUses(): Map<string, EnvUse> {
  const uses = new Map<string, EnvUse>();
  const add = (name: string, required: boolean, where: string) => {
    const use = uses.get(name) ?? { name, required: false, where: [] };
    use.required ||= required;
    use.where.push(where);
    uses.set(name, use);
  };
  for (const file of fs.readdirSync(SRC).filter((f) => f.endsWith(".ts")).sort()) {
    const text = fs.readFileSync(path.join(SRC, file), "utf8");
    const lineOf = (index: number) => `${file}:${text.slice(0, index).split("\n").length}`;
    for (const m of text.matchAll(/\brequired\(\s*\w+\s*,\s*"([A-Z_][A-Z0-9_]*)"/g)) add(m[1], true, lineOf(m.index!));
    for (const m of text.matchAll(/\benv\s*(?:\.\s*([A-Z_][A-Z0-9_]*)|\[\s*"([A-Z_][A-Z0-9_]*)"\s*\])/g)) add(m[1] ?? m[2], false, lineOf(m.index!));
    // Shell parameter expansions inside the wrapper templates (escaped as \${X} in TypeScript).
    for (const m of text.matchAll(/\\\$\{([A-Z_][A-Z0-9_]*)(:?-)?/g)) add(m[1], false, lineOf(m.index!));
  }
  return uses;
}

/**
 * Variables the agent itself puts into every job's environment at the pinned release
 * (buildkite/agent@v3.123.1), so the unit must not (and need not) set them.
 */
const SET_BY_AGENT: Record<string, string> = {
  BUILDKITE_BUILD_PATH: "agent/job_runner.go:545 setEnv(\"BUILDKITE_BUILD_PATH\", AgentConfiguration.BuildPath)",
  BUILDKITE_JOB_ID: "agent/job_runner.go:388 maps.Copy(env, r.conf.Job.Env) (the job's env from Buildkite) and :748",
  BUILDKITE_PIPELINE_SLUG: "agent/job_runner.go:388 Job.Env from Buildkite (docs: pipelines/environment_variables)",
  BUILDKITE_REPO: "agent/job_runner.go:388 Job.Env from Buildkite (docs: pipelines/environment_variables)",
  BUILDKITE_BUILD_CREATOR_TEAMS: "agent/job_runner.go:388 Job.Env from Buildkite (docs: pipelines/environment_variables)",
  BUILDKITE_UNBLOCKER_TEAMS: "agent/job_runner.go:388 Job.Env from Buildkite, block steps only (optional: parseTeams(undefined))",
};

/** Variables of the job's own environment that the hooks only pass through or default, and bash's own. */
const JOB_OWN_OPTIONAL = new Set(["SSH_AUTH_SOCK", "GIT_SSH_COMMAND", "CI_FLEET_NODE", "BASH_SOURCE"]);

/** The variables docs/contracts.md says the agent's environment sets for the hooks. */
function contractAgentEnvironment(): string[] {
  const text = fs.readFileSync(path.join(ROOT, "docs/contracts.md"), "utf8");
  const sentence = /the agent's environment sets ([^|\n]*)/.exec(text);
  if (!sentence) throw new Error("docs/contracts.md no longer says which variables the agent's environment sets");
  return [...sentence[1].matchAll(/`([A-Z_][A-Z0-9_]*)`/g)].map((m) => m[1]);
}

/** The longest socket path the hooks build: `<state dir>/<job uuid>/pipeline.sock` (context.ts MAX_SOCKET_PATH). */
const JOB_UUID = "0190f6d6-1c6e-4a52-9b7a-0123456789ab";

describe.each(["production", "production-aws"])("the Buildkite agent unit of %s gives the hooks every variable they read", (stack) => {
  let render: StackRender;
  let minions: string[];
  beforeAll(async () => {
    render = await renderStack(stack);
    minions = buildkiteMinions(render);
  });

  test("the hooks' source reads the variables this test knows how to check (derived, not listed)", () => {
    const uses = hookEnvironmentUses();
    // A sanity floor: the parser found the accessors at all.
    expect(uses.get("CI_FLEET_SSM_PREFIX")?.required).toBe(true);
    for (const use of uses.values()) {
      const known = use.name in SET_BY_AGENT || JOB_OWN_OPTIONAL.has(use.name) || use.name.startsWith("CI_FLEET_") || use.name.startsWith("AWS_");
      expect({ variable: use.name, where: use.where, classified: known }).toEqual({ variable: use.name, where: use.where, classified: true });
      if (JOB_OWN_OPTIONAL.has(use.name)) expect({ variable: use.name, required: use.required }).toEqual({ variable: use.name, required: false });
    }
  });

  test("the stack has Buildkite runners", () => {
    expect(minions.length).toBeGreaterThan(0);
  });

  test("every variable the hooks read is set by the unit or by the agent, with the contract's value", () => {
    const uses = hookEnvironmentUses();
    const contract = contractAgentEnvironment();
    const identityRegion = (stackConfig(stack)["ci-fleet:identity"] as { region: string }).region;
    for (const id of minions) {
      const doc = render.documents[id].ci_fleet;
      const unitText = render.minions[id].files["/etc/systemd/system/buildkite-agent.service"];
      expect({ id, unit: typeof unitText }).toEqual({ id, unit: "string" });
      const unit = parseUnit(unitText);
      const env = unitEnvironment(unit);
      const user = directives(unit, "Service", "User");
      const expected: Record<string, string> = {
        CI_FLEET_SSM_PREFIX: `/ci-fleet/${stack}/${doc.runner!.queue}/`,
        AWS_REGION: identityRegion,
      };
      const needed = new Set([...contract, ...[...uses.values()].filter((u) => !(u.name in SET_BY_AGENT) && !JOB_OWN_OPTIONAL.has(u.name)).map((u) => u.name)]);
      for (const name of needed) {
        expect({ id, name, set: env.has(name) }).toEqual({ id, name, set: true });
        if (name in expected) expect({ id, name, value: env.get(name) }).toEqual({ id, name, value: expected[name] });
      }
      // CI_FLEET_STATE_DIR: the hooks run in the job process, as the CI user (bootstrap-script
      // drops every job to it), so the directory is the job user's, 0700, made afresh by the
      // root reset (ExecStartPre=+) in the CI user's work dir, which the reset has just recreated.
      const stateDir = env.get("CI_FLEET_STATE_DIR")!;
      expect({ id, user }).toEqual({ id, user: ["buildkite-agent"] });
      const reset = render.minions[id].files["/usr/local/sbin/ci-agent-reset"];
      expect(directives(unit, "Service", "ExecStartPre")).toContain("+/usr/local/sbin/ci-agent-reset");
      const work = /^work=(\S+)$/m.exec(reset)?.[1];
      expect({ id, stateDir, inWork: work !== undefined && stateDir.startsWith(`${work}/`) }).toEqual({ id, stateDir, inWork: true });
      const made = reset.indexOf(`mkdir -m 0700 "${stateDir}"`);
      const owned = reset.indexOf(`chown -h "$user:$user" "${stateDir}"`);
      expect({ id, made: made > reset.indexOf('mkdir -m 0700 "$work"'), owned: owned > made }).toEqual({ id, made: true, owned: true });
      expect(/^user=ci-agent$/m.test(reset)).toBe(true);
      expect(Buffer.byteLength(path.join(stateDir, JOB_UUID, "pipeline.sock"))).toBeLessThanOrEqual(107);
      // The hooks' prefix check (context.ts PREFIX) accepts what the unit sets.
      expect(env.get("CI_FLEET_SSM_PREFIX")).toMatch(/^\/ci-fleet\/[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+\/$/);
      // The pillar's own prefix agrees (one name, two writers would drift).
      expect({ id, pillarPrefix: doc.aws.ssm_prefix }).toEqual({ id, pillarPrefix: expected.CI_FLEET_SSM_PREFIX });
    }
  });
});
