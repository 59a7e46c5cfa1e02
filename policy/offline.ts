import {
  EnforcementLevel,
  Policy,
  PolicyResource,
  PolicyResourceOptions,
  ReportViolation,
  ResourceValidation,
  ResourceValidationArgs,
  ResourceValidationPolicy,
  Secret,
  StackValidationPolicy,
} from "@pulumi/policy";
import { secretsPreservingProxy } from "@pulumi/policy/secret";
import { PACK_ENFORCEMENT_LEVEL, PROJECT, policies } from "./policies";
import { OFFLINE_SECRET_PLACEHOLDER, isRecord } from "./support";

/**
 * Runs the pack's own policy objects over what the offline preview captured, the way
 * @pulumi/policy 1.21.0's analyzer server runs them for `pulumi preview --policy-pack`
 * (node_modules/@pulumi/policy/server.js): per resource a remediation pass (policies at level
 * "remediate", secrets visible as `Secret`), then an analysis pass (secrets unwrapped), then
 * the stack policies over every resource. Synchronous: every ci-fleet policy is synchronous,
 * and a policy that returns a promise is reported as an error rather than skipped.
 */

/** One registered resource, as the offline preview captures it and resources.json stores it. */
export interface CapturedResource {
  type: string;
  name: string;
  /** Name of the parent resource; absent for children of the stack. */
  parent?: string;
  /** Inputs as the program passed them, every secret replaced by the string "[secret]". */
  inputs: Record<string, unknown>;
  /** What the mock returned, secrets replaced likewise. */
  outputs: Record<string, unknown>;
  /** The options that decide replacement. */
  options: { ignoreChanges?: string[]; replaceOnChanges?: string[]; deleteBeforeReplace?: boolean; protect?: boolean };
}

export interface PolicyViolation {
  policy: string;
  resource: string;
  type: string;
  message: string;
  enforcement: "mandatory" | "advisory";
}

// Internal to @pulumi/policy (its proxy.d.ts declares nothing): the same proxy the server wraps props in.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const proxy = require("@pulumi/policy/proxy") as {
  unknownCheckingProxy<T>(value: T): T;
  UnknownValueError: new (...args: never[]) => Error;
};

class NotApplicable extends Error {}

function notApplicable(reason?: string): never {
  throw new NotApplicable(reason ?? "Policy does not apply");
}

function isStackPolicy(p: Policy): p is StackValidationPolicy {
  return typeof (p as StackValidationPolicy).validateStack === "function";
}

function isResourcePolicy(p: Policy): p is ResourceValidationPolicy {
  const r = p as ResourceValidationPolicy;
  return r.validateResource !== undefined || typeof r.remediateResource === "function";
}

function levelOf(p: Policy): EnforcementLevel {
  return p.enforcementLevel ?? PACK_ENFORCEMENT_LEVEL;
}

/** Remediation violations are reported as mandatory, as @pulumi/policy does. */
function reportedLevel(level: EnforcementLevel): "mandatory" | "advisory" {
  return level === "advisory" ? "advisory" : "mandatory";
}

function urnOf(stack: string, r: { type: string; name: string }): string {
  return `urn:pulumi:${stack}::${PROJECT}::${r.type}::${r.name}`;
}

/** The captured inputs as the Remediate RPC presents them: every "[secret]" becomes a `Secret`. */
function withSecretMarkers(value: unknown): unknown {
  if (value === OFFLINE_SECRET_PLACEHOLDER) return new Secret(value);
  if (Array.isArray(value)) return value.map(withSecretMarkers);
  if (isRecord(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withSecretMarkers(v)]));
  return value;
}

function optionsOf(r: CapturedResource, parentUrn: string | undefined): PolicyResourceOptions {
  const opts: PolicyResourceOptions = {
    protect: r.options.protect ?? false,
    ignoreChanges: [...(r.options.ignoreChanges ?? [])],
    aliases: [],
    customTimeouts: { createSeconds: 0, updateSeconds: 0, deleteSeconds: 0 },
    additionalSecretOutputs: [],
  };
  if (r.options.deleteBeforeReplace !== undefined) opts.deleteBeforeReplace = r.options.deleteBeforeReplace;
  if (parentUrn !== undefined) opts.parent = parentUrn;
  return opts;
}

function typeMatches(resourceType: string, validation: unknown): boolean {
  const pulumiType = (validation as { __pulumiType?: unknown }).__pulumiType;
  return typeof pulumiType !== "string" || pulumiType === resourceType;
}

function mustBeSynchronous(result: unknown, policy: string): void {
  if (result instanceof Promise) {
    throw new Error(`policy ${policy} returned a promise: the offline preview runs policies synchronously`);
  }
}

