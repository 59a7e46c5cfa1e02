import { spawnSync } from "child_process";
import * as fc from "fast-check";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { renderShell, shellQuote } from "../../hooks/buildkite/src/shell";
import { requireTool } from "./support/tools";

/**
 * Proves the quoting by doing what the hook wrapper does: capture the emitted code with
 * `$(...)`, `eval` it in bash, then read every variable back as raw bytes.
 */
function evalInBash(values: readonly string[], locale: string): { read: Buffer[]; workDir: string } {
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-quote-"));
  const names = values.map((_, i) => `SECRET_${i}`);
  fs.writeFileSync(path.join(workDir, "emitted.sh"), renderShell(values.map((value, i) => ({ export: names[i], value }))));
  const script = [
    'ci_fleet_shell="$(cat emitted.sh)"',
    'eval "$ci_fleet_shell"',
    // NUL-separated: the one byte no value can contain.
    `printf '%s\\0' ${names.map((name) => `"$${name}"`).join(" ")} > read-back`,
  ].join("\n");
  const result = spawnSync("bash", ["-c", script], { cwd: workDir, env: { PATH: process.env.PATH, LC_ALL: locale }, encoding: "utf8" });
  if (result.status !== 0) throw new Error(`bash failed: ${result.stderr}`);
  const bytes = fs.readFileSync(path.join(workDir, "read-back"));
  const read: Buffer[] = [];
  for (let start = 0; start < bytes.length; ) {
    const end = bytes.indexOf(0, start);
    read.push(bytes.subarray(start, end));
    start = end + 1;
  }
  expect(read).toHaveLength(values.length);
  return { read, workDir };
}

const HOSTILE = [
  "line one\nline two\n",
  "\n\ntrailing newlines\n\n",
  "it's a 'quoted' value",
  "'",
  "''''",
  "'\\''",
  '"double" \\"escaped\\"',
  "$(touch pwned-dollar)",
  "`touch pwned-backtick`",
  "a; touch pwned-semicolon; b",
  "&& touch pwned-and || touch pwned-or | tee pwned-pipe",
  "> pwned-redirect",
  "$HOME ${PATH} $1 $@ $$ ${IFS}",
  "!! !$ ^a^b",
  "*.sh ? [a-z] ~ ~root {a,b}",
  "\\",
  "\\n \\t \\\\",
  "tab\there\rcarriage",
  "-e -n --",
  "",
  " leading and trailing spaces ",
  "ünïcødé ✓ 🔑",
  Array.from({ length: 255 }, (_, i) => String.fromCharCode(i + 1)).join(""),
  "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
];

describe("shell quoting of secret values", () => {
  beforeAll(() => requireTool("bash", "bash"));

  test.each(["C", "C.UTF-8"])("bash reads back the exact bytes of hostile values (LC_ALL=%s) and runs nothing", (locale) => {
    const { read, workDir } = evalInBash(HOSTILE, locale);
    read.forEach((bytes, i) => expect(bytes.toString("hex")).toBe(Buffer.from(HOSTILE[i], "utf8").toString("hex")));
    // Nothing in a value was executed: no file other than ours appeared.
    const created = fs.readdirSync(workDir).filter((f) => f !== "read-back" && f !== "emitted.sh");
    expect(created).toEqual([]);
  });

  test("300 random NUL-free strings survive eval byte for byte", () => {
    const values = fc.sample(
      fc.string({ unit: fc.oneof(fc.constantFrom("'", '"', "$", "`", "\\", "\n", ";", "(", ")"), fc.string({ unit: "binary", maxLength: 1 })), maxLength: 40 }).filter((s) => !s.includes("\0")),
      { numRuns: 300, seed: 20260101 },
    );
    const { read } = evalInBash(values, "C.UTF-8");
    const mismatches = values.filter((value, i) => read[i].toString("hex") !== Buffer.from(value, "utf8").toString("hex"));
    expect(mismatches).toEqual([]);
  });

  test("a NUL byte is refused, since no variable can hold it", () => {
    expect(() => shellQuote("a\0b")).toThrow("contains a NUL byte");
  });

  test("a name that is not an identifier is never emitted", () => {
    expect(() => renderShell([{ export: "A;rm -rf /", value: "x" }])).toThrow("refusing to emit");
    expect(() => renderShell([{ unset: "$(id)" }])).toThrow("refusing to emit");
  });

  test("the emitted text: one statement a line, values in single quotes", () => {
    expect(renderShell([{ export: "A", value: "it's" }, { unset: "B" }, { export: "C", value: "x\ny" }])).toBe(
      "export A='it'\\''s'\nunset B\nexport C='x\ny'\n",
    );
    expect(renderShell([])).toBe("");
  });
});
