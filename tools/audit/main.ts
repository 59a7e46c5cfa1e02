import * as fs from "fs";
import { runAudit } from "./run";
import { findOnPath, httpFetch, runProcess } from "./system";

// `npm run audit -- --stack NAME`: wires the real network, processes and files into runAudit.

runAudit(process.argv.slice(2), {
  env: process.env,
  cwd: process.cwd(),
  // npm runs scripts from the project root; INIT_CWD is where the user typed the command.
  invocationDir: process.env.INIT_CWD ?? process.cwd(),
  now: () => new Date(),
  fetch: httpFetch,
  runProcess,
  findOnPath: (name) => findOnPath(name),
  readFile: (p) => fs.readFileSync(p, "utf8"),
}).then((result) => {
  process.stdout.write(result.stdout);
  process.stderr.write(result.stderr);
  process.exitCode = result.code;
});
