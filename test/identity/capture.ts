import * as pulumi from "@pulumi/pulumi";
import { CapturedResource, RecordingMocks, runUnderMocks } from "../../tools/preview/mock-runtime";
import { FleetConfig } from "../../infra/config/model";
import { FleetIdentity } from "../../infra/identity/identity";
import { FLEET_ACCOUNT, REGION } from "./fleets";

export interface Capture {
  identity: FleetIdentity;
  mocks: RecordingMocks;
  resources: CapturedResource[];
  config: FleetConfig;
}

/** Runs FleetIdentity under the shared recording mocks (every call refused). */
export async function captureIdentity(makeConfig: () => FleetConfig): Promise<Capture> {
  const config = makeConfig();
  // Pulumi records `new Error().stack` for every promise it makes; under jest's
  // source-map support that dominates the run (many-queue fleet: 18 s -> ~3 s).
  const stackTraceLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    const { result, mocks } = await runUnderMocks(
      { stack: config.stack, account: { accountId: FLEET_ACCOUNT, region: REGION } },
      () => new FleetIdentity("identity", { config }),
    );
    return { identity: result, mocks, resources: mocks.resources, config };
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
  }
}

export function countByType(resources: CapturedResource[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of resources) counts[r.type] = (counts[r.type] ?? 0) + 1;
  return Object.fromEntries(Object.entries(counts).sort(([a], [b]) => (a < b ? -1 : 1)));
}

export const ofType = (resources: CapturedResource[], type: string) => resources.filter((r) => r.type === type);

export function named(resources: CapturedResource[], type: string, name: string): CapturedResource {
  const found = resources.find((r) => r.type === type && r.name === name);
  if (!found) throw new Error(`no ${type} named ${name}`);
  return found;
}

export const parsePolicy = (value: unknown): unknown => (typeof value === "string" ? JSON.parse(value) : value);

/** The value of an Output, and whether it is secret. */
export async function settle<T>(output: pulumi.Output<T>): Promise<{ value: T; secret: boolean }> {
  const value = await new Promise<T>((resolve) => output.apply(resolve));
  return { value, secret: await pulumi.isSecret(output) };
}
