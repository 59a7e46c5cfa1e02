import { JobSecretsError } from "./errors";

/**
 * Naming rules of the queue namespace (docs/contracts.md):
 * `/ci-fleet/<stack>/<queue>/{global,<repo-slug>,<pipeline-slug>}/env/<NAME>`.
 */

/** Characters SSM allows in one path component (it also allows `/`, which separates them). */
const SSM_COMPONENT = /^[A-Za-z0-9_.-]+$/;

/**
 * The repository's level name: host (with `-port` when a port is given), then the path,
 * with `/` and `~` turned into `_`. User names and passwords are never part of it.
 *
 *   git@github.com:a/b.git        -> github.com_a_b.git
 *   ssh://git@host:7999/a/b.git   -> host-7999_a_b.git
 *   https://github.com/a/b.git    -> github.com_a_b.git
 */
export function repoSlug(repo: string): string {
  const { host, port, path } = parseRepoUrl(repo);
  const hostPart = port === undefined ? host : `${host}-${port}`;
  const pathPart = path.replace(/^\/+/, "").replace(/\/+$/, "");
  if (pathPart === "") {
    throw new JobSecretsError(`BUILDKITE_REPO has no repository path: ${describeRepo(repo)}`);
  }
  const slug = `${hostPart}/${pathPart}`.replace(/[/~]/g, "_");
  if (!SSM_COMPONENT.test(slug)) {
    throw new JobSecretsError(
      `BUILDKITE_REPO ${describeRepo(repo)} gives the level name "${slug}", which is not a valid SSM ` +
        "path component (letters, digits, '_', '.', '-' only)",
    );
  }
  return slug;
}

interface RepoLocation {
  host: string;
  port?: string;
  path: string;
  /** True when git reaches the repository over SSH (deploy keys matter). */
  overSsh: boolean;
}

const URL_FORM = /^([a-z][a-z0-9+.-]*):\/\/(?:[^@/]*@)?(\[[^\]]+\]|[^:/]+)(?::(\d+))?(\/.*)?$/i;
// scp-like syntax: [user@]host:path, where host has no '/' (git's own rule).
const SCP_FORM = /^(?:[^@/:]+@)?([^:/]+):(?!\/\/)(.+)$/;

export function parseRepoUrl(repo: string): RepoLocation {
  const url = URL_FORM.exec(repo);
  if (url) {
    const scheme = url[1].toLowerCase();
    if (!["ssh", "git+ssh", "ssh+git", "https", "http", "git"].includes(scheme)) {
      throw new JobSecretsError(`BUILDKITE_REPO uses the unsupported scheme "${scheme}://"`);
    }
    if (/[?#]/.test(url[4] ?? "")) {
      throw new JobSecretsError(`BUILDKITE_REPO ${describeRepo(repo)} has a query or fragment`);
    }
    const port = url[3];
    return {
      host: url[2].toLowerCase(),
      port: port === undefined ? undefined : String(Number(port)),
      path: url[4] ?? "",
      overSsh: scheme.includes("ssh"),
    };
  }
  const scp = SCP_FORM.exec(repo);
  if (scp) {
    return { host: scp[1].toLowerCase(), path: scp[2], overSsh: true };
  }
  throw new JobSecretsError(`BUILDKITE_REPO ${describeRepo(repo)} is neither a URL nor user@host:path`);
}

/** The repository for messages: never with a password (https://user:token@host/...). */
export function describeRepo(repo: string): string {
  return JSON.stringify(repo.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^@/]*@/i, "$1"));
}

/**
 * The environment variable a parameter `.../env/<name>` becomes: the last path
 * component, upper-cased, `-` -> `_`. It must then be a shell identifier, and not one
 * that the shell, the loader or the agent and these hooks rely on.
 */
export function envNameFor(parameterName: string): string {
  const last = parameterName.slice(parameterName.lastIndexOf("/") + 1);
  const name = last.toUpperCase().replace(/-/g, "_");
  if (!/^[A-Z_][A-Z0-9_]*$/.test(name)) {
    throw new JobSecretsError(
      `parameter ${parameterName} gives the variable name "${name}", which is not a shell identifier ` +
        "(letters, digits, '-' or '_', not starting with a digit)",
    );
  }
  const reserved = RESERVED_ENV_NAMES.find((rule) => (rule.endsWith("*") ? name.startsWith(rule.slice(0, -1)) : name === rule));
  if (reserved !== undefined) {
    throw new JobSecretsError(
      `parameter ${parameterName} would set ${name}, which is reserved (${reserved}): pick another name`,
    );
  }
  return name;
}

/**
 * Names a secret may not set: ones that change how bash, the dynamic loader, git's
 * transport or the agent behave, and the ones these hooks manage themselves.
 */
export const RESERVED_ENV_NAMES: readonly string[] = [
  "BUILDKITE*",
  "CI_FLEET_*",
  "AWS_*",
  "SSH_AUTH_SOCK",
  "SSH_AGENT_PID",
  "GIT_SSH",
  "GIT_SSH_COMMAND",
  "PATH",
  "HOME",
  "IFS",
  "ENV",
  "BASH_ENV",
  "BASH_FUNC_*",
  "SHELLOPTS",
  "BASHOPTS",
  "PS4",
  "PROMPT_COMMAND",
  "LD_*",
  "NODE_OPTIONS",
];

/** Level names that already mean something under the queue prefix. */
const RESERVED_LEVEL_NAMES = ["global", "buildkite"];

/** The pipeline's level name: Buildkite's slug, checked before it becomes an SSM path. */
export function pipelineLevelName(slug: string): string {
  if (!/^[a-z0-9][a-z0-9-]*$/.test(slug)) {
    throw new JobSecretsError(`BUILDKITE_PIPELINE_SLUG "${slug}" is not a Buildkite pipeline slug`);
  }
  if (RESERVED_LEVEL_NAMES.includes(slug)) {
    throw new JobSecretsError(
      `pipeline slug "${slug}" collides with the queue's "${slug}/" namespace; rename the pipeline`,
    );
  }
  return slug;
}
