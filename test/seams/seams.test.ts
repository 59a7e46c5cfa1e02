import * as fs from "fs";
import * as path from "path";
import { runSimulation, runUnsafeSimulation, type Simulation } from "@cloud-copilot/iam-simulate";
import { ROOT, stackConfig } from "../support/preview";
import { arns, ssmViaService } from "../../infra/identity/names";
import type { CapturedResource } from "../../tools/preview/mock-runtime";
import { denied, MachineModel, Process, StackModels, stackModels, STACKS } from "./support";

/**
 * Whole-fleet contract tests that follow each seam between the parts, for the production
 * stacks (equinix-metal and aws), computed from what the program and the Salt tree render:
 *
 * 1. readability: every process the fleet starts runs as a user that can read (enter,
 *    execute, write into) every file it needs;
 * 2. environment: every variable a program requires is set by the unit or hook that
 *    starts it;
 * 3. AWS: every process that calls AWS has credentials, and the IAM policies the program
 *    registers allow each of its calls for the principal it actually has.
 *
 * Summaries and the failures seen on the original code: .conformance/seams.md.
 */

/**
 * What buildkite-agent itself puts in a hook's environment, besides its own process
 * environment (which the job inherits): buildkite/agent agent/job_runner.go
 * (createEnvironment: BUILDKITE_BUILD_PATH, BUILDKITE_HOOKS_PATH, BUILDKITE_PLUGINS_PATH,
 * BUILDKITE_CONFIG_PATH, BUILDKITE_BIN_PATH, BUILDKITE_AGENT_NAME ...) plus the job's own
 * environment from the Buildkite API (BUILDKITE_JOB_ID, BUILDKITE_PIPELINE_SLUG,
 * BUILDKITE_REPO, BUILDKITE_BUILD_CREATOR_TEAMS, BUILDKITE_UNBLOCKER_TEAMS when set ...;
 * docs: buildkite.com/docs/pipelines/configure/environment-variables).
 */
const BUILDKITE_AGENT_EXPORTS = [
  "BUILDKITE_BUILD_PATH", "BUILDKITE_HOOKS_PATH", "BUILDKITE_PLUGINS_PATH", "BUILDKITE_CONFIG_PATH", "BUILDKITE_BIN_PATH",
  "BUILDKITE_AGENT_NAME", "BUILDKITE_AGENT_ID", "BUILDKITE_JOB_ID", "BUILDKITE_BUILD_ID", "BUILDKITE_PIPELINE_SLUG",
  "BUILDKITE_ORGANIZATION_SLUG", "BUILDKITE_REPO", "BUILDKITE_BRANCH", "BUILDKITE_COMMIT", "BUILDKITE_BUILD_CREATOR_TEAMS",
  "BUILDKITE_UNBLOCKER_TEAMS", "BUILDKITE", "CI",
];

/** `the agent's environment sets `A`, `B` and `C`` in docs/contracts.md (Files Salt serves). */
function contractAgentEnvironment(): string[] {
  const text = fs.readFileSync(path.join(ROOT, "docs/contracts.md"), "utf8");
  const line = text.split("\n").find((l) => l.includes("salt/buildkite/files/hooks/") && /environment sets/.test(l)) ?? "";
  const after = line.slice(line.indexOf("environment sets"));
  return [...after.matchAll(/`([A-Z_][A-Z0-9_]*)`/g)].map((m) => m[1]);
}

const byMachine = (models: StackModels) => Object.values(models.machines).sort((a, b) => (a.id < b.id ? -1 : 1));
const running = (m: MachineModel) => m.processes.filter((p) => p.kind !== "cloud-init");

