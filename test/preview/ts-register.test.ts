import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ROOT } from "../support/preview";

/**
 * npm start's TypeScript loader (tools/preview/ts-register.js): each source compiled once and
 * kept, keyed by its content and the compiler setup; never a stale file for another setup.
 * The probe lives in a temporary directory, never in the shared tree.
 */

/** This process's environment without ts-node's own options (each test sets the ones it means). */
const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("TS_NODE_")));

function setup() {
  const cache = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-ts-cache-"));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-ts-probe-"));
  const probe = path.join(dir, "probe.ts");
  // Imports a file of the tree (cached beside the probe); `arrow` shows how it was compiled.
  fs.writeFileSync(
    probe,
    `import { PHASES_PREFIX } from ${JSON.stringify(path.join(ROOT, "tools", "preview", "phases"))};\n` +
      "export const seen: string = PHASES_PREFIX;\nexport const arrow: string = ((x: number) => x + 1).toString();\n",
  );
  const load = (env: Record<string, string> = {}) =>
    JSON.parse(
      execFileSync(
        process.execPath,
        ["-r", "./tools/preview/ts-register.js", "-e", `const m = require(${JSON.stringify(probe)}); console.log(JSON.stringify({ seen: m.seen, arrow: m.arrow, compiler: Object.keys(require.cache).some((k) => k.includes("/node_modules/ts-node/")) }))`],
        { cwd: ROOT, env: { ...baseEnv, CI_FLEET_TS_CACHE: cache, ...env }, encoding: "utf8" },
      ),
    ) as { seen: string; arrow: string; compiler: boolean };
  const cleanup = () => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(cache, { recursive: true, force: true });
  };
  return { cache, probe, load, cleanup };
}

describe("npm start's TypeScript loader (tools/preview/ts-register.js)", () => {
  const ES2022 = "(x) => x + 1";
  const ES5 = expect.stringMatching(/^function \(x\) \{\s*return x \+ 1;\s*\}$/);

  test("compiles each source once: an unchanged tree loads without the compiler (ts-node), a changed file is compiled again", () => {
    const { cache, probe, load, cleanup } = setup();
    try {
      expect(load()).toEqual({ seen: "ci-fleet-phases ", arrow: ES2022, compiler: true });
      expect(load()).toEqual({ seen: "ci-fleet-phases ", arrow: ES2022, compiler: false });
      fs.appendFileSync(probe, "export const changed = 1;\n");
      expect(load()).toEqual({ seen: "ci-fleet-phases ", arrow: ES2022, compiler: true });
      expect(load()).toEqual({ seen: "ci-fleet-phases ", arrow: ES2022, compiler: false });
      // One entry per source file (the probe and phases.ts), whatever the versions it had.
      expect(fs.readdirSync(cache).sort()).toHaveLength(2);
    } finally {
      cleanup();
    }
  }, 120_000);

  test("with ts-node options in the environment (TS_NODE_*), nothing is read from or written to the cache", () => {
    const { cache, load, cleanup } = setup();
    const es5 = { TS_NODE_COMPILER_OPTIONS: JSON.stringify({ target: "ES5" }) };
    try {
      expect(load()).toEqual({ seen: "ci-fleet-phases ", arrow: ES2022, compiler: true });
      const entries = () => Object.fromEntries(fs.readdirSync(cache).map((f) => [f, fs.readFileSync(path.join(cache, f), "utf8")]));
      const before = entries();
      // The options change the JavaScript: the cached ES2022 file must not be served for them.
      expect(load(es5)).toEqual({ seen: "ci-fleet-phases ", arrow: ES5, compiler: true });
      expect(load(es5)).toEqual({ seen: "ci-fleet-phases ", arrow: ES5, compiler: true });
      expect(load({ TS_NODE_PROJECT: path.join(ROOT, "tsconfig.json") })).toMatchObject({ arrow: ES2022, compiler: true });
      // ... nor their JavaScript kept for a run without them.
      expect(entries()).toEqual(before);
      expect(load()).toEqual({ seen: "ci-fleet-phases ", arrow: ES2022, compiler: false });
    } finally {
      cleanup();
    }
  }, 120_000);
});
