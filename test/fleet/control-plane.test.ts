import * as aws from "@pulumi/aws";
import * as metal from "@pulumi/equinix-metal";
import * as pulumi from "@pulumi/pulumi";
import * as YAML from "yaml";
import { loadFleetConfig } from "../../infra/config/load";
import { saltMasterFingerprint } from "../../infra/bootstrap/cloud-config";
import { saltMasterPkiParameterName } from "../../infra/bootstrap/salt-config";
import { CONTROL_PLANE_RECORD_TTL_SECONDS, controlPlaneNames } from "../../infra/fleet/control-plane-dns";
import { createFleet } from "../../infra/program";
import { DrillResult, MACHINE_TYPES, oversizedUserData, renderDrillMarkdown, replacementDrill } from "../../tools/preview/drill";
import { buildPreview } from "../../tools/preview/main";
import { runUnderMocks } from "../../tools/preview/mock-runtime";
import { readStackInput } from "../../tools/preview/stack-files";
import { previewStack, ROOT, stackConfig } from "../support/preview";

/**
 * Replacing the Salt master or the Teleport machine touches no runner (issue 13): runners name
 * the control plane by DNS names the program manages, the records follow the machines, the
 * master keeps its key pair, and the replacement drill proves it on both providers.
 */

const STACKS = [
  ["production", "equinix-metal"],
  ["production-aws", "aws"],
] as const;
const ZONE = (stackConfig("production")["ci-fleet:dns"] as { zone: string }).zone;

const machineOf = (run: Awaited<ReturnType<typeof previewStack>>, role: string) => run.machines.find((m) => m.role === role)!;
const rawOfType = (run: Awaited<ReturnType<typeof previewStack>>, type: string) => [...run.rawInputs.entries()].filter(([k]) => k.startsWith(`${type}::`)).map(([, v]) => v);

describe.each(STACKS)("%s (%s)", (stack, provider) => {
  let run: Awaited<ReturnType<typeof previewStack>>;
  beforeAll(async () => {
    run = await previewStack(stack);
  });

  test("no runner's user-data holds an address of the Salt master or the Teleport machine; it names the master", () => {
    const master = machineOf(run, "salt-master");
    const teleport = machineOf(run, "teleport");
    const addresses = [master.privateIpv4, teleport.privateIpv4, teleport.publicIpv4!].filter(Boolean);
    expect(addresses).toHaveLength(3);
    const names = controlPlaneNames(stack, ZONE);
    const minions = run.machines.filter((m) => m.role !== "salt-master");
    expect(minions.length).toBeGreaterThan(1);
    for (const m of minions) {
      const text = run.userData[m.hostname]!;
      for (const a of addresses) expect({ machine: m.hostname, holds: text.includes(a) }).toEqual({ machine: m.hostname, holds: false });
      const minionConfig = YAML.parse(/path: \/etc\/salt\/minion\.d\/ci-fleet\.conf\n(?:.*\n)*?    content: \|\n((?:      .*\n)+)/.exec(text)![1]!.replace(/^ {6}/gm, ""));
      expect(minionConfig.master).toEqual([names.saltMaster]);
      expect(minionConfig).toMatchObject({ master_type: "failover", master_alive_interval: 30, master_tries: -1, retry_dns: 0 });
    }
  });

  test("one record per control-plane machine, in a zone the program manages, holding the machine's private address", () => {
    const names = controlPlaneNames(stack, ZONE);
    const zones = rawOfType(run, "aws:route53/zone:Zone");
    expect(zones).toHaveLength(1);
    expect(zones[0]!.name).toBe(ZONE);
    if (provider === "aws") {
      // Private to the fleet VPC: nothing outside it resolves the names.
      const vpc = run.resources.find((r) => r.type === "aws:ec2/vpc:Vpc")!;
      expect(zones[0]!.vpcs).toEqual([{ vpcId: vpc.outputs.id }]);
    } else {
      expect(zones[0]!.vpcs).toBeUndefined();
    }
    const records = rawOfType(run, "aws:route53/record:Record");
    const byName = Object.fromEntries(records.map((r) => [r.name as string, r]));
    expect(Object.keys(byName).sort()).toEqual([names.saltMaster, names.teleport].sort());
    const zoneId = run.resources.find((r) => r.type === "aws:route53/zone:Zone")!.outputs.zoneId;
    for (const [name, role] of [[names.saltMaster, "salt-master"], [names.teleport, "teleport"]] as const) {
      expect(byName[name]).toMatchObject({ type: "A", ttl: CONTROL_PLANE_RECORD_TTL_SECONDS, records: [machineOf(run, role).privateIpv4], zoneId });
    }
  });

  test("every agent's Teleport config names the auth service; only the firewall's pillar key holds its address", () => {
    const names = controlPlaneNames(stack, ZONE);
    const teleport = machineOf(run, "teleport");
    for (const [key, inputs] of run.rawInputs) {
      if (!key.startsWith("aws:ssm/parameter:Parameter::") || !String(inputs.name).startsWith(`/ci-fleet/${stack}/pillar/${stack}-`)) continue;
      const doc = JSON.parse(inputs.value as string) as { ci_fleet: { role: string; teleport: { auth_address: string; proxy_private_ipv4: string; node_config?: string }; salt: { master_address: string } } };
      expect(doc.ci_fleet.teleport.auth_address).toBe(`${names.teleport}:3025`);
      expect(doc.ci_fleet.teleport.proxy_private_ipv4).toBe(teleport.privateIpv4);
      if (doc.ci_fleet.role !== "teleport") {
        expect(YAML.parse(doc.ci_fleet.teleport.node_config!).teleport.auth_server).toBe(`${names.teleport}:3025`);
      }
      expect(doc.ci_fleet.salt.master_address).toBe(doc.ci_fleet.role === "salt-master" ? "127.0.0.1" : names.saltMaster);
    }
  });
});