describe.each(STACKS)("the seams of stack %s", (stack) => {
  let models: StackModels;
  beforeAll(async () => {
    models = await stackModels(stack);
  }, 120_000);

  test("the model sees the fleet's processes (so the seams below are not vacuous)", () => {
    const sources = (suffix: string) => byMachine(models).find((m) => m.id.endsWith(suffix))!.processes.map((p) => p.source);
    expect(sources("-salt-master")).toEqual(expect.arrayContaining([expect.stringMatching(/^salt-master/), "ci-fleet-pillar-sync.service ExecStart"]));
    // isolation vm (every production queue): jobs and their hooks run in the slots' VMs; on the
    // host, the Buildkite agent hands each job off, and a GitHub queue runs no runner at all.
    expect(sources("-release-release-1")).toEqual(expect.arrayContaining(["buildkite-agent.service ExecStart", "buildkite job handoff to a VM (bootstrap-script)"]));
    expect(sources("-release-release-1")).not.toContain("buildkite hook environment");
    expect(sources("-default-pr-1")).not.toContain("actions-runner.service ExecStart");
    expect(sources("-teleport")).toEqual(expect.arrayContaining(["teleport.service ExecStart"]));
    // The jobs of a vm host run in its slots' VMs: each is a machine of its own, `<host>/vm`, with
    // the guest agent (root) and the one job it starts (the job user); the host itself runs none.
    for (const host of ["-default-pr-1", "-release-release-1"]) {
      // A Buildkite VM's job also runs the job-secrets hooks from the image (docs/job-secrets.md).
      const hooks = host === "-release-release-1" ? ["environment", "post-checkout", "pre-checkout", "pre-exit"].map((h) => `buildkite hook ${h}`) : [];
      expect(sources(`${host}/vm`)).toEqual(["ci-job-guest.service ExecStart", "job in a slot's VM (ci-job-guest)", ...hooks]);
      const h = byMachine(models).find((m) => m.id.endsWith(host))!;
      expect({ host: h.id, runsJobs: h.processes.filter((p) => p.runs_jobs).map((p) => p.source) }).toEqual({ host: h.id, runsJobs: [] });
    }
    expect(byMachine(models).filter((m) => m.role === "job-vm").map((m) => m.host)).toEqual(vmRunners(stack, models).map((m) => m.id));
    for (const m of byMachine(models)) expect({ id: m.id, problems: m.highstate_problems }).toEqual({ id: m.id, problems: [] });
  });

  test("1. readability: every process runs as a user that can read what it needs", () => {
    const failures: string[] = [];
    for (const m of byMachine(models)) {
      for (const p of running(m)) {
        const needs = [...p.needs, ...(p.credentials?.files ?? [])];
        for (const need of needs) {
          if (need.optional && !m.files[need.path]) continue;
          const why = denied(m, need.as_root ? "root" : p.user, need.path, need.access);
          if (why) failures.push(`${m.id}: ${p.source} (as ${p.user}): ${why}`);
        }
      }
    }
    expect([...new Set(failures)]).toEqual([]);
  });

  test("2. environment: every variable a program requires is set by the unit or hook that starts it", () => {
    const failures: string[] = [];
    const contract = contractAgentEnvironment();
    expect(contract).toEqual(expect.arrayContaining(["CI_FLEET_SSM_PREFIX"]));
    for (const m of byMachine(models)) {
      for (const p of m.processes) {
        for (const v of p.unresolved_command_vars ?? []) {
          failures.push(`${m.id}: ${p.source}: the command line uses \${${v}}, which no Environment=/EnvironmentFile= of the unit sets`);
        }
        const provided = new Set([...Object.keys(p.env), ...(p.kind === "buildkite-hook" ? BUILDKITE_AGENT_EXPORTS : [])]);
        for (const r of p.requires_env) {
          if (!provided.has(r.var)) failures.push(`${m.id}: ${p.source}: ${r.by} requires ${r.var}, which is not set`);
        }
        if (p.source === "buildkite-agent.service ExecStart") {
          for (const v of contract) {
            if (!(v in p.env)) failures.push(`${m.id}: ${p.source}: docs/contracts.md says the agent's environment sets ${v}; the unit does not`);
          }
          const prefix = p.env.CI_FLEET_SSM_PREFIX;
          if (prefix !== undefined && prefix !== m.aws_pillar.ssm_prefix) {
            failures.push(`${m.id}: CI_FLEET_SSM_PREFIX=${prefix}, but the machine's pillar (its role's scope) says ${m.aws_pillar.ssm_prefix}`);
          }
          const stateDir = p.env.CI_FLEET_STATE_DIR;
          // The hooks run in the job process, as the job's user (the agent's own without a bootstrap-script drop).
          const hookUser = m.processes.find((q) => q.kind === "buildkite-hook")?.user ?? p.user;
          // isolation vm: no hook runs on the host (the state dir is the job VM's concern).
          const handsOff = m.processes.some((q) => q.source === "buildkite job handoff to a VM (bootstrap-script)");
          if (stateDir !== undefined && !handsOff) {
            const f = m.files[stateDir];
            if (!f || f.kind !== "dir" || f.owner !== hookUser || f.mode !== "0700") {
              failures.push(`${m.id}: CI_FLEET_STATE_DIR=${stateDir} must be a 0700 directory of ${hookUser} (docs/contracts.md); it is ${f ? `${f.owner}:${f.group} ${f.mode} ${f.kind}` : "written by no part"}`);
            }
          }
        }
      }
    }
    expect(failures).toEqual([]);
  });

  describe("3. AWS", () => {
    let iam: Iam;
    beforeAll(() => {
      iam = new Iam(models.run.resources);
    });

    test("every process that calls AWS has credentials, and the principal its machine is meant to wear", () => {
      const failures: string[] = [];
      for (const m of byMachine(models)) {
        for (const p of m.processes.filter((x) => x.aws_calls.length > 0 && !x.aws_calls.every((c) => c.api.startsWith("imds:")))) {
          const principal = principalOf(m, p, iam);
          if ("error" in principal) failures.push(`${m.id}: ${p.source} (as ${p.user}): ${principal.error}`);
          else if (principal.roleArn !== m.aws_pillar.role_arn) {
            failures.push(`${m.id}: ${p.source} wears ${principal.roleArn}, but the machine's pillar ci_fleet:aws:role_arn is ${m.aws_pillar.role_arn}`);
          }
        }
      }
      expect(failures).toEqual([]);
    });

    test("every AWS call of every process is allowed by IAM for the principal it has", async () => {
      const failures: string[] = [];
      for (const m of byMachine(models)) {
        for (const p of m.processes) {
          const calls = p.aws_calls.filter((c) => !c.api.startsWith("imds:"));
          if (calls.length === 0) continue;
          const principal = principalOf(m, p, iam);
          if ("error" in principal) continue; // reported by the test above
          const region = p.credentials?.region ?? m.aws_pillar.region ?? "";
          for (const call of calls) {
            for (const row of await iam.evaluate(principal.roleArn, call, region, m, p)) {
              if (row.decision !== "Allowed") failures.push(`${m.id}: ${p.source}: ${row.label} as ${principal.roleArn}: ${row.decision}`);
            }
          }
        }
      }
      expect(failures).toEqual([]);
    }, 120_000);

    test("CI jobs wear the queue role through an AWS config that no CI job can write or redirect", () => {
      // A config below a directory the job's user can write is a config the job chooses for
      // the next job, and a path root writes through (Salt follows symlinks).
      const failures: string[] = [];
      let agents = 0;
      for (const m of byMachine(models)) {
        for (const p of m.processes.filter((x) => x.runs_jobs || x.kind === "buildkite-hook" || x.kind === "github-hook")) {
          if (p.runs_jobs) agents++;
          const label = `${m.id}: ${p.source} (as ${p.user})`;
          const principal = principalOf(m, p, iam);
          if ("error" in principal) failures.push(`${label}: ${principal.error}`);
          else if (principal.roleArn !== m.aws_pillar.role_arn) failures.push(`${label} wears ${principal.roleArn}, not the queue role ${m.aws_pillar.role_arn}`);
          const config = p.credentials?.config.path;
          if (!config) continue;
          const f = m.files[config];
          if (!f || f.owner !== "root") failures.push(`${label}: its AWS config ${config} (${p.credentials?.config.how}) is ${f ? `owned by ${f.owner}` : "written by no part"}`);
          for (let dir = path.dirname(config); dir !== "/"; dir = path.dirname(dir)) {
            const d = m.files[dir];
            if (d && d.owner === p.user) failures.push(`${label}: its AWS config ${config} is below ${dir}, which ${p.user} owns`);
          }
        }
      }
      expect(failures).toEqual([]);
      // Exactly one place runs each runner's jobs: the host (isolation host) or its job VM (vm).
      const runners = byMachine(models).filter((m) => m.role === "runner");
      const places = runners.map((r) => ({ runner: r.id, jobs: [r, models.machines[`${r.id}/vm`]].flatMap((m) => (m ? m.processes.filter((p) => p.runs_jobs).map((p) => `${m.id}: ${p.source}`) : [])) }));
      expect(places.filter((x) => x.jobs.length !== 1)).toEqual([]);
      expect(agents).toBe(runners.length);
    });

    test("Roles Anywhere: each machine's certificate subject, trust anchor and profile admit the role it asks for", async () => {
      const failures: string[] = [];
      for (const m of byMachine(models)) {
        for (const p of m.processes) {
          const c = p.credentials;
          if (c?.kind !== "roles-anywhere") continue;
          const label = `${m.id}: ${p.source}`;
          const subject = fleetSubject(m);
          if (!subject) {
            failures.push(`${label}: the fleet's signer issues no certificate for ${m.id}: ${JSON.stringify(m.roles_anywhere_subject)}`);
            continue;
          }
          const profile = iam.profile(c.profile_arn ?? "");
          if (!profile) failures.push(`${label}: profile ${c.profile_arn} is not registered`);
          else if (!profile.roleArns.includes(c.role_arn ?? "")) failures.push(`${label}: profile ${c.profile_arn} does not list ${c.role_arn} (it lists ${profile.roleArns.join(", ")})`);
          if (c.trust_anchor_arn !== iam.trustAnchorArn()) failures.push(`${label}: trust anchor ${c.trust_anchor_arn} is not the program's ${iam.trustAnchorArn()}`);
          for (const action of ["sts:AssumeRole", "sts:TagSession"]) {
            const d = await iam.rolesAnywhereTrust(c.role_arn ?? "", action, subject, c.trust_anchor_arn ?? "");
            if (d !== "Allowed") failures.push(`${label}: the trust of ${c.role_arn} refuses ${action} for a certificate with OU=${subject.organizationalUnit} CN=${subject.commonName}: ${d}`);
          }
        }
      }
      expect(failures).toEqual([]);
    });

    test("the CI user's session comes from a root process that can obtain exactly the queue role, for an hour at most", async () => {
      const failures: string[] = [];
      let sessions = 0;
      for (const m of byMachine(models)) {
        for (const p of m.processes.filter((x) => x.runs_jobs)) {
          const w = p.credentials?.session_writer;
          const label = `${m.id}: ${p.source}`;
          if (!w) {
            failures.push(`${label}: its credentials are not a session a root process writes (${p.credentials?.kind})`);
            continue;
          }
          sessions++;
          if (w.user !== "root") failures.push(`${label}: the session file is written by ${w.user}, not root`);
          if (w.role_arn !== m.aws_pillar.role_arn) failures.push(`${label}: the session is of ${w.role_arn}, not the queue role ${m.aws_pillar.role_arn}`);
          const role = iam.roleMaxSession(w.role_arn ?? "");
          if (role === undefined || role > 3600) failures.push(`${label}: ${w.role_arn} allows sessions of ${role} s`);
          if (m.provider === "aws") {
            if (w.via !== "assume-role") failures.push(`${label}: on aws the session must come from sts:AssumeRole of the host role, not ${w.via}`);
            const host = iam.instanceRole(m.host ?? m.id) ?? "";
            const d = await iam.assumeRole(host, w.role_arn ?? "");
            if (d !== "Allowed") failures.push(`${label}: the host role ${host} cannot assume ${w.role_arn}: ${d}`);
            if (host === w.role_arn) failures.push(`${label}: the instance wears the queue role itself`);
          } else {
            const subject = fleetSubject(m);
            if (w.via !== "roles-anywhere" || !subject) failures.push(`${label}: on equinix-metal the session must come from the machine's fleet certificate (${w.via}, ${JSON.stringify(m.roles_anywhere_subject)})`);
            else {
              const d = await iam.rolesAnywhereTrust(w.role_arn ?? "", "sts:AssumeRole", subject, w.trust_anchor_arn ?? "");
              if (d !== "Allowed") failures.push(`${label}: ${w.role_arn} refuses a certificate with OU=${subject.organizationalUnit}: ${d}`);
              const profile = iam.profile(w.profile_arn ?? "");
              if (!profile?.roleArns.includes(w.role_arn ?? "")) failures.push(`${label}: profile ${w.profile_arn} does not list ${w.role_arn}`);
            }
          }
        }
      }
      expect(failures).toEqual([]);
      // Every process that runs jobs was judged, the jobs in the VMs among them.
      const jobs = byMachine(models).flatMap((m) => m.processes.filter((x) => x.runs_jobs).map((x) => ({ m, x })));
      expect(sessions).toBe(jobs.length);
      expect(jobs.filter(({ m }) => m.role === "job-vm").length).toBe(vmRunners(stack, models).length);
    });

    test("every vm runner's job VM wears its queue role through a session the launcher (root) mints for that VM alone, never the host's session file", () => {
      // docs/job-vm.md "The AWS session": job-vm.json's aws.command is the host's
      // ci-fleet-aws-session.service command (root) without its file; the launcher (root) runs it
      // per VM with --stdout --duration 900 (on aws the session named after minion, slot and VM)
      // and sends the document into that VM; ci-job-guest writes it where the job's AWS config
      // (AWS_CONFIG_FILE) prints it. Every queue's jobs get the queue role by design.
      const failures: string[] = [];
      const hosts = vmRunners(stack, models);
      expect(hosts.length).toBeGreaterThan(0);
      const judged = new Set<string>();
      for (const h of hosts) {
        const g = models.machines[`${h.id}/vm`];
        if (!g?.job_vm) {
          failures.push(`${h.id}: no job VM model (${h.id}/vm): the launcher's config or the golden image's build is missing`);
          continue;
        }
        const jv = g.job_vm;
        for (const problem of jv.problems) failures.push(`${g.id}: ${problem}`);
        const timer = h.processes.find((p) => p.source === "ci-fleet-aws-session.service ExecStart");
        const output = timer ? argAfter(timer.argv_resolved ?? timer.argv, "--output") : undefined;
        if (!timer || timer.user !== "root" || !output) failures.push(`${h.id}: no root ci-fleet-aws-session.service writes the queue role's session on the host (${timer?.user ?? "no unit"})`);
        const aws = jv.aws;
        if (!aws) {
          failures.push(`${h.id}: ${jv.config} has no "aws" key ({region, command}): the launcher mints no session for the VM, so the job has no AWS credentials, but its queue needs ${h.aws_pillar.role_arn}`);
        } else {
          if (aws.region !== h.aws_pillar.region) failures.push(`${h.id}: ${jv.config} aws.region is ${aws.region}, the queue's region is ${h.aws_pillar.region}`);
          if (jv.seed.aws_region !== aws.region) failures.push(`${h.id}: the launcher's seed says aws_region=${jv.seed.aws_region}, not ${aws.region}`);
        }
        const job = g.processes.find((p) => p.runs_jobs);
        if (!job) {
          failures.push(`${g.id}: no job runs in the VM`);
          continue;
        }
        judged.add(job.job_input ?? "?");
        const label = `${g.id}: ${job.source} (as ${job.user}, ${job.job_input} input)`;
        if (job.user === "root" || !g.users[job.user]) failures.push(`${label}: the job user is not an unprivileged user of the image`);
        const c = job.credentials;
        if (!c || c.kind !== "credential-process") {
          failures.push(`${label}: its AWS credentials are ${c?.kind ?? "none"} (config ${c?.config.path ?? "none"}: ${c?.config.how ?? "?"}), not the queue role's session`);
          continue;
        }
        const w = c.session_writer;
        const mint = c.session_mint;
        if (!w || !mint?.argv) failures.push(`${label}: ${c.imds_copy} holds no session a root process mints for this VM (${JSON.stringify(mint ?? null)})`);
        else {
          // Minted per VM, by root: the launcher that reads this config, with the timer's own command.
          const launcher = h.processes.find((p) => p.source === mint.minted_by);
          if (!launcher || launcher.user !== "root" || w.user !== "root" || argAfter(launcher.argv_resolved ?? launcher.argv, "--config") !== jv.config) {
            failures.push(`${label}: the session is minted by ${mint.minted_by} (as ${launcher?.user}), not the launcher (root) that reads ${jv.config}`);
          }
          if (mint.timer !== timer?.source) failures.push(`${label}: the launcher's command is not ${timer?.source ?? "the timer"}'s without its file (it matches ${mint.timer})`);
          if (mint.helper_owner !== "root" || !mint.helper_has_stdout_mode) failures.push(`${label}: ${mint.helper} is not the root-owned session helper with a --stdout mode`);
          if (w.role_arn !== h.aws_pillar.role_arn) failures.push(`${label}: the session is of ${w.role_arn}, not the queue role ${h.aws_pillar.role_arn}`);
          // Not the host's session: no file (--stdout, no --output), the timer's file named nowhere.
          if (!mint.stdout || argAfter(mint.argv, "--output") || (output && mint.argv.includes(output)) || mint.config_names_timer_output) {
            failures.push(`${label}: the VM's session goes through a host file (${mint.argv.join(" ")}; the timer writes ${output})`);
          }
          if (mint.duration !== "900") failures.push(`${label}: the VM's session lasts ${mint.duration} s, not 900 (the shortest AWS allows)`);
          if (h.provider === "aws") {
            if (mint.session_name !== `${h.id}.s0.v1` || argAfter(mint.argv_vm2 ?? [], "--session-name") !== `${h.id}.s0.v2`) failures.push(`${label}: the session name ${mint.session_name} does not name the minion, slot and VM`);
          } else if (mint.session_name) failures.push(`${label}: a Roles Anywhere session name ${mint.session_name} (the profile accepts none)`);
        }
        // In the VM: the session file and the config that prints it, the job's to read and root's to write.
        const session = c.imds_copy ? g.files[c.imds_copy] : undefined;
        if (!session || !session.writer.includes(jv.guest_agent ?? "ci-job-guest")) failures.push(`${label}: ${c.imds_copy} is written by ${session?.writer ?? "no part"}, not the guest agent`);
        for (const need of c.files) {
          const why = denied(g, job.user, need.path, need.access);
          if (why && !(need.optional && !g.files[need.path])) failures.push(`${label}: ${why}`);
        }
        for (const file of [c.config.path, c.imds_copy]) {
          if (file && writeBit(g, job.user, file)) failures.push(`${label}: ${job.user} can write ${file} (${g.files[file].owner}:${g.files[file].group} ${g.files[file].mode})`);
          if (file && !denied(g, job.user, path.posix.dirname(file), "write")) failures.push(`${label}: ${job.user} can write into ${path.posix.dirname(file)}`);
        }
        if (c.region !== h.aws_pillar.region || job.env.AWS_REGION !== h.aws_pillar.region) failures.push(`${label}: region ${c.region} (AWS_REGION=${job.env.AWS_REGION}), not ${h.aws_pillar.region}`);
        // No other credential source the job could plant or find (botocore reads the shared credentials file first).
        const shared = job.env.AWS_SHARED_CREDENTIALS_FILE;
        if (!shared) failures.push(`${label}: AWS_SHARED_CREDENTIALS_FILE is unset, so ~/.aws/credentials (the job's own) comes before the session`);
        else if (g.files[shared] || !denied(g, job.user, path.posix.dirname(shared), "write")) failures.push(`${label}: ${shared} exists or ${job.user} can create it`);
        const principal = principalOf(g, job, iam);
        if ("error" in principal || principal.roleArn !== h.aws_pillar.role_arn) failures.push(`${label}: wears ${JSON.stringify(principal)}, not ${h.aws_pillar.role_arn}`);
      }
      expect(failures).toEqual([]);
      // Both kinds of job input are judged where the stack has both agents in VMs.
      const agents = new Set(hosts.map((h) => agentOf(stack, h)));
      expect([...judged].sort()).toEqual([...agents].map((a) => (a === "buildkite" ? "buildkite" : "github")).sort());
    });
  });

  test("4. the CI user can read no private key and no AWS credential that outlives an hour; root keeps what it needs", () => {
    const failures: string[] = [];
    const secretPath = /(private-key\.pem|\.key|\/minion\.pem|\/master\.pem|deploy-key)$|^\/etc\/ci-fleet\/roles-anywhere\/|^\/etc\/ci-fleet\/pki\//;
    let keys = 0;
    for (const m of byMachine(models)) {
      // A job VM: its job user (the image's); a host: the CI user.
      const ciUser = m.role === "job-vm" ? m.processes.find((x) => x.runs_jobs)?.user : m.users["ci-agent"] ? "ci-agent" : undefined;
      for (const [p, f] of Object.entries(m.files)) {
        if (f.kind !== "file" || !(secretPath.test(p) || (f.content ?? "").includes("PRIVATE KEY"))) continue;
        keys++;
        if (ciUser && !denied(m, ciUser, p, "read")) failures.push(`${m.id}: ${ciUser} can read ${p} (${f.owner}:${f.group} ${f.mode}, by ${f.writer})`);
        if (p.includes("private-key") && f.mode !== "0600" && f.mode !== "0400") failures.push(`${m.id}: ${p} is ${f.mode}, not 0600`);
      }
      if (ciUser) {
        // What the CI user's AWS config resolves to: only the one-hour session file.
        for (const proc of m.processes.filter((x) => x.runs_jobs || x.kind === "buildkite-hook" || x.kind === "github-hook")) {
          const c = proc.credentials;
          if (!c) continue;
          if (c.kind !== "credential-process" || !c.session_writer) failures.push(`${m.id}: ${proc.source}: the CI user's credentials are ${c.kind}, not the one-hour session`);
          for (const need of c.files) {
            if (need.path.endsWith("private-key.pem") || need.path.includes("/roles-anywhere/")) failures.push(`${m.id}: ${proc.source}: the CI user's credentials name ${need.path}`);
          }
        }
        if (m.provider === "aws" && !m.cloud_init.imds_root_only) failures.push(`${m.id}: the metadata service (the host role's credentials) is open to non-root users`);
      }
      // Root processes that need AWS still read their key and certificate.
      // (cloud-init's first-boot runs are judged on the disk they saw, by test 1.)
      for (const proc of running(m).filter((x) => x.user === "root" && x.credentials?.kind === "roles-anywhere")) {
        for (const need of proc.credentials!.files) {
          if (!m.files[need.path] && !need.optional) failures.push(`${m.id}: ${proc.source}: ${need.path} is written by no part`);
          else if (denied(m, "root", need.path, need.access)) failures.push(`${m.id}: ${proc.source}: root cannot ${need.access} ${need.path}`);
        }
      }
    }
    expect(keys).toBeGreaterThan(5);
    expect(failures).toEqual([]);
  });
});

