"use strict";
/**
 * Loaded by tools/preview/ts-register.js (so by `npm start` and `npm run bench`, not by jest):
 * two modules of @pulumi/pulumi that the offline preview never calls are loaded on first use
 * instead of at start.
 *
 * `require("@pulumi/pulumi")` loads runtime/index.js, which loads the closure serializer
 * (runtime/closure/serializeClosure.js: the TypeScript compiler, ~0.5 s) and its code-path
 * finder (runtime/closure/codePaths.js: npm's @npmcli/arborist with pacote, sigstore, ...,
 * ~0.6 s), only to copy four functions onto `pulumi.runtime` (serializeFunction,
 * serializeFunctionAsync, computeCodePaths; dynamic providers and function serialization
 * use them). Nothing in the preview does; that was over a second of every `npm start`.
 *
 * Each module's place in require.cache is taken by a stand-in whose exports are the same
 * functions by name, each of which loads the real module (once) and calls it: whoever calls
 * one gets exactly what the SDK does. Only on the pinned @pulumi/pulumi (package.json) and only
 * when the module's source exports exactly those functions (checked on its text, without
 * running it); otherwise nothing changes and the modules load as before.
 */
const Module = require("module");
const fs = require("fs");
const path = require("path");

/** Module (relative to @pulumi/pulumi) -> the functions it exports, on the pinned SDK. */
const LAZY_MODULES = {
  "runtime/closure/serializeClosure.js": ["serializeFunction", "serializeFunctionAsync"],
  "runtime/closure/codePaths.js": ["computeCodePaths", "findWorkspaceRoot"],
};

/** The names a CommonJS module's source exports as `exports.name = name;` of a function declared in it; undefined if it exports anything else. */
function exportedFunctions(source) {
  if (/\bmodule\.exports\b/.test(source) || /\b__export\(/.test(source)) return undefined;
  const names = [];
  for (const m of source.matchAll(/^(\s*)exports\.(\w+)\s*=\s*([^;\n]*);?\s*$/gm)) {
    if (m[1] !== "" || m[2] !== m[3] || !new RegExp(`^(async )?function\\*? ${m[2]}\\(`, "m").test(source)) return undefined;
    names.push(m[2]);
  }
  // Any other assignment to exports (defineProperty of __esModule aside) is not understood.
  const others = source.match(/^\S.*\bexports\[|^Object\.defineProperty\(exports, "(?!__esModule")/gm);
  return others ? undefined : names.sort();
}

function pinnedAndInstalled(root) {
  try {
    const pinned = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")).dependencies["@pulumi/pulumi"];
    const pkg = require.resolve("@pulumi/pulumi/package.json", { paths: [root] });
    return { pinned, installed: JSON.parse(fs.readFileSync(pkg, "utf8")).version, dir: path.dirname(pkg) };
  } catch {
    return undefined;
  }
}

/** Installs the stand-ins; returns the files they stand for (none when the SDK is not the pinned one or a module is not as expected). */
function install(root) {
  const sdk = pinnedAndInstalled(root);
  if (!sdk || sdk.pinned !== sdk.installed) return [];
  const plan = [];
  for (const [rel, names] of Object.entries(LAZY_MODULES)) {
    const filename = path.join(sdk.dir, rel);
    let source;
    try {
      source = fs.readFileSync(filename, "utf8");
    } catch {
      return [];
    }
    const found = exportedFunctions(source);
    if (!found || found.join(",") !== [...names].sort().join(",")) return [];
    if (require.cache[filename]) return [];
    plan.push({ filename, names });
  }
  for (const { filename, names } of plan) {
    const paths = Module._nodeModulePaths(path.dirname(filename));
    const standIn = new Module(filename, null);
    standIn.filename = filename;
    standIn.paths = paths;
    standIn.loaded = true;
    let real;
    const load = () => {
      if (!real) {
        const m = new Module(filename, null);
        m.filename = filename;
        m.paths = paths;
        m.load(filename);
        real = m.exports;
      }
      return real;
    };
    Object.defineProperty(standIn.exports, "__esModule", { value: true });
    for (const name of names) {
      standIn.exports[name] = {
        [name](...args) {
          return load()[name].apply(this, args);
        },
      }[name];
    }
    require.cache[filename] = standIn;
  }
  return plan.map((p) => p.filename);
}

module.exports = { install, exportedFunctions, LAZY_MODULES };
