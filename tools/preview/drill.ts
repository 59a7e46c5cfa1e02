import { FleetConfigError } from "../../infra/config/check";
import { MACHINE_PROVIDERS, MachineProviderName, MachineRole } from "../../infra/config/model";
import { EC2_USER_DATA_LIMIT_BYTES } from "../../infra/bootstrap/cloud-config";
import { controlPlaneNames } from "../../infra/fleet/control-plane-dns";
import { createFleet } from "../../infra/program";
import { CapturedResource, runUnderMocks } from "./mock-runtime";
import { StackInput } from "./stack-files";
import type { PreviewRunOptions } from "./run";

/**
 * The replacement drill: replacing the Salt master and the Teleport machine must touch no
 * runner. For each provider the stack can run on, the program runs twice under the mocks:
 *
 * 1. as configured (on a reduced fleet: every queue, each with its runner of the longest
 *    name, so the largest runner user-data of every queue is rendered);
 * 2. with both control-plane machines moved to another plan AND replaced (the mocks give the
 *    replaced resources new ids and addresses, as `pulumi up --replace` would): every output of
 *    those machines that replacement changes differs between the runs.
 *
 * Then every runner machine's inputs (the unmasked user-data included), parent and
 * replacement options must be byte for byte the same in both runs: so Pulumi would neither
 * update nor replace a runner, and no runner input depends on any changed output of a
 * control-plane machine. The control plane's DNS records must follow the new addresses.
 *
 * The same runs give each machine's user-data as that provider receives it (plain text on
 * equinix-metal; gzip on EC2, whose 16 KiB limit applies before base64), so the size check
 * covers the provider the stack could move to, not only the current one.
 */

export const MACHINE_TYPES: Readonly<Record<MachineProviderName, string>> = {
  "equinix-metal": "equinix-metal:index/device:Device",
  aws: "aws:ec2/instance:Instance",
};
const RECORD_TYPE = "aws:route53/record:Record";
/** The plan the drill moves the control plane to when the stack has no other usable one. */
const DRILL_PLAN = "ci-fleet-drill";

type Obj = Record<string, unknown>;

export interface MachineSize {
  hostname: string;
  role: MachineRole;
  /** Bytes the provider receives: plain text (equinix-metal), gzip bytes (aws, before base64). */
  bytes: number;
  /** aws only: the base64 text the API call carries. */
  base64Chars?: number;
}

export interface ReplacedMachine {
  role: "salt-master" | "teleport";
  resource: string;
  /** Output fields that differ after the replacement (id, addresses, ARN). */
  changedOutputs: string[];
  before: { id: string; privateIpv4: string };
  after: { id: string; privateIpv4: string };
  /** The machine's record name and its value before/after. */
  record: { name: string; before: string[]; after: string[] };
}

export interface ProviderDrill {
  provider: MachineProviderName;
  /** Why the stack cannot run on this provider as configured (then nothing else is set). */
  notConfigured?: string;
  planChange?: { from: string; to: string };
  replaced: ReplacedMachine[];
  /** Runner machines compared (resource names), and those whose inputs changed (with the fields). */
  runnersCompared: string[];
  runnersChanged: { resource: string; fields: string[] }[];
  /** Problems that make the drill fail (a runner changed, a record did not follow, nothing was replaced). */
  problems: string[];
  sizes: MachineSize[];
}

export interface DrillResult {
  providers: ProviderDrill[];
  /** Runners in the configured fleet, and in the reduced fleet the drill runs. */
  fleetRunners: number;
  drillRunners: number;
}

