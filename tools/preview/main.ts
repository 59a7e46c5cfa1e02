import * as fs from "fs";
import * as path from "path";
import { performance } from "perf_hooks";
import { FleetConfigError } from "../../infra/config/check";
import { EC2_USER_DATA_LIMIT_BYTES } from "../../infra/bootstrap/cloud-config";
import { checkCapturedResources } from "../../policy/offline";
import { accessMatrixPassed, computeAccessMatrix, deployTargetsOf, renderAccessMatrixMarkdown } from "./access-matrix";
import { machinesPerQueue, PreviewCheck, renderReport, resourceCounts, saltRefWarning } from "./report";
import { pinnedTreeLine, pinnedTreeStatus } from "./pinned-tree";
import { blastRadiusCheck, computeBlastRadius, renderBlastRadiusMarkdown } from "./blast-radius";
import { PreviewRun, PreviewRunOptions, runPreview } from "./run";
import { SecretScanner } from "./secret-scan";
import { secretsSeenByMocks } from "./mock-runtime";
import { DrillResult, drillPassed, oversizedUserData, renderDrillMarkdown, replacementDrill } from "./drill";
import { readStackInput, StackFileError } from "./stack-files";
import { phase, reportPhases } from "./phases";

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
  /** The replacement drill (both providers) and how long it took (printed, never written: files stay byte-identical). */
  drill: DrillResult;
  drillMs: number;
  /** report.md for these checks (printedSummary renders it again when the printed text changes the leak verdict). */
  renderReport: (checks: PreviewCheck[]) => string;
}

/** The leak check's name: one verdict for every written file and the printed summary. */
export const LEAK_CHECK = "no secret value in any written file";

/** Secret values of the run in progress (generated ones too), for scrubbing an error that ends it; never printed. */
let runSecrets: Iterable<string> = [];

