/**
 * docs/upstream-conformance.md is the record of every interface ci-fleet uses with
 * upstream software, each checked against the pinned release. This test holds the record
 * to the tree: every interface the tree actually uses (computed from the files, not listed
 * by hand) has a row, and every test a row names exists.
 */
import * as fs from "fs";
import * as path from "path";
import { buildSaltMasterConfig, buildSaltMinionConfig } from "../infra/bootstrap/salt-config";

const ROOT = path.resolve(__dirname, "..");
const DOC = path.join(ROOT, "docs", "upstream-conformance.md");
const read = (rel: string) => fs.readFileSync(path.join(ROOT, rel), "utf8");

function filesUnder(dir: string, ext: RegExp): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
    const rel = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(rel, ext));
    else if (ext.test(entry.name)) out.push(rel);
  }
  return out.sort();
}

/** The table rows of the record (header and separator rows excluded). */
function tableRows(): string[] {
  return fs
    .readFileSync(DOC, "utf8")
    .split("\n")
    .filter((line) => line.startsWith("|") && !/^\|\s*-/.test(line) && !/^\|\s*interface/.test(line));
}

/** Backticked text in the record's rows: `file.managed`, `ExecStart=`, `--ephemeral`, `user: root`... */
function recorded(): Set<string> {
  const spans = new Set<string>();
  for (const row of tableRows()) for (const m of row.matchAll(/`([^`]+)`/g)) spans.add(m[1]);
  return spans;
}

/** True if some backticked span names the interface: exactly, or as `name=`, `name:`, `name value`, `name(`. */
function covers(spans: Set<string>, name: string): boolean {
  for (const span of spans) {
    if (span === name) return true;
    if (span.startsWith(name) && /^[=:\s(,[]/.test(span.slice(name.length))) return true;
    // A list in one span: `ExecStartPre=+`, `After=`, `Wants=` or `file.managed`/`file.directory`.
    if (span.split(/[\s,/]+/).some((part) => part === name || part === `${name}=` || part === `${name}:`)) return true;
  }
  return false;
}

const slsFiles = filesUnder("salt", /\.sls$/);

/** Every Salt state function the tree declares (`  module.function:` at a state's top level). */
function saltStateFunctions(): string[] {
  const found = new Set<string>();
  for (const file of slsFiles) {
    for (const m of read(file).matchAll(/^ {2}([a-z_]+\.[a-z_]+):\s*$/gm)) found.add(m[1]);
  }
  return [...found].sort();
}

/** Every systemd directive in a unit or drop-in the tree or the program writes. */
function systemdDirectives(): string[] {
  const found = new Set<string>();
  const texts = slsFiles.map(read);
  texts.push(read("infra/bootstrap/salt-config.ts"));
  for (const text of texts) {
    for (const m of text.matchAll(/^\s*(?:"|')?([A-Z][a-z]+(?:[A-Z][a-z]*)+|User|Group|Type|Description|Requires|After|Wants|Restart)=/gm)) found.add(m[1]);
  }
  return [...found].sort();
}

const interfaceSets = {
  "Salt state functions (salt/**/*.sls)": saltStateFunctions,
  "Salt master options (buildSaltMasterConfig)": () => Object.keys(buildSaltMasterConfig({ masterMinionId: "production-salt-master" })).sort(),
  "Salt minion options (buildSaltMinionConfig)": () =>
    Object.keys(buildSaltMinionConfig({ masterAddress: "10.0.0.5", minionId: "production-default-r1", masterFingerprint: "00" })).sort(),
  "cloud-config keys (cloud-init/*.yaml and the builder)": () => {
    const keys = new Set<string>(["bootcmd", "write_files", "runcmd", "packages"]);
    for (const file of filesUnder("cloud-init", /\.yaml$/).filter((f) => !f.endsWith("pins.yaml"))) {
      for (const m of read(file).matchAll(/^([a-z_]+):/gm)) keys.add(m[1]);
    }
    return [...keys].sort();
  },
  "write_files fields": () => ["path", "owner", "permissions", "defer", "content"].map((field) => `write_files[].${field}`),
  "systemd directives (units and drop-ins)": systemdDirectives,
  "buildkite-agent.cfg keys": () => [...read("salt/buildkite/files/buildkite-agent.cfg.jinja").matchAll(/^([a-z-]+)=/gm)].map((m) => m[1]).sort(),
  "config.sh flags (salt/github_runner)": () => {
    const flags = new Set<string>();
    for (const file of filesUnder("salt/github_runner", /\.(sls|yaml|py)$/)) for (const m of read(file).matchAll(/(?<![\w-])(--[a-z][a-z-]+)/g)) flags.add(m[1]);
    return [...flags].filter((f) => read("salt/github_runner/register.sls").includes(f)).sort();
  },
};

describe("docs/upstream-conformance.md covers every interface the tree uses", () => {
  let spans: Set<string>;
  beforeAll(() => {
    spans = recorded();
  });

  test.each(Object.entries(interfaceSets))("%s", (_what, compute) => {
    const names = compute();
    expect(names.length).toBeGreaterThan(0);
    expect(names.filter((name) => !covers(spans, name))).toEqual([]);
  });

  test("every test a row names exists", () => {
    const testFiles = filesUnder("test", /\.(ts|py)$/);
    const named = new Set<string>();
    for (const row of tableRows()) {
      for (const m of row.matchAll(/(?<![\w/.-])(test\/[\w./-]+?\.(?:ts|py)|[\w-]+\.test\.ts)(?![\w.])/g)) named.add(m[1]);
    }
    expect(named.size).toBeGreaterThan(10);
    const exists = (name: string) => (name.startsWith("test/") ? testFiles.includes(name) : testFiles.some((f) => f.endsWith(`/${name}`)));
    expect([...named].filter((name) => !exists(name)).sort()).toEqual([]);
  });
});
