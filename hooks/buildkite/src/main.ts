import * as fs from "fs";
import { awsParameterStore } from "./aws";
import { JobSecretsError, LOG_PREFIX } from "./errors";
import { HOOK_NAMES, runHook, type HookName } from "./hooks";

/**
 * `node ci-fleet-job-secrets.js <hook>`: the hook wrappers run this and evaluate what
 * it writes to file descriptor 3, and only when it exits 0. Stdout is not used for the
 * shell code, so nothing a library prints can ever be evaluated.
 */
const SHELL_FD = 3;

function writeAll(fd: number, text: string): void {
  const bytes = new TextEncoder().encode(text);
  let offset = 0;
  while (offset < bytes.length) {
    try {
      offset += fs.writeSync(fd, bytes, offset);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EAGAIN") throw error;
    }
  }
}

async function main(argv: string[]): Promise<number> {
  const log = (line: string) => process.stderr.write(`${LOG_PREFIX} ${line}\n`);
  const hook = argv[2];
  if (!(HOOK_NAMES as readonly string[]).includes(hook)) {
    log(`usage: ci-fleet-job-secrets.js <${HOOK_NAMES.join("|")}>`);
    return 2;
  }
  try {
    const shell = await runHook(hook as HookName, {
      env: process.env,
      store: () => awsParameterStore(process.env.AWS_REGION),
      log,
    });
    writeAll(SHELL_FD, shell);
    return 0;
  } catch (error) {
    // Our own errors are written for the pipeline owner; others are bugs, shown without stack noise.
    log(error instanceof JobSecretsError ? error.message : `unexpected failure: ${(error as Error)?.name}: ${(error as Error)?.message}`);
    log(`the ${hook} hook failed, so the job stops; see docs/job-secrets.md`);
    return 1;
  }
}

void main(process.argv).then((code) => {
  process.exitCode = code;
});