function parseJson(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

/** Every queue, each with its runner of the longest name (ties: the first in sort order). */
export function reducedQueues(queues: Obj): { queues: Obj; runners: number } {
  const out: Obj = {};
  let runners = 0;
  for (const [q, spec] of Object.entries(queues)) {
    if (!isObj(spec) || !isObj(spec.runners)) {
      out[q] = spec;
      continue;
    }
    const names = Object.keys(spec.runners).sort();
    runners += names.length;
    const longest = names.reduce<string | undefined>((a, n) => (a === undefined || n.length > a.length ? n : a), undefined);
    out[q] = { ...spec, runners: longest === undefined ? {} : { [longest]: spec.runners[longest] } };
  }
  return { queues: out, runners };
}

/** The role tag of a machine resource, on either provider. */
function roleOf(type: string, inputs: Obj): MachineRole | undefined {
  const tags = inputs.tags;
  const value = type === MACHINE_TYPES["equinix-metal"]
    ? (Array.isArray(tags) ? tags.find((t): t is string => typeof t === "string" && t.startsWith("ci-fleet:role="))?.slice("ci-fleet:role=".length) : undefined)
    : isObj(tags) ? tags["ci-fleet:role"] : undefined;
  return value === "salt-master" || value === "teleport" || value === "runner" ? value : undefined;
}

function hostnameOf(type: string, inputs: Obj): string {
  return String(type === MACHINE_TYPES["equinix-metal"] ? inputs.hostname : (inputs.tags as Obj | undefined)?.Name);
}

interface Snapshot {
  machines: { key: string; name: string; type: string; role: MachineRole; hostname: string; inputs: Obj; resource: CapturedResource }[];
  records: Map<string, string[]>;
}

/** What the drill runs under the mocks: the program (tests pass a deliberately broken one to see the drill fail). */
export type DrillProgram = () => unknown;
const theProgram: DrillProgram = () => createFleet({ offlinePreview: true });

async function runOnce(input: StackInput, config: Record<string, string>, replaced: string[], program: DrillProgram, options: PreviewRunOptions): Promise<Snapshot> {
  let configError: FleetConfigError | undefined;
  const identity = isObj(parseJson(config[`${input.project}:identity`])) ? (parseJson(config[`${input.project}:identity`]) as Obj) : {};
  const { mocks } = await runUnderMocks(
    {
      project: input.project,
      stack: input.stack,
      account: { accountId: typeof identity.accountId === "string" ? identity.accountId : "123456789012", region: typeof identity.region === "string" ? identity.region : "us-east-1" },
      config,
      secretKeys: input.secretKeys,
      replaced,
      generatedSecretSeed: options.generatedSecretSeed,
    },
    () => {
      try {
        program();
      } catch (e) {
        if (e instanceof FleetConfigError) configError = e;
        else throw e;
      }
    },
  );
  if (configError) throw configError;
  const machineTypes = new Set(Object.values(MACHINE_TYPES));
  const snapshot: Snapshot = { machines: [], records: new Map() };
  for (const r of mocks.resources) {
    const key = `${r.type}::${r.name}`;
    const inputs = mocks.rawInputs.get(key) ?? {};
    if (machineTypes.has(r.type)) {
      const role = roleOf(r.type, inputs);
      if (role) snapshot.machines.push({ key, name: r.name, type: r.type, role, hostname: hostnameOf(r.type, inputs), inputs, resource: r });
    } else if (r.type === RECORD_TYPE) {
      snapshot.records.set(String(inputs.name), (inputs.records as string[] | undefined) ?? []);
    }
  }
  snapshot.machines.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return snapshot;
}

function sizeOf(m: Snapshot["machines"][number]): MachineSize {
  if (m.type === MACHINE_TYPES.aws) {
    const b64 = String(m.inputs.userDataBase64 ?? "");
    return { hostname: m.hostname, role: m.role, bytes: Buffer.from(b64, "base64").length, base64Chars: b64.length };
  }
  return { hostname: m.hostname, role: m.role, bytes: Buffer.byteLength(String(m.inputs.userData ?? ""), "utf8") };
}

const stable = (v: unknown) => JSON.stringify(v);

/** The top-level input fields that differ (for the report; the comparison itself is of the whole). */
function changedFields(a: Obj, b: Obj): string[] {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => stable(a[k]) !== stable(b[k])).sort();
}

/** Another plan with a type for `provider`, or a synthesized one (only the drill ever sees it). */
function otherPlan(plans: Obj, provider: MachineProviderName, current: string): { plans: Obj; plan: string } {
  const currentType = isObj(plans[current]) ? (plans[current] as Obj)[provider] : undefined;
  for (const name of Object.keys(plans).sort()) {
    const spec = plans[name];
    if (name !== current && isObj(spec) && typeof spec[provider] === "string" && spec[provider] !== currentType) return { plans, plan: name };
  }
  const spec = isObj(plans[current]) ? (plans[current] as Obj) : {};
  // A syntactically valid type that differs: `c3.small.x86` -> `c3.small.x86drill`.
  const moved = Object.fromEntries(Object.entries(spec).map(([p, t]) => [p, `${String(t)}drill`]));
  return { plans: { ...plans, [DRILL_PLAN]: moved }, plan: DRILL_PLAN };
}

