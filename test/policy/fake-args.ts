import { Resource } from "@pulumi/pulumi";
import {
  Policy,
  PolicyResource,
  ReportViolation,
  ResourceValidation,
  ResourceValidationArgs,
  ResourceValidationPolicy,
  StackValidationPolicy,
  unknownCheckingProxy,
} from "@pulumi/policy";
import { secretsPreservingProxy } from "@pulumi/policy/secret";

/**
 * Fake validateResource arguments in the style of pulumi/pulumi-policy-aws (src/tests/util.ts),
 * completed for @pulumi/policy 1.21.0's ResourceValidationArgs (stackTags, notApplicable).
 * Props are wrapped in the library's own unknownCheckingProxy, as the analyzer server does.
 */

type ResourceClass = { new (name: string, args: never, ...rest: never[]): Resource };

export const STACK = "production";

export function pulumiTypeOf(resourceClass: ResourceClass | { new (...rest: never[]): Resource }): string {
  const type = (resourceClass as unknown as { __pulumiType?: unknown }).__pulumiType;
  if (typeof type !== "string") throw new Error(`${resourceClass.name} has no __pulumiType`);
  return type;
}

export function urnFor(type: string, name: string, stack = STACK): string {
  return `urn:pulumi:${stack}::ci-fleet::${type}::${name}`;
}

export class NotApplicableSignal extends Error {}

export function fakeResourceArgs(
  resourceClass: ResourceClass,
  props: Record<string, unknown>,
  { name = "test-resource", stack = STACK, secretsAsSecretInstances = false } = {},
): ResourceValidationArgs {
  const type = pulumiTypeOf(resourceClass);
  const bag = unknownCheckingProxy(secretsAsSecretInstances ? secretsPreservingProxy(props) : props) as Record<string, unknown>;
  return {
    type,
    props: bag,
    urn: urnFor(type, name, stack),
    name,
    opts: { protect: false, ignoreChanges: [], aliases: [], customTimeouts: { createSeconds: 0, updateSeconds: 0, deleteSeconds: 0 }, additionalSecretOutputs: [] },
    stackTags: new Map<string, string>(),
    isType: (cls) => pulumiTypeOf(cls) === type,
    asType: ((cls: ResourceClass) => (pulumiTypeOf(cls) === type ? bag : undefined)) as ResourceValidationArgs["asType"],
    getConfig: <T extends object>() => ({}) as T,
    notApplicable: (reason?: string): never => {
      throw new NotApplicableSignal(reason);
    },
  };
}

/** Runs every validation of a resource policy; returns the reported messages (none when not applicable). */
export function violationsOf(policy: Policy, args: ResourceValidationArgs): string[] {
  const messages: string[] = [];
  const report: ReportViolation = (message) => messages.push(message);
  const validate = (policy as ResourceValidationPolicy).validateResource;
  if (validate === undefined) throw new Error(`${policy.name} has no validateResource`);
  const validations: ResourceValidation[] = Array.isArray(validate) ? validate : [validate];
  for (const v of validations) {
    try {
      const result = v(args, report);
      if (result instanceof Promise) throw new Error(`${policy.name} is asynchronous`);
    } catch (e) {
      if (!(e instanceof NotApplicableSignal)) throw e;
    }
  }
  return messages;
}

/** A stack resource as validateStack receives it. */
export function fakeStackResource(resourceClass: ResourceClass, name: string, props: Record<string, unknown>): PolicyResource {
  const type = pulumiTypeOf(resourceClass);
  const bag = unknownCheckingProxy(props) as Record<string, unknown>;
  return {
    type,
    props: bag,
    urn: urnFor(type, name),
    name,
    opts: { protect: false, ignoreChanges: [], aliases: [], customTimeouts: { createSeconds: 0, updateSeconds: 0, deleteSeconds: 0 }, additionalSecretOutputs: [] },
    dependencies: [],
    propertyDependencies: {},
    isType: (cls) => pulumiTypeOf(cls) === type,
    asType: ((cls: ResourceClass) => (pulumiTypeOf(cls) === type ? bag : undefined)) as PolicyResource["asType"],
  };
}

/** Runs a stack policy; returns "<resource name>: <message>" for each violation. */
export function stackViolationsOf(policy: StackValidationPolicy, resources: PolicyResource[]): string[] {
  const messages: string[] = [];
  const byUrn = new Map(resources.map((r) => [r.urn, r.name]));
  const result = policy.validateStack(
    {
      resources,
      stackTags: new Map(),
      getConfig: <T extends object>() => ({}) as T,
      notApplicable: (reason?: string): never => {
        throw new NotApplicableSignal(reason);
      },
    },
    (message, urn) => messages.push(`${(urn && byUrn.get(urn)) ?? "<stack>"}: ${message}`),
  );
  if (result instanceof Promise) throw new Error(`${policy.name} is asynchronous`);
  return messages;
}
