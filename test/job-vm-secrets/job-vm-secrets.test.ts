/**
 * Issue 15.4: queue secrets reach a Buildkite job in a VM the way the job-secrets hooks give them
 * to a job on a host (docs/job-secrets.md): the same hooks, in the golden image, run by the guest's
 * `buildkite-agent bootstrap` as the job user with the VM's queue-role session. Each side is
 * computed from what is really rendered or run:
 *  - the seam pillar -> /etc/ci-fleet/job-vm.json (ssmPrefix) -> the real launcher's load_config and
 *    render_seed -> the real guest's job_command (as its main() calls it) -> the hooks' own
 *    readSecretsContext/jobPaths: for production's `release` queue (isolation vm) the hooks read the
 *    namespace and region the fleet renders, the same values the host agent's unit would give them;
 *  - the guest never takes BUILDKITE_HOOKS_PATH, additional hooks paths or CI_FLEET_* from the input;
 *  - the rendered golden-image build installs every file of salt/buildkite/files/hooks into the
 *    guest's hooks path, with the OS's Node at the host's pin; a changed bundle is a new image name
 *    (the build's `creates:`), a GitHub queue's image does not change;
 *  - the machine model (test/seams/machine_model.py): the `<release runner>/vm` guest runs the
 *    hooks, they read under its own queue's prefix, which the queue role may read, and no other
 *    queue's namespace is readable with that role.
 */
import { runSimulation, type Simulation } from "@cloud-copilot/iam-simulate";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as YAML from "yaml";
import { jobPaths, readSecretsContext } from "../../hooks/buildkite/src/context";
import { arns } from "../../infra/identity/names";
import { stackModels } from "../seams/support";
import { renderStack, StackRender } from "../support/salt-render";

const ROOT = path.resolve(__dirname, "../..");
const PYTHON = "/usr/bin/python3";
const LAUNCHER = path.join(ROOT, "salt/runner/files/ci-job-slot");
const GUEST = path.join(ROOT, "salt/runner/files/ci-job-guest");
const HOOKS_SOURCE = path.join(ROOT, "salt/buildkite/files/hooks");
const JOB_VM = YAML.parse(fs.readFileSync(path.join(ROOT, "salt/runner/parameters/defaults.yaml"), "utf8")).runner.job_vm;
const BUILDKITE = YAML.parse(fs.readFileSync(path.join(ROOT, "salt/buildkite/parameters/defaults.yaml"), "utf8")).buildkite;
const AGENT_UNIT = `/etc/systemd/system/${BUILDKITE.unit}`;

type Doc = { ci_fleet: { aws: { region: string; ssm_prefix?: string }; runner?: { agent: string; isolation?: string; queue: string } } };

let r: StackRender;
let dir: string;
beforeAll(async () => {
  r = await renderStack("production");
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "job-vm-secrets-"));
}, 240_000);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const doc = (id: string) => r.documents[id] as unknown as Doc;
const vmRunners = (agent: string) => Object.keys(r.documents).filter((id) => doc(id).ci_fleet.runner?.agent === agent && doc(id).ci_fleet.runner?.isolation === "vm").sort();
const releaseRunner = () => {
  const [id] = vmRunners("buildkite");
  expect(id).toMatch(/^production-release-/);
  return id;
};

/** `Environment=NAME=value` lines of a rendered unit. */
function unitEnv(text: string): Record<string, string> {
  return Object.fromEntries([...text.matchAll(/^Environment=([A-Za-z_][A-Za-z0-9_]*)=(.*)$/gm)].map((m) => [m[1], m[2]]));
}

