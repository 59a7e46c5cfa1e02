import { AuditError, History, Operation } from "./model";
import { parseCliHistory, parseCloudPage, parseSavedHistory } from "./parse-history";

/**
 * Where the history comes from. Network and processes are injected, so tests run
 * recorded data through exactly the code that talks to the real backends.
 */

export interface HttpResponse {
  status: number;
  text(): Promise<string>;
}
export type HttpFetch = (url: string, init: { headers: Record<string, string> }) => Promise<HttpResponse>;

export interface ProcessResult {
  /** null when killed by a signal. */
  code: number | null;
  stdout: string;
  stderr: string;
}
/** Runs a program without a shell; rejects with `code: "ENOENT"` when it is not installed. */
export type RunProcess = (file: string, args: string[], options?: { cwd?: string }) => Promise<ProcessResult>;

export interface SourceDeps {
  env: Record<string, string | undefined>;
  fetch: HttpFetch;
  runProcess: RunProcess;
  /** Absolute path of an executable on PATH, or undefined. */
  findOnPath: (name: string) => string | undefined;
  readFile: (path: string) => string;
}

export interface SourceChoice {
  stack: string;
  project: string;
  /** Absolute path of a saved history file. */
  from?: string;
  /** The path as the user typed it, for messages. */
  fromLabel?: string;
  source?: "cli" | "cloud";
  org?: string;
}

export const DEFAULT_CLOUD_URL = "https://api.pulumi.com";
const CLOUD_PAGE_SIZE = 100;
const CLI_PAGE_SIZE = 100;
// A stack with more than 100 000 operations is not a stack this tool was tested on.
const MAX_PAGES = 1000;

function parseJson(text: string, label: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    // V8's message quotes the input, which may hold anything: say only that it failed.
    throw new AuditError(`malformed history in ${label}: not valid JSON`);
  }
}

