import { execFile } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { HttpFetch, RunProcess } from "./sources";

// The real network, processes and PATH lookup behind the injected interfaces.

export const runProcess: RunProcess = (file, args, options) =>
  new Promise((resolve, reject) => {
    execFile(file, args, { cwd: options?.cwd, maxBuffer: 256 * 1024 * 1024, encoding: "utf8" }, (error, stdout, stderr) => {
      if (error && (error as NodeJS.ErrnoException).code === "ENOENT") return reject(error);
      const code = error ? (typeof error.code === "number" ? error.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });

export const httpFetch: HttpFetch = async (url, init) => {
  const response = await fetch(url, { headers: init.headers, signal: AbortSignal.timeout(30_000) });
  return { status: response.status, text: () => response.text() };
};

export function findOnPath(name: string, pathVariable = process.env.PATH ?? ""): string | undefined {
  for (const dir of pathVariable.split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}
