/**
 * The base, runner and aws_credentials formulas on a real machine: rendered with the pillar
 * documents the program writes (both providers), then checked against upstream semantics
 * (.conformance/base-runner-aws.md): unattended-upgrades' own origin matcher, the
 * Roles Anywhere helper's flags, systemd's unit loading, file permissions.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as vm from "vm";
import * as YAML from "yaml";
import { METADATA_SERVICE_ADDRESSES } from "../../infra/bootstrap/cloud-config";
import { pillarDocuments, previewStack, ROOT } from "../support/preview";

const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
const saltRoot = process.env.CI_FLEET_SALT_ROOT ?? path.join(ROOT, "salt");
const facts = path.join(__dirname, "facts.py");

interface State {
  id: string;
  sls: string;
  function: string;
  args: Record<string, unknown>;
}
interface Minion {
  top: string[];
  states: State[];
  files: Record<string, string>;
  problems: string[];
}
type Documents = Record<string, { ci_fleet: { role: string; provider: string; aws: { region: string; role_arn: string; roles_anywhere?: Record<string, string> } } }>;

function runPython(args: string[]): unknown {
  const run = spawnSync(python, args, { encoding: "utf8", maxBuffer: 128 * 1024 * 1024 });
  if (run.error) throw new Error(`cannot run ${python}: ${run.error.message}`);
  if (run.status !== 0) throw new Error(`${args.join(" ")} exited ${run.status}:\n${run.stderr}`);
  return JSON.parse(run.stdout);
}

let documents: Documents;
let minions: Record<string, Minion>;
let tmp: string;
beforeAll(async () => {
  documents = {};
  // CI_FLEET_PILLAR_DOCUMENTS: a JSON file of documents dumped earlier (debugging only).
  if (process.env.CI_FLEET_PILLAR_DOCUMENTS) documents = JSON.parse(fs.readFileSync(process.env.CI_FLEET_PILLAR_DOCUMENTS, "utf8"));
  else for (const stack of ["production", "production-aws"]) {
    Object.assign(documents, pillarDocuments(await previewStack(stack)));
  }
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-base-runner-"));
  const file = path.join(tmp, "documents.json");
  fs.writeFileSync(file, JSON.stringify(documents), { mode: 0o600 });
  minions = runPython([facts, "states", "--salt-root", saltRoot, "--documents", file]) as Record<string, Minion>;
}, 120_000);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const minion = (id: string) => {
  const m = minions[id];
  if (!m) throw new Error(`no minion ${id}`);
  return m;
};
/** Where the CI user's AWS config lives: root-owned, outside the home the CI user (every job) can write. */
const RUNNER_AWS_CONFIG = "/etc/ci-fleet/ci-agent/aws-config";
const isAwsConfig = (p: string) => p.endsWith("/.aws/config") || p === RUNNER_AWS_CONFIG;
const stateNamed = (m: Minion, fn: string, name: string) => m.states.find((s) => s.function === fn && (s.args.name ?? s.id) === name);

test("every machine of both stacks renders without problems", () => {
  expect(Object.keys(minions).sort()).toEqual(Object.keys(documents).sort());
  for (const [id, m] of Object.entries(minions)) expect({ id, problems: m.problems }).toEqual({ id, problems: [] });
});