describe("the Salt master keeps its key pair across replacement", () => {
  test.each(STACKS)("%s: the key document in SSM and every minion's master_finger are the same after a replacement", async (stack) => {
    const input = readStackInput(ROOT, stack);
    const account = { accountId: "210987654321", region: "us-east-2" };
    const once = async (replaced: string[]) => {
      const { result, mocks } = await runUnderMocks({ stack, account, config: input.config, secretKeys: input.secretKeys, replaced }, () => createFleet({ offlinePreview: true }));
      const pki = [...mocks.rawInputs.entries()].find(([k, v]) => k.startsWith("aws:ssm/parameter:Parameter::") && v.name === saltMasterPkiParameterName(stack))![1].value as string;
      const master = mocks.resources.find((r) => r.type === MACHINE_TYPES[result.config.provider] && String(r.name).endsWith("-salt-master-machine"))!;
      return { pki, masterName: master.name, masterId: master.outputs.id };
    };
    const before = await once([]);
    const after = await once([before.masterName]);
    expect(after.masterId).not.toBe(before.masterId);
    expect(after.pki).toBe(before.pki);
    const pub = (JSON.parse(before.pki) as { master_public_key_pem: string }).master_public_key_pem;
    const run = await previewStack(stack);
    const runner = run.machines.find((m) => m.role === "runner")!;
    expect(run.userData[runner.hostname]).toContain(`master_finger: ${saltMasterFingerprint(pub)}`);
  });
});

