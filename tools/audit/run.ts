import * as path from "path";
import { parseArgs, USAGE } from "./args";
import { AuditError } from "./model";
import { renderHuman, renderJson } from "./render";
import { readSecretHistory, SecretHistory } from "./secret-history";
import { loadHistory, SourceDeps } from "./sources";
import { applyFilters, buildTimeline, parseKinds, parseSince } from "./timeline";

export interface AuditDeps extends SourceDeps {
  /** Project directory: where Pulumi.<stack>.yaml lives. */
  cwd: string;
  /** Where relative --from/--stack-file paths are resolved (npm's INIT_CWD). */
  invocationDir: string;
  now: () => Date;
}

export interface AuditResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The whole command, with every side effect injected. */
export async function runAudit(argv: string[], deps: AuditDeps): Promise<AuditResult> {
  try {
    const args = parseArgs(argv);
    if (args.help) return { code: 0, stdout: USAGE, stderr: "" };
    if (!args.stack) throw new AuditError("--stack NAME is required (see --help)");
    const filters = {
      since: args.since !== undefined ? parseSince(args.since, deps.now()) : undefined,
      user: args.user?.toLowerCase(),
      kinds: parseKinds(args.kinds),
    };
    const from = args.from ? path.resolve(deps.invocationDir, args.from) : undefined;
    const history = await loadHistory(
      { stack: args.stack, project: args.project, from, fromLabel: args.from, source: args.source, org: args.org },
      deps,
    );
    if (history.operations.length === 0) {
      throw new AuditError(`stack ${args.project}/${args.stack} has no recorded operations (source: ${history.sourceDetail})`);
    }
    const stackFile = args.stackFile
      ? path.resolve(deps.invocationDir, args.stackFile)
      : path.join(deps.cwd, `Pulumi.${args.stack}.yaml`);
    const secrets: SecretHistory = args.git
      ? await readSecretHistory(stackFile, deps.runProcess)
      : { changes: [], notes: ["--no-git: secret rotations not read"], available: false };
    const timeline = applyFilters(buildTimeline(history.operations, secrets.changes), filters);
    const ctx = {
      project: args.project,
      stack: args.stack,
      sourceDetail: history.sourceDetail,
      stackFileName: path.basename(stackFile),
      secretHistoryAvailable: secrets.available,
      notes: secrets.notes,
      filters,
      totalOperations: history.operations.length,
    };
    return { code: 0, stdout: args.json ? renderJson(timeline, ctx) : renderHuman(timeline, ctx), stderr: "" };
  } catch (e) {
    if (e instanceof AuditError) return { code: 2, stdout: "", stderr: `audit: error: ${e.message}\n` };
    return { code: 1, stdout: "", stderr: `audit: internal error: ${(e as Error).message}\n` };
  }
}