/** The runners whose queue runs its jobs in VMs (the stack file's isolation; vm when unset, the program's default). */
function vmRunners(stack: string, models: StackModels): MachineModel[] {
  const queues = stackConfig(stack)["ci-fleet:queues"] as Record<string, { isolation?: string }>;
  const vm = Object.keys(queues).filter((q) => (queues[q].isolation ?? "vm") === "vm");
  return byMachine(models).filter((m) => m.role === "runner" && vm.some((q) => m.id.startsWith(`${stack}-${q}-`)));
}

function agentOf(stack: string, m: MachineModel): string {
  const queues = stackConfig(stack)["ci-fleet:queues"] as Record<string, { agent: string }>;
  const q = Object.keys(queues).find((name) => m.id.startsWith(`${stack}-${name}-`));
  return q ? queues[q].agent : "?";
}

/** Whether `user` owns `p` or has its write bit (the directories above are judged on their own). */
function writeBit(m: MachineModel, user: string, p: string): boolean {
  const f = m.files[p];
  if (!f) return false;
  if (f.owner === user) return true;
  const mode = parseInt(f.mode, 8);
  const groups = new Set([user, ...(m.users[user]?.groups ?? [])]);
  return ((groups.has(f.group) ? mode >> 3 : mode) & 2) !== 0;
}

