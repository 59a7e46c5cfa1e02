import { AuditError } from "./model";

export interface AuditArgs {
  stack?: string;
  from?: string;
  source?: "cli" | "cloud";
  org?: string;
  project: string;
  since?: string;
  user?: string;
  /** Raw `--kind` values (repeatable, comma lists); checked by parseKinds. */
  kinds: string[];
  json: boolean;
  stackFile?: string;
  /** false with --no-git: skip the stack file's git history. */
  git: boolean;
  help: boolean;
}

export const USAGE = `Usage: npm run audit -- --stack NAME [options]

The stack's activity timeline: who ran which operation, when, with what result,
resource changes and config keys changed, and secret rotations (key names only)
from the git history of Pulumi.<stack>.yaml.

Source (the first that applies):
  --from FILE        saved JSON: \`pulumi stack history --json\` output or a Pulumi Cloud
                     /updates response
  --source cli|cloud force the Pulumi CLI or the Pulumi Cloud REST API
  (auto)             PULUMI_ACCESS_TOKEN set -> cloud; pulumi on PATH -> cli
  --org ORG          Pulumi Cloud organisation (or PULUMI_ORG); needed by the cloud source
  --project NAME     Pulumi project (default ci-fleet)

Filters:
  --since DATE       2025-03-01, an RFC 3339 time, or an age: 30d, 12h, 2w
  --user NAME        Pulumi user, git author or email contains NAME (case-insensitive)
  --kind KIND        update, preview, refresh, destroy, import, rename, rotation
                     (repeatable or comma-separated; rotation = secret changes from git)

Output:
  --json             machine-readable, stable field order
  --stack-file PATH  stack file for secret rotations (default ./Pulumi.<stack>.yaml)
  --no-git           do not read the stack file's git history

Errors exit 2 with one line on stderr.
`;

const VALUE_FLAGS = new Set(["--stack", "--from", "--source", "--org", "--project", "--since", "--user", "--kind", "--stack-file"]);

export function parseArgs(argv: string[]): AuditArgs {
  const args: AuditArgs = { project: "ci-fleet", kinds: [], json: false, git: true, help: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf("=");
    let flag = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    if (flag === "-s") flag = "--stack";
    if (flag === "--json") args.json = true;
    else if (flag === "--no-git") args.git = false;
    else if (flag === "--help" || flag === "-h") args.help = true;
    else if (VALUE_FLAGS.has(flag)) {
      let value: string | undefined;
      if (arg.startsWith("--") && eq > 0) value = arg.slice(eq + 1);
      else {
        value = argv[i + 1];
        i++;
      }
      if (value === undefined || value === "" || (value.startsWith("--") && !(arg.startsWith("--") && eq > 0))) {
        throw new AuditError(`${flag} needs a value`);
      }
      switch (flag) {
        case "--stack":
          if (!/^[A-Za-z0-9_.-]+$/.test(value)) throw new AuditError(`--stack ${JSON.stringify(value)} is not a stack name (letters, digits, -, _, .)`);
          args.stack = value;
          break;
        case "--from":
          args.from = value;
          break;
        case "--source":
          if (value !== "cli" && value !== "cloud") throw new AuditError(`--source must be cli or cloud, not ${JSON.stringify(value)}`);
          args.source = value;
          break;
        case "--org":
          args.org = value;
          break;
        case "--project":
          args.project = value;
          break;
        case "--since":
          args.since = value;
          break;
        case "--user":
          args.user = value;
          break;
        case "--kind":
          args.kinds.push(value);
          break;
        case "--stack-file":
          args.stackFile = value;
          break;
      }
    } else if (arg.startsWith("-")) {
      throw new AuditError(`unknown flag ${flag} (see --help)`);
    } else {
      throw new AuditError(`unexpected argument ${JSON.stringify(arg)} (see --help)`);
    }
  }
  return args;
}
