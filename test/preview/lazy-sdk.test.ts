import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { ROOT } from "../support/preview";

/**
 * npm start's loader (tools/preview/ts-register.js) leaves two modules of @pulumi/pulumi
 * that the preview never calls (the closure serializer, which loads the TypeScript compiler,
 * and its code-path finder, which loads npm's arborist) until first use
 * (tools/preview/lazy-sdk.js): over a second of every start. Whoever calls them gets the SDK's own.
 */

// eslint-disable-next-line @typescript-eslint/no-require-imports
const lazy = require("../../tools/preview/lazy-sdk.js") as {
  exportedFunctions(source: string): string[] | undefined;
  LAZY_MODULES: Record<string, string[]>;
};

const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("TS_NODE_")));
function probe(withLoader: boolean, script: string): Record<string, unknown> {
  const args = [...(withLoader ? ["-r", "./tools/preview/ts-register.js"] : []), "-e", script];
  return JSON.parse(execFileSync(process.execPath, args, { cwd: ROOT, env: baseEnv, encoding: "utf8" }).trim().split("\n").pop()!) as Record<string, unknown>;
}

const LOADED = `Object.keys(require.cache).filter((k) => /node_modules\\/(typescript|@npmcli\\/arborist|pacote)\\//.test(k)).length`;

describe("lazy SDK modules (tools/preview/lazy-sdk.js)", () => {
  test("the pinned SDK's two modules export exactly the functions the stand-ins stand for", () => {
    const sdk = path.dirname(require.resolve("@pulumi/pulumi/package.json", { paths: [ROOT] }));
    for (const [rel, names] of Object.entries(lazy.LAZY_MODULES)) {
      expect(lazy.exportedFunctions(fs.readFileSync(path.join(sdk, rel), "utf8"))).toEqual([...names].sort());
      // The real module, loaded as it is: the same names, every one a function.
      const real = require(path.join(sdk, rel)) as Record<string, unknown>;
      expect(Object.keys(real).sort()).toEqual([...names].sort());
      for (const n of names) expect(typeof real[n]).toBe("function");
    }
  });

  test("a module exporting anything else is not stood in for", () => {
    expect(lazy.exportedFunctions("function f() {}\nexports.f = f;\nexports.limit = 3;\n")).toBeUndefined();
    expect(lazy.exportedFunctions("function f() {}\nmodule.exports = { f };\n")).toBeUndefined();
    expect(lazy.exportedFunctions("function f() {}\nexports.f = f;\n")).toEqual(["f"]);
  });

  test("under npm start's loader @pulumi/pulumi loads without the TypeScript compiler or arborist; calling them loads the SDK's own", () => {
    const script = `
      const pulumi = require("@pulumi/pulumi");
      const before = ${LOADED};
      const codePaths = require("@pulumi/pulumi/runtime/closure/codePaths");
      const root = codePaths.findWorkspaceRoot(process.cwd());
      pulumi.runtime.serializeFunction(function add(x) { return x + 1; }).then((f) => {
        console.log(JSON.stringify({ before, after: ${LOADED} > 0, root, text: f.text.includes("exports.handler") }));
      });`;
    const lazyRun = probe(true, script);
    expect(lazyRun).toMatchObject({ before: 0, after: true, text: true });
    // The same answers as the SDK loaded as it is.
    const eager = probe(false, script);
    expect((eager.before as number) > 0).toBe(true);
    expect(lazyRun.root).toEqual(eager.root);
  }, 60_000);
});