function argAfter(argv: string[], flag: string): string | undefined {
  const i = argv.indexOf(flag);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : argv.find((a) => a.startsWith(`${flag}=`))?.slice(flag.length + 1);
}

function fleetSubject(m: MachineModel): { commonName: string; organizationalUnit: string; organization?: string } | undefined {
  const s = m.roles_anywhere_subject;
  return s && "organizationalUnit" in s ? s : undefined;
}

// --- principals --------------------------------------------------------------------------------

type Principal = { roleArn: string; how: string } | { error: string };

function principalOf(m: MachineModel, p: Process, iam: Iam): Principal {
  const c = p.credentials;
  if (!c || c.kind === "none") {
    const imds = m.cloud_init.imds_blocked
      ? "; the host's firewall drops the VM's packets to the metadata address"
      : m.provider === "aws" ? (m.cloud_init.imds_root_only ? "; the metadata guard lets only uid 0 reach IMDS" : "") : "; no instance metadata credentials off AWS";
    return { error: `no AWS credentials: ${c?.config.path ?? "no AWS config"} (${c?.config.how ?? "?"}) is written by no part with a credential source${imds}` };
  }
  if (c.kind === "roles-anywhere") {
    if (!c.role_arn) return { error: "credential_process names no --role-arn" };
    return { roleArn: c.role_arn, how: "roles-anywhere" };
  }
  if (c.kind === "credential-process" && c.session_writer?.role_arn) {
    // A session the root helper writes: which role it holds is the helper's --role-arn
    // (the test of section 3 checks the helper can obtain it).
    if (c.session_writer.user !== "root") return { error: `${c.imds_copy} is written by ${c.session_writer.user}, not root` };
    return { roleArn: c.session_writer.role_arn, how: `session from ${c.session_writer.via}` };
  }
  if (c.kind === "imds" && p.user !== "root" && m.cloud_init.imds_root_only) return { error: "IMDS is closed to non-root users" };
  const role = iam.instanceRole(m.host ?? m.id);
  if (!role) return { error: `no instance profile on the EC2 instance of ${m.host ?? m.id}` };
  if (c.kind === "credential-process") {
    const copy = c.imds_copy;
    const writer = copy ? m.files[copy] : undefined;
    if (!copy || !writer) return { error: `credential_process reads ${copy ?? "nothing"}, which nothing writes` };
    if (!writer.writer.startsWith("run time:") || !m.processes.some((q) => q.user === "root" && writer.writer.includes(q.source))) {
      return { error: `${copy} is not written by a root process (only uid 0 reaches IMDS)` };
    }
  }
  return { roleArn: role, how: c.kind };
}