describe("aws_credentials", () => {
  const helper = "/usr/local/bin/aws_signing_helper";
  const certDir = "/etc/ci-fleet/roles-anywhere";

  test("equinix-metal Teleport machine: root gets its own role through Roles Anywhere at /root/.aws/config, with the key the machine made", () => {
    const m = minion("production-teleport");
    expect(m.top).toContain("aws_credentials");
    const aws = documents["production-teleport"].ci_fleet.aws;
    const ra = aws.roles_anywhere!;
    expect(aws.role_arn).toMatch(/:role\/ci-fleet-production-teleport$/);
    // No certificate or key in any pillar: the machine makes its key, the fleet signs it.
    expect(Object.keys(ra).sort()).toEqual(["profile_arn", "trust_anchor_arn"]);
    expect(m.files["/root/.aws/config"]).toBe(
      [
        "# Managed by Salt (aws_credentials.roles_anywhere).",
        "[default]",
        `region = ${aws.region}`,
        `credential_process = ${helper} credential-process --certificate ${certDir}/current/certificate.pem --private-key ${certDir}/current/private-key.pem --trust-anchor-arn ${ra.trust_anchor_arn} --profile-arn ${ra.profile_arn} --role-arn ${aws.role_arn} --session-duration 3600`,
        "",
      ].join("\n"),
    );
    expect(stateNamed(m, "file.managed", "/root/.aws/config")!.args).toMatchObject({ user: "root", group: "root", mode: "0600" });
    expect(stateNamed(m, "file.directory", certDir)!.args).toMatchObject({ user: "root", group: "root", mode: "0700" });
    expect(m.states.filter((s) => JSON.stringify(s.args).includes("private_key_pem"))).toEqual([]);
    expect(stateNamed(m, "file.managed", helper)!.args).toMatchObject({ source_hash: expect.stringMatching(/^sha256=[0-9a-f]{64}$/) });
    expect(m.files["/etc/systemd/system/ci-fleet-roles-anywhere.service"]).toContain(
      `ExecStart=/usr/local/sbin/ci-fleet-roles-anywhere run --cert-dir ${certDir} --minion-id production-teleport --alarm-dir /run/ci-fleet/alarms\n`,
    );
  });

  test("equinix-metal master: the CA key root-only from its own pillar, its own certificate signed locally before root's config uses it", () => {
    const m = minion("production-salt-master");
    expect(stateNamed(m, "file.directory", "/etc/ci-fleet/pki/ca")!.args).toMatchObject({ user: "root", group: "root", mode: "0700" });
    expect(stateNamed(m, "file.managed", "/etc/ci-fleet/pki/ca/private-key.pem")!.args).toMatchObject({
      contents_pillar: "ci_fleet_master:roles_anywhere_ca:private_key_pem", user: "root", group: "root", mode: "0600", show_changes: false,
    });
    const first = m.states.find((s) => s.id === "aws_credentials-roles_anywhere-first-certificate-cmd-run")!;
    expect(first.args.creates).toBe(`${certDir}/current/certificate.pem`);
    expect(String(first.args.name)).toContain("--local-issuer /srv/ci-fleet/repo/salt/_runners/ci_fleet_pki.py --ca-dir /etc/ci-fleet/pki/ca --master-document /srv/ci-fleet/pillar/minions/production-salt-master.json");
    expect(stateNamed(m, "file.managed", "/root/.aws/config")!.args.require).toEqual(expect.arrayContaining([{ cmd: "aws_credentials-roles_anywhere-first-certificate-cmd-run" }]));
    // No other machine has the CA.
    for (const [id, other] of Object.entries(minions)) {
      if (id === "production-salt-master") continue;
      expect({ id, ca: other.states.filter((s) => String(s.args.name ?? "").startsWith("/etc/ci-fleet/pki")).length }).toEqual({ id, ca: 0 });
      expect({ id, ca: JSON.stringify(documents[id]).includes("roles_anywhere_ca") }).toEqual({ id, ca: false });
    }
  });

  test("aws Teleport machine: root uses the instance profile (IMDS); its config names the region only", () => {
    const m = minion("production-aws-teleport");
    expect(m.top).toContain("aws_credentials");
    const aws = documents["production-aws-teleport"].ci_fleet.aws;
    expect(aws.roles_anywhere).toBeUndefined();
    expect(m.files["/root/.aws/config"]).toBe(["# Managed by Salt (aws_credentials.instance_profile).", "[default]", `region = ${aws.region}`, ""].join("\n"));
    // No copy of the credentials, no timer: root reads IMDS itself.
    expect(m.states.filter((s) => s.sls.startsWith("aws_credentials")).map((s) => s.id)).toEqual(["aws_credentials-instance_profile-config-file-managed"]);
  });

  test("the Roles Anywhere credential_process uses only flags aws_signing_helper credential-process defines", () => {
    // rolesanywhere-credential-helper cmd/credentials.go (flags of credential-process).
    const defined = new Set(["--certificate", "--private-key", "--trust-anchor-arn", "--profile-arn", "--role-arn", "--region", "--endpoint", "--session-duration", "--intermediates", "--role-session-name"]);
    let seen = 0;
    for (const [id, m] of Object.entries(minions)) {
      if (documents[id].ci_fleet.provider !== "equinix-metal") continue;
      const lines = [
        ...Object.entries(m.files).filter(([p]) => isAwsConfig(p)).map(([, t]) => t.split("\n").find((l) => l.startsWith("credential_process = "))!.slice("credential_process = ".length)),
        ...Object.entries(m.files).filter(([p]) => p === "/etc/systemd/system/ci-fleet-aws-session.service").map(([, t]) => /^ExecStart=(.+)$/m.exec(t)![1]),
      ];
      for (const line of lines) {
        const argv = line.split(" ");
        if (argv[0] === "/bin/cat") continue;
        // The session helper's own flags; the rest it passes to `aws_signing_helper credential-process`.
        const own = ["--output", "--group", "--alarm-dir", "--source", "--signing-helper"];
        if (argv[0] === helper) expect(argv[1]).toBe("credential-process");
        const flags = argv.filter((a) => a.startsWith("--") && !own.includes(a));
        expect({ id, unknown: flags.filter((f) => !defined.has(f)) }).toEqual({ id, unknown: [] });
        for (const f of ["--certificate", "--private-key", "--profile-arn", "--trust-anchor-arn", "--role-arn"]) expect({ id, f, has: flags.includes(f) }).toEqual({ id, f, has: true });
        seen++;
      }
    }
    expect(seen).toBeGreaterThanOrEqual(4);
  });

  test.each(["production-default-pr-1", "production-aws-default-pr-1"])("%s: the CI user's AWS config prints a one-hour session a root timer writes; it names no key", (id) => {
    const m = minion(id);
    const aws = documents[id].ci_fleet.aws;
    expect(m.files[RUNNER_AWS_CONFIG]).toBe(["# Managed by Salt (aws_credentials.session).", "[default]", `region = ${aws.region}`, "credential_process = /bin/cat /run/ci-fleet/aws/credentials.json", ""].join("\n"));
    expect(m.files["/etc/systemd/system/ci-fleet-aws-session.timer"]).toMatch(/\[Timer\]\nOnBootSec=0\nOnUnitActiveSec=5min\n/);
    const unit = m.files["/etc/systemd/system/ci-fleet-aws-session.service"];
    expect(unit).not.toMatch(/^User=/m);
    const exec = /^ExecStart=(.+)$/m.exec(unit)![1];
    expect(exec).toContain(`--role-arn ${aws.role_arn} --output /run/ci-fleet/aws/credentials.json --group ci-agent --alarm-dir /run/ci-fleet/alarms`);
    expect(aws.role_arn).toMatch(/:role\/ci-fleet-production(-aws)?-agent-default$/);
    if (id.includes("-aws-")) expect(exec).toContain(`--source assume-role --session-name ${id} --region ${aws.region}`);
    else expect(exec).toContain(`--source roles-anywhere --signing-helper ${helper} --certificate ${certDir}/current/certificate.pem --private-key ${certDir}/current/private-key.pem`);
  });
});

