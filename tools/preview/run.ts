import * as pulumi from "@pulumi/pulumi";
import { FleetConfigError } from "../../infra/config/check";
import { FleetConfig, MachineRole } from "../../infra/config/model";
import { EC2_USER_DATA_LIMIT_BYTES, gzipUserData, maskCloudConfigSecrets, renderCloudConfig } from "../../infra/bootstrap/cloud-config";
import { createFleet } from "../../infra/program";
import { buildRoles } from "../../infra/teleport/roles";
import { teleportAccessMatrix, AccessMatrixRow } from "../../infra/teleport/access";
import { teleportNodeLabels } from "../../infra/teleport/config";
import { CapturedResource, runUnderMocks, SECRET_MASK } from "./mock-runtime";
import { StackInput } from "./stack-files";
import { phase } from "./phases";

/**
 * Runs the program for one stack under the mock runtime and gathers what the preview
 * writes: every resource, every machine's user-data (masked), and the fleet's config.
 */

export interface PreviewMachine {
  hostname: string;
  role: MachineRole;
  queue?: string;
  provider: string;
  plan: string;
  instanceType: string;
  privateIpv4: string;
  publicIpv4?: string;
  /** Size of the real (unmasked) rendered user-data. */
  userDataBytes: number;
  /** Size gzipped: what EC2 receives (its 16 KiB limit applies to this). */
  gzipBytes: number;
  /** The rendered cloud-config with every secret replaced by `[secret]`. */
  maskedUserData: string;
}

export interface PreviewRun {
  project: string;
  stack: string;
  config: FleetConfig;
  resources: CapturedResource[];
  machines: PreviewMachine[];
  teleportAccess: AccessMatrixRow[];
  /** Every plain secret value seen: config secrets, secret inputs and outputs, user-data secrets. */
  secretValues: Set<string>;
  /** Plain user-data per machine: in memory only, for tests of the program (never written). */
  userData: Record<string, string>;
  /** Unmasked inputs by `<type>::<name>`: in memory only, for tests comparing two runs. */
  rawInputs: Map<string, Record<string, unknown>>;
}

/** The fleet's account, read before the program runs so mocked ARNs are realistic. */
function accountFrom(config: Record<string, string>, project: string): { accountId: string; region: string } {
  try {
    const identity = JSON.parse(config[`${project}:identity`] ?? "{}") as { accountId?: unknown; region?: unknown };
    return {
      accountId: typeof identity.accountId === "string" ? identity.accountId : "123456789012",
      region: typeof identity.region === "string" ? identity.region : "us-east-1",
    };
  } catch {
    return { accountId: "123456789012", region: "us-east-1" };
  }
}

export function valueOf<T>(output: pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) => output.apply((v) => (resolve(v), v)));
}

function compareResources(a: CapturedResource, b: CapturedResource): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : a.type < b.type ? -1 : a.type > b.type ? 1 : 0;
}

/** For tests: `generatedSecretSeed` changes the secrets the mocks generate (see MockRunOptions). */
export interface PreviewRunOptions {
  generatedSecretSeed?: string;
}

export async function runPreview(input: StackInput, options: PreviewRunOptions = {}): Promise<PreviewRun> {
  let program: ReturnType<typeof createFleet> | undefined;
  let configError: FleetConfigError | undefined;
  const { mocks } = await runUnderMocks(
    {
      project: input.project, stack: input.stack, account: accountFrom(input.config, input.project), config: input.config, secretKeys: input.secretKeys,
      generatedSecretSeed: options.generatedSecretSeed,
    },
    () => {
      try {
        program = createFleet({ offlinePreview: true });
      } catch (e) {
        if (e instanceof FleetConfigError) configError = e;
        else throw e;
      }
    },
  );
  phase("program");
  if (configError) throw configError;
  const { config, fleet } = program!;

  const secretValues = new Set<string>([...input.secretValues, ...mocks.secretValues]);
  const machines: PreviewMachine[] = [];
  const userData: Record<string, string> = {};
  for (const m of fleet.machines) {
    const [doc, text, privateIpv4, publicIpv4] = await Promise.all([
      valueOf(m.cloudConfig),
      valueOf(m.userData),
      valueOf(m.machine.privateIpv4),
      m.machine.publicIpv4 ? valueOf(m.machine.publicIpv4) : Promise.resolve(undefined),
    ]);
    userData[m.hostname] = text;
    const masked = renderCloudConfig(maskCloudConfigSecrets(doc));
    machines.push({
      hostname: m.hostname,
      role: m.role,
      ...(m.queue ? { queue: m.queue } : {}),
      provider: config.provider,
      plan: m.plan,
      instanceType: m.instanceType,
      privateIpv4,
      ...(publicIpv4 ? { publicIpv4 } : {}),
      userDataBytes: Buffer.byteLength(text, "utf8"),
      gzipBytes: gzipUserData(text).length,
      maskedUserData: masked,
    });
    // What the masking hid is secret too: the scan of written files looks for it.
    collectMasked(text, masked, secretValues);
  }
  machines.sort((a, b) => (a.hostname < b.hostname ? -1 : 1));

  const queues = Object.keys(config.queues);
  const teleportAccess = teleportAccessMatrix({
    roles: buildRoles({ queues }),
    teamsToRoles: config.teleport.teamsToRoles,
    machines: Object.fromEntries(
      machines.map((m) => [m.hostname, teleportNodeLabels({ role: m.role, stack: config.stack, ...(m.queue ? { queue: m.queue } : {}) })]),
    ),
  });
  phase("machines");

  return {
    project: input.project,
    stack: input.stack,
    config,
    resources: [...mocks.resources].sort(compareResources),
    machines,
    teleportAccess,
    secretValues,
    userData,
    rawInputs: mocks.rawInputs,
  };
}

/** A PEM's armor line (`-----BEGIN EC PRIVATE KEY-----`): the same in every PEM of its kind, no secret. */
const PEM_ARMOR = /^-----(BEGIN|END) [A-Z0-9 ]+-----$/;

/**
 * Lines that differ between the real and the masked rendering carry secrets; a PEM's armor
 * lines do not (only its body is secret: as a secret, an armor line flagged every file
 * holding any PEM of that kind).
 */
export function collectMasked(real: string, masked: string, into: Set<string>): void {
  const maskedLines = new Set(masked.split("\n"));
  for (const line of real.split("\n")) {
    const t = line.trim();
    if (!maskedLines.has(line) && t.length >= 16 && !t.includes(SECRET_MASK) && !PEM_ARMOR.test(t)) into.add(t);
  }
}

export { EC2_USER_DATA_LIMIT_BYTES };