async function drillProvider(input: StackInput, provider: MachineProviderName, base: Record<string, string>, program: DrillProgram, options: PreviewRunOptions): Promise<ProviderDrill> {
  const ns = input.project;
  const result: ProviderDrill = { provider, replaced: [], runnersCompared: [], runnersChanged: [], problems: [], sizes: [] };
  const config = { ...base, [`${ns}:provider`]: provider };
  let before: Snapshot;
  try {
    before = await runOnce(input, config, [], program, options);
  } catch (e) {
    if (e instanceof FleetConfigError) {
      result.notConfigured = `the stack cannot run on ${provider} as configured (${e.problems.length} config problem${e.problems.length === 1 ? "" : "s"}: ${e.problems.map((p) => `${p.path}: ${p.message}`).join("; ")})`;
      return result;
    }
    throw e;
  }
  result.sizes = before.machines.map(sizeOf).sort((a, b) => (a.hostname < b.hostname ? -1 : 1));

  // The drill: both control-plane machines on another plan, and replaced.
  const plans = parseJson(config[`${ns}:plans`]);
  const salt = parseJson(config[`${ns}:saltMaster`]);
  const teleport = parseJson(config[`${ns}:teleport`]);
  if (!isObj(plans) || !isObj(salt) || !isObj(teleport)) throw new Error("replacement drill: plans, saltMaster and teleport must be maps");
  const moved = otherPlan(plans, provider, String(salt.plan));
  result.planChange = { from: String(salt.plan), to: moved.plan };
  const drilled = {
    ...config,
    [`${ns}:plans`]: JSON.stringify(moved.plans),
    [`${ns}:saltMaster`]: JSON.stringify({ ...salt, plan: moved.plan }),
    [`${ns}:teleport`]: JSON.stringify({ ...teleport, plan: moved.plan }),
  };
  const control = before.machines.filter((m) => m.role !== "runner");
  const after = await runOnce(input, drilled, control.map((m) => m.name), program, options);

  const dnsConfig = parseJson(config[`${ns}:dns`]);
  const zone = isObj(dnsConfig) ? String(dnsConfig.zone) : "";
  const names = controlPlaneNames(input.stack, zone);
  for (const m of control) {
    const role = m.role as "salt-master" | "teleport";
    const b = after.machines.find((x) => x.key === m.key);
    if (!b) {
      result.problems.push(`${m.hostname}: no machine ${m.name} after the replacement`);
      continue;
    }
    const outA = m.resource.outputs;
    const outB = b.resource.outputs;
    const inputKeys = new Set(Object.keys(m.inputs));
    // Provider-side outputs only (not the inputs echoed back).
    const changedOutputs = Object.keys(outA).filter((k) => !inputKeys.has(k) && stable(outA[k]) !== stable(outB[k])).sort();
    const ip = (o: Obj) => String(o.privateIp ?? o.accessPrivateIpv4 ?? "");
    const recordName = role === "salt-master" ? names.saltMaster : names.teleport;
    const record = { name: recordName, before: before.records.get(recordName) ?? [], after: after.records.get(recordName) ?? [] };
    result.replaced.push({
      role,
      resource: m.name,
      changedOutputs,
      before: { id: String(outA.id), privateIpv4: ip(outA) },
      after: { id: String(outB.id), privateIpv4: ip(outB) },
      record,
    });
    if (!changedOutputs.includes("id") || ip(outA) === ip(outB)) result.problems.push(`${m.hostname}: the drill did not give the machine a new id and address`);
    if (stable(record.before) !== stable([ip(outA)]) || stable(record.after) !== stable([ip(outB)])) {
      result.problems.push(`${recordName}: the record does not follow ${m.hostname} (${record.before.join(",")} -> ${record.after.join(",")}, machine ${ip(outA)} -> ${ip(outB)})`);
    }
  }

  for (const a of before.machines.filter((m) => m.role === "runner")) {
    result.runnersCompared.push(a.name);
    const b = after.machines.find((x) => x.key === a.key);
    if (!b) {
      result.runnersChanged.push({ resource: a.name, fields: ["(missing after the replacement)"] });
      continue;
    }
    const fields = changedFields(a.inputs, b.inputs);
    if (stable(a.resource.options) !== stable(b.resource.options)) fields.push("(options)");
    if (a.resource.parent !== b.resource.parent) fields.push("(parent)");
    if (fields.length) result.runnersChanged.push({ resource: a.name, fields });
  }
  for (const c of result.runnersChanged) result.problems.push(`runner ${c.resource}: ${c.fields.join(", ")} changed`);
  if (result.runnersCompared.length === 0) result.problems.push("no runner was compared");
  return result;
}

/** Runs the drill for every provider (sequentially: the mock runtime is process-global); `options` as the preview's run. */
export async function replacementDrill(input: StackInput, program: DrillProgram = theProgram, options: PreviewRunOptions = {}): Promise<DrillResult> {
  const ns = input.project;
  const queues = parseJson(input.config[`${ns}:queues`]);
  const reduced = isObj(queues) ? reducedQueues(queues) : { queues: {}, runners: 0 };
  const base = { ...input.config, [`${ns}:queues`]: JSON.stringify(reduced.queues) };
  const providers: ProviderDrill[] = [];
  for (const provider of MACHINE_PROVIDERS) providers.push(await drillProvider(input, provider, base, program, options));
  return { providers, fleetRunners: reduced.runners, drillRunners: Object.keys(reduced.queues).length };
}