describe("systemd units the formulas write are loaded before they are used", () => {
  // salt/modules/systemd_service.py _check_for_unit_changes(name): daemon-reload only when the
  // unit being started/restarted itself changed. A changed .service started by a .timer is not.
  test("each unit file is either the unit its service state watches, or triggers a daemon-reload the service states require", () => {
    for (const [id, m] of Object.entries(minions)) {
      const mine = m.states.filter((s) => /^(base|runner|aws_credentials)(\.|$)/.test(s.sls));
      for (const unitState of mine.filter((s) => s.function === "file.managed" && String(s.args.name).startsWith("/etc/systemd/system/"))) {
        const unit = path.basename(String(unitState.args.name));
        const ref = (list: unknown) => ((list as Record<string, string>[] | undefined) ?? []).some((r) => r.file === unitState.id);
        const watchedBySameUnit = m.states.some((s) => s.function.startsWith("service.") && s.args.name === unit && ref(s.args.watch));
        const reload = m.states.find((s) => s.function === "cmd.run" && s.args.name === "systemctl daemon-reload" && ref(s.args.onchanges));
        expect({ id, unit, loaded: watchedBySameUnit || reload !== undefined }).toEqual({ id, unit, loaded: true });
        if (reload && !watchedBySameUnit) {
          const users = m.states.filter((s) => s.function.startsWith("service.") && String(s.args.name).startsWith(unit.replace(/\.(service|timer)$/, "")));
          for (const s of users) expect({ id, state: s.id, requires: ((s.args.require as Record<string, string>[]) ?? []).some((r) => r.cmd === reload.id) }).toEqual({ id, state: s.id, requires: true });
        }
      }
    }
  });
});

