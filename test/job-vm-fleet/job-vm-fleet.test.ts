/**
 * Issue 15, part B: per-job VMs wired into the fleet. Config (slots from plan sizes, one error
 * listing every problem), the pillar the program writes, the Salt tree rendered with it (real
 * Jinja2: test/support/salt-render.ts), the launcher's own config loader reading what Salt
 * renders, the policy rule and report.md's queue rows.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as yaml from "yaml";
import { checkFleetSettings } from "../../infra/config/check";
import { slotPlan } from "../../infra/config/job-vm";
import { untrustedQueueJobVm } from "../../policy/job-isolation";
import { renderStack, StackRender } from "../support/salt-render";
import { ROOT, stackConfig } from "../support/preview";

type Values = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function values(stack = "production", edit?: (v: Values) => void): Values {
  const v: Values = {};
  for (const [k, x] of Object.entries(stackConfig(stack))) v[k.replace(/^ci-fleet:/, "")] = JSON.parse(JSON.stringify(x));
  edit?.(v);
  return v;
}
const check = (v: Values) => checkFleetSettings({ stack: "production", values: v, secretsPresent: new Set(), queueSecretPaths: {} });

describe("config: isolation, jobVm and slots", () => {
  test("production: default and release in VMs, infra on the host (queue-role deploys); slots from the plans (and jobVm.slots for release)", () => {
    const { settings, problems } = check(values());
    expect(problems).toEqual([]);
    const q = settings!.queues;
    expect(Object.fromEntries(Object.entries(q).map(([n, s]) => [n, s.isolation]))).toEqual({ default: "vm", infra: "host", release: "vm" });
    const slots = (queue: string, runner: string, provider: "equinix-metal" | "aws") =>
      slotPlan(provider, settings!.plans[q[queue].runners[runner].plan][provider], q[queue].jobVm!).slots;
    // m3.large.x86 64 threads/256 GiB, n3.xlarge.x86 64/512, m5zn.metal 48/192, c5.metal 96/192; host keeps 2 threads, 8 GiB, 0.5 GiB per VM.
    expect([slots("default", "pr-1", "equinix-metal"), slots("default", "pr-4", "equinix-metal"), slots("default", "pr-1", "aws"), slots("default", "pr-4", "aws")]).toEqual([15, 15, 11, 11]);
    expect(slots("release", "release-1", "equinix-metal")).toBe(2);
  });

  test("isolation defaults to vm with the default VM", () => {
    const { settings } = check(values("production", (v) => { delete v.queues.default.isolation; delete v.queues.default.jobVm; }));
    expect(settings!.queues.default.isolation).toBe("vm");
    expect(settings!.queues.default.jobVm).toEqual({ cpus: 4, memoryGiB: 16, diskGiB: 80, maxJobMinutes: 360 });
  });

  test("one error lists every problem: a VM bigger than the plan, zero slots, too many slots, jobVm on a host queue, a bad isolation", () => {
    const { problems, settings } = check(values("production", (v) => {
      v.queues.default.jobVm = { cpus: 80, memoryGiB: 16, diskGiB: 80 };
      v.queues.infra.isolation = "vm";
      v.queues.infra.jobVm = { cpus: 4, memoryGiB: 16, diskGiB: 80, slots: 0 };
      v.queues.release.jobVm = { cpus: 8, memoryGiB: 32, diskGiB: 120, slots: 40 };
      v.plans.control["equinix-metal"] = "c3.small.x86";
    }));
    expect(settings).toBeUndefined();
    const text = problems.map((p) => `${p.path}: ${p.message}`).join("\n");
    for (const r of ["pr-1", "pr-2", "pr-3", "pr-4"]) expect(text).toMatch(new RegExp(`queues\\.default\\.runners\\.${r}\\.plan: the job VM is bigger than the host: 80 cpus > 62`));
    expect(text).toMatch(/queues\.infra\.jobVm\.slots: zero slots run no job/);
    expect(text).toMatch(/queues\.release\.runners\.release-1\.plan: jobVm\.slots 40 does not fit: the plan holds 7 VMs/);
    const more = check(values("production", (v) => { v.queues.infra.jobVm = { cpus: 4, memoryGiB: 16, diskGiB: 80 }; v.queues.release.isolation = "container"; }));
    expect(more.problems.map((p) => p.path)).toEqual(expect.arrayContaining(["ci-fleet:queues.infra.jobVm", "ci-fleet:queues.release.isolation"]));
  });

  test("a plan whose size is unknown needs jobVm.slots", () => {
    const unknown = check(values("production", (v) => { v.plans.runner["equinix-metal"] = "s3.xlarge.x86"; v.plans["runner-large"]["equinix-metal"] = "s3.xlarge.x86"; }));
    expect(unknown.problems.map((p) => p.path)).toEqual(expect.arrayContaining(["ci-fleet:queues.default.runners.pr-1.plan", "ci-fleet:queues.default.runners.pr-4.plan"]));
    // release sets jobVm.slots itself; infra runs on the host (no slots to size).
    expect(unknown.problems.map((p) => p.path).filter((p) => /queues\.(infra|release)\./.test(p))).toEqual([]);
    expect(unknown.problems[0].message).toMatch(/does not know .* set jobVm\.slots/);
    const given = check(values("production", (v) => { v.plans.runner["equinix-metal"] = "s3.xlarge.x86"; v.plans["runner-large"]["equinix-metal"] = "s3.xlarge.x86"; v.queues.default.jobVm.slots = 3; }));
    expect(given.problems).toEqual([]);
  });
});

describe("config: what a job VM gets (the queue role's session and the job secrets), checked before anything is created", () => {
  test("a queue-role deploy target on a queue in VMs passes: the VM wears the queue role (the launcher delivers the host's session)", () => {
    const { problems, settings } = check(values("production", (v) => { v.queues.infra.isolation = "vm"; v.queues.infra.jobVm = { cpus: 4, memoryGiB: 16, diskGiB: 80, maxJobMinutes: 120 }; }));
    expect(problems).toEqual([]);
    expect(settings!.queues.infra.isolation).toBe("vm");
    expect(Object.values(settings!.queues.infra.deployTargets).map((d) => d.trust ?? "queue-role")).toEqual(["queue-role", "queue-role"]);
  });

  test("job secrets for a queue in VMs pass (isolation vm, or unset: the image runs the job-secrets hooks), as on host queues", () => {
    const secrets = (v: Values, queueSecretPaths: Record<string, string[]>) =>
      checkFleetSettings({ stack: "production", values: v, secretsPresent: new Set(), queueSecretPaths }).problems.map((p) => p.path);
    const paths = { release: ["buildkite/agent-token", "global/env/NPM_TOKEN", "release/ssh/key"], infra: ["buildkite/agent-token", "global/env/TF_TOKEN"] };
    expect(secrets(values(), paths)).toEqual([]);
    expect(secrets(values("production", (v) => { delete v.queues.release.isolation; delete v.queues.release.jobVm; }), paths)).toEqual([]);
    expect(secrets(values("production", (v) => { v.queues.release.isolation = "host"; delete v.queues.release.jobVm; }), paths)).toEqual([]);
  });
});

describe("config: machine names and job-slot runner names are one namespace", () => {
  test("a host runner, a runner of another queue and a job slot that would share a name: one problem each, naming the other", () => {
    const { problems } = check(values("production", (v) => {
      v.queues.default.runners["pr-1-s1"] = { plan: "runner" };              // slot 1 of pr-1 is production-default-pr-1-s1
      v.queues["default-pr-1"] = { ...v.queues.default, runners: { s2: { plan: "runner" } } }; // production-default-pr-1-s2
    }));
    const collisions = problems.filter((p) => /also .*'s: rename one/.test(p.message)).map((p) => `${p.path}: ${p.message}`);
    expect(collisions).toEqual([
      "ci-fleet:queues.default.runners.pr-1-s1: its name production-default-pr-1-s1 is also queues.default.runners.pr-1 (job slot 1)'s: rename one of the runners (machine names and GitHub runner names must be unique)",
      "ci-fleet:queues.default-pr-1.runners.s2: its name production-default-pr-1-s2 is also queues.default.runners.pr-1 (job slot 2)'s: rename one of the runners (machine names and GitHub runner names must be unique)",
    ]);
    expect(check(values()).problems).toEqual([]);
  });
});

describe("policy: untrusted queues run jobs in VMs", () => {
  const args = (tags: Record<string, string>) => ({ type: "aws:ssm/parameter:Parameter", props: { tags }, urn: "urn:pulumi:production::ci-fleet::aws:ssm/parameter:Parameter::p", name: "p", opts: {}, notApplicable: () => { throw new Error("n/a"); } });
  const run = (tags: Record<string, string>) => {
    const out: string[] = [];
    (untrustedQueueJobVm.validateResource as (a: unknown, r: (m: string) => void) => void)(args(tags), (m) => out.push(m));
    return out;
  };
  const runner = { "ci-fleet:role": "pillar", "ci-fleet:minion": "production-default-pr-1", "ci-fleet:queue": "default" };
  test("refused: an untrusted queue on the host, or a runner document that does not say", () => {
    expect(run({ ...runner, "ci-fleet:trusted": "false", "ci-fleet:isolation": "vm" })).toEqual([]);
    expect(run({ ...runner, "ci-fleet:trusted": "false", "ci-fleet:isolation": "host" })[0]).toMatch(/queue default is untrusted .* isolation "host"/);
    expect(run({ ...runner, "ci-fleet:trusted": "false" })[0]).toMatch(/isolation null/);
    expect(run({ ...runner })[0]).toMatch(/no ci-fleet:trusted tag/);
    expect(run({ ...runner, "ci-fleet:trusted": "true", "ci-fleet:isolation": "host" })).toEqual([]);
    expect(run({ "ci-fleet:role": "pillar", "ci-fleet:minion": "production-salt-master" })).toEqual([]);
  });
});

describe.each(["production", "production-aws"])("%s: the Salt tree rendered with the program's pillar", (stack) => {
  let r: StackRender;
  beforeAll(async () => {
    r = await renderStack(stack);
  }, 240_000);
  const runners = () => Object.keys(r.documents).filter((id) => r.documents[id].ci_fleet.runner);
  const jobVm = (id: string) => (r.documents[id].ci_fleet.runner as unknown as { job_vm: { slots: number; blocked_cidrs: string[] } }).job_vm;

  test("no render problems; the pillar keys are the contract's", () => {
    for (const id of runners()) expect({ id, problems: r.minions[id].problems }).toEqual({ id, problems: [] });
    expect(r.fixture_problems).toEqual([]);
    expect(r.pillar_paths_outside_contract).toEqual([]);
  });

  test("slots per runner in the pillar, one enabled unit per slot", () => {
    const expected: Record<string, number> = stack === "production"
      ? { "pr-1": 15, "pr-4": 15, "release-1": 2 }
      : { "pr-1": 11, "pr-4": 11, "release-1": 2 };
    for (const [runner, n] of Object.entries(expected)) {
      const id = runners().find((m) => m.endsWith(`-${runner}`))!;
      expect(jobVm(id).slots).toBe(n);
      const units = Object.values(r.minions[id].states).filter((s) => s.function === "service.running" && /^ci-job-slot@/.test(String(s.args.name)));
      expect(units.map((s) => String(s.args.name)).sort()).toEqual(Array.from({ length: n }, (_, i) => `ci-job-slot@${i + 1}.service`).sort());
      expect(units.every((s) => s.args.enable === true)).toBe(true);
    }
  });

  test("the launcher's own config loader accepts the rendered job-vm.json", () => {
    const id = runners().find((m) => m.endsWith("-pr-1"))!;
    const text = r.minions[id].files["/etc/ci-fleet/job-vm.json"];
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "job-vm-json-"));
    try {
      fs.writeFileSync(path.join(dir, "job-vm.json"), text);
      const py = `import importlib.machinery, importlib.util, json, sys
loader = importlib.machinery.SourceFileLoader("ci_job_slot", sys.argv[1])
spec = importlib.util.spec_from_loader("ci_job_slot", loader); m = importlib.util.module_from_spec(spec); loader.exec_module(m)
cfg = m.load_config(sys.argv[2])
print(json.dumps({"keys": sorted(k for k in cfg if not k.startswith("_")), "blocked": [str(n) for n in cfg["_blocked"]], "slot": str(m.Slot(cfg, ${jobVm(id).slots}).subnet)}))`;
      const out = spawnSync("python3", ["-c", py, path.join(ROOT, "salt/runner/files/ci-job-slot"), path.join(dir, "job-vm.json")], { encoding: "utf8" });
      expect(out.stderr).toBe("");
      const parsed = JSON.parse(out.stdout) as { keys: string[]; blocked: string[]; slot: string };
      expect(parsed.keys).toEqual(expect.arrayContaining(["image", "cpus", "memoryMiB", "diskGiB", "maxJobSeconds", "accel", "stateDir", "runDir", "network", "selftest"]));
      expect(parsed.blocked).toEqual(jobVm(id).blocked_cidrs);
      // The highest slot's /30 still fits the launcher's network.base.
      expect(parsed.slot).toMatch(/^100\.127\./);
      const cfg = JSON.parse(text);
      expect(cfg.accel).toBe("kvm");
      expect(cfg.image).toMatch(/^\/var\/lib\/ci-fleet\/images\/golden-noble-20260725-[0-9a-f]{12}\.qcow2$/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("blocked networks: the fleet's private ranges, the control plane and the host, link-local, metadata", () => {
    const id = runners().find((m) => m.endsWith("-pr-1"))!;
    const blocked = jobVm(id).blocked_cidrs;
    const cfg = stackConfig(stack) as Record<string, { vpcCidr?: string }>;
    expect(blocked).toEqual(expect.arrayContaining([cfg["ci-fleet:aws"].vpcCidr!, "169.254.0.0/16"]));
    if (stack === "production") expect(blocked).toEqual(expect.arrayContaining(["10.0.0.0/8", "192.80.8.124/32"]));
    const teleportIp = (r.documents[id].ci_fleet as unknown as { teleport: { proxy_private_ipv4: string } }).teleport.proxy_private_ipv4;
    expect(blocked).toContain(`${teleportIp}/32`);
  });

  test("the slot unit cleans up on every start and stop, restarts, and outlasts a VM's shutdown", () => {
    const id = runners().find((m) => m.endsWith("-pr-1"))!;
    const unit = r.minions[id].files["/etc/systemd/system/ci-job-slot@.service"];
    expect(unit).toMatch(/^ExecStartPre=\/usr\/local\/sbin\/ci-job-slot cleanup --config \/etc\/ci-fleet\/job-vm\.json --slot %i$/m);
    expect(unit).toMatch(/^ExecStart=\/usr\/local\/sbin\/ci-job-slot run --config \/etc\/ci-fleet\/job-vm\.json --slot %i$/m);
    expect(unit).toMatch(/^ExecStopPost=\/usr\/local\/sbin\/ci-job-slot cleanup --config \/etc\/ci-fleet\/job-vm\.json --slot %i$/m);
    expect(unit).toMatch(/^Restart=always$/m);
    expect(unit).toMatch(/^KillMode=mixed$/m);
    // The launcher's power-off grace (30 s) plus the cleanup.
    expect(Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)![1])).toBeGreaterThan(30);
    const modprobe = r.minions[id].files["/etc/modprobe.d/ci-fleet-kvm-nested.conf"];
    expect(modprobe).toMatch(/^options kvm_intel nested=1$/m);
    expect(modprobe).toMatch(/^options kvm_amd nested=1$/m);
  });

  test("GitHub queue with isolation vm: no host runner unit, an old one removed", () => {
    const id = runners().find((m) => m.endsWith("-pr-1"))!;
    const m = r.minions[id];
    expect(m.top_sls).toContain("runner.job_vm");
    expect(m.top_sls).not.toContain("github_runner");
    expect(Object.keys(m.files)).not.toContain("/etc/systemd/system/actions-runner.service");
    expect(m.states["runner-job_vm_host_agent-github-unit-service-dead"].args).toMatchObject({ name: "actions-runner.service", enable: false });
  });

  test("Buildkite queue with isolation vm: the host's agent hands each job to a slot, one worker per slot", () => {
    const id = runners().find((m) => m.endsWith("-release-1"))!;
    const cfg = r.minions[id].files["/etc/buildkite-agent/buildkite-agent.cfg"];
    expect(cfg).toMatch(/^bootstrap-script="\/usr\/bin\/sudo -n -u root -- \/usr\/local\/sbin\/ci-job-handoff"$/m);
    expect(cfg).toMatch(new RegExp(`^spawn=${jobVm(id).slots}$`, "m"));
    const handoff = r.minions[id].files["/usr/local/sbin/ci-job-handoff"];
    expect(handoff).toContain('"BUILDKITE_AGENT_TOKEN"');
    expect(handoff).toContain(`SLOTS = ${jobVm(id).slots}`);
  });

  test("the GitHub image: the runner's root belongs to the user ci-job-guest runs the job as (the listener writes its JIT registration there)", () => {
    // Both sides: the guest's own defaults (its unit sets no environment) and the rendered build script.
    const guest = fs.readFileSync(path.join(ROOT, "salt/runner/files/ci-job-guest"), "utf8");
    const user = /^JOB_USER = os\.environ\.get\("CI_JOB_USER", "([^"]+)"\)$/m.exec(guest)![1];
    const runnerDir = /^RUNNER_DIR = os\.environ\.get\("CI_JOB_RUNNER_DIR", "([^"]+)"\)$/m.exec(guest)![1];
    const github = runners().filter((id) => jobVm(id) !== undefined && (r.documents[id].ci_fleet.runner as unknown as { agent: string }).agent === "github-actions");
    expect(github.length).toBe(4);
    for (const id of github) {
      const script = r.minions[id].files["/usr/local/sbin/ci-job-image-build"];
      const unit = /<<'UNIT'\n([\s\S]*?)\nUNIT\n/.exec(script)![1];
      expect({ id, unitEnv: /^Environment/m.test(unit) }).toEqual({ id, unitEnv: false });
      expect({ id, user: new RegExp(`useradd [^']*\\b${user}'`).test(script) }).toEqual({ id, user: true });
      // Every chown of the runner's tree, in order: the last one gives it to the job user.
      const chowns = [...script.matchAll(/chown -R (\S+) ([^\s']+)/g)].filter((m) => m[2] === runnerDir).map((m) => m[1]);
      expect({ id, chowns }).toEqual({ id, chowns: [`${user}:${user}`] });
      expect(script.indexOf(`tar -xzf ${runnerDir}/runner.tar.gz -C ${runnerDir}`)).toBeLessThan(script.indexOf(`chown -R ${user}:${user} ${runnerDir}`));
    }
  });

  test("the golden image: downloaded only against the pinned sha256, named by its pins", () => {
    const pins = yaml.parse(fs.readFileSync(path.join(ROOT, "salt/runner/parameters/defaults.yaml"), "utf8")).runner.job_vm.image;
    expect(pins.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(pins.url).toBe(`https://cloud-images.ubuntu.com/releases/noble/release-${pins.serial}/ubuntu-24.04-server-cloudimg-amd64.img`);
    const inVms = runners().filter((id) => jobVm(id) !== undefined);
    expect(inVms.length).toBe(5); // pr-1..4 and release-1; infra runs on the host
    for (const id of runners().filter((x) => !inVms.includes(x))) {
      expect(Object.keys(r.minions[id].states).filter((s) => s.startsWith("runner-job_vm"))).toEqual([]);
    }
    for (const id of inVms) {
      const base = r.minions[id].states["runner-job_vm_image-base-file-managed"].args;
      expect(base.source).toBe(pins.url);
      expect(base.source_hash).toBe(`sha256=${pins.sha256}`);
      const build = r.minions[id].states["runner-job_vm_image-build-cmd-run"].args;
      expect(build.creates).toMatch(new RegExp(`golden-noble-${pins.serial}-[0-9a-f]{12}\\.qcow2$`));
      expect(JSON.parse(r.minions[id].files["/etc/ci-fleet/job-vm.json"]).image).toBe(build.creates);
      const script = r.minions[id].files["/usr/local/sbin/ci-job-image-build"];
      expect(script).toContain(`echo "${pins.sha256}  $base" | sha256sum --check`);
    }
    // GitHub queues: the runner tarball at the github_runner formula's pin.
    const gh = yaml.parse(fs.readFileSync(path.join(ROOT, "salt/github_runner/parameters/defaults.yaml"), "utf8")).github_runner;
    const pr1 = runners().find((m) => m.endsWith("-pr-1"))!;
    expect(r.minions[pr1].states["runner-job_vm_image-agent-file-managed"].args).toMatchObject({ source: gh.source, source_hash: `sha256=${gh.sha256}` });
  });

  test("the golden image's name carries the sha256 of ci-job-guest and of the build script: a change to either is a new image (a rebuild), nothing else is", () => {
    const id = runners().find((m) => m.endsWith("-pr-1"))!;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "job-vm-golden-"));
    try {
      // Four copies of the tree: as it is, an unrelated file changed, the guest agent changed, and the build script changed too.
      const changes: string[][] = [[], ["runner/files/ci-netboot-selftest"], ["runner/files/ci-job-guest"], ["runner/files/ci-job-guest", "runner/files/ci-job-image-build.jinja"]];
      const trees = changes.map((files, i) => {
        const tree = path.join(dir, `salt-${i}`);
        fs.cpSync(path.join(ROOT, "salt"), tree, { recursive: true, filter: (f) => !f.includes("__pycache__") });
        fs.writeFileSync(path.join(tree, "golden_probe.sls"), '{% from "runner/job_vm_map.jinja" import golden_image with context %}{{ golden_image.golden }}');
        for (const f of files) fs.appendFileSync(path.join(tree, f), "\n# changed\n");
        return tree;
      });
      fs.writeFileSync(path.join(dir, "documents.json"), JSON.stringify(r.documents), { mode: 0o600 });
      // The map rendered for this minion as the master would (test/salt/render.py: its pillar, cp.hash_file on the tree).
      const py = `import json, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
import render
minion = sys.argv[3]
for root in sys.argv[4:]:
    render.SALT_ROOT[0] = root
    docs = render.program_documents(sys.argv[2], root)
    with tempfile.TemporaryDirectory() as pillar_dir:
        os.makedirs(os.path.join(pillar_dir, "minions"))
        with open(os.path.join(pillar_dir, "minions", minion + ".json"), "w") as f:
            f.write(json.dumps(docs[minion]))
        pillar = render.compile_pillar(root, pillar_dir, minion, render.Recorder())[0]
    grains = render.grains_for(minion)
    print(render.render_file(render.make_env([root]), "golden_probe.sls", pillar, grains, minion, {"salt": render.salt_functions(pillar, grains, render.Recorder())}).strip())`;
      const out = spawnSync("python3", ["-c", py, path.join(ROOT, "test/salt"), path.join(dir, "documents.json"), id, ...trees], { encoding: "utf8" });
      expect(out.stderr).toBe("");
      const [asIs, unrelated, newAgent, newScript] = out.stdout.trim().split("\n");
      expect(asIs).toBe(r.minions[id].states["runner-job_vm_image-build-cmd-run"].args.creates);
      expect(unrelated).toBe(asIs);
      expect(newAgent).toMatch(/^\/var\/lib\/ci-fleet\/images\/golden-noble-\d+-[0-9a-f]{12}\.qcow2$/);
      expect(newAgent).not.toBe(asIs);
      expect(newScript).not.toBe(newAgent);
      expect(newScript).not.toBe(asIs);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