// --- IAM -----------------------------------------------------------------------------------

type Decision = "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied" | "Error";
interface Doc {
  Version?: string;
  Statement: unknown[];
}

const parse = (v: unknown): Doc | undefined => {
  const text = typeof v === "string" ? v : v === undefined ? undefined : JSON.stringify(v);
  if (text === undefined) return undefined;
  const d = JSON.parse(text) as Doc | undefined;
  if (!d || !d.Statement) return undefined;
  return { Version: d.Version, Statement: Array.isArray(d.Statement) ? d.Statement : [d.Statement] };
};

class Iam {
  private readonly roles = new Map<string, { arn: string; name: string; trust?: Doc; identity: { name: string; policy: Doc }[] }>();
  private readonly keyArn?: string;
  private readonly keyPolicy?: Doc;

  constructor(private readonly resources: CapturedResource[]) {
    for (const r of resources.filter((x) => x.type === "aws:iam/role:Role")) {
      const arn = String(r.outputs.arn);
      const name = arn.split("/").pop() as string;
      const identity = ((r.inputs.inlinePolicies as { name?: string; policy?: unknown }[] | undefined) ?? []).flatMap((p, i) => {
        const doc = parse(p.policy);
        return doc ? [{ name: `${name}/${p.name ?? i}`, policy: doc }] : [];
      });
      this.roles.set(name, { arn, name, trust: parse(r.inputs.assumeRolePolicy), identity });
    }
    for (const r of resources.filter((x) => x.type === "aws:iam/rolePolicy:RolePolicy")) {
      const role = this.roles.get(String(r.inputs.role));
      const doc = parse(r.inputs.policy);
      if (role && doc) role.identity.push({ name: `${role.name}/${String(r.inputs.name ?? r.name)}`, policy: doc });
    }
    const keys = resources.filter((r) => r.type === "aws:kms/key:Key");
    if (keys.length === 1) {
      this.keyArn = String(keys[0].outputs.arn);
      this.keyPolicy = parse(keys[0].inputs.policy);
    }
  }