/** The rendered golden-image build script's virt-customize operations, in order. */
function virtCustomizeOps(script: string): [string, string | undefined][] {
  const line = script.replace(/\\\n/g, " ").split("\n").find((l) => /^\S*\s*LIBGUESTFS_BACKEND=direct virt-customize /.test(l)) ?? "";
  // Shell words: quoted parts joined to their neighbours, quotes removed (as shlex.split).
  const words = [...line.matchAll(/(?:'[^']*'|"[^"]*"|[^\s'"])+/g)].map((m) => m[0].replace(/'([^']*)'|"([^"]*)"/g, "$1$2"));
  const ops: [string, string | undefined][] = [];
  for (let i = words.indexOf("virt-customize") + 1; i < words.length; i++) {
    if (words[i] === "--update") ops.push([words[i], undefined]);
    else ops.push([words[i], words[++i]]);
  }
  return ops;
}

/** The real guest: its job_command on a job input, as main() calls it with the seed's values. */
function guestCommand(input: unknown, seed: Record<string, string> | undefined): { argv: string[]; env: Record<string, string> } {
  const driver = [
    "import json, sys",
    `sys.path.insert(0, ${JSON.stringify(path.join(ROOT, "test/support"))})`,
    "from load_script import load",
    `guest = load("ci_job_guest_h15s", ${JSON.stringify(GUEST)})`,
    "job, seed = json.load(sys.stdin)",
    "env = {'HOME': '/home/ci', 'USER': 'ci', 'LOGNAME': 'ci', 'SHELL': '/bin/bash', 'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'LANG': 'C.UTF-8'}",
    "kwargs = {} if seed is None else {'aws_region': seed.get('aws_region') or None, 'ssm_prefix': seed.get('ssm_prefix') or None}",
    "argv, env = guest.job_command(guest.parse_job(json.dumps(job).encode()), env, **kwargs)",
    "json.dump({'argv': argv, 'env': env}, sys.stdout)",
  ].join("\n");
  const p = spawnSync(PYTHON, ["-B", "-c", driver], { input: JSON.stringify([input, seed ?? null]), encoding: "utf8" });
  if (p.status !== 0) throw new Error(`ci-job-guest job_command: ${p.stderr}`);
  return JSON.parse(p.stdout);
}

/** The real launcher: load_config of the rendered job-vm.json, then the seed of slot 1's first VM. */
function launcherSeed(config: string): Record<string, string> {
  const file = path.join(dir, "job-vm.json");
  fs.writeFileSync(file, config);
  const driver = [
    "import sys",
    `sys.path.insert(0, ${JSON.stringify(path.join(ROOT, "test/support"))})`,
    "from load_script import load",
    `slot = load("ci_job_slot_h15s", ${JSON.stringify(LAUNCHER)})`,
    `cfg = slot.load_config(${JSON.stringify(file)})`,
    "sys.stdout.write(slot.render_seed(cfg, slot.Slot(cfg, 1), 1, False))",
  ].join("\n");
  const p = spawnSync(PYTHON, ["-B", "-c", driver], { encoding: "utf8" });
  if (p.status !== 0) throw new Error(`ci-job-slot: ${p.stderr}`);
  return Object.fromEntries(p.stdout.trim().split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
}

// A Buildkite job input as the host's handoff builds it, with everything a pipeline's `env:` could
// add to steer the hooks elsewhere.
const JOB_ID = "0190f1b2-1111-4222-8333-444455556666";
const hostileInput = {
  kind: "buildkite",
  env: {
    BUILDKITE_JOB_ID: JOB_ID, BUILDKITE_AGENT_ACCESS_TOKEN: "bkaj_test", BUILDKITE_PIPELINE_SLUG: "netboot-release",
    BUILDKITE_REPO: "git@github.com:example-org/netboot.git", BUILDKITE_BUILD_CREATOR_TEAMS: "release-managers",
    BUILDKITE_HOOKS_PATH: "/tmp/evil-hooks", BUILDKITE_ADDITIONAL_HOOKS_PATHS: "/tmp/more-hooks",
    CI_FLEET_SSM_PREFIX: "/ci-fleet/production/infra/", CI_FLEET_STATE_DIR: "/tmp/evil-state", CI_FLEET_NODE: "/tmp/evil-node",
    AWS_REGION: "eu-west-1",
  },
};

describe("production's release queue (isolation vm): pillar -> job-vm.json -> seed -> guest env -> the hooks' context", () => {
  test("the hooks in the VM read the queue's namespace and region the fleet renders, as the host agent's unit would give them", () => {
    const id = releaseRunner();
    const files = r.minions[id].files;
    const pillar = doc(id).ci_fleet.aws;
    expect(pillar.ssm_prefix).toBe("/ci-fleet/production/release/");
    // The host's own source of the hooks' context: the agent unit's environment, rendered from the same pillar.
    const hostEnv = unitEnv(files[AGENT_UNIT]);
    expect({ prefix: hostEnv.CI_FLEET_SSM_PREFIX, region: hostEnv.AWS_REGION }).toEqual({ prefix: pillar.ssm_prefix, region: pillar.region });

    const config = JSON.parse(files[JOB_VM.config]) as { ssmPrefix?: string };
    expect(config.ssmPrefix).toBe(pillar.ssm_prefix);
    const seed = launcherSeed(files[JOB_VM.config]);
    expect({ ssm_prefix: seed.ssm_prefix, aws_region: seed.aws_region }).toEqual({ ssm_prefix: pillar.ssm_prefix, aws_region: pillar.region });

    const { argv, env } = guestCommand(hostileInput, seed);
    expect(argv).toEqual(["buildkite-agent", "bootstrap"]);
    expect({ CI_FLEET_SSM_PREFIX: env.CI_FLEET_SSM_PREFIX, AWS_REGION: env.AWS_REGION }).toEqual({ CI_FLEET_SSM_PREFIX: hostEnv.CI_FLEET_SSM_PREFIX, AWS_REGION: hostEnv.AWS_REGION });

    // What the hooks themselves make of that environment (the sources the bundle is built from).
    const context = readSecretsContext(env);
    expect(context.prefix).toBe(pillar.ssm_prefix);
    expect(context.levels.map((l) => l.path)).toEqual([
      "/ci-fleet/production/release/global/",
      "/ci-fleet/production/release/github.com_example-org_netboot.git/",
      "/ci-fleet/production/release/netboot-release/",
    ]);
    expect(context.requester).toEqual({ pipelineSlug: "netboot-release", creatorTeams: ["release-managers"], unblockerTeams: [] });
    // Their state and ssh-agent sockets: in the job user's home in the VM, never a path the input chose.
    const paths = jobPaths(env);
    expect(paths.dir).toBe(`/home/ci/job-secrets/${JOB_ID}`);
    expect(paths.socketFor("pipeline")).toBe(`/home/ci/job-secrets/${JOB_ID}/pipeline.sock`);
    expect(env).not.toHaveProperty("CI_FLEET_NODE");
    expect(env).not.toHaveProperty("BUILDKITE_ADDITIONAL_HOOKS_PATHS");

    // The bootstrap finds the hooks where the golden image has them.
    const ops = virtCustomizeOps(files[JOB_VM.image.build_script]);
    const installed = ops.filter(([op]) => op === "--copy-in").map(([, v]) => v!).filter((v) => v.endsWith(`:${env.BUILDKITE_HOOKS_PATH}`));
    expect(installed.map((v) => path.basename(v.split(":")[0])).sort()).toEqual(fs.readdirSync(HOOKS_SOURCE).sort());

    // GitHub vm runners get no ssmPrefix (no hook runs in their VMs).
    const github = vmRunners("github-actions");
    expect(github.length).toBeGreaterThan(0);
    for (const gid of github) expect({ gid, ssmPrefix: JSON.parse(r.minions[gid].files[JOB_VM.config]).ssmPrefix }).toEqual({ gid, ssmPrefix: undefined });
  });

  test("the guest never takes BUILDKITE_HOOKS_PATH, additional hooks paths or CI_FLEET_* from the input (with or without a seed)", () => {
    for (const seed of [undefined, { aws_region: "us-east-2", ssm_prefix: "/ci-fleet/production/release/" }]) {
      const { env } = guestCommand(hostileInput, seed);
      expect({
        hooks: env.BUILDKITE_HOOKS_PATH, more: env.BUILDKITE_ADDITIONAL_HOOKS_PATHS, prefix: env.CI_FLEET_SSM_PREFIX, state: env.CI_FLEET_STATE_DIR, node: env.CI_FLEET_NODE,
      }).toEqual({ hooks: BUILDKITE.hooks_dir, more: undefined, prefix: seed?.ssm_prefix, state: "/home/ci/job-secrets", node: undefined });
    }
    // A GitHub job gets none of the Buildkite hooks' settings.
    const github = guestCommand({ kind: "github", jitconfig: "x" }, { ssm_prefix: "/ci-fleet/production/default/" });
    expect(Object.keys(github.env).filter((k) => k.startsWith("CI_FLEET_") || k.startsWith("BUILDKITE"))).toEqual([]);
  });

  test("a seed prefix that is not a queue namespace fails the job; the launcher refuses such an ssmPrefix", () => {
    expect(() => guestCommand(hostileInput, { ssm_prefix: "/ci-fleet/production/" })).toThrow(/ssm_prefix is not of the form/);
    const id = releaseRunner();
    const config = { ...JSON.parse(r.minions[id].files[JOB_VM.config]), ssmPrefix: "/ci-fleet/production/release/\nselftest=1" };
    expect(() => launcherSeed(JSON.stringify(config))).toThrow(/ssmPrefix .* is not of the form/);
  });
});

describe("the golden image carries the hooks", () => {
  test("the build stages salt://buildkite/files/hooks and copies every file into the hooks path, with the OS's Node at the host's pin", () => {
    const id = releaseRunner();
    const m = r.minions[id];
    const stage = Object.values(m.states).find((s) => s.function === "file.recurse" && s.sls === "runner.job_vm_image");
    expect(stage?.args.source).toBe("salt://buildkite/files/hooks");
    const build = Object.entries(m.states).find(([, s]) => s.function === "cmd.run" && s.sls === "runner.job_vm_image")!;
    const stageId = Object.entries(m.states).find(([, s]) => s === stage)![0];
    expect(build[1].args.require).toEqual(expect.arrayContaining([{ file: stageId }]));

    const script = m.files[JOB_VM.image.build_script];
    const ops = virtCustomizeOps(script);
    const at = (op: string, value: string) => ops.findIndex(([o, v]) => o === op && v === value);
    for (const name of fs.readdirSync(HOOKS_SOURCE)) {
      const copy = at("--copy-in", `${stage!.args.name}/${name}:${BUILDKITE.hooks_dir}`);
      expect({ name, copied: copy >= 0 }).toEqual({ name, copied: true });
      const mode = name.endsWith(".js") ? "0644" : "0755";
      expect({ name, chmod: at("--chmod", `${mode}:${BUILDKITE.hooks_dir}/${name}`) > copy }).toEqual({ name, chmod: true });
    }
    // nodejs pinned as on the host (buildkite.package's preferences file) before it is installed, then checked.
    const pin = /cat > "\$work\/ci-fleet-nodejs" <<'PIN'\n([\s\S]*?)\nPIN\n/.exec(script)?.[1];
    expect(pin).toBe(`Package: nodejs libnode*\nPin: version ${BUILDKITE.nodejs_pin}\nPin-Priority: 1001`);
    const pinAt = at("--copy-in", "$work/ci-fleet-nodejs:/etc/apt/preferences.d");
    const nodeAt = at("--install", "nodejs");
    expect({ pinAt: pinAt >= 0, pinFirst: pinAt < nodeAt }).toEqual({ pinAt: true, pinFirst: true });
    expect(ops[nodeAt + 1]).toEqual(["--run-command", `test "$(/usr/bin/node --version)" = v${BUILDKITE.nodejs_pin.split("+")[0]}`]);
    // The wrappers run the OS's Node, which the image now has.
    for (const hook of ["environment", "pre-checkout", "post-checkout", "pre-exit"]) {
      expect(fs.readFileSync(path.join(HOOKS_SOURCE, hook), "utf8")).toContain('"${CI_FLEET_NODE:-/usr/bin/node}"');
    }
    // A GitHub image carries no hooks and no Node.
    for (const gid of vmRunners("github-actions")) {
      const gops = virtCustomizeOps(r.minions[gid].files[JOB_VM.image.build_script]);
      expect({ gid, hooks: gops.filter(([, v]) => (v ?? "").includes("buildkite-hooks") || v === "nodejs") }).toEqual({ gid, hooks: [] });
    }
  });

  test("a changed bundle is a new golden image name (the build's creates:) for Buildkite, and none for GitHub", () => {
    const release = releaseRunner();
    const [github] = vmRunners("github-actions");
    const goldenOf = (minions: StackRender["minions"], id: string) => JSON.parse(minions[id].files[JOB_VM.config]).image as string;
    const tree = path.join(dir, "salt");
    fs.cpSync(path.join(ROOT, "salt"), tree, { recursive: true });
    fs.appendFileSync(path.join(tree, "buildkite/files/hooks/ci-fleet-job-secrets.js"), "// rebuilt\n");
    const documents = path.join(dir, "documents.json");
    fs.writeFileSync(documents, JSON.stringify({ [release]: r.documents[release], [github]: r.documents[github] }), { mode: 0o600 });
    const p = spawnSync(PYTHON, [path.join(ROOT, "test/salt/render.py"), "--salt-root", tree, "--contracts", path.join(ROOT, "docs/contracts.md"), "--documents", documents], {
      encoding: "utf8",
      maxBuffer: 64 << 20,
    });
    expect(p.status).toBe(0);
    const changed = (JSON.parse(p.stdout) as { minions: StackRender["minions"] }).minions;
    expect(goldenOf(changed, release)).toMatch(/\/golden-noble-\d+-[0-9a-f]{12}\.qcow2$/);
    expect(goldenOf(changed, release)).not.toBe(goldenOf(r.minions, release));
    expect(goldenOf(changed, github)).toBe(goldenOf(r.minions, github));
    // The build's creates: is that name, so the next highstate builds the new image.
    const build = Object.values(changed[release].states).find((s) => s.function === "cmd.run" && s.sls === "runner.job_vm_image")!;
    expect(build.args.creates).toBe(goldenOf(changed, release));
  }, 120_000);
});

describe("the machine model: the release VM's hooks read their own queue's secrets and nothing of another queue", () => {
  test("production's <release runner>/vm runs the hooks as the job user under the queue's prefix, which only the queue role reads", async () => {
    const models = await stackModels("production");
    const id = releaseRunner();
    const host = models.machines[id];
    const guest = models.machines[`${id}/vm`];
    expect(guest?.role).toBe("job-vm");
    const hooks = guest.processes.filter((p) => p.kind === "buildkite-hook");
    expect(hooks.map((p) => [p.source, p.user])).toEqual(["environment", "post-checkout", "pre-checkout", "pre-exit"].map((h) => [`buildkite hook ${h}`, "ci"]));
    const env = hooks.find((p) => p.source === "buildkite hook environment")!;
    const prefix = host.aws_pillar.ssm_prefix!;
    expect(prefix).toBe("/ci-fleet/production/release/");
    expect(env.aws_calls.map((c) => [c.api, c.ssm_path])).toEqual(expect.arrayContaining([["ssm:GetParametersByPath", prefix]]));
    expect(env.aws_calls.every((c) => c.ssm_path === prefix)).toBe(true);
    // The hooks' credentials are the job's (the guest's AWS config, the queue role's session).
    const job = guest.processes.find((p) => p.runs_jobs)!;
    expect(env.credentials?.config).toEqual(job.credentials?.config);

    // IAM: the queue role (the host pillar's role_arn, which the VM's session wears) reads its own
    // levels and no other queue's.
    const roleArn = host.aws_pillar.role_arn!;
    const role = models.run.resources.find((x) => x.type === "aws:iam/role:Role" && x.outputs.arn === roleArn)!;
    const identity = [
      ...((role.inputs.inlinePolicies as { name?: string; policy?: unknown }[] | undefined) ?? []).map((p) => p.policy),
      ...models.run.resources.filter((x) => x.type === "aws:iam/rolePolicy:RolePolicy" && String(x.inputs.role) === roleArn.split("/").pop()).map((x) => x.inputs.policy),
    ].map((p, i) => ({ name: `p${i}`, policy: typeof p === "string" ? JSON.parse(p) : p }));
    const account = roleArn.split(":")[4];
    const region = host.aws_pillar.region!;
    const decide = async (ssmPath: string) => {
      const sim = {
        request: { principal: `arn:aws:sts::${account}:assumed-role/${roleArn.split("/").pop()}/seam`, action: "ssm:GetParametersByPath", resource: { resource: arns.ssmParameter(region, account, ssmPath), accountId: account }, contextVariables: {} },
        identityPolicies: identity, serviceControlPolicies: [], resourceControlPolicies: [],
      } as unknown as Simulation;
      const result = await runSimulation(sim, {});
      return result.resultType === "error" ? "Error" : result.overallResult;
    };
    expect(await decide(`${prefix}global`)).toBe("Allowed");
    const queues = Object.keys(YAML.parse(fs.readFileSync(path.join(ROOT, "Pulumi.production.yaml"), "utf8")).config["ci-fleet:queues"]);
    expect(queues.length).toBeGreaterThan(1);
    for (const q of queues.filter((q) => `/ci-fleet/production/${q}/` !== prefix)) {
      expect({ q, decision: await decide(`/ci-fleet/production/${q}/global`) }).not.toEqual({ q, decision: "Allowed" });
    }
  }, 240_000);
});
