// A structural guard for ci-netboot-selftest's signal handling: the functions that
// watch the guest must fork nothing, so a signal always finds bash in a builtin and its
// trap runs at a safe point (see the script's "Signals" comment). bash itself parses the
// script and prints each function in its canonical form (`declare -f`); this module reads
// that form and lists everything in it that forks or may fork.
import { spawnSync } from "child_process";

export interface ScriptFunctions {
  /** Every function the script defines. */
  defined: Set<string>;
  /** The requested functions' bodies as bash prints them; a missing name is absent. */
  bodies: Map<string, string>;
}

/** Loads the script's functions into bash (its top level runs: everything but its last
 * line, which must be `main "$@"`) and has bash print them. */
export function scriptFunctions(scriptText: string, names: readonly string[]): ScriptFunctions {
  const lines = scriptText.replace(/\n+$/, "").split("\n");
  if (lines[lines.length - 1] !== 'main "$@"') throw new Error('the script does not end with main "$@"');
  const program = [...lines.slice(0, -1), "declare -F", ...names.map((name) => `declare -f ${name} || true`)];
  const run = spawnSync("bash", ["-s"], { input: program.join("\n") + "\n", encoding: "utf8" });
  if (run.status !== 0) throw new Error(`bash could not load the script's functions:\n${run.stderr}`);
  const defined = new Set<string>();
  const bodies = new Map<string, string>();
  let current: { name: string; lines: string[] } | undefined;
  for (const line of run.stdout.split("\n")) {
    const declared = /^declare -f (\S+)$/.exec(line);
    const header = /^(\S+) \(\) $/.exec(line);
    if (!current && declared) defined.add(declared[1]);
    else if (!current && header) current = { name: header[1], lines: [line] };
    else if (current) {
      current.lines.push(line);
      if (line === "}") {
        bodies.set(current.name, current.lines.join("\n"));
        current = undefined;
      }
    }
  }
  return { defined, bodies };
}

let bashWords: Set<string> | undefined;
/** bash's keywords and builtins, as this bash reports them. */
function keywordsAndBuiltins(): Set<string> {
  if (!bashWords) {
    const run = spawnSync("bash", ["-c", "compgen -k; compgen -b"], { encoding: "utf8" });
    bashWords = new Set(run.stdout.split("\n").filter(Boolean));
  }
  return bashWords;
}

// Builtins that run other commands (which may be external) or replace the shell.
const RUNS_OTHER_COMMANDS = new Set(["eval", "source", ".", "exec", "command", "builtin", "coproc", "trap", "enable"]);

/** Removes a balanced construct opened by `open` (e.g. "$((") up to its matching "))". */
function stripBalanced(text: string, open: string, replacement: string): string {
  let out = text;
  for (let at = out.indexOf(open); at >= 0; at = out.indexOf(open, at + replacement.length)) {
    let depth = 0;
    let end = -1;
    for (let i = at + open.indexOf("("); i < out.length; i++) {
      if (out[i] === "(") depth++;
      else if (out[i] === ")" && --depth === 0) {
        end = i;
        break;
      }
    }
    if (end < 0) break;
    out = out.slice(0, at) + replacement + out.slice(end + 1);
  }
  return out;
}

export interface Fork {
  fn: string;
  line: string;
  why: string;
}

/**
 * What in these function bodies forks or may fork: command substitution, backticks,
 * process substitution, pipes, background jobs, subshells, and any command word that is
 * not a bash keyword or builtin nor one of `allowedFunctions` (a call to another of the
 * script's functions must be to one that is itself checked).
 */
export function forksIn(bodies: Map<string, string>, allowedFunctions: ReadonlySet<string>): Fork[] {
  const words = keywordsAndBuiltins();
  const found: Fork[] = [];
  for (const [fn, body] of bodies) {
    const lines = body.split("\n").slice(2, -1); // drop "name () ", "{ " and the closing "}"
    for (const raw of lines) {
      const report = (why: string) => found.push({ fn, line: raw.trim(), why });
      // Quoted text is data, except a command substitution inside double quotes.
      let line = raw.replace(/'[^']*'/g, "''");
      if (/\$\((?!\()/.test(line)) report("command substitution $(...)");
      if (line.includes("`")) report("backtick command substitution");
      if (/[<>]\(/.test(line)) report("process substitution");
      line = stripBalanced(line, "$((", "$A");
      line = stripBalanced(line, "$(", "$C");
      line = line.replace(/"(?:[^"\\]|\\.)*"/g, '""');
      line = stripBalanced(line, "((", "((");
      line = line.replace(/\[\[ .*? \]\]/g, "[[").replace(/\$\{[^}]*\}/g, "$V");
      // A case pattern line ("dhcp)", "a | b)") is not a command.
      if (/^\s*[^\s();|]+(\s*\|\s*[^\s();|]+)*\)\s*$/.test(line)) continue;
      const withoutOr = line.replace(/\|\|/g, " ; ");
      if (/\|/.test(withoutOr)) report("pipe");
      if (/(^|[^&>])&(?!&)(?![0-9>-])/.test(withoutOr.replace(/&&/g, " ; "))) report("background job");
      for (const segment of withoutOr.split(/;;|;|&&/)) {
        const tokens = segment.trim().split(/\s+/).filter(Boolean);
        while (tokens.length > 0 && ["if", "then", "elif", "else", "while", "until", "do", "!", "{", "time"].includes(tokens[0])) {
          tokens.shift();
        }
        while (tokens.length > 0 && /^[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=/.test(tokens[0])) tokens.shift();
        const word = tokens[0];
        if (word === undefined) continue;
        if (word === "(") report("subshell ( ... )");
        else if (RUNS_OTHER_COMMANDS.has(word)) report(`builtin that runs other commands: ${word}`);
        else if (words.has(word) || ["done", "fi", "esac", "}", "[[", "(("].includes(word)) continue;
        else if (!allowedFunctions.has(word)) report(`command '${word}' is neither a builtin nor a checked function`);
      }
    }
  }
  return found;
}