describe("unattended-upgrades (the real matcher of the unattended-upgrades package)", () => {
  // Release-file fields of Ubuntu 24.04's pockets (apt-cache policy: o=, a=, n=, l=).
  const noble = (archive: string, origin = "Ubuntu", label = "Ubuntu") => ({ origin, label, archive, codename: "noble", component: "main" });
  const origins = [
    noble("noble-security"),
    noble("noble"),
    noble("noble-updates"),
    noble("noble-backports"),
    noble("noble-proposed"),
    noble("noble-apps-security", "UbuntuESMApps", "UbuntuESMApps"),
    { origin: "Debian", label: "Debian-Security", archive: "stable-security", codename: "bookworm-security", component: "main" },
    { origin: "SaltProject", label: "SaltProject", archive: "stable", codename: "stable", component: "main" },
  ];
  const expected = [true, true, false, false, false, false, false, false];

  function evaluate(extraConfs: string[]): { allowed_origins: string[]; matches: boolean[] } {
    const file = minion("production-default-pr-1").files["/etc/apt/apt.conf.d/52ci-fleet-unattended-upgrades"];
    const conf = path.join(tmp, "52ci-fleet-unattended-upgrades");
    fs.writeFileSync(conf, file);
    const originsFile = path.join(tmp, "origins.json");
    fs.writeFileSync(originsFile, JSON.stringify(origins));
    const args = [facts, "origins", "--codename", "noble", "--distro-id", "Ubuntu", "--origins", originsFile];
    for (const c of [...extraConfs, conf]) args.push("--apt-conf", c);
    return runPython(args) as { allowed_origins: string[]; matches: boolean[] };
  }

  test("on Ubuntu noble, exactly the security pocket (and the release pocket its fixes may depend on) is allowed", () => {
    expect(evaluate([]).matches).toEqual(expected);
  });

  test("the policy is ours alone: Ubuntu's packaged 50unattended-upgrades Allowed-Origins (read first) is cleared", () => {
    // The shape of the noble package's data/50unattended-upgrades.Ubuntu (unattended-upgrades 2.9.1).
    const packaged = path.join(tmp, "50unattended-upgrades");
    fs.writeFileSync(packaged, 'Unattended-Upgrade::Allowed-Origins {\n\t"${distro_id}:${distro_codename}";\n\t"${distro_id}:${distro_codename}-security";\n\t"${distro_id}ESMApps:${distro_codename}-apps-security";\n};\n');
    const result = evaluate([packaged]);
    expect(result.matches).toEqual(expected);
    expect(result.allowed_origins).toEqual(["origin=Ubuntu,archive=noble-security", "origin=Ubuntu,archive=noble"]);
  });
});

describe("the metadata service guard", () => {
  test("Salt's firewall guards exactly the addresses cloud-init's guard does (infra/bootstrap/cloud-config.ts)", () => {
    const defaults = YAML.parse(fs.readFileSync(path.join(saltRoot, "base/parameters/defaults.yaml"), "utf8")).base.firewall.metadata_addresses;
    for (const [provider, addresses] of Object.entries(METADATA_SERVICE_ADDRESSES)) {
      const salt = defaults[provider] as { ipv4: string[]; ipv6: string[] };
      expect({ provider, addresses: [...salt.ipv4, ...salt.ipv6].sort() }).toEqual({ provider, addresses: [...addresses].sort() });
    }
  });

  test("the rendered rulesets reject non-root traffic to exactly those addresses", () => {
    for (const [id, m] of Object.entries(minions)) {
      const rules = m.files["/etc/nftables.conf"];
      const provider = documents[id].ci_fleet.provider as keyof typeof METADATA_SERVICE_ADDRESSES;
      const rejected = [...rules.matchAll(/ip6? daddr \{ ([^}]*) \} reject/g)].flatMap((r) => r[1].split(", "));
      expect({ id, rejected: rejected.sort() }).toEqual({ id, rejected: [...METADATA_SERVICE_ADDRESSES[provider]].sort() });
    }
  });
});

