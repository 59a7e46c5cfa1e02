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
import * as YAML from "yaml";
import { METADATA_SERVICE_ADDRESSES } from "../../infra/bootstrap/cloud-config";
import { previewStack, ROOT } from "../support/preview";

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
    const run = await previewStack(stack);
    for (const [key, inputs] of run.rawInputs) {
      const name = inputs.name as string | undefined;
      if (key.startsWith("aws:ssm/parameter:Parameter::") && name?.startsWith(`/ci-fleet/${stack}/pillar/`)) {
        documents[name.slice(`/ci-fleet/${stack}/pillar/`.length)] = JSON.parse(inputs.value as string);
      }
    }
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
const stateNamed = (m: Minion, fn: string, name: string) => m.states.find((s) => s.function === fn && (s.args.name ?? s.id) === name);

test("every machine of both stacks renders without problems", () => {
  expect(Object.keys(minions).sort()).toEqual(Object.keys(documents).sort());
  for (const [id, m] of Object.entries(minions)) expect({ id, problems: m.problems }).toEqual({ id, problems: [] });
});

describe("aws_credentials", () => {
  const helper = "/usr/local/bin/aws_signing_helper";
  const certDir = "/etc/ci-fleet/roles-anywhere";

  test("equinix-metal Teleport machine: root gets its own role through Roles Anywhere at /root/.aws/config", () => {
    const m = minion("production-teleport");
    expect(m.top).toContain("aws_credentials");
    const aws = documents["production-teleport"].ci_fleet.aws;
    const ra = aws.roles_anywhere!;
    expect(aws.role_arn).toMatch(/:role\/ci-fleet-production-teleport$/);
    expect(m.files["/root/.aws/config"]).toBe(
      [
        "# Managed by Salt (aws_credentials.roles_anywhere).",
        "[default]",
        `region = ${aws.region}`,
        `credential_process = ${helper} credential-process --certificate ${certDir}/certificate.pem --private-key ${certDir}/private-key.pem --trust-anchor-arn ${ra.trust_anchor_arn} --profile-arn ${ra.profile_arn} --role-arn ${aws.role_arn}`,
        "",
      ].join("\n"),
    );
    const key = stateNamed(m, "file.managed", `${certDir}/private-key.pem`)!;
    expect(key.args).toMatchObject({ contents_pillar: "ci_fleet:aws:roles_anywhere:private_key_pem", user: "root", group: "root", mode: "0640", show_changes: false });
    expect(stateNamed(m, "file.managed", `${certDir}/certificate.pem`)!.args).toMatchObject({ contents_pillar: "ci_fleet:aws:roles_anywhere:certificate_pem", group: "root" });
    expect(stateNamed(m, "file.managed", helper)!.args).toMatchObject({ source_hash: expect.stringMatching(/^sha256=[0-9a-f]{64}$/) });
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
    for (const [id, m] of Object.entries(minions)) {
      if (documents[id].ci_fleet.provider !== "equinix-metal") continue;
      const config = Object.entries(m.files).find(([p]) => p.endsWith("/.aws/config"))![1];
      const line = config.split("\n").find((l) => l.startsWith("credential_process = "))!;
      const argv = line.slice("credential_process = ".length).split(" ");
      expect(argv.slice(0, 2)).toEqual([helper, "credential-process"]);
      const flags = argv.slice(2).filter((a) => a.startsWith("--"));
      expect({ id, unknown: flags.filter((f) => !defined.has(f)) }).toEqual({ id, unknown: [] });
      expect(flags.sort()).toEqual(["--certificate", "--private-key", "--profile-arn", "--role-arn", "--trust-anchor-arn"]);
      // Every flag has a value (no flag swallowed by an empty pillar value).
      for (let i = 2; i < argv.length; i += 2) expect(argv[i + 1]).toMatch(/^(\/|arn:aws:)/);
    }
  });

  test("aws runners: the CI user's credential_process prints the copy the root timer writes", () => {
    const m = minion("production-aws-default-pr-1");
    expect(m.files["/var/lib/ci-agent/.aws/config"]).toContain("credential_process = /bin/cat /run/ci-fleet/aws/credentials.json\n");
    expect(m.files["/etc/systemd/system/ci-fleet-imds-credentials.timer"]).toMatch(/\[Timer\]\nOnBootSec=0\nOnUnitActiveSec=10min\n/);
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
        if (!configPath.endsWith("/.aws/config")) continue;
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
          if (arg.startsWith("/run/ci-fleet/aws/")) continue; // written by the IMDS helper: see the helper test
          expect({ id, arg, ok: can(m, table, user, arg, i === 0 ? 1 : 4) }).toEqual({ id, arg, ok: true });
        }
      }
    }
    expect(checked).toEqual(expect.arrayContaining([
      "production-default-pr-1 /var/lib/ci-agent/.aws/config /etc/ci-fleet/roles-anywhere/private-key.pem",
      "production-default-pr-1 /var/lib/ci-agent/.aws/config /usr/local/bin/aws_signing_helper",
      "production-teleport /root/.aws/config /etc/ci-fleet/roles-anywhere/certificate.pem",
      "production-aws-default-pr-1 /var/lib/ci-agent/.aws/config /run/ci-fleet/aws/credentials.json",
      "production-default-pr-1 /etc/systemd/system/ci-netboot-selftest.service /usr/local/sbin/ci-netboot-selftest",
    ]));
  });

  test("the IMDS helper writes the credentials file so that only root and the CI user's group can read it", () => {
    // Run the real helper's writer (as root here) into a temp dir and read back the modes.
    const dir = path.join(tmp, "run", "ci-fleet", "aws");
    const out = runPython([
      "-c",
      [
        "import importlib.machinery, importlib.util, json, os, sys",
        `loader = importlib.machinery.SourceFileLoader('h', ${JSON.stringify(path.join(saltRoot, "aws_credentials/files/ci_fleet_imds_credentials.py"))})`,
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
