import { runSimulation, type Simulation } from "@cloud-copilot/iam-simulate";
import { arns } from "../../infra/identity/names";
import type { CapturedResource } from "../../tools/preview/mock-runtime";
import { stackConfig } from "../support/preview";
import { denied, MachineModel, Process, StackModels, stackModels, STACKS } from "./support";

/**
 * Who can read a Buildkite queue's agent token (issue 12 point 4), computed from the machine
 * models of both production stacks with a distinct token planted per queue, channel by
 * channel. "The CI user can read the agent token" must come out false on every Buildkite
 * runner:
 *
 * - a file that holds the token (its content, or an EnvironmentFile= the agent's unit reads
 *   it from): the model's owner, group and mode of the file and every directory above it;
 * - a process that holds it in its environment: /proc/<pid>/environ (the initial block, which
 *   `os.Unsetenv` does not change) and ptrace are open to the process's own uid and root only
 *   (proc(5): PTRACE_MODE_READ_FSCREDS), so the job's uid must differ from the holder's;
 * - a command line that holds it: /proc/<pid>/cmdline is readable by every uid;
 * - the job's own environment (the hooks run in the job process);
 * - AWS: every SSM parameter the program writes with the token in its value, against the IAM
 *   policies of the queue role every job of the queue wears (iam-simulate).
 */

const byId = (models: StackModels) => Object.values(models.machines).sort((a, b) => (a.id < b.id ? -1 : 1));

/** The Buildkite queues of a stack file, each with a token planted for it (the agent-token shape the config check accepts). */
function plantedTokens(stack: string): Record<string, string> {
  const queues = stackConfig(stack)["ci-fleet:queues"] as Record<string, { agent: string }>;
  return Object.fromEntries(
    Object.entries(queues)
      .filter(([, q]) => q.agent === "buildkite")
      .map(([queue]) => [queue, `PLANTED-agent-token-${stack}-${queue}-0123456789`]),
  );
}

function overlay(tokens: Record<string, string>): Record<string, unknown> {
  return {
    "ci-fleet:queueSecrets": Object.fromEntries(Object.entries(tokens).map(([queue, token]) => [queue, { buildkite: { "agent-token": token } }])),
  };
}

/** The user every job of the runner (and every hook) runs as: the job process the agent starts. */
function jobProcess(m: MachineModel): Process | undefined {
  // isolation vm: the host-side process of a job is the handoff to a slot's VM.
  return m.processes.find((p) => p.source === "buildkite job (bootstrap-script)" || p.source === "buildkite job handoff to a VM (bootstrap-script)");
}
/** A queue's isolation as its stack file sets it (vm when unset: the program's default). */
function isolationOf(stack: string, queue: string): string {
  const queues = stackConfig(stack)["ci-fleet:queues"] as Record<string, { isolation?: string }>;
  return queues[queue].isolation ?? "vm";
}
function agentProcess(m: MachineModel): Process | undefined {
  return m.processes.find((p) => p.source === "buildkite-agent.service ExecStart");
}

interface Channel {
  what: string;
  /** Why the job's user can read it; undefined when it cannot. */
  readable?: string;
}