  private role(arn: string) {
    return this.roles.get(arn.split("/").pop() as string);
  }

  instanceRole(minionId: string): string | undefined {
    const instance = this.resources.find((r) => r.type === "aws:ec2/instance:Instance" && (r.inputs.tags as Record<string, string> | undefined)?.Name === minionId);
    const profileName = instance?.inputs.iamInstanceProfile;
    const profile = this.resources.find((r) => r.type === "aws:iam/instanceProfile:InstanceProfile" && r.inputs.name === profileName);
    const role = profile ? this.roles.get(String(profile.inputs.role)) : undefined;
    return role?.arn;
  }

  roleMaxSession(arn: string): number | undefined {
    const r = this.resources.find((x) => x.type === "aws:iam/role:Role" && x.outputs.arn === arn);
    return r ? Number(r.inputs.maxSessionDuration ?? 3600) : undefined;
  }

  /** sts:AssumeRole of `target` by a session of `principalRole`: its identity policies and the target's trust. */
  async assumeRole(principalRole: string, target: string): Promise<Decision> {
    const t = this.role(target);
    if (!t?.trust) return "Error";
    return this.decide(principalRole, "sts:AssumeRole", target, {}, t.trust);
  }

  certificateSubject(minionId: string): { commonName: string; organizationalUnit: string; organization?: string } | undefined {
    const req = this.resources.find(
      (r) => r.type === "tls:index/certRequest:CertRequest" && (r.inputs.subject as { commonName?: string } | undefined)?.commonName === minionId,
    );
    return req?.inputs.subject as { commonName: string; organizationalUnit: string } | undefined;
  }

