import * as fs from "fs";
import * as path from "path";
import { runSimulation, runUnsafeSimulation, type Simulation } from "@cloud-copilot/iam-simulate";
import { ROOT } from "../support/preview";
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
      expect(agents).toBeGreaterThan(0);
      expect(failures).toEqual([]);
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
            const host = iam.instanceRole(m.id) ?? "";
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
      expect(sessions).toBeGreaterThan(0);
      expect(failures).toEqual([]);
    });
  });

  test("4. the CI user can read no private key and no AWS credential that outlives an hour; root keeps what it needs", () => {
    const failures: string[] = [];
    const secretPath = /(private-key\.pem|\.key|\/minion\.pem|\/master\.pem|deploy-key)$|^\/etc\/ci-fleet\/roles-anywhere\/|^\/etc\/ci-fleet\/pki\//;
    let keys = 0;
    for (const m of byMachine(models)) {
      const ciUser = m.users["ci-agent"] ? "ci-agent" : undefined;
      for (const [p, f] of Object.entries(m.files)) {
        if (f.kind !== "file" || !(secretPath.test(p) || (f.content ?? "").includes("PRIVATE KEY"))) continue;
        keys++;
        if (ciUser && !denied(m, ciUser, p, "read")) failures.push(`${m.id}: ci-agent can read ${p} (${f.owner}:${f.group} ${f.mode}, by ${f.writer})`);
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

function fleetSubject(m: MachineModel): { commonName: string; organizationalUnit: string; organization?: string } | undefined {
  const s = m.roles_anywhere_subject;
  return s && "organizationalUnit" in s ? s : undefined;
}

// --- principals --------------------------------------------------------------------------------

type Principal = { roleArn: string; how: string } | { error: string };

function principalOf(m: MachineModel, p: Process, iam: Iam): Principal {
  const c = p.credentials;
  if (!c || c.kind === "none") {
    const imds = m.provider === "aws" ? (m.cloud_init.imds_root_only ? "; the metadata guard lets only uid 0 reach IMDS" : "") : "; no instance metadata credentials off AWS";
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
  const role = iam.instanceRole(m.id);
  if (!role) return { error: `no instance profile on the EC2 instance of ${m.id}` };
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
