import { JobSecretsError } from "./errors";

/**
 * Shell code the hook wrappers `eval`. Every value goes inside single quotes, where
 * bash interprets nothing; a `'` in the value closes the quote, adds an escaped quote
 * and reopens. That holds for newlines, `$()`, backticks, `;`, `\` and any other byte
 * except NUL, which no environment variable can hold, so it is refused.
 */
export function shellQuote(value: string): string {
  if (value.includes("\0")) {
    throw new JobSecretsError("a value contains a NUL byte, which an environment variable cannot hold");
  }
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

function checkedName(name: string): string {
  // Names are checked where they are derived; this guards the emitter itself.
  if (!IDENTIFIER.test(name)) throw new JobSecretsError(`refusing to emit the non-identifier name ${JSON.stringify(name)}`);
  return name;
}

export type ShellStatement = { export: string; value: string } | { unset: string };

/** One statement per line, in order; the empty list gives the empty string (a no-op). */
export function renderShell(statements: readonly ShellStatement[]): string {
  return statements
    .map((s) => ("unset" in s ? `unset ${checkedName(s.unset)}\n` : `export ${checkedName(s.export)}=${shellQuote(s.value)}\n`))
    .join("");
}
