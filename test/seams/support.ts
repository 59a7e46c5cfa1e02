import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { pillarDocuments, previewStack, ROOT } from "../support/preview";
import type { PreviewRun } from "../../tools/preview/run";

/**
 * The machine models of a stack: the program runs under the mocks (as `npm start` does),
 * its pillar documents and user-data are handed to test/seams/machine_model.py, which
 * renders the Salt tree for every minion (with test/salt/render.py) and describes what
 * ends up on each machine and what runs there.
 */

const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");

export interface FileEntry {
  kind: "file" | "dir" | "symlink";
  owner: string;
  group: string;
  mode: string;
  writer: string;
  content?: string;
  target?: string;
  archive?: string;
}
export interface Need {
  path: string;
  access: "read" | "exec" | "list" | "write";
  as_root?: boolean;
  optional?: boolean;
}
export interface AwsCall {
  api: string;
  via: string;
  ssm_path?: string | null;
  ssm_parameter?: string;
  with_decryption?: boolean;
  dynamodb_table?: string;
  s3_bucket?: string;
}
export interface Credentials {
  config: { path: string | null; how: string };
  kind: "none" | "roles-anywhere" | "credential-process" | "imds";
  files: Need[];
  region?: string | null;
  role_arn?: string;
  profile_arn?: string;
  trust_anchor_arn?: string;
  certificate?: string;
  private_key?: string;
  imds_copy?: string;
  imds?: string;
  /** A job VM: the session the host's launcher (root) mints for this VM alone (job-vm.json aws.command through aws_mint_argv). */
  session_mint?: {
    minted_by?: string; user?: string; argv?: string[]; argv_vm2?: string[]; duration?: string | null; stdout?: boolean;
    session_name?: string | null; helper?: string; helper_owner?: string | null; helper_has_stdout_mode?: boolean;
    timer?: string | null; timer_output?: string | null; config_names_timer_output?: boolean; guest_file?: string;
  };
  /** The root process that writes the file credential_process prints (the session helper; for a job VM, on its host). */
  session_writer?: { source: string; user: string; via?: string | null; role_arn?: string | null; profile_arn?: string | null; trust_anchor_arn?: string | null; certificate?: string | null; private_key?: string | null };
}
export interface Process {
  source: string;
  unit?: string;
  kind: "unit" | "salt-master" | "buildkite-hook" | "github-hook" | "cloud-init" | "job-vm";
  user: string;
  group: string;
  command: string;
  argv: string[];
  argv_resolved?: string[];
  env: Record<string, string>;
  unit_env_keys?: string[];
  unresolved_command_vars?: string[];
  needs: Need[];
  requires_env: { var: string; by: string }[];
  aws_calls: AwsCall[];
  credentials?: Credentials;
  /** The CI agent's main process: every job inherits its environment (and so its AWS config). */
  runs_jobs?: boolean;
  hook?: string;
  config?: Record<string, unknown>;
  config_writers?: Record<string, string>;
  /** Buildkite: how the agent's bootstrap-script changes user for the job (sudo and the rule that allows it). */
  job_drop?: { via: string; user: string; group: string; preserve_env: boolean; env_delete: string[]; rule: { file: string; line: string; exact_args: boolean } | null } | null;
  /** Buildkite agent: the user its jobs (and hooks) run as. */
  job_user?: string;
  /** A job in a job VM: the kind of the representative job input ci-job-guest's job_command was given. */
  job_input?: "github" | "buildkite";
}
/** What a job VM's model is built from (machine_model.py job_vm_guest). */
export interface JobVm {
  host: string;
  /** The launcher's config on the host (its --config) and the `aws` key its load_config returns. */
  config: string;
  launcher: string;
  aws: { region?: string; command?: string[]; refreshSeconds?: number } | null;
  /** The seed the launcher's render_seed gives slot 0's first VM (key=value). */
  seed: Record<string, string>;
  image_build?: string;
  guest_agent?: string;
  /** Why the guest could not be modelled as the contract says (the launcher refuses its config, no aws_files ...). */
  problems: string[];
}
export interface MachineModel {
  id: string;
  role: "salt-master" | "teleport" | "runner" | "job-vm";
  provider: "equinix-metal" | "aws";
  files: Record<string, FileEntry>;
  users: Record<string, { name: string; home: string; groups: string[] }>;
  units: Record<string, { path: string; sections: Record<string, Record<string, string[]>>; dropins: string[] }>;
  processes: Process[];
  states: { id: string; sls: string; function: string; args: Record<string, unknown> }[];
  cloud_init: { write_files: string[]; imds_root_only: boolean; imds_blocked?: boolean };
  /** A job VM: the minion id of the runner host whose slots boot it (`<host>/vm`). */
  host?: string;
  job_vm?: JobVm;
  aws_pillar: { region?: string; role_arn?: string; ssm_prefix?: string; roles_anywhere: { trust_anchor_arn?: string; profile_arn?: string } };
  top_sls: string[];
  /** The subject salt/_runners/ci_fleet_pki.py gives this minion's certificates (or why it refuses). */
  roles_anywhere_subject?: { commonName: string; organizationalUnit: string; organization: string } | { refused: string };
  highstate_problems: string[];
  notes: string[];
}