describe("every unit's user can read what the unit names", () => {
  interface Node {
    user: string;
    group: string;
    mode: number;
    dir: boolean;
  }
  /** Owner/group/mode of every path a state manages (Salt's makedirs gives a file's new parents the file's user/group and its mode plus x bits). */
  function fileTable(m: Minion): Map<string, Node> {
    const table = new Map<string, Node>();
    for (const s of m.states) {
      if (s.function !== "file.managed" && s.function !== "file.directory") continue;
      const name = String(s.args.name);
      const mode = parseInt(String(s.args.mode ?? "0644"), 8);
      const node = { user: String(s.args.user ?? "root"), group: String(s.args.group ?? "root"), mode, dir: s.function === "file.directory" };
      table.set(name, node);
      if (s.args.makedirs) {
        for (let dir = path.dirname(name); !table.has(dir) && !["/", "/etc", "/run", "/var", "/var/lib", "/root", "/usr", "/usr/local", "/usr/local/bin", "/usr/local/sbin"].includes(dir); dir = path.dirname(dir)) {
          const dirMode = node.dir ? mode : mode | ((mode & 0o444) >> 2);
          table.set(dir, { user: node.user, group: node.group, mode: dirMode, dir: true });
        }
      }
    }
    return table;
  }
  function groupsOf(m: Minion, user: string): string[] {
    const present = m.states.find((s) => s.function === "user.present" && s.args.name === user);
    return [user, ...(((present?.args.groups as string[]) ?? []))];
  }
  function can(m: Minion, table: Map<string, Node>, user: string, file: string, bit: number): boolean {
    if (user === "root") return true;
    const groups = groupsOf(m, user);
    const allowed = (n: Node, b: number) => (n.user === user ? (n.mode >> 6) & b : groups.includes(n.group) ? (n.mode >> 3) & b : n.mode & b) !== 0;
    for (let dir = path.dirname(file); dir !== "/"; dir = path.dirname(dir)) {
      const n = table.get(dir);
      if (n && !allowed(n, 1)) return false;
    }
    const n = table.get(file);
    return n !== undefined && allowed(n, bit);
  }

  test("units, credential_process programs and the files they read", () => {
    const checked: string[] = [];
    for (const [id, m] of Object.entries(minions)) {
      const table = fileTable(m);
      for (const [unitPath, text] of Object.entries(m.files)) {
        if (!/^\/etc\/systemd\/system\/[^/]+\.service$/.test(unitPath)) continue;
        const user = /^User=(.+)$/m.exec(text)?.[1] ?? "root";
        for (const [, key, value] of text.matchAll(/^(ExecStart|ExecStartPre|EnvironmentFile)=(.+)$/gm)) {
          const privileged = value.startsWith("+");
          const target = value.replace(/^[-+!@:]+/, "").split(" ")[0];
          if (!table.has(target)) continue; // not a file Salt manages here (archives, generated at run time)
          const bit = key === "EnvironmentFile" ? 4 : 1;
          checked.push(`${id} ${unitPath} ${target}`);
          expect({ id, unitPath, target, ok: can(m, table, privileged ? "root" : user, target, bit) }).toEqual({ id, unitPath, target, ok: true });
        }
      }
      // The aws_credentials user: its config, the credential_process program and the files it names.
      for (const [configPath, text] of Object.entries(m.files)) {
        if (!isAwsConfig(configPath)) continue;
        const state = m.states.find((s) => s.args.name === configPath)!;
        const user = String(state.args.group) === "root" ? "root" : String(state.args.group);
        expect({ id, configPath, ok: can(m, table, user, configPath, 4) }).toEqual({ id, configPath, ok: true });
        const line = text.split("\n").find((l) => l.startsWith("credential_process = "));
        if (!line) continue;
        const argv = line.slice("credential_process = ".length).split(" ");
        for (const [i, arg] of argv.entries()) {
          if (!arg.startsWith("/")) continue;
          checked.push(`${id} ${configPath} ${arg}`);
          if (arg === "/bin/cat") continue; // coreutils
          if (arg.startsWith("/run/ci-fleet/aws/")) continue; // written by the session helper: see the helper test
          expect({ id, arg, ok: can(m, table, user, arg, i === 0 ? 1 : 4) }).toEqual({ id, arg, ok: true });
        }
      }
    }
    expect(checked).toEqual(expect.arrayContaining([
      `production-default-pr-1 ${RUNNER_AWS_CONFIG} /run/ci-fleet/aws/credentials.json`,
      "production-teleport /root/.aws/config /etc/ci-fleet/roles-anywhere/current/certificate.pem",
      `production-aws-default-pr-1 ${RUNNER_AWS_CONFIG} /run/ci-fleet/aws/credentials.json`,
      "production-default-pr-1 /etc/systemd/system/ci-netboot-selftest.service /usr/local/sbin/ci-netboot-selftest",
    ]));
  });

  test("the session helper writes the credentials file so that only root and the CI user's group can read it", () => {
    // Run the real helper's writer (as root here) into a temp dir and read back the modes.
    const dir = path.join(tmp, "run", "ci-fleet", "aws");
    const out = runPython([
      "-c",
      [
        "import importlib.machinery, importlib.util, json, os, sys",
        `loader = importlib.machinery.SourceFileLoader('h', ${JSON.stringify(path.join(saltRoot, "aws_credentials/files/ci_fleet_aws_session.py"))})`,
        "h = importlib.util.module_from_spec(importlib.util.spec_from_loader('h', loader)); loader.exec_module(h)",
        `p = ${JSON.stringify(path.join(dir, "credentials.json"))}`,
        "h.write_private(p, {'Version': 1}, 12345)",
        "st, dst = os.stat(p), os.stat(os.path.dirname(p))",
        "print(json.dumps({'file': [st.st_uid, st.st_gid, oct(st.st_mode & 0o777)], 'dir': [dst.st_uid, dst.st_gid, oct(dst.st_mode & 0o777)]}))",
      ].join("\n"),
    ]);
    if (process.getuid && process.getuid() !== 0) throw new Error("this test chowns files: run it as root");
    expect(out).toEqual({ file: [0, 12345, "0o640"], dir: [0, 12345, "0o750"] });
  });
});

