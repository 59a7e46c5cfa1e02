import { JobSecretsError } from "./errors";

/**
 * The part of SSM the hooks use, in the SDK's own request and response shapes, so the
 * AWS adapter (aws.ts) is one line per call and tests inject a fake that throttles,
 * denies and paginates exactly as SSM does.
 */
export interface ParameterStore {
  getParameter(input: { Name: string; WithDecryption: boolean }): Promise<{ Parameter?: { Name?: string; Value?: string } }>;
  /** One page; the caller follows NextToken. */
  getParametersByPath(input: {
    Path: string;
    Recursive: boolean;
    WithDecryption: boolean;
    NextToken?: string;
  }): Promise<{ Parameters?: { Name?: string; Value?: string }[]; NextToken?: string }>;
}

export interface Parameter {
  name: string;
  value: string;
}

/** SSM's answer for "no such parameter": the only error that means "absent". */
export function isParameterNotFound(error: unknown): boolean {
  return errorName(error) === "ParameterNotFound";
}

function errorName(error: unknown): string {
  return typeof error === "object" && error !== null && typeof (error as { name?: unknown }).name === "string"
    ? (error as { name: string }).name
    : "Error";
}

/** What went wrong, for the job log: the SDK's error name and message (never a value). */
export function describeError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const oneLine = message.replace(/\s+/g, " ").trim().slice(0, 300);
  return oneLine === "" ? errorName(error) : `${errorName(error)}: ${oneLine}`;
}

/**
 * One parameter, or undefined when SSM says ParameterNotFound. Any other failure
 * (throttling, IAM or KMS denial, network) throws: absence is never assumed.
 */
export async function getOptionalParameter(store: ParameterStore, name: string): Promise<string | undefined> {
  let answer;
  try {
    answer = await store.getParameter({ Name: name, WithDecryption: true });
  } catch (error) {
    if (isParameterNotFound(error)) return undefined;
    throw new JobSecretsError(`cannot read ${name}: ${describeError(error)}`);
  }
  const value = answer.Parameter?.Value;
  if (value === undefined) throw new JobSecretsError(`cannot read ${name}: SSM returned no value`);
  return value;
}

/** A guard against a store that never stops paginating. */
const MAX_PAGES = 1000;

/** Every parameter under `path` (recursively), following NextToken to the last page. */
export async function listParameters(store: ParameterStore, path: string, withDecryption: boolean): Promise<Parameter[]> {
  // SSM takes the hierarchy without a trailing slash; the results all start with `${path}/`.
  const hierarchy = path.replace(/\/+$/, "");
  const found: Parameter[] = [];
  let nextToken: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    let answer;
    try {
      answer = await store.getParametersByPath({
        Path: hierarchy,
        Recursive: true,
        WithDecryption: withDecryption,
        ...(nextToken === undefined ? {} : { NextToken: nextToken }),
      });
    } catch (error) {
      throw new JobSecretsError(`cannot list ${hierarchy}/: ${describeError(error)}`);
    }
    for (const p of answer.Parameters ?? []) {
      if (p.Name === undefined || p.Value === undefined) {
        throw new JobSecretsError(`cannot list ${hierarchy}/: SSM returned a parameter without a name or value`);
      }
      found.push({ name: p.Name, value: p.Value });
    }
    if (answer.NextToken === undefined || answer.NextToken === "") return found;
    nextToken = answer.NextToken;
  }
  throw new JobSecretsError(`cannot list ${hierarchy}/: more than ${MAX_PAGES} pages`);
}