export function loadFromFile(path: string, deps: Pick<SourceDeps, "readFile">, label = path): History {
  let text: string;
  try {
    text = deps.readFile(path);
  } catch (e) {
    throw new AuditError(`cannot read ${label}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const { shape, operations } = parseSavedHistory(parseJson(text, label), label);
  return { source: "file", sourceDetail: `${label} (${shape === "cli" ? "pulumi stack history --json" : "Pulumi Cloud API"} shape)`, operations };
}

function firstLine(text: string): string {
  return (
    text
      .split("\n")
      .map((l) => l.trim())
      .find((l) => l !== "" && !/^warning:/i.test(l)) ?? ""
  );
}

/**
 * `pulumi stack history --json --show-secrets=false -s STACK`, paged with `--page-size`/`--page`
 * so a long history is not cut at the CLI's default page; a CLI without those flags is asked once
 * without them.
 */
export async function loadFromCli(choice: SourceChoice, deps: SourceDeps): Promise<History> {
  const base = ["stack", "history", "--json", "--show-secrets=false", "-s", choice.stack];
  const run = async (args: string[]): Promise<ProcessResult> => {
    try {
      return await deps.runProcess("pulumi", args);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new AuditError("the pulumi CLI is not on PATH");
      throw new AuditError(`cannot run pulumi: ${(e as Error).message}`);
    }
  };
  const label = `pulumi stack history -s ${choice.stack}`;
  const operations: Operation[] = [];
  const seen = new Set<string>();
  for (let page = 1; page <= MAX_PAGES; page++) {
    let result = await run([...base, "--page-size", String(CLI_PAGE_SIZE), "--page", String(page)]);
    let paged = true;
    if (result.code !== 0 && /unknown flag: --page/.test(result.stderr)) {
      result = await run(base);
      paged = false;
    }
    if (result.code !== 0) {
      throw new AuditError(`${label} failed: ${firstLine(result.stderr) || `exit code ${result.code}`}`);
    }
    const pageOps = parseCliHistory(parseJson(result.stdout, label), label);
    const fresh = pageOps.filter((op) => {
      const id = `${op.version}|${op.kind}|${op.startTime.getTime()}`;
      if (seen.has(id)) return false;
      seen.add(id);
      return true;
    });
    operations.push(...fresh);
    // Stop on a short page, or when the CLI ignored paging and repeated itself.
    if (!paged || pageOps.length < CLI_PAGE_SIZE || fresh.length === 0) break;
  }
  return { source: "cli", sourceDetail: "pulumi stack history", operations };
}

export function cloudBaseUrl(env: Record<string, string | undefined>): string {
  const configured = env.PULUMI_BACKEND_URL?.trim();
  if (!configured) return DEFAULT_CLOUD_URL;
  if (!/^https?:\/\//.test(configured)) {
    throw new AuditError(
      `PULUMI_BACKEND_URL is a self-managed backend (${configured.split("?")[0]}), which has no REST API: use --source cli or --from FILE`,
    );
  }
  // app.pulumi.com is the console; the API lives at api.pulumi.com.
  return configured.replace(/\/+$/, "").replace(/^https:\/\/app\.pulumi\.com$/, DEFAULT_CLOUD_URL);
}

/** Pulumi Cloud REST API, every page. The token goes into a header and nowhere else. */
export async function loadFromCloud(choice: SourceChoice, deps: SourceDeps): Promise<History> {
  const token = deps.env.PULUMI_ACCESS_TOKEN;
  if (!token) throw new AuditError("the cloud source needs PULUMI_ACCESS_TOKEN");
  const org = choice.org || deps.env.PULUMI_ORG;
  if (!org) {
    throw new AuditError("the cloud source needs --org ORG or PULUMI_ORG (`pulumi whoami` is not available offline)");
  }
  const base = cloudBaseUrl(deps.env);
  const stackPath = [org, choice.project, choice.stack].map(encodeURIComponent).join("/");
  const operations: Operation[] = [];
  for (let page = 1; page <= MAX_PAGES; page++) {
    const url = `${base}/api/stacks/${stackPath}/updates?output-type=service&pageSize=${CLOUD_PAGE_SIZE}&page=${page}`;
    let response: HttpResponse;
    try {
      response = await deps.fetch(url, {
        headers: { Authorization: `token ${token}`, Accept: "application/vnd.pulumi+8" },
      });
    } catch (e) {
      const inner = (e as { cause?: { code?: string; message?: string } }).cause;
      const cause = inner?.code ?? inner?.message ?? (e as Error).message;
      throw new AuditError(`cannot reach the Pulumi backend at ${base}: ${cause}`);
    }
    if (response.status === 401 || response.status === 403) {
      throw new AuditError(`the Pulumi backend at ${base} refused the access token (HTTP ${response.status}): check PULUMI_ACCESS_TOKEN`);
    }
    if (response.status === 404) {
      throw new AuditError(`stack ${org}/${choice.project}/${choice.stack} not found at ${base} (HTTP 404): check --org, --project and --stack`);
    }
    if (response.status < 200 || response.status > 299) {
      throw new AuditError(`the Pulumi backend at ${base} answered HTTP ${response.status} for page ${page} of the update history`);
    }
    const label = `the Pulumi Cloud response (page ${page})`;
    const parsed = parseCloudPage(parseJson(await response.text(), label), label);
    operations.push(...parsed.operations);
    const pageSize = parsed.itemsPerPage ?? CLOUD_PAGE_SIZE;
    const done =
      parsed.operations.length === 0 ||
      parsed.operations.length < pageSize ||
      (parsed.total !== undefined && operations.length >= parsed.total);
    if (done) break;
  }
  return { source: "cloud", sourceDetail: `Pulumi Cloud ${base}, org ${org}`, operations };
}

/** `--from` wins, then `--source`, else a token means the cloud and a CLI on PATH means the CLI. */
export async function loadHistory(choice: SourceChoice, deps: SourceDeps): Promise<History> {
  if (choice.from) return loadFromFile(choice.from, deps, choice.fromLabel);
  if (choice.source === "cloud") return loadFromCloud(choice, deps);
  if (choice.source === "cli") return loadFromCli(choice, deps);
  if (deps.env.PULUMI_ACCESS_TOKEN) return loadFromCloud(choice, deps);
  if (deps.findOnPath("pulumi")) return loadFromCli(choice, deps);
  throw new AuditError(
    "no history source: pass --from FILE (saved JSON), set PULUMI_ACCESS_TOKEN and --org for Pulumi Cloud, or put the pulumi CLI on PATH",
  );
}