/** Every place on the machine that holds the token, and whether the job's user reaches it. */
function localChannels(m: MachineModel, token: string, jobUser: string): Channel[] {
  const channels: Channel[] = [];
  const files = new Set<string>();
  for (const [path, f] of Object.entries(m.files)) if (f.content?.includes(token)) files.add(path);
  for (const p of m.processes) {
    const holds = Object.values(p.env).some((v) => v.includes(token)) || "BUILDKITE_AGENT_TOKEN" in p.env;
    if (!holds) continue;
    // The files systemd read the token from (the value may be written at start, so not in the model),
    // and the credentials it loaded for the process (LoadCredential=: the source and the unit's copy).
    const extra = p as Process & { env_files?: { path: string }[]; credentials_loaded?: Record<string, { source: string; path: string }> };
    for (const ef of extra.env_files ?? []) files.add(ef.path);
    for (const c of Object.values(extra.credentials_loaded ?? {})) files.add(c.source).add(c.path);
    const label = `environment of ${p.source} (uid ${p.user})`;
    if (p === jobProcess(m) || p.kind === "buildkite-hook") channels.push({ what: label, readable: "it is the job's own environment" });
    else channels.push({ what: `${label}: /proc/<pid>/environ, ptrace`, readable: p.user === jobUser ? `the job runs as ${jobUser} too` : undefined });
  }
  for (const p of m.processes) {
    if ([p.command, ...p.argv, ...(p.argv_resolved ?? [])].some((a) => a.includes(token))) channels.push({ what: `command line of ${p.source}`, readable: "/proc/<pid>/cmdline is world-readable" });
  }
  for (const path of files) {
    const f = m.files[path];
    channels.push({ what: `file ${path}${f ? ` (${f.owner}:${f.group} ${f.mode}, by ${f.writer})` : ""}`, readable: denied(m, jobUser, path, "read") === undefined ? `${jobUser} can read it` : undefined });
  }
  return channels;
}

/** The identity policies of a role as the program registers them. */
function rolePolicies(resources: CapturedResource[], roleArn: string): { name: string; policy: unknown }[] {
  const roleName = roleArn.split("/").pop();
  const out: { name: string; policy: unknown }[] = [];
  const parse = (v: unknown) => (typeof v === "string" ? JSON.parse(v) : v);
  for (const r of resources) {
    if (r.type === "aws:iam/role:Role" && String(r.outputs.arn) === roleArn) {
      for (const [i, p] of ((r.inputs.inlinePolicies as { name?: string; policy?: unknown }[] | undefined) ?? []).entries()) {
        if (p.policy !== undefined) out.push({ name: `${roleName}/${p.name ?? i}`, policy: parse(p.policy) });
      }
    }
    if (r.type === "aws:iam/rolePolicy:RolePolicy" && String(r.inputs.role) === roleName) out.push({ name: `${roleName}/${r.name}`, policy: parse(r.inputs.policy) });
  }
  return out;
}

async function ssmChannels(models: StackModels, m: MachineModel, token: string): Promise<Channel[]> {
  const roleArn = m.aws_pillar.role_arn!;
  const account = roleArn.split(":")[4];
  const region = m.aws_pillar.region!;
  const identityPolicies = rolePolicies(models.run.resources, roleArn);
  const channels: Channel[] = [];
  for (const [key, inputs] of models.run.rawInputs) {
    if (!key.startsWith("aws:ssm/parameter:Parameter::") || typeof inputs.value !== "string" || !inputs.value.includes(token)) continue;
    const name = String(inputs.name);
    const sim = await runSimulation(
      {
        request: { principal: `arn:aws:sts::${account}:assumed-role/${roleArn.split("/").pop()}/job`, action: "ssm:GetParameter", resource: { resource: arns.ssmParameter(region, account, name), accountId: account }, contextVariables: {} },
        identityPolicies,
        serviceControlPolicies: [],
        resourceControlPolicies: [],
        resourcePolicy: undefined,
      } as unknown as Simulation,
      {},
    );
    const decision = sim.resultType === "error" ? "Error" : sim.overallResult;
    channels.push({ what: `SSM parameter ${name} (ssm:GetParameter as the queue role ${roleArn}: ${decision})`, readable: decision === "Allowed" ? "every job of the queue wears that role" : undefined });
  }
  return channels;
}