/** Everything the preview writes, as file path (relative to out/<stack>) -> content. */
export async function buildPreview(root: string, stack: string, configFile?: string, options: PreviewRunOptions = {}): Promise<PreviewOutput> {
  const input = readStackInput(root, stack, configFile);
  runSecrets = input.secretValues;
  const run = await runPreview(input, options);
  runSecrets = run.secretValues;
  const c = run.config;

  const matrix = await computeAccessMatrix(run.resources, { stack: c.stack, accountId: c.identity.accountId, region: c.identity.region, queues: Object.keys(c.queues).sort(), deployTargets: deployTargetsOf(c.queues) });
  phase("access matrix");
  const violations = checkCapturedResources(run.resources, c.stack);
  phase("policy pack");
  // Replacing the control plane touches no runner, and every user-data fits 16 KiB as each
  // provider receives it: checked for both providers (tools/preview/drill.ts), whatever the current one.
  const drillStart = performance.now();
  const drill = await replacementDrill(input, undefined, options);
  const drillMs = performance.now() - drillStart;
  phase("drill");
  const received = (m: PreviewRun["machines"][number]) => (c.provider === "aws" ? m.gzipBytes : m.userDataBytes);
  const oversized = [
    ...run.machines.filter((m) => received(m) > EC2_USER_DATA_LIMIT_BYTES).map((m) => `${c.provider} ${m.hostname}: ${received(m)} bytes`),
    ...oversizedUserData(drill).map((m) => `${m.provider} ${m.hostname} (drill fleet): ${m.bytes} bytes`),
  ];
  const largestOn = (provider: string) => {
    const sizes = provider === c.provider ? run.machines.map((m) => ({ hostname: m.hostname, bytes: received(m) })) : drill.providers.find((p) => p.provider === provider)?.sizes ?? [];
    const top = [...sizes].sort((a, b) => b.bytes - a.bytes)[0];
    return top ? `${provider} ${top.bytes} bytes (${top.hostname})` : `${provider}: not configured`;
  };
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
      name: "user-data as each provider receives it within 16 KiB (equinix-metal: plain, aws: gzip)",
      ok: oversized.length === 0,
      detail: oversized.length ? oversized.join("; ") : `largest: ${drill.providers.map((p) => largestOn(p.provider)).join("; ")}`,
    },
    {
      name: "replacing the Salt master and the Teleport machine changes no runner input (both providers)",
      ok: drillPassed(drill),
      detail: drillPassed(drill)
        ? drill.providers.map((p) => (p.notConfigured ? `${p.provider}: not configured` : `${p.provider}: ${p.runnersCompared.length} runners unchanged`)).join("; ")
        : drill.providers.flatMap((p) => p.problems.map((x) => `${p.provider}: ${x}`)).join("; "),
    },
  ];

  // What root on each machine yields (report.md); an untrusted queue's runner must yield only its queue's path.
  const blast = await computeBlastRadius(run, { saltRoot: path.join(root, "salt") });
  checks.push(blastRadiusCheck(blast));
  phase("blast radius");

  const files: Record<string, string> = {};
  const resourcesJson = { stack: run.stack, project: run.project, resources: run.resources };
  files["resources.json"] = JSON.stringify(resourcesJson, null, 2) + "\n";
  for (const m of run.machines) files[`machines/${m.hostname}/user-data`] = m.maskedUserData;
  phase("files");

  // The last line of defence: no secret value may appear in anything written or printed.
  // One table of anchors of every form of every secret, built once; each text is read once as
  // written and once folded (line breaks and the indentation after them removed).
  const scanner = new SecretScanner(run.secretValues);
  const leakCheck = (leaks: string[]): PreviewCheck => ({
    name: LEAK_CHECK,
    ok: leaks.length === 0,
    detail: leaks.length ? `found in ${leaks.join(", ")}` : `${run.secretValues.size} secret values scanned`,
  });
  const leaking = scanner.leakingFiles(files);
  checks.push(leakCheck(leaking));
  phase("leak scan");
  // The access matrix's own headings sit one level below the report's.
  const matrixMarkdown = renderAccessMatrixMarkdown(matrix).replace(/^(#+) /gm, "#$1 ");
  const drillMarkdown = renderDrillMarkdown(drill, c.provider);
  const blastMarkdown = renderBlastRadiusMarkdown(blast);
  const report = (k: PreviewCheck[]) => renderReport(run, k, matrixMarkdown, drillMarkdown, blastMarkdown);
  files["report.md"] = report(checks);
  if (scanner.leaks(files["report.md"])) leaking.push("report.md");
  leaking.sort();
  checks[checks.length - 1] = leakCheck(leaking);
  // Never write a file that would leak.
  for (const f of leaking) delete files[f];
  phase("report");
  return { run, checks, files, scanner, drill, drillMs, renderReport: report };
}

export function findSecretLeaks(files: Record<string, string>, secrets: Iterable<string>): string[] {
  return new SecretScanner(secrets).leakingFiles(files);
}

/** Files written at once: a fleet's thousand user-data files, one after the other, took a second. */
const WRITE_CONCURRENCY = 16;
/** What a file the preview creates gets: 0644 less the umask. */
const FILE_MODE = 0o644;
/** What a directory the preview creates gets (mkdir's default): 0777 less the umask. */
const DIR_MODE = 0o777;

/**
 * Makes out/<stack> hold exactly `files`, and nothing else. What the previous run wrote is
 * written over in place where it is what this run writes too (a real directory, or a regular
 * file with one link and the mode a new file gets); anything else there (a stale file, a
 * symbolic link, a file with other links or another mode, a directory in a file's place) is
 * removed first, so nothing is followed through it and no other name's content changes; a kept
 * directory gets the mode a fresh run gives it; the
 * files are opened with O_NOFOLLOW besides. Removing the old tree and creating it anew was a
 * second at 1000 runners (two thousand unlinks and rmdirs, a thousand mkdirs).
 */
export async function writePreview(outDir: string, stack: string, files: Record<string, string>): Promise<string> {
  const dir = path.join(outDir, stack);
  const entries = Object.entries(files).map(([rel, content]) => [path.join(dir, rel), content] as const);
  const wantedFiles = new Set(entries.map(([file]) => file));
  const wantedDirs = new Set<string>([dir]);
  for (const [file] of entries) for (let d = path.dirname(file); d.startsWith(dir + path.sep) && !wantedDirs.has(d); d = path.dirname(d)) wantedDirs.add(d);
  const newFileMode = FILE_MODE & ~process.umask();
  const newDirMode = DIR_MODE & ~process.umask();
  const keep = (p: string): boolean => {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch {
      return false;
    }
    if (wantedDirs.has(p) && st.isDirectory()) {
      // Kept, with the mode a fresh run gives it (a directory left 0700 stays no other way).
      if ((st.mode & 0o7777) !== newDirMode) fs.chmodSync(p, newDirMode);
      for (const name of fs.readdirSync(p)) {
        const child = path.join(p, name);
        if (!keep(child)) fs.rmSync(child, { recursive: true, force: true });
      }
      return true;
    }
    return wantedFiles.has(p) && st.isFile() && st.nlink === 1 && (st.mode & 0o7777) === newFileMode;
  };
  if (!keep(dir)) fs.rmSync(dir, { recursive: true, force: true });
  for (const d of [...wantedDirs].sort()) fs.mkdirSync(d, { recursive: true });
  const flags = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW;
  let next = 0;
  const writer = async () => {
    while (next < entries.length) {
      const [file, content] = entries[next++];
      await fs.promises.writeFile(file, content, { mode: FILE_MODE, flag: flags });
    }
  };
  await Promise.all(Array.from({ length: WRITE_CONCURRENCY }, writer));
  return dir;
}

export function summary(out: PreviewOutput, dir: string): string {
  const { run, checks } = out;
  const lines = [`ci-fleet offline preview of stack ${run.stack} (${run.config.provider}) -> ${dir}/`];
  const refWarning = saltRefWarning(run.config);
  if (refWarning) lines.push(`  ${refWarning}`);
  lines.push(`  machines: ${run.machines.length} (${machinesPerQueue(run).map(([k, n]) => `${k}: ${n}`).join(", ")})`);
  lines.push(`  resources: ${run.resources.length}`);
  lines.push(`  replacement drill: ${drillPassed(out.drill) ? "passed" : "FAILED"} (${out.drill.drillRunners} of ${out.drill.fleetRunners} runners, both providers, ${Math.round(out.drillMs)} ms)`);
  for (const [type, n] of resourceCounts(run)) lines.push(`    ${String(n).padStart(4)}  ${type}`);
  lines.push(`  missing secrets: ${run.config.missingSecrets.length ? run.config.missingSecrets.join(", ") : "none"}`);
  lines.push("  checks:");
  for (const k of checks) lines.push(`    ${k.ok ? "ok    " : "FAILED"}  ${k.name}${k.ok ? "" : `: ${k.detail}`}`);
  return lines.join("\n");
}

/**
 * The summary as printed: scanned like every written file. Should it carry a secret (a line
 * added to it could), the leak check fails, every occurrence is masked, and report.md is
 * rendered again with that verdict (or not written, should it leak): the report and the
 * summary never disagree. Call it before writing out.files.
 */
export function printedSummary(out: PreviewOutput, dir: string, more: string[] = []): string {
  const whole = () => [summary(out, dir), ...more].join("\n");
  const text = whole();
  if (!out.scanner.leaks(text)) return text;
  const i = out.checks.findIndex((k) => k.name === LEAK_CHECK);
  const where = out.checks[i].ok ? [] : [out.checks[i].detail.replace(/^found in /, "")];
  out.checks[i] = { ...out.checks[i], ok: false, detail: `found in ${[...where, "the printed summary"].join(", ")}` };
  if ("report.md" in out.files) {
    const report = out.renderReport(out.checks);
    if (out.scanner.leaks(report)) delete out.files["report.md"];
    else out.files["report.md"] = report;
  }
  return out.scanner.masked(whole());
}

/** Refusal of an output path whose name holds a secret (nothing is created: a directory name is printed and logged everywhere). */
export function outputPathProblem(out: PreviewOutput, outDir: string, stack: string): string | undefined {
  const dir = path.join(outDir, stack);
  return out.scanner.leaks(dir) || out.scanner.leaks(path.resolve(dir)) ? "the output directory's path holds a secret value; choose another --out" : undefined;
}

/**
 * One clear message for an error that is not a config error (e.g. a builder's input check
 * failing inside an apply): its name and message on one line, never a stack trace or an
 * object dump, and every form of every known secret value (the leak scan's: plain, base64 at
 * any alignment, JSON-escaped, split by line folds) replaced by [secret].
 */
export function describeFailure(e: unknown, secrets: Iterable<string> | SecretScanner = []): string {
  let text = e instanceof Error ? e.message : typeof e === "string" ? e : "unknown error";
  const problems = (e as { problems?: unknown } | null)?.problems;
  if (Array.isArray(problems) && problems.every((p) => typeof p === "string")) {
    // BootstrapInputError and kin: the list, after what failed.
    text = `${text.split("\n")[0].replace(/:$/, "")}: ${problems.join("; ")}`;
  }
  const scanner = secrets instanceof SecretScanner ? secrets : new SecretScanner(secrets);
  const name = e instanceof Error && e.name && e.name !== "Error" ? `${e.name}: ` : "";
  // Masked before the line breaks go (a secret with breaks) and after (one split by a break).
  return scanner.masked(`${name}${scanner.masked(text).replace(/\s*\n\s*/g, " ").trim()}`);
}

/** Secret values of the stack and overlay, and every one the run has seen so far, for scrubbing messages only; never printed. */
function knownSecrets(args: Args): string[] {
  let stack: string[] = [];
  try {
    stack = readStackInput(process.cwd(), args.stack, args.configFile).secretValues;
  } catch {
    // An unreadable stack file has no secrets to scrub.
  }
  return [...stack, ...runSecrets, ...secretsSeenByMocks()];
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
    phase("startup");
    const out = await buildPreview(process.cwd(), args.stack, args.configFile);
    const saltMaster = out.run.config.saltMaster;
    const pinned = `  ${pinnedTreeLine(pinnedTreeStatus(process.cwd(), saltMaster.ref, Boolean(saltMaster.followBranch)))}`;
    // A path that names a secret is refused before anything is created or printed.
    const refused = outputPathProblem(out, args.outDir, args.stack);
    if (refused) {
      process.stderr.write(`ci-fleet preview: ${refused}\n`);
      return 2;
    }
    // Every printed line goes through the leak scan, the pinned-tree line included; a leak
    // there fails the check in report.md too (printedSummary renders it again).
    const text = printedSummary(out, path.join(args.outDir, args.stack), [pinned]);
    await writePreview(args.outDir, args.stack, out.files);
    process.stdout.write(text + "\n");
    phase("write");
    reportPhases();
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
