"use strict";
/**
 * `node -r ./tools/preview/ts-register.js`: loads the project's TypeScript for `npm start`
 * and `npm run bench` as `-r ts-node/register/transpile-only` does (the same ts-node, the
 * same tsconfig, the same JavaScript), but keeps each file's JavaScript on disk, keyed by
 * the file's content, so a run whose sources did not change never loads the TypeScript
 * compiler. Transpiling every file anew was a second or more of each `npm start`.
 *
 * Cache: node_modules/.cache/ci-fleet-ts/<hash of the path>.js (CI_FLEET_TS_CACHE: another
 * directory), one entry per source file,
 * whose first line names the source's hash and the compiler setup (ts-node and TypeScript
 * versions, tsconfig.json); any change there recompiles. Written atomically (a temporary
 * file renamed), so concurrent runs never read half a file. If the cache cannot be written,
 * files are compiled as before. Stack traces still point into the TypeScript sources
 * (the JavaScript carries ts-node's inline source map).
 *
 * ts-node also takes options from TS_NODE_* environment variables (ts-node 10.9.2
 * dist/index.js: TS_NODE_COMPILER_OPTIONS, TS_NODE_PROJECT, TS_NODE_COMPILER, ...), some of
 * which change the JavaScript, one (TS_NODE_PROJECT) through a file the key does not hash.
 * With any of them set the cache is neither read nor written: every file is compiled, as
 * `-r ts-node/register/transpile-only` would.
 */
const crypto = require("crypto");
const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "../..");
const cacheDir = process.env.CI_FLEET_TS_CACHE || path.join(root, "node_modules", ".cache", "ci-fleet-ts");
const LOADER_VERSION = "1";
const useCache = !Object.keys(process.env).some((k) => k.startsWith("TS_NODE_"));

const sha = (text) => crypto.createHash("sha256").update(text).digest("hex");
const read = (file) => {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return "";
  }
};
const versionOf = (pkg) => {
  try {
    return JSON.parse(read(require.resolve(`${pkg}/package.json`, { paths: [root] }))).version;
  } catch {
    return "?";
  }
};
const setup = sha([LOADER_VERSION, process.version, versionOf("ts-node"), versionOf("typescript"), read(path.join(root, "tsconfig.json"))].join("\0"));

let service;
function compile(code, filename) {
  if (!service) service = require("ts-node").create({ transpileOnly: true, cwd: root });
  return service.compile(code, filename);
}

// Two modules of @pulumi/pulumi the preview never calls load on first use (tools/preview/lazy-sdk.js).
require("./lazy-sdk").install(root);

/** JavaScript of each file loaded, for mapping stack traces. */
const outputs = new Map();
require("@cspotcode/source-map-support").install({
  environment: "node",
  hookRequire: false,
  retrieveFile: (file) => outputs.get(file),
});

require.extensions[".ts"] = function loadTypeScript(module, filename) {
  const code = fs.readFileSync(filename, "utf8");
  let js;
  if (!useCache || filename.split(path.sep).includes("node_modules")) {
    js = compile(code, filename);
  } else {
    const header = `// ci-fleet-ts ${sha(code)} ${setup}\n`;
    const entry = path.join(cacheDir, `${sha(filename)}.js`);
    const cached = read(entry);
    if (cached.startsWith(header)) {
      js = cached.slice(header.length);
    } else {
      js = compile(code, filename);
      try {
        fs.mkdirSync(cacheDir, { recursive: true });
        const tmp = `${entry}.${process.pid}.tmp`;
        fs.writeFileSync(tmp, header + js);
        fs.renameSync(tmp, entry);
      } catch {
        // No cache: compiled each run, as before.
      }
    }
  }
  outputs.set(filename, js);
  module._compile(js, filename);
};