export function drillPassed(result: DrillResult): boolean {
  return result.providers.every((p) => p.notConfigured !== undefined || p.problems.length === 0);
}

/** Machines whose user-data, as their provider receives it, exceeds 16 KiB. */
export function oversizedUserData(result: DrillResult): { provider: MachineProviderName; hostname: string; bytes: number }[] {
  return result.providers.flatMap((p) => p.sizes.filter((s) => s.bytes > EC2_USER_DATA_LIMIT_BYTES).map((s) => ({ provider: p.provider, hostname: s.hostname, bytes: s.bytes })));
}

function table(header: string[], rows: string[][]): string {
  const esc = (s: string) => s.replace(/\|/g, "\\|");
  return [`| ${header.join(" | ")} |`, `|${header.map(() => "---").join("|")}|`, ...rows.map((r) => `| ${r.map(esc).join(" | ")} |`)].join("\n");
}

/** The report's "Replacing the control plane" section (and the user-data sizes per provider). */
export function renderDrillMarkdown(result: DrillResult, current: MachineProviderName): string {
  const out: string[] = ["## Replacing the control plane", ""];
  const ok = drillPassed(result);
  out.push(
    `**${ok ? "Passed" : "FAILED"}.** The Salt master and the Teleport machine were moved to another plan and replaced ` +
      "(new ids and addresses, as `pulumi up --replace` gives), on each provider, under the mock runtime. " +
      `No runner's inputs may change: its user-data names the control plane (\`<stack>-salt-master.<zone>\`, \`<stack>-teleport.<zone>\`), ` +
      "and only the DNS records and pillar documents follow the new machines. " +
      `Runners compared: one per queue, the one with the longest name (${result.drillRunners} of ${result.fleetRunners}); every runner of a queue is built by the same code from inputs that differ only in its name.`,
    "",
  );
  const rows: string[][] = [];
  for (const p of result.providers) {
    const label = `${p.provider}${p.provider === current ? " (current)" : ""}`;
    if (p.notConfigured) {
      rows.push([label, "not configured", "", "", "", p.notConfigured]);
      continue;
    }
    for (const r of p.replaced) {
      rows.push([
        label,
        r.role,
        `${r.before.id} → ${r.after.id}`,
        `${r.before.privateIpv4} → ${r.after.privateIpv4}`,
        `\`${r.record.name}\`: ${r.record.before.join(", ")} → ${r.record.after.join(", ")}`,
        `changed outputs: ${r.changedOutputs.join(", ")}`,
      ]);
    }
    rows.push([
      label,
      "runners",
      "",
      "",
      "",
      p.runnersChanged.length === 0
        ? `${p.runnersCompared.length} compared, no input changed (plan ${p.planChange?.from} → ${p.planChange?.to} for the control plane)`
        : `**changed**: ${p.runnersChanged.map((c) => `${c.resource} (${c.fields.join(", ")})`).join("; ")}`,
    ]);
  }
  out.push(table(["provider", "machine", "id", "private IPv4", "DNS record", "result"], rows), "");
  const problems = result.providers.flatMap((p) => p.problems.map((x) => `${p.provider}: ${x}`));
  if (problems.length) out.push(...problems.map((x) => `- ${x}`), "");

  out.push("### User-data as each provider receives it", "");
  out.push(
    `Limit ${EC2_USER_DATA_LIMIT_BYTES} bytes: equinix-metal receives the plain text; EC2 receives gzip (base64 in the API call; the limit applies before base64). ` +
      "Rendered for both providers whatever the current one, on the drill's fleet (each queue's longest runner name).",
    "",
  );
  const sizeRows: string[][] = [];
  for (const p of result.providers) {
    if (p.notConfigured) continue;
    for (const role of ["salt-master", "teleport", "runner"] as const) {
      const largest = p.sizes.filter((s) => s.role === role).sort((a, b) => b.bytes - a.bytes)[0];
      if (!largest) continue;
      sizeRows.push([p.provider, role, largest.hostname, String(largest.bytes), largest.base64Chars === undefined ? "" : String(largest.base64Chars), largest.bytes <= EC2_USER_DATA_LIMIT_BYTES ? "ok" : "**over**"]);
    }
  }
  out.push(table(["provider", "role", "largest", "bytes received", "base64 characters", "within 16 KiB"], sizeRows), "");
  return out.join("\n");
}