describe("root writes nothing through a path the CI user controls", () => {
  // Salt's file states run as root and follow symlinks (file.managed follow_symlinks: True;
  // the kernel follows a symlinked parent directory whatever the state says): a path below a
  // directory the CI user can write (its home, its work dir) lets a job aim root's write at
  // any file (`ln -s /etc/sudoers.d ~/.aws`).
  const ROOT_WRITERS = new Set(["file.managed", "file.directory", "file.recurse", "file.symlink", "file.absent", "archive.extracted", "file.serialize", "file.replace", "file.append"]);
  test("no root-run file state names a path below a directory the CI user can write", () => {
    const failures: string[] = [];
    let runners = 0;
    for (const [id, m] of Object.entries(minions)) {
      const ci = m.states.find((s) => s.function === "user.present" && s.args.name === "ci-agent");
      if (!ci) continue;
      runners++;
      const writable = new Set<string>([String(ci.args.home)]);
      for (const s of m.states) {
        if (s.function !== "file.directory") continue;
        const mode = parseInt(String(s.args.mode ?? "0755"), 8);
        if (s.args.user === "ci-agent" || (s.args.group === "ci-agent" && (mode & 0o020) !== 0) || (mode & 0o002) !== 0) writable.add(String(s.args.name));
      }
      for (const s of m.states) {
        if (!ROOT_WRITERS.has(s.function)) continue;
        const name = String(s.args.name ?? s.id);
        for (let dir = path.dirname(name); dir !== "/"; dir = path.dirname(dir)) {
          if (writable.has(dir)) failures.push(`${id}: ${s.id} (${s.function}) writes ${name} below ${dir}, which ci-agent can write`);
        }
      }
    }
    expect(runners).toBeGreaterThan(0);
    expect(failures).toEqual([]);
  });

  test("the CI user's AWS config is root-owned, group ci-agent, in a root directory ci-agent may only enter", () => {
    for (const id of ["production-default-pr-1", "production-aws-default-pr-1"]) {
      const m = minion(id);
      expect({ id, args: stateNamed(m, "file.managed", RUNNER_AWS_CONFIG)?.args }).toMatchObject({ id, args: { user: "root", group: "ci-agent", mode: "0640" } });
      expect({ id, args: stateNamed(m, "file.directory", path.dirname(RUNNER_AWS_CONFIG))?.args }).toMatchObject({ id, args: { user: "root", group: "ci-agent", mode: "0750" } });
      expect(Object.keys(m.files).filter((p) => p.startsWith("/var/lib/ci-agent/"))).toEqual([]);
    }
    // Root's own config stays where the root services look (teleport.service drop-in, pillar sync).
    expect(typeof minion("production-teleport").files["/root/.aws/config"]).toBe("string");
  });
});