  profile(arn: string): { roleArns: string[] } | undefined {
    const r = this.resources.find((x) => x.type === "aws:rolesanywhere/profile:Profile" && x.outputs.arn === arn);
    return r ? { roleArns: (r.inputs.roleArns as string[]) ?? [] } : undefined;
  }

  trustAnchorArn(): string | undefined {
    const r = this.resources.find((x) => x.type === "aws:rolesanywhere/trustAnchor:TrustAnchor");
    return r ? String(r.outputs.arn) : undefined;
  }

  async rolesAnywhereTrust(roleArn: string, action: string, subject: { commonName: string; organizationalUnit: string; organization?: string }, anchor: string): Promise<Decision> {
    const role = this.role(roleArn);
    if (!role?.trust) return "Error";
    const account = roleArn.split(":")[4];
    // Roles Anywhere maps the certificate subject to session tags aws:PrincipalTag/x509Subject/<field>.
    const context: Record<string, string> = {
      "aws:SourceArn": anchor,
      "aws:PrincipalTag/x509Subject/CN": subject.commonName,
      "aws:PrincipalTag/x509Subject/OU": subject.organizationalUnit,
      ...(subject.organization ? { "aws:PrincipalTag/x509Subject/O": subject.organization } : {}),
    };
    const r = await runSimulation(
      { request: { principal: "rolesanywhere.amazonaws.com", action, resource: { resource: roleArn, accountId: account }, contextVariables: context }, identityPolicies: [], serviceControlPolicies: [], resourceControlPolicies: [], resourcePolicy: role.trust } as Simulation,
      {},
    );
    return r.resultType === "error" ? "Error" : (r.overallResult as Decision);
  }