describe("the replacement drill", () => {
  test("on both providers: the control plane gets new ids and addresses, its records follow, no runner input changes", async () => {
    const result = await replacementDrill(readStackInput(ROOT, "production"));
    expect(result.providers.map((p) => p.provider)).toEqual(["equinix-metal", "aws"]);
    for (const p of result.providers) {
      expect({ provider: p.provider, notConfigured: p.notConfigured, problems: p.problems }).toEqual({ provider: p.provider, notConfigured: undefined, problems: [] });
      expect(p.replaced.map((r) => r.role).sort()).toEqual(["salt-master", "teleport"]);
      for (const r of p.replaced) {
        expect(r.after.id).not.toBe(r.before.id);
        expect(r.after.privateIpv4).not.toBe(r.before.privateIpv4);
        expect(r.record.after).toEqual([r.after.privateIpv4]);
        expect(r.changedOutputs).toEqual(expect.arrayContaining(["id", p.provider === "aws" ? "privateIp" : "accessPrivateIpv4"]));
      }
      expect(p.runnersCompared).toHaveLength(3);
      expect(p.runnersChanged).toEqual([]);
      expect(p.planChange).toEqual({ from: "control", to: "runner" });
    }
  });

  test("fails when a runner's user-data depends on the master's address (what the old program did)", async () => {
    // A two-machine program in the old style: the runner's user-data carries the master's private IPv4.
    const oldStyle = () => {
      const config = loadFleetConfig({ offlinePreview: true });
      if (config.provider === "equinix-metal") {
        const device = (name: string, role: string, userData?: pulumi.Input<string>) =>
          new metal.Device(name, { hostname: name, plan: "c3.small.x86", projectId: "p", metro: "da", operatingSystem: "ubuntu_24_04", billingCycle: "hourly", tags: [`ci-fleet:role=${role}`], ...(userData ? { userData } : {}) });
        const master = device(`${config.stack}-salt-master-machine`, "salt-master");
        device(`${config.stack}-default-pr-1`, "runner", pulumi.interpolate`#cloud-config\n# master: ${master.accessPrivateIpv4}\n`);
      } else {
        const instance = (name: string, role: string, userDataBase64?: pulumi.Input<string>) =>
          new aws.ec2.Instance(name, { ami: "ami-0abc", instanceType: "m5.large", tags: { Name: name, "ci-fleet:role": role }, ...(userDataBase64 ? { userDataBase64 } : {}) });
        const master = instance(`${config.stack}-salt-master-machine`, "salt-master");
        instance(`${config.stack}-default-pr-1`, "runner", master.privateIp.apply((ip) => Buffer.from(`master: ${ip}`).toString("base64")));
      }
    };
    const result = await replacementDrill(readStackInput(ROOT, "production"), oldStyle);
    for (const p of result.providers) {
      expect(p.runnersChanged).toEqual([{ resource: "production-default-pr-1", fields: [p.provider === "aws" ? "userDataBase64" : "userData"] }]);
      expect(p.problems).toEqual(expect.arrayContaining([expect.stringMatching(/runner production-default-pr-1: userData(Base64)? changed/)]));
    }
  });
});

describe("the preview states the drill and checks user-data on both providers", () => {
  test.each(["production", "production-aws"])("%s: report.md has the section, and both checks pass", async (stack) => {
    const out = await buildPreview(ROOT, stack);
    const report = out.files["report.md"]!;
    expect(report).toContain("## Replacing the control plane");
    expect(report).toMatch(/\*\*Passed\.\*\* The Salt master and the Teleport machine were moved to another plan and replaced/);
    expect(report).toContain("### User-data as each provider receives it");
    for (const provider of ["equinix-metal", "aws"]) expect(report).toMatch(new RegExp(`\\| ${provider}( \\(current\\))? \\| runners \\|.*no input changed`));
    const checks = Object.fromEntries(out.checks.map((k) => [k.name, k.ok]));
    expect(checks["replacing the Salt master and the Teleport machine changes no runner input (both providers)"]).toBe(true);
    expect(checks["user-data as each provider receives it within 16 KiB (equinix-metal: plain, aws: gzip)"]).toBe(true);
    // Both providers' sizes are measured, whatever the current one.
    expect(out.drill.providers.map((p) => [p.provider, p.sizes.some((x) => x.role === "salt-master")])).toEqual([["equinix-metal", true], ["aws", true]]);
  });

  test("a failed drill and an oversized user-data are reported as such", () => {
    const result: DrillResult = {
      fleetRunners: 7,
      drillRunners: 3,
      providers: [
        { provider: "equinix-metal", replaced: [], runnersCompared: ["r"], runnersChanged: [{ resource: "r", fields: ["userData"] }], problems: ["runner r: userData changed"], sizes: [{ hostname: "m", role: "salt-master", bytes: 16385 }] },
        { provider: "aws", notConfigured: "no aws site", replaced: [], runnersCompared: [], runnersChanged: [], problems: [], sizes: [] },
      ],
    };
    expect(oversizedUserData(result)).toEqual([{ provider: "equinix-metal", hostname: "m", bytes: 16385 }]);
    const md = renderDrillMarkdown(result, "equinix-metal");
    expect(md).toContain("**FAILED.**");
    expect(md).toContain("**changed**: r (userData)");
    expect(md).toContain("| aws | not configured |");
    expect(md).toMatch(/\| equinix-metal \| salt-master \| m \| 16385 \|  \| \*\*over\*\* \|/);
  });
});
