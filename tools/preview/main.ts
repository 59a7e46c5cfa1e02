import * as fs from "fs";
import * as path from "path";
import { FleetConfigError } from "../../infra/config/check";
import { EC2_USER_DATA_LIMIT_BYTES } from "../../infra/bootstrap/cloud-config";
import { checkCapturedResources } from "../../policy/offline";
import { accessMatrixPassed, computeAccessMatrix, renderAccessMatrixMarkdown } from "./access-matrix";
import { machinesPerQueue, PreviewCheck, renderReport, resourceCounts } from "./report";
import { PreviewRun, runPreview } from "./run";
import { MIN_SCANNED_SECRET, SecretScanner } from "./secret-scan";
import { readStackInput, StackFileError } from "./stack-files";

/**
 * `npm start [-- --stack NAME] [--config FILE] [--out DIR]`: the offline preview. Runs the
 * program under Pulumi's mock runtime and writes out/<stack>/{resources.json, report.md,
 * machines/<name>/user-data}. Exit 0: every check passed; 1: a check failed or the config
 * is invalid; 2: bad command line or unreadable stack file.
 */

interface Args {
  stack: string;
  configFile?: string;
  outDir: string;
}

const USAGE = "usage: npm start -- [--stack NAME] [--config FILE] [--out DIR]";

class UsageError extends Error {}

export function parseArgs(argv: string[]): Args {
  const args: Args = { stack: "production", outDir: "out" };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined || v.startsWith("--")) throw new UsageError(`${flag} needs a value\n${USAGE}`);
      return v;
    };
    if (flag === "--stack") args.stack = value();
    else if (flag === "--config") args.configFile = value();
    else if (flag === "--out") args.outDir = value();
    else if (flag === "--help" || flag === "-h") throw new UsageError(USAGE);
    else throw new UsageError(`unknown argument ${flag}\n${USAGE}`);
  }
  return args;
}

export interface PreviewOutput {
  run: PreviewRun;
  checks: PreviewCheck[];
  files: Record<string, string>;
  /** The leak scan over every form of every secret of the run: for what is printed, too. */
  scanner: SecretScanner;
}

