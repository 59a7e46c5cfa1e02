import type { ParameterStore } from "../../../hooks/buildkite/src/ssm";

/** An error shaped like the SDK's service exceptions (name, $fault, $metadata). */
export function awsError(name: string, message: string): Error {
  return Object.assign(new Error(message), {
    name,
    $fault: name === "ThrottlingException" ? "client" : "client",
    $metadata: { httpStatusCode: 400 },
  });
}

export const kmsDenied = () =>
  awsError(
    "AccessDeniedException",
    "User: arn:aws:sts::123456789012:assumed-role/ci-fleet-production-agent-infra/i-0 is not authorized to perform: kms:Decrypt on resource: arn:aws:kms:us-east-1:123456789012:key/k because no identity-based policy allows the kms:Decrypt action",
  );

type Operation = "getParameter" | "getParametersByPath";

interface Failure {
  operation: Operation;
  /** Parameter name (getParameter) or path (getParametersByPath) it applies to. */
  target: string;
  error: () => Error;
}

interface Stored {
  value: string;
  /** Decrypting it fails as a KMS denial would (the role may not use the key). */
  kmsDenied: boolean;
}

export interface Call {
  operation: Operation;
  target: string;
  withDecryption: boolean;
  nextToken?: string;
}

/**
 * Parameter Store as the hooks see it: hierarchical paths, GetParametersByPath pages
 * of `pageSize` with an opaque NextToken bound to the request, ParameterNotFound for
 * absent names, KMS denial on decryption, and injectable throttling or IAM denial.
 */
export class FakeSsm implements ParameterStore {
  readonly calls: Call[] = [];
  private readonly stored = new Map<string, Stored>();
  private readonly failures: Failure[] = [];

  constructor(readonly pageSize = 2) {}

  put(name: string, value: string, options: { kmsDenied?: boolean } = {}): this {
    this.stored.set(name, { value, kmsDenied: options.kmsDenied ?? false });
    return this;
  }

  /** Every call of `operation` on `target` fails with `error()`. */
  fail(operation: Operation, target: string, error: () => Error): this {
    this.failures.push({ operation, target, error });
    return this;
  }

  private check(operation: Operation, target: string): void {
    const failure = this.failures.find((f) => f.operation === operation && f.target === target);
    if (failure) throw failure.error();
  }

  private reveal(stored: Stored, withDecryption: boolean): string {
    if (!withDecryption) return `AQICAHciphertext-of-${stored.value.length}-chars`;
    if (stored.kmsDenied) throw kmsDenied();
    return stored.value;
  }

  async getParameter(input: { Name: string; WithDecryption: boolean }) {
    this.calls.push({ operation: "getParameter", target: input.Name, withDecryption: input.WithDecryption });
    this.check("getParameter", input.Name);
    const stored = this.stored.get(input.Name);
    if (stored === undefined) throw awsError("ParameterNotFound", "");
    return { Parameter: { Name: input.Name, Value: this.reveal(stored, input.WithDecryption) } };
  }

  async getParametersByPath(input: { Path: string; Recursive: boolean; WithDecryption: boolean; NextToken?: string }) {
    this.calls.push({
      operation: "getParametersByPath",
      target: input.Path,
      withDecryption: input.WithDecryption,
      ...(input.NextToken === undefined ? {} : { nextToken: input.NextToken }),
    });
    if (!input.Path.startsWith("/") || (input.Path.length > 1 && input.Path.endsWith("/"))) {
      throw awsError("ValidationException", `invalid path ${input.Path}`);
    }
    this.check("getParametersByPath", input.Path);
    const under = [...this.stored.keys()]
      .filter((name) => name.startsWith(`${input.Path}/`))
      .filter((name) => input.Recursive || !name.slice(input.Path.length + 1).includes("/"))
      .sort();
    let start = 0;
    if (input.NextToken !== undefined) {
      const token = /^page:(\d+):(.*)$/.exec(input.NextToken);
      if (token === null || token[2] !== input.Path) throw awsError("InvalidNextToken", "The specified token is not valid.");
      start = Number(token[1]);
    }
    const page = under.slice(start, start + this.pageSize);
    const end = start + page.length;
    return {
      Parameters: page.map((name) => ({ Name: name, Value: this.reveal(this.stored.get(name) as Stored, input.WithDecryption) })),
      ...(end < under.length ? { NextToken: `page:${end}:${input.Path}` } : {}),
    };
  }
}