describe.each(STACKS)("the Buildkite agent token on the runners of %s", (stack) => {
  const tokens = plantedTokens(stack);
  let models: StackModels;
  let runners: MachineModel[];
  beforeAll(async () => {
    models = await stackModels(stack, overlay(tokens));
    runners = byId(models).filter((m) => agentProcess(m) !== undefined);
  }, 180_000);

  test("the stack has Buildkite runners, each with a planted token of its own queue, on both isolations", () => {
    expect(Object.keys(tokens).length).toBeGreaterThan(0);
    // Production has one Buildkite queue of each kind (infra on the host, release in VMs): both paths are judged.
    expect(Object.keys(tokens).map((q) => isolationOf(stack, q)).sort()).toEqual(["host", "vm"]);
    expect(runners.length).toBeGreaterThan(0);
    for (const m of runners) expect({ id: m.id, queue: Object.keys(tokens).find((q) => m.id.startsWith(`${stack}-${q}-`)) }).toEqual({ id: m.id, queue: expect.any(String) });
  });

  test("the agent holds the token (so the channels below are not vacuous), and its jobs run as another uid", () => {
    for (const m of runners) {
      const queue = Object.keys(tokens).find((q) => m.id.startsWith(`${stack}-${q}-`))!;
      const agent = agentProcess(m)!;
      const job = jobProcess(m)!;
      // systemd hands the agent the token (EnvironmentFile= read as root).
      expect({ id: m.id, agentHoldsToken: agent.env.BUILDKITE_AGENT_TOKEN }).toEqual({ id: m.id, agentHoldsToken: tokens[queue] });
      // isolation vm: root hands the job to a slot's VM and no hook runs on the host; isolation
      // host: the job and its hooks run as the CI user.
      const inVm = isolationOf(stack, queue) === "vm";
      expect({ id: m.id, agent: agent.user, job: job.user, hooks: [...new Set(m.processes.filter((p) => p.kind === "buildkite-hook").map((p) => p.user))] }).toEqual({
        id: m.id,
        agent: "buildkite-agent",
        job: inVm ? "root" : "ci-agent",
        hooks: inVm ? [] : ["ci-agent"],
      });
      // Through sudo, by a rule for exactly that one command, with no arguments.
      expect({ id: m.id, rule: job.job_drop?.rule ?? null }).toEqual({ id: m.id, rule: { file: "/etc/sudoers.d/ci-fleet-buildkite-agent", line: expect.any(String), exact_args: true } });
    }
  });

  test("the CI user that runs jobs cannot read the agent token: no file, no environment, no command line, no SSM parameter", async () => {
    const readable: string[] = [];
    let carriers = 0;
    for (const m of runners) {
      const queue = Object.keys(tokens).find((q) => m.id.startsWith(`${stack}-${q}-`))!;
      // The CI user (jobs run as it in the VMs; on the host it runs nothing, but must still read nothing).
      const jobUser = "ci-agent";
      const channels = [...localChannels(m, tokens[queue], jobUser), ...(await ssmChannels(models, m, tokens[queue]))];
      carriers += channels.length;
      for (const c of channels) if (c.readable) readable.push(`${m.id}: ${c.what}: ${c.readable}`);
    }
    expect(carriers).toBeGreaterThan(runners.length);
    expect(readable).toEqual([]);
  }, 120_000);

  test("the job's environment has its job token and never the agent token", () => {
    for (const m of runners) {
      // isolation vm: the job in the slot's VM, started by ci-job-guest from what the host's handoff sent.
      const queue = Object.keys(tokens).find((q) => m.id.startsWith(`${stack}-${q}-`))!;
      const inVm = models.machines[`${m.id}/vm`]?.processes.filter((q) => q.runs_jobs) ?? [];
      expect({ id: m.id, jobsInVm: inVm.length }).toEqual({ id: m.id, jobsInVm: isolationOf(stack, queue) === "vm" ? 1 : 0 });
      for (const p of [jobProcess(m)!, ...m.processes.filter((q) => q.kind === "buildkite-hook"), ...inVm]) {
        expect({ id: m.id, source: p.source, jobToken: "BUILDKITE_AGENT_ACCESS_TOKEN" in p.env, agentToken: "BUILDKITE_AGENT_TOKEN" in p.env }).toEqual({
          id: m.id,
          source: p.source,
          jobToken: true,
          agentToken: false,
        });
        const values = Object.values(p.env).filter((v) => Object.values(tokens).some((t) => v.includes(t)));
        expect({ id: m.id, source: p.source, values }).toEqual({ id: m.id, source: p.source, values: [] });
      }
    }
  });
});