/** Everything the preview writes, as file path (relative to out/<stack>) -> content. */
export async function buildPreview(root: string, stack: string, configFile?: string): Promise<PreviewOutput> {
  const input = readStackInput(root, stack, configFile);
  const run = await runPreview(input);
  const c = run.config;

  const matrix = await computeAccessMatrix(run.resources, { stack: c.stack, accountId: c.identity.accountId, region: c.identity.region, queues: Object.keys(c.queues).sort() });
  const violations = checkCapturedResources(run.resources, c.stack);
  // Checked on both providers, so a stack can always move to aws by one key.
  const oversized = run.machines.filter((m) => m.gzipBytes > EC2_USER_DATA_LIMIT_BYTES);
  const largest = run.machines.reduce((a, m) => Math.max(a, m.gzipBytes), 0);
  const failedAccess = matrix.checks.filter((k) => !k.ok);
  const checks: PreviewCheck[] = [
    {
      name: "policy pack (policy/)",
      ok: !violations.some((v) => v.enforcement === "mandatory"),
      detail: violations.length ? violations.map((v) => `${v.policy} on ${v.resource}: ${v.message}`).join("; ") : "no violations",
    },
    {
      name: "IAM access matrix",
      ok: accessMatrixPassed(matrix),
      detail: failedAccess.length ? failedAccess.map((k) => `${k.name}: ${k.detail}`).join("; ") : `${matrix.checks.length} checks passed`,
    },
    {
      name: "user-data as EC2 receives it (gzip) within 16 KiB",
      ok: oversized.length === 0,
      detail: oversized.length ? oversized.map((m) => `${m.hostname}: ${m.gzipBytes} bytes`).join("; ") : `largest ${largest} bytes`,
    },
  ];

  const files: Record<string, string> = {};
  const resourcesJson = { stack: run.stack, project: run.project, resources: run.resources };
  files["resources.json"] = JSON.stringify(resourcesJson, null, 2) + "\n";
  for (const m of run.machines) files[`machines/${m.hostname}/user-data`] = m.maskedUserData;

  // The last line of defence: no secret value may appear in anything written or printed.
  // One automaton over every form of every secret, built once; each text is read once.
  const scanner = new SecretScanner(run.secretValues);
  const leakCheck = (leaks: string[]): PreviewCheck => ({
    name: "no secret value in any written file",
    ok: leaks.length === 0,
    detail: leaks.length ? `found in ${leaks.join(", ")}` : `${run.secretValues.size} secret values scanned`,
  });
  const leaking = scanner.leakingFiles(files);
  checks.push(leakCheck(leaking));
  // The access matrix's own headings sit one level below the report's.
  files["report.md"] = renderReport(run, checks, renderAccessMatrixMarkdown(matrix).replace(/^(#+) /gm, "#$1 "));
  if (scanner.leaks(files["report.md"])) leaking.push("report.md");
  leaking.sort();
  checks[checks.length - 1] = leakCheck(leaking);
  // Never write a file that would leak.
  for (const f of leaking) delete files[f];
  return { run, checks, files, scanner };
}

export function findSecretLeaks(files: Record<string, string>, secrets: Iterable<string>): string[] {
  return new SecretScanner(secrets).leakingFiles(files);
}

export function writePreview(outDir: string, stack: string, files: Record<string, string>): string {
  const dir = path.join(outDir, stack);
  fs.rmSync(dir, { recursive: true, force: true });
  for (const [rel, content] of Object.entries(files)) {
    const file = path.join(dir, rel);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, content, { mode: 0o644 });
  }
  return dir;
}

export function summary(out: PreviewOutput, dir: string): string {
  const { run, checks } = out;
  const lines = [`ci-fleet offline preview of stack ${run.stack} (${run.config.provider}) -> ${dir}/`];
  lines.push(`  machines: ${run.machines.length} (${machinesPerQueue(run).map(([k, n]) => `${k}: ${n}`).join(", ")})`);
  lines.push(`  resources: ${run.resources.length}`);
  for (const [type, n] of resourceCounts(run)) lines.push(`    ${String(n).padStart(4)}  ${type}`);
  lines.push(`  missing secrets: ${run.config.missingSecrets.length ? run.config.missingSecrets.join(", ") : "none"}`);
  lines.push("  checks:");
  for (const k of checks) lines.push(`    ${k.ok ? "ok    " : "FAILED"}  ${k.name}${k.ok ? "" : `: ${k.detail}`}`);
  return lines.join("\n");
}

/**
 * The summary as printed: scanned like every written file. Should it carry a secret (the
 * output directory's name could), the leak check fails and every occurrence is masked.
 */
export function printedSummary(out: PreviewOutput, dir: string): string {
  const text = summary(out, dir);
  if (!out.scanner.leaks(text)) return text;
  const i = out.checks.findIndex((k) => k.name === "no secret value in any written file");
  const where = out.checks[i].ok ? [] : [out.checks[i].detail.replace(/^found in /, "")];
  out.checks[i] = { ...out.checks[i], ok: false, detail: `found in ${[...where, "the printed summary"].join(", ")}` };
  return out.scanner.masked(summary(out, dir));
}

/**
 * One clear message for an error that is not a config error (e.g. a builder's input check
 * failing inside an apply): its name and message on one line, never a stack trace or an
 * object dump, and every known secret value replaced by [secret].
 */
export function describeFailure(e: unknown, secrets: Iterable<string> = []): string {
  let text = e instanceof Error ? e.message : typeof e === "string" ? e : "unknown error";
  const problems = (e as { problems?: unknown } | null)?.problems;
  if (Array.isArray(problems) && problems.every((p) => typeof p === "string")) {
    // BootstrapInputError and kin: the list, after what failed.
    text = `${text.split("\n")[0].replace(/:$/, "")}: ${problems.join("; ")}`;
  }
  for (const s of [...secrets].filter((x) => x.length >= MIN_SCANNED_SECRET).sort((a, b) => b.length - a.length)) text = text.split(s).join("[secret]");
  const name = e instanceof Error && e.name && e.name !== "Error" ? `${e.name}: ` : "";
  return `${name}${text.replace(/\s*\n\s*/g, " ").trim()}`;
}

/** Secret values of the stack and overlay, for scrubbing messages only; never printed. */
function knownSecrets(args: Args): string[] {
  try {
    return readStackInput(process.cwd(), args.stack, args.configFile).secretValues;
  } catch {
    return [];
  }
}

async function main(): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  // The mock runtime rejects promises of its own when an apply throws: report those in one
  // line too, instead of node's dump of the rejected object.
  process.on("unhandledRejection", (e) => {
    process.stderr.write(`ci-fleet preview: failed: ${describeFailure(e, knownSecrets(args))}\n`);
    process.exit(1);
  });
  try {
    const out = await buildPreview(process.cwd(), args.stack, args.configFile);
    const text = printedSummary(out, path.join(args.outDir, args.stack));
    writePreview(args.outDir, args.stack, out.files);
    process.stdout.write(text + "\n");
    return out.checks.every((k) => k.ok) ? 0 : 1;
  } catch (e) {
    if (e instanceof FleetConfigError) {
      process.stderr.write(`${e.message}\n`);
      return 1;
    }
    if (e instanceof StackFileError) {
      process.stderr.write(`ci-fleet: ${e.message}\n`);
      return 2;
    }
    process.stderr.write(`ci-fleet preview: failed: ${describeFailure(e, knownSecrets(args))}\n`);
    return 1;
  }
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`ci-fleet preview: internal error: ${describeFailure(e)}\n`);
      process.exit(70);
    },
  );
}