  private async decide(roleArn: string, action: string, resource: string, context: Record<string, string> = {}, resourcePolicy?: Doc): Promise<Decision> {
    const role = this.role(roleArn);
    if (!role) return "Error";
    const account = roleArn.split(":")[4];
    const principal = `arn:aws:sts::${account}:assumed-role/${role.name}/seam`;
    const sim = {
      request: { principal, action, resource: { resource, accountId: account }, contextVariables: context },
      identityPolicies: role.identity,
      serviceControlPolicies: [],
      resourceControlPolicies: [],
      resourcePolicy,
    } as Simulation;
    const r = await runSimulation(sim, {});
    if (r.resultType === "error") return "Error";
    if (action !== "kms:Decrypt") return r.overallResult as Decision;
    // iam-simulate drops kms:EncryptionContext:* keys in runSimulation (see tools/preview/access-matrix.ts).
    return runUnsafeSimulation({ ...sim, resourcePolicy: { __validated: true, policyDocument: resourcePolicy, metadata: { name: "kms-key-policy" }, errors: [] } } as unknown as Simulation, {}) as Decision;
  }

  private decrypt(roleArn: string, region: string, parameterArn: string): Promise<Decision> {
    if (!this.keyArn || !this.keyPolicy) return Promise.resolve("Error");
    return this.decide(roleArn, "kms:Decrypt", this.keyArn, { "kms:ViaService": ssmViaService(region), "kms:EncryptionContext:PARAMETER_ARN": parameterArn }, this.keyPolicy);
  }

  async evaluate(roleArn: string, call: import("./support").AwsCall, region: string, m: MachineModel, p: Process): Promise<{ label: string; decision: Decision }[]> {
    const account = roleArn.split(":")[4];
    const out: { label: string; decision: Decision }[] = [];
    const ssmArn = (p2: string) => arns.ssmParameter(region, account, p2);
    if (call.api === "ssm:GetParametersByPath" || call.api === "ssm:GetParameter") {
      // The hooks read under CI_FLEET_SSM_PREFIX; without it, under the queue's own prefix (the env test reports the gap).
      const base = call.ssm_path ?? (p.kind === "buildkite-hook" ? m.aws_pillar.ssm_prefix : undefined);
      if (call.api === "ssm:GetParametersByPath") {
        if (!base) return [{ label: `${call.api} (no path)`, decision: "Error" }];
        const levels = p.kind === "buildkite-hook" ? [`${base}global/`] : [base];
        for (const level of levels) {
          out.push({ label: `ssm:GetParametersByPath ${level}`, decision: await this.decide(roleArn, call.api, ssmArn(level.replace(/\/$/, ""))) });
          out.push({ label: `kms:Decrypt (via SSM) of ${level}<name>`, decision: await this.decrypt(roleArn, region, ssmArn(`${level}probe`)) });
        }
      } else {
        const name = call.ssm_parameter ?? (base ? `${base}global/allowed_pipelines` : undefined);
        if (!name) return [{ label: `${call.api} (no parameter)`, decision: "Error" }];
        out.push({ label: `ssm:GetParameter ${name}`, decision: await this.decide(roleArn, call.api, ssmArn(name)) });
        out.push({ label: `kms:Decrypt (via SSM) of ${name}`, decision: await this.decrypt(roleArn, region, ssmArn(name)) });
      }
      return out;
    }
    if (call.dynamodb_table) {
      const tableArn = `arn:aws:dynamodb:${region}:${account}:table/${call.dynamodb_table}`;
      out.push({ label: `${call.api} ${call.dynamodb_table}`, decision: await this.decide(roleArn, call.api, tableArn) });
      return out;
    }
    if (call.s3_bucket) {
      out.push({ label: `${call.api} s3://${call.s3_bucket}/records/...`, decision: await this.decide(roleArn, call.api, `arn:aws:s3:::${call.s3_bucket}/records/probe`, { "aws:SecureTransport": "true" }) });
      return out;
    }
    return [{ label: `${call.api} (not evaluated)`, decision: "Error" }];
  }
}