export interface StackModels {
  stack: string;
  run: PreviewRun;
  machines: Record<string, MachineModel>;
}

const cache = new Map<string, Promise<StackModels>>();

/** The models of a stack; `overlay` (a stack-file-shaped config map, as `--config`) e.g. plants distinct secret values. */
export function stackModels(stack: string, overlay?: Record<string, unknown>): Promise<StackModels> {
  const key = overlay ? `${stack}\n${JSON.stringify(overlay)}` : stack;
  if (!cache.has(key)) cache.set(key, build(stack, overlay));
  return cache.get(key) as Promise<StackModels>;
}

async function build(stack: string, overlay?: Record<string, unknown>): Promise<StackModels> {
  const run = await previewStack(stack, overlay);
  const documents: Record<string, unknown> = pillarDocuments(run);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-seams-"));
  try {
    fs.writeFileSync(path.join(dir, "documents.json"), JSON.stringify(documents), { mode: 0o600 });
    fs.writeFileSync(path.join(dir, "user-data.json"), JSON.stringify(run.userData), { mode: 0o600 });
    const proc = spawnSync(
      python,
      [
        path.join(__dirname, "machine_model.py"),
        "--salt-root", process.env.CI_FLEET_SALT_ROOT ?? path.join(ROOT, "salt"),
        "--documents", path.join(dir, "documents.json"),
        "--user-data", path.join(dir, "user-data.json"),
        "--hooks-src", path.join(ROOT, "hooks/buildkite/src"),
      ],
      { encoding: "utf8", maxBuffer: 256 * 1024 * 1024 },
    );
    if (proc.error) throw new Error(`cannot run ${python}: ${proc.error.message}`);
    if (proc.status !== 0) throw new Error(`machine_model.py exited ${proc.status}:\n${proc.stderr}`);
    const out = JSON.parse(proc.stdout) as { machines: Record<string, MachineModel>; errors: string[] };
    if (out.errors.length > 0) throw new Error(`machine_model.py: ${out.errors.join("\n")}`);
    return { stack, run, machines: out.machines };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// --- Unix permissions -----------------------------------------------------------------------

const PACKAGED = ["/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/", "/usr/local/bin/teleport", "/usr/local/bin/tctl", "/usr/lib/"];

function groupsOf(m: MachineModel, user: string): Set<string> {
  const u = m.users[user];
  return new Set([user, ...(u?.groups ?? [])]);
}

function bits(m: MachineModel, f: FileEntry, user: string): number {
  const mode = parseInt(f.mode, 8);
  if (f.owner === user) return (mode >> 6) & 7;
  if (groupsOf(m, user).has(f.group)) return (mode >> 3) & 7;
  return mode & 7;
}

function parents(p: string): string[] {
  const out: string[] = [];
  let cur = path.posix.dirname(p);
  for (;;) {
    out.unshift(cur);
    if (cur === "/") break;
    cur = path.posix.dirname(cur);
  }
  return out;
}

/** Why `user` cannot get `access` to `p` on this machine, or undefined when it can. */
export function denied(m: MachineModel, user: string, p: string, access: Need["access"], seen = 0): string | undefined {
  const root = user === "root";
  const f0 = m.files[p];
  if (f0?.kind === "symlink" && f0.target && seen < 8) return denied(m, user, f0.target, access, seen + 1);
  for (const d of parents(p)) {
    const dir = m.files[d];
    if (!dir) continue;
    if (!root && (bits(m, dir, user) & 1) === 0) return `${user} cannot enter ${d} (${dir.owner}:${dir.group} ${dir.mode}, by ${dir.writer})`;
  }
  const f = m.files[p];
  if (!f) {
    if (PACKAGED.some((pre) => p.startsWith(pre))) return undefined;
    const archive = Object.entries(m.files).find(([d, e]) => e.archive && p.startsWith(`${d}/`));
    if (archive) return undefined; // inside a verified release archive
    return `${p} is written by no part of the fleet`;
  }
  const b = root ? 7 : bits(m, f, user);
  const why = (need: string) => `${user} cannot ${need} ${p} (${f.owner}:${f.group} ${f.mode}, by ${f.writer})`;
  switch (access) {
    case "read":
      return root || b & 4 ? undefined : why("read");
    case "exec": {
      const anyX = parseInt(f.mode, 8) & 0o111;
      if (!anyX || (!root && (b & 1) === 0)) return why("execute");
      if (!root && f.content?.startsWith("#!") && (b & 4) === 0) return why("read (interpreted script)");
      return undefined;
    }
    case "list":
      return root || (b & 5) === 5 ? undefined : why("list");
    case "write":
      return root || (b & 3) === 3 ? undefined : why("write into");
  }
}

export const STACKS = ["production", "production-aws"] as const;