describe("ci-agent-reset (the rendered script, run for real as root on a fake home)", () => {
  const RESET = "/usr/local/sbin/ci-agent-reset";
  const script = () => minion("production-default-pr-1").files[RESET];
  const sh = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: "utf8" });

  test("passes shellcheck as POSIX sh", () => {
    const file = path.join(tmp, "ci-agent-reset");
    fs.writeFileSync(file, script(), { mode: 0o755 });
    const run = sh("shellcheck", ["-s", "sh", file]);
    if (run.error) throw new Error(`cannot run shellcheck (Debian package shellcheck): ${run.error.message}`);
    expect({ status: run.status, out: run.stdout }).toEqual({ status: 0, out: "" });
  });

  test("also sweeps what a job can leave outside its home: world-writable dirs, message queues, System V IPC", () => {
    const text = script();
    expect(text).toContain("for dir in /tmp /var/tmp /dev/shm /run/lock /var/crash /dev/mqueue; do");
    expect(text).toMatch(/for kind in m q s; do\n\s*ipcs -"\$kind"/);
    // Made afresh without following a link a job planted: mkdir (fails on an existing path), chown -h.
    expect(text).toMatch(/mkdir -m 0700 "\$work"\n\s*chown -h "\$user:\$user" "\$work"/);
    expect(text).not.toMatch(/install -d/);
  });

  test("every agent unit runs it as root before each start and after each stop", () => {
    for (const [id, m] of Object.entries(minions)) {
      for (const unit of ["/etc/systemd/system/actions-runner.service", "/etc/systemd/system/buildkite-agent.service"]) {
        const text = m.files[unit];
        if (!text) continue;
        expect({ id, unit, pre: text.includes(`\nExecStartPre=+${RESET}\n`), post: text.includes(`\nExecStopPost=-+${RESET}\n`) }).toEqual({ id, unit, pre: true, post: true });
      }
    }
  });

  test("leaves the home with only an empty work dir, follows no symlink, ends lingering and the user manager, kills the user's processes", () => {
    if (process.getuid && process.getuid() !== 0) throw new Error("this test creates a user and chowns files: run it as root");
    const user = `cifr${process.pid % 100000}`;
    const add = sh("useradd", ["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", user]);
    if (add.status !== 0) throw new Error(`useradd: ${add.stderr}`);
    // Not under /tmp or /var/tmp: the script also sweeps the CI user's files there.
    const root = fs.mkdtempSync("/run/ci-fleet-reset-");
    let sleeper: ReturnType<typeof spawnSync> | undefined;
    try {
      const home = path.join(root, "home");
      const work = path.join(home, "work");
      const outside = path.join(root, "outside");
      const stubs = path.join(root, "bin");
      const calls = path.join(root, "calls");
      for (const d of [home, work, path.join(work, "_temp"), outside, stubs, path.join(home, ".config", "git"), path.join(home, ".cache"), path.join(home, ".local", "share")]) fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(outside, "keep"), "root's file");
      for (const f of [".gitconfig", ".npmrc", ".config/git/config", ".cache/blob", ".local/share/x", "work/build.log", "work/_temp/step.sh"]) fs.writeFileSync(path.join(home, f), "left by a job");
      fs.symlinkSync(outside, path.join(home, ".aws"));
      fs.symlinkSync(outside, path.join(work, "link"));
      // loginctl and systemctl have no logind/PID 1 here: stubs record the calls (in order).
      for (const stub of ["loginctl", "systemctl"]) fs.writeFileSync(path.join(stubs, stub), `#!/bin/sh\necho "${stub} $*" >> ${JSON.stringify(calls)}\n`, { mode: 0o755 });
      sh("chown", ["-R", "-h", `${user}:${user}`, home]);
      const text = script()
        .replace(/^user=.*$/m, `user=${user}`)
        .replace(/^home=.*$/m, `home=${home}`)
        .replace(/^work=.*$/m, `work=${work}`);
      expect(text).not.toContain("/var/lib/ci-agent");
      const file = path.join(root, "reset");
      fs.writeFileSync(file, text, { mode: 0o755 });
      // A process of the CI user that outlived its job (e.g. a systemd --user service).
      const uid = Number(sh("id", ["-u", user]).stdout.trim());
      sleeper = spawnSync("sh", ["-c", `setpriv --reuid=${uid} --regid=${uid} --clear-groups sleep 300 >/dev/null 2>&1 & echo $!`], { encoding: "utf8" });
      const pid = Number(String(sleeper.stdout).trim());
      expect(isAlive(pid)).toBe(true);
      const env = { ...process.env, PATH: `${stubs}:/usr/sbin:/usr/bin:/sbin:/bin` };
      for (const round of [1, 2]) {
        const run = spawnSync("/bin/sh", [file], { encoding: "utf8", env });
        expect({ round, status: run.status, stderr: run.stderr }).toEqual({ round, status: 0, stderr: "" });
        expect(fs.readdirSync(home)).toEqual(["work"]);
        expect(fs.readdirSync(work)).toEqual([]);
        const h = fs.lstatSync(home);
        const w = fs.lstatSync(work);
        expect([h.isDirectory(), h.uid, h.gid, (h.mode & 0o7777).toString(8)]).toEqual([true, uid, uid, "750"]);
        expect([w.isDirectory(), w.uid, w.gid, (w.mode & 0o7777).toString(8)]).toEqual([true, uid, uid, "700"]);
        expect(fs.readFileSync(path.join(outside, "keep"), "utf8")).toBe("root's file");
        // Next round: a job replaced the work dir by a symlink to a root directory.
        fs.rmSync(work, { recursive: true });
        fs.symlinkSync(outside, work);
        sh("chown", ["-h", `${user}:${user}`, work]);
      }
      waitUntil(() => !isAlive(pid));
      expect(isAlive(pid)).toBe(false);
      const recorded = fs.readFileSync(calls, "utf8").trim().split("\n").slice(0, 3);
      expect(recorded).toEqual([`loginctl disable-linger ${user}`, `loginctl terminate-user ${user}`, `systemctl stop user@${uid}.service`]);
    } finally {
      sh("pkill", ["-KILL", "-u", user]);
      sh("userdel", [user]);
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

describe("polkit: the CI user cannot make itself linger (Ubuntu 24.04 polkit 124 JavaScript rules)", () => {
  const RULE = "/etc/polkit-1/rules.d/10-ci-fleet-ci-agent.rules";
  // systemd's org.freedesktop.login1.policy: set-self-linger is allow_any=yes, so without a rule
  // any job may `loginctl enable-linger` itself and start `systemd --user` units outside the agent's cgroup.
  function decide(text: string, actionId: string, user: string): unknown {
    const rules: ((action: unknown, subject: unknown) => unknown)[] = [];
    const polkit = { Result: { NO: "no", YES: "yes", AUTH_SELF: "auth_self", AUTH_ADMIN: "auth_admin", NOT_HANDLED: null }, addRule: (f: (a: unknown, s: unknown) => unknown) => rules.push(f), log: () => undefined };
    vm.runInNewContext(text, { polkit });
    expect(rules).toHaveLength(1);
    return rules[0]({ id: actionId }, { user, local: false, active: false, isInGroup: () => false });
  }
  test("every runner denies ci-agent set-self-linger and set-user-linger, and decides nothing else", () => {
    let runners = 0;
    for (const [id, m] of Object.entries(minions)) {
      if (!m.states.some((s) => s.function === "user.present" && s.args.name === "ci-agent")) continue;
      runners++;
      const text = m.files[RULE];
      expect({ id, rule: typeof text }).toEqual({ id, rule: "string" });
      expect(stateNamed(m, "file.managed", RULE)!.args).toMatchObject({ user: "root", group: "root", mode: "0644" });
      for (const action of ["org.freedesktop.login1.set-self-linger", "org.freedesktop.login1.set-user-linger"]) {
        expect({ id, action, ci: decide(text, action, "ci-agent"), root: decide(text, action, "root") }).toEqual({ id, action, ci: "no", root: undefined });
      }
      expect(decide(text, "org.freedesktop.login1.reboot", "ci-agent")).toBeUndefined();
    }
    expect(runners).toBeGreaterThan(0);
  });
});

function isAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return false;
  }
}
function waitUntil(ok: () => boolean, ms = 3000): void {
  const end = Date.now() + ms;
  while (!ok() && Date.now() < end) spawnSync("sleep", ["0.05"]);
}