export function checkCapturedResources(resources: CapturedResource[], stackName: string): PolicyViolation[] {
  const violations: PolicyViolation[] = [];
  const urnByName = new Map(resources.map((r) => [r.name, urnOf(stackName, r)]));
  const parentUrn = (r: CapturedResource) =>
    r.parent === undefined ? undefined : (urnByName.get(r.parent) ?? r.parent);
  const resourcePolicies = policies.filter(isResourcePolicy).filter((p) => levelOf(p) !== "disabled");
  const stackPolicies = policies.filter(isStackPolicy).filter((p) => levelOf(p) !== "disabled");
  const stackTags: ReadonlyMap<string, string> = new Map();

  const run = (policy: Policy, resource: { name: string; type: string }, call: () => unknown) => {
    try {
      mustBeSynchronous(call(), policy.name);
    } catch (e) {
      if (e instanceof NotApplicable) return;
      if (e instanceof proxy.UnknownValueError) {
        violations.push({
          policy: policy.name,
          resource: resource.name,
          type: resource.type,
          message: `can't run during preview: ${e.message}`,
          enforcement: "advisory",
        });
        return;
      }
      throw new Error(`policy ${policy.name} failed on ${resource.type} "${resource.name}": ${(e as Error).message}`);
    }
  };

  for (const r of resources) {
    const urn = urnOf(stackName, r);
    const base = {
      type: r.type,
      urn,
      name: r.name,
      opts: optionsOf(r, parentUrn(r)),
      stackTags,
      isType: (cls: unknown) => (cls as { __pulumiType?: string }).__pulumiType === r.type,
      getConfig: <T extends object>() => ({}) as T,
      notApplicable,
    };
    const argsWith = (props: Record<string, unknown>): ResourceValidationArgs => ({
      ...base,
      props,
      asType: ((cls: unknown) => ((cls as { __pulumiType?: string }).__pulumiType === r.type ? props : undefined)) as ResourceValidationArgs["asType"],
    });

    // Pass 1: remediations, with secrets visible (their results replace the props, as in the engine).
    let inputs: Record<string, unknown> = structuredClone(r.inputs);
    for (const p of resourcePolicies) {
      if (levelOf(p) !== "remediate" || typeof p.remediateResource !== "function" || !typeMatches(r.type, p.remediateResource)) continue;
      const props = proxy.unknownCheckingProxy(secretsPreservingProxy(withSecretMarkers(inputs)) as Record<string, unknown>);
      run(p, r, () => {
        const result = p.remediateResource!(argsWith(props));
        if (isRecord(result)) inputs = JSON.parse(JSON.stringify(result)) as Record<string, unknown>;
        return result instanceof Promise ? result : undefined;
      });
    }

    // Pass 2: validations, with secrets unwrapped (the offline placeholder stays "[secret]").
    for (const p of resourcePolicies) {
      if (p.validateResource === undefined) continue;
      const level = levelOf(p);
      const validations: ResourceValidation[] = Array.isArray(p.validateResource) ? p.validateResource : [p.validateResource];
      const report: ReportViolation = (message) =>
        violations.push({ policy: p.name, resource: r.name, type: r.type, message, enforcement: reportedLevel(level) });
      for (const validation of validations) {
        if (!typeMatches(r.type, validation)) continue;
        const props = proxy.unknownCheckingProxy(structuredClone(inputs));
        run(p, r, () => validation(argsWith(props), report));
      }
    }
  }

  // Stack policies see each resource's final state: outputs over inputs.
  const stackResources: PolicyResource[] = resources.map((r) => {
    const props = proxy.unknownCheckingProxy({ ...structuredClone(r.inputs), ...structuredClone(r.outputs) });
    return {
      type: r.type,
      props,
      urn: urnOf(stackName, r),
      name: r.name,
      opts: optionsOf(r, parentUrn(r)),
      dependencies: [],
      propertyDependencies: {},
      isType: (cls: unknown) => (cls as { __pulumiType?: string }).__pulumiType === r.type,
      asType: ((cls: unknown) => ((cls as { __pulumiType?: string }).__pulumiType === r.type ? props : undefined)) as PolicyResource["asType"],
    };
  });
  const byUrn = new Map(stackResources.map((r) => [r.urn, r]));
  resources.forEach((r, i) => {
    const parent = parentUrn(r);
    if (parent !== undefined && byUrn.has(parent)) stackResources[i].parent = byUrn.get(parent);
  });
  for (const p of stackPolicies) {
    const level = levelOf(p);
    const report: ReportViolation = (message, urn) => {
      const target = stackResources.find((r) => r.urn === urn);
      violations.push({
        policy: p.name,
        resource: target?.name ?? stackName,
        type: target?.type ?? "pulumi:pulumi:Stack",
        message,
        enforcement: reportedLevel(level),
      });
    };
    run(p, { name: stackName, type: "pulumi:pulumi:Stack" }, () =>
      p.validateStack({ resources: stackResources, stackTags, getConfig: <T extends object>() => ({}) as T, notApplicable }, report),
    );
  }
  return violations;
}
