import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as YAML from "yaml";
import { previewStack, ROOT } from "../support/preview";
import { buildSaltMasterCloudConfig, renderCloudConfig } from "../../infra/bootstrap/cloud-config";
import { saltRepositoryPillar } from "../../infra/bootstrap/pillar";
import { saltRepositorySshCommand, SALT_PATHS } from "../../infra/bootstrap/salt-config";
import { generateFleet, masterInput } from "../bootstrap/fixtures";

/**
 * The Salt master's config has two writers on a real machine: cloud-init (first boot) and the
 * salt_master states (every highstate after). Both are computed here from the production
 * stacks' program (offline preview): the user-data the master boots with, and the highstate
 * its pillar document renders (real Jinja2, test/salt/render.py), with each file's bytes as
 * Salt writes them. The two writers must agree byte for byte, and the master's effective
 * `user` (every master.d file, after each writer) must be able to read what it serves.
 */

const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");

/** What each Salt `file.*` state of the master's highstate writes: path -> {text, user, mode}. */
interface SaltFile { text: string | null; user: string | null; group: string | null; mode: string | null; function: string }

/**
 * Renders the master's highstate with render.py's harness and resolves every file's content
 * the way salt.states.file.managed (3007) does: `contents` / `contents_pillar` are rewritten
 * line by line (`splitlines()`, each line + os.linesep), jinja `source`s rendered.
 */
const SALT_SIDE = String.raw`
import json, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
import render
root, documents_file, master_id = sys.argv[2], sys.argv[3], sys.argv[4]
docs = render.program_documents(documents_file, root)

def managed_text(value):
    # salt.states.file.managed: for part in contents: for line in part.splitlines(): line + os.linesep
    parts = value if isinstance(value, list) else [value]
    out = ""
    for part in parts:
        for line in str(part).splitlines():
            out += line.rstrip("\n").rstrip("\r") + "\n"
    return out

with tempfile.TemporaryDirectory() as pillar_dir:
    os.makedirs(os.path.join(pillar_dir, "minions"))
    for minion_id, doc in docs.items():
        with open(os.path.join(pillar_dir, "minions", minion_id + ".json"), "w") as handle:
            json.dump(doc, handle)
    recorder = render.Recorder()
    pillar, _, _ = render.compile_pillar(root, pillar_dir, master_id, recorder)
grains = render.grains_for(master_id)
extra = {"salt": render.salt_functions(pillar, grains, render.Recorder())}
env = render.make_env([root])
top = render.parse_rendered(render.render_file(env, "top.sls", pillar, grains, master_id, extra))
highstate = render.Highstate(root, env, pillar, grains, master_id, extra)
for sls in render.top_sls_for(top, master_id)[0]:
    highstate.add(sls)
problems = list(highstate.errors) + render.check_states(highstate, root, render.KNOWN_STATE_FUNCTIONS)
files = {}
states = {}
for state_id, (sls, body) in highstate.states.items():
    for function, args in render.state_function(state_id, body):
        states[state_id] = {"function": function, "args": args}
        if not function.startswith("file."):
            continue
        name = args.get("name", state_id)
        text = None
        if "contents_pillar" in args:
            value = render.traverse(pillar, args["contents_pillar"], None)
            text = None if value is None else managed_text(value)
        elif isinstance(args.get("contents"), (str, list)):
            text = managed_text(args["contents"])
        elif name in highstate.files:
            text = highstate.files[name]
        files[name] = {"text": text, "user": args.get("user"), "group": args.get("group"),
                       "mode": None if args.get("mode") is None else str(args.get("mode")), "function": function}
print(json.dumps({"problems": problems, "files": files, "states": states}, default=str))
`;

interface WriteFile { path: string; content: string; permissions: string; owner: string }
interface SaltState { function: string; args: Record<string, unknown> }
interface SaltSide { problems: string[]; files: Record<string, SaltFile>; states: Record<string, SaltState> }

/** The master's highstate for these pillar documents ({minion id: document}), as SALT_SIDE computes it. */
function runSaltSide(documents: Record<string, unknown>, masterId: string): SaltSide {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-master-config-"));
  try {
    const file = path.join(dir, "documents.json");
    fs.writeFileSync(file, JSON.stringify(documents), { mode: 0o600 });
    const proc = spawnSync(python, ["-c", SALT_SIDE, __dirname, path.join(ROOT, "salt"), file, masterId], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
    if (proc.error) throw new Error(`cannot run ${python} (Debian packages python3, python3-jinja2, python3-yaml): ${proc.error.message}`);
    if (proc.status !== 0) throw new Error(`the Salt side failed (Debian packages python3-jinja2, python3-yaml):\n${proc.stderr}`);
    return JSON.parse(proc.stdout) as SaltSide;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Requisite targets of one kind (`require`, `watch`, `onchanges`) as "module: id" strings. */
const requisites = (state: SaltState | undefined, kind: string): string[] =>
  ((state?.args[kind] as Record<string, string>[] | undefined) ?? []).map((ref) => Object.entries(ref).map(([m, id]) => `${m}: ${id}`)[0]);

/** Salt 3007's Debian package writes `user: salt` into /etc/salt/master (pkg/debian/rules: sed 's/#user: root/user: salt/'). */
const PACKAGE_MASTER_CONFIG = { user: "salt" };
/** DEFAULT_MASTER_OPTS["user"]: the user the daemon starts as (root under systemd). */
const DEFAULT_MASTER_USER = "root";

/**
 * The `user` salt-master runs as: salt.config.master_config reads /etc/salt/master, then every
 * `default_include` file (master.d/*.conf, sorted glob) with `dict.update`, so the last file
 * that sets a key wins; a file that does not set it leaves the earlier value.
 */
function effectiveUser(masterD: Record<string, string>): string {
  let user: string = PACKAGE_MASTER_CONFIG.user ?? DEFAULT_MASTER_USER;
  for (const file of Object.keys(masterD).filter((f) => f.endsWith(".conf")).sort()) {
    const doc = YAML.parse(masterD[file]) as Record<string, unknown> | null;
    if (doc && typeof doc.user === "string") user = doc.user;
  }
  return user;
}

/**
 * salt-master.service as the Salt project has shipped it (pkg/common/salt-master.service): some
 * versions run the daemon as `salt` (saltstack/salt 35307ffd), others leave the user to the
 * config (c2f129ac, an older 3006 package). Which one the pinned deb carries was not settled from
 * the sources at hand, so the master must run as root under either.
 */
const PACKAGED_UNITS: Record<string, string> = {
  "35307ffd (User=salt)":
    "[Unit]\nDescription=The Salt Master Server\nAfter=network.target\n\n[Service]\nLimitNOFILE=100000\nType=notify\nNotifyAccess=all\nExecStart=/usr/bin/salt-master\nUser=salt\n\n[Install]\nWantedBy=multi-user.target\n",
  "c2f129ac (no User=)":
    "[Unit]\nDescription=The Salt Master Server\nAfter=network.target\n\n[Service]\nLimitNOFILE=100000\nType=notify\nNotifyAccess=all\nExecStart=/usr/bin/salt-master\n\n[Install]\nWantedBy=multi-user.target\n",
};
const DROP_IN_DIR = "/etc/systemd/system/salt-master.service.d/";

/**
 * `User=` of [Service] after systemd reads the unit, then its drop-ins (systemd.unit(5): `*.conf`
 * in `<unit>.d/`, in lexical order of file name; a later assignment overrides, an empty one resets).
 * undefined = not set: the service manager's own user, root.
 */
function systemdServiceUser(unit: string, dropIns: Record<string, string>): string {
  let user: string | undefined;
  const files = Object.keys(dropIns).filter((f) => f.startsWith(DROP_IN_DIR) && f.endsWith(".conf")).sort((a, b) => (path.basename(a) < path.basename(b) ? -1 : 1));
  for (const text of [unit, ...files.map((f) => dropIns[f])]) {
    let section = "";
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (line.startsWith("[")) section = line;
      else if (section === "[Service]" && /^User\s*=/.test(line)) user = line.replace(/^User\s*=\s*/, "") || undefined;
    }
  }
  return user ?? "root";
}

/**
 * The user the master ends up as: systemd starts it as the unit's user; salt then switches to
 * master.d's `user`, which only root can do (salt.utils.verify.check_user). A non-root unit user
 * with another config user cannot start at all.
 */
function masterProcessUser(unit: string, files: Record<string, string>): string {
  const serviceUser = systemdServiceUser(unit, files);
  const configUser = effectiveUser(Object.fromEntries(Object.entries(files).filter(([p]) => p.startsWith("/etc/salt/master.d/"))));
  if (serviceUser === "root") return configUser;
  return serviceUser === configUser ? serviceUser : `fails to start (unit ${serviceUser}, config ${configUser})`;
}

/** Can `user` list and read a directory owned by `owner` with this mode (no ACLs)? */
const canRead = (user: string, owner: string, mode: string) =>
  user === "root" || (user === owner && (parseInt(mode, 8) & 0o500) === 0o500) || (parseInt(mode, 8) & 0o005) === 0o005;

describe.each(["production", "production-aws"])("the Salt master's config on %s", (stack) => {
  const masterId = `${stack}-salt-master`;
  let cloudInit: WriteFile[];
  let salt: SaltSide;
  let pillarDocument: string;
  let documents: Record<string, unknown>;

  beforeAll(async () => {
    const run = await previewStack(stack);
    cloudInit = (YAML.parse(run.userData[masterId]) as { write_files: WriteFile[] }).write_files;
    documents = {};
    for (const [key, inputs] of run.rawInputs) {
      const name = inputs.name as string | undefined;
      if (key.startsWith("aws:ssm/parameter:Parameter::") && name?.startsWith(`/ci-fleet/${stack}/pillar/`) && !name.slice(`/ci-fleet/${stack}/pillar/`.length).includes("/")) {
        documents[name.slice(`/ci-fleet/${stack}/pillar/`.length)] = JSON.parse(inputs.value as string);
        if (name.endsWith(`/${masterId}`)) pillarDocument = inputs.value as string;
      }
    }
    salt = runSaltSide(documents, masterId);
  });

  const cloudInitFile = (p: string) => cloudInit.find((f) => f.path === p);

  test("the master's salt_master states render", () => {
    // Other formulas' problems are other tests' business (test/salt/program-pillar.test.ts).
    expect(salt.problems.filter((p) => p.includes("salt_master"))).toEqual([]);
    expect(Object.keys(salt.files)).toContain("/etc/salt/master.d/ci-fleet.conf");
  });

  test("cloud-init and Salt write the same bytes, owner and mode to /etc/salt/master.d/ci-fleet.conf", () => {
    const written = cloudInitFile("/etc/salt/master.d/ci-fleet.conf");
    const managed = salt.files["/etc/salt/master.d/ci-fleet.conf"];
    expect(written).toBeDefined();
    expect(managed).toBeDefined();
    expect(managed.text).toBe(written!.content);
    expect({ owner: `${managed.user}:${managed.group}`, mode: managed.mode }).toEqual({ owner: written!.owner, mode: written!.permissions });
  });

  test("after each writer, the master runs as root and can read the generated pillar and its pki dir", () => {
    const masterD = (files: Record<string, string>) => Object.fromEntries(Object.entries(files).filter(([p]) => p.startsWith("/etc/salt/master.d/")));
    const afterCloudInit = masterD(Object.fromEntries(cloudInit.map((f) => [f.path, f.content])));
    const afterSalt = { ...afterCloudInit, ...masterD(Object.fromEntries(Object.entries(salt.files).map(([p, f]) => [p, f.text ?? ""]))) };
    expect(Object.keys(afterSalt).length).toBeGreaterThan(0);
    for (const [writer, files] of [["cloud-init", afterCloudInit], ["salt", afterSalt]] as const) {
      const user = effectiveUser(files);
      expect({ writer, user }).toEqual({ writer, user: "root" });
      // /srv/ci-fleet/pillar/minions: root 0700 (salt_master.pillar_sync); pki: root (minion_keys, bootstrap chown).
      const pillarDir = salt.files["/srv/ci-fleet/pillar/minions"];
      const pkiDir = salt.files["/etc/salt/pki/master/minions"];
      expect(pillarDir).toMatchObject({ user: "root", mode: "0700" });
      expect(pkiDir).toMatchObject({ user: "root", mode: "0700" });
      expect(canRead(user, pillarDir.user!, pillarDir.mode!)).toBe(true);
      expect(canRead(user, pkiDir.user!, pkiDir.mode!)).toBe(true);
    }
  });

  test.each(Object.keys(PACKAGED_UNITS))("after each writer, salt-master runs as root under the packaged unit %s", (unit) => {
    const afterCloudInit = Object.fromEntries(cloudInit.map((f) => [f.path, f.content]));
    const afterSalt = { ...afterCloudInit, ...Object.fromEntries(Object.entries(salt.files).filter(([, f]) => f.text !== null).map(([p, f]) => [p, f.text!])) };
    for (const [writer, files] of [["cloud-init", afterCloudInit], ["salt", afterSalt]] as const) {
      expect({ writer, unit: systemdServiceUser(PACKAGED_UNITS[unit], files), master: masterProcessUser(PACKAGED_UNITS[unit], files) })
        .toEqual({ writer, unit: "root", master: "root" });
    }
  });

  test("the systemd drop-in: same bytes from both writers, and Salt reloads systemd before it restarts the master", () => {
    const p = "/etc/systemd/system/salt-master.service.d/ci-fleet.conf";
    const written = cloudInitFile(p);
    expect(written).toMatchObject({ owner: "root:root", permissions: "0644" });
    expect(salt.files[p]).toMatchObject({ text: written!.content, user: "root", group: "root", mode: "0644" });
    const [dropInId] = Object.entries(salt.states).find(([, st]) => st.function === "file.managed" && st.args.name === p)!;
    const [reloadId, reload] = Object.entries(salt.states).find(([, st]) => st.function === "cmd.run" && st.args.name === "systemctl daemon-reload" && requisites(st, "onchanges").includes(`file: ${dropInId}`))!;
    expect(reload).toBeDefined();
    const service = Object.values(salt.states).find((st) => st.function === "service.running" && st.args.name === "salt-master");
    expect(requisites(service, "require")).toContain(`cmd: ${reloadId}`);
    // The restart the drop-in triggers runs after the reload (it requires the running service, which requires the reload).
    const [, restart] = configRestart();
    expect(requisites(restart, "onchanges")).toContain(`file: ${dropInId}`);
  });

  /** The cmd.run that restarts the master when its config or unit drop-in changes. */
  const configRestart = () => {
    const found = Object.entries(salt.states).filter(([, st]) => st.function === "cmd.run" && String(st.args.name).includes("systemctl restart salt-master") && st.args.onchanges !== undefined);
    expect(found).toHaveLength(1);
    return found[0];
  };
  /** ORCHESTRATION_LOCK and RESTART_PENDING as salt/_runners/ci_fleet.py has them at import. */
  const runnerPaths = () => {
    const proc = spawnSync(python, ["-c", "import importlib.util,json,sys; s=importlib.util.spec_from_file_location('m', sys.argv[1]); m=importlib.util.module_from_spec(s); s.loader.exec_module(m); print(json.dumps([m.ORCHESTRATION_LOCK, m.RESTART_PENDING]))", path.join(ROOT, "salt/_runners/ci_fleet.py")], { encoding: "utf8" });
    expect(proc.stderr).toBe("");
    const [lock, pending] = JSON.parse(proc.stdout) as [string, string];
    return { lock, pending };
  };

  test("a config or unit drop-in change restarts the master only through the orchestration lock, after announcing itself", () => {
    // A `watch` restart would kill a running orchestration (its token revocation in `finally` never runs).
    const service = Object.values(salt.states).find((st) => st.function === "service.running" && st.args.name === "salt-master")!;
    expect(requisites(service, "watch")).toEqual([]);
    expect(service.args.enable).toBe(true);
    const [, restart] = configRestart();
    const watched = requisites(restart, "onchanges").map((r) => salt.states[r.split(": ")[1]]?.args.name);
    expect(watched.sort()).toEqual(["/etc/salt/master.d/ci-fleet.conf", "/etc/systemd/system/salt-master.service.d/ci-fleet.conf"]);
    // First boot: the bootstrap started the master; the restart runs only after service.running.
    const [serviceId] = Object.entries(salt.states).find(([, st]) => st === service)!;
    expect(requisites(restart, "require")).toContain(`service: ${serviceId}`);
    const { lock, pending } = runnerPaths();
    const command = String(restart.args.name);
    expect(command).toContain(`flock -x -w 900 ${lock} systemctl restart salt-master`);
    expect(command).toContain(pending);
    // Every restart, the runner-module one too, announces itself the same way.
    for (const [, st] of Object.entries(salt.states).filter(([, st]) => st.function === "cmd.run" && String(st.args.name).includes("systemctl restart salt-master"))) {
      expect(String(st.args.name)).toContain(`: > ${pending} && flock -x -w 900 ${lock} systemctl restart salt-master`);
    }
  });

  test("the rendered restart command, run with real flock(1) and a fake systemctl: marker while it waits, restart after the shared holder leaves, marker gone either way", () => {
    const [, restart] = configRestart();
    const { lock, pending } = runnerPaths();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-restart-"));
    try {
      const bin = path.join(dir, "bin");
      fs.mkdirSync(bin);
      const log = path.join(dir, "systemctl.log");
      // The shared holders (orchestration runs) hold the lock until the script releases them:
      // each touches held<n> under the lock, then waits for release<n>. No sleep stands in for
      // "the holder has the lock" or "the restart has started"; each is waited for (bounded).
      const held = (n: number) => path.join(dir, `held${n}`);
      const release = (n: number) => path.join(dir, `release${n}`);
      // A restart that did not wait for the first holder runs before release1 exists.
      fs.writeFileSync(path.join(bin, "systemctl"), `#!/bin/sh\necho "$*" >> ${log}\n[ -e ${release(1)} ] || echo restarted-while-held\n`, { mode: 0o755 });
      const tmpLock = path.join(dir, "orchestration.lock");
      const tmpPending = path.join(dir, "restart-pending");
      const command = String(restart.args.name).split(lock).join(tmpLock).split(pending).join(tmpPending);
      const holder = (n: number) => `flock -s ${tmpLock} sh -c 'touch ${held(n)}; until [ -e ${release(n)} ]; do sleep 0.05; done' &`;
      const waitFor = (file: string) => `i=0; until [ -e ${file} ] || [ $i -ge 600 ]; do sleep 0.05; i=$((i+1)); done`;
      const script = [
        holder(1),
        waitFor(held(1)),
        `( ${command} ) & restart=$!`,
        waitFor(tmpPending),
        `test -f ${tmpPending} && echo "pending-while-waiting mode=$(stat -c %a ${tmpPending})"`,
        `test -f ${log} && echo restarted-too-early`,
        `touch ${release(1)}`,
        'wait $restart; echo "status=$?"',
        `test -f ${tmpPending} && echo marker-left-behind`,
        `cat ${log}`,
        // A holder that outlasts the wait (released only after the restart gave up): flock fails, the marker still goes.
        holder(2),
        waitFor(held(2)),
        `( ${command.replace("-w 900", "-w 1")} ); echo "timeout-status=$?"`,
        `test -f ${tmpPending} && echo marker-left-after-timeout`,
        `touch ${release(2)}`,
        "wait",
      ].join("\n");
      const proc = spawnSync("/bin/sh", ["-c", script], { encoding: "utf8", env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, timeout: 120_000 });
      expect(proc.stdout.trim().split("\n")).toEqual(["pending-while-waiting mode=600", "status=0", "restart salt-master", "timeout-status=1"]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 150_000);

  test("a repository change does not restart the master; changed runner modules restart it only under the orchestration lock", () => {
    // file_roots / pillar_roots / orch and reactor sls are read from disk per request: no restart.
    // Runner modules stay loaded in the master's long-lived processes (scheduler, reactor), so a
    // change to salt/_runners needs a restart, but one that waits for running orchestration.
    const service = Object.values(salt.states).find((st) => st.function === "service.running" && st.args.name === "salt-master")!;
    expect(requisites(service, "watch").filter((r) => r.startsWith("git: "))).toEqual([]);
    const [gitId] = Object.entries(salt.states).find(([, st]) => st.function === "git.latest")!;
    const refresh = Object.entries(salt.states).filter(([, st]) => st.function === "cmd.run" && String(st.args.name).includes("systemctl restart salt-master") && st.args.onchanges === undefined);
    expect(refresh).toHaveLength(1);
    const [, cmd] = refresh[0];
    expect(cmd.args).not.toHaveProperty("onchanges");
    expect(requisites(cmd, "require")).toContain(`git: ${gitId}`);
    const { lock } = runnerPaths();
    expect(lock).toMatch(/^\/run\//);
    expect(String(cmd.args.name)).toContain(`flock -x -w `);
    expect(String(cmd.args.name)).toContain(` ${lock} `);
    expect(String(cmd.args.unless)).toContain(`${SALT_PATHS.repositoryCheckout}/salt/_runners/`);
  });

  test("the master serves no on-demand external pillar (on_demand_ext_pillar: [])", () => {
    // salt/config: default ["libvirt", "virtkey"]; pillar.ext / pillar_ext on demand compiles those
    // external pillars for any caller allowed to run it. None is needed here.
    const config = YAML.parse(cloudInitFile("/etc/salt/master.d/ci-fleet.conf")!.content) as Record<string, unknown>;
    expect(config.on_demand_ext_pillar).toEqual([]);
  });

  test("the bootstrap-only AWS files are removed once Salt has written root's own AWS config", () => {
    const bootstrapOnly = cloudInit.map((f) => f.path).filter((p) => p.startsWith("/etc/ci-fleet/aws/"));
    expect(bootstrapOnly.length).toBeGreaterThan(0);
    if (stack === "production") expect(bootstrapOnly).toEqual(expect.arrayContaining(["/etc/ci-fleet/aws/roles-anywhere.key", "/etc/ci-fleet/aws/roles-anywhere.crt"]));
    for (const p of bootstrapOnly) {
      const removal = Object.entries(salt.states).find(([, st]) => st.function === "file.absent" && (p === st.args.name || p.startsWith(`${st.args.name}/`)));
      expect({ path: p, removedBy: removal?.[0] }).toEqual({ path: p, removedBy: expect.any(String) });
      // Ordered after the state that writes /root/.aws/config (what the pillar sync timer reads).
      const required = requisites(removal![1], "require").filter((r) => r.startsWith("file: ")).map((r) => salt.states[r.slice("file: ".length)]);
      expect(required.map((st) => st?.args.name)).toContain("/root/.aws/config");
    }
    // Nothing Salt writes itself lives there.
    expect(Object.keys(salt.files).filter((p) => p.startsWith("/etc/ci-fleet/aws/") && salt.files[p].function !== "file.absent")).toEqual([]);
  });

  test("a private repository: git checks the pinned host key with the deploy key, in the bootstrap and in Salt", async () => {
    const provider = stack === "production" ? "equinix-metal" : "aws";
    const fleet = await generateFleet();
    const input = masterInput(fleet, provider);
    // cloud-init's side: the real builder with a real (test) deploy key.
    const written = (YAML.parse(renderCloudConfig(buildSaltMasterCloudConfig(input))) as { write_files: WriteFile[]; runcmd: unknown[] }).write_files;
    // Salt's side: the program's documents, the master's with an ssh repository and the pillar builder's fields.
    const docs = JSON.parse(JSON.stringify(documents)) as Record<string, { ci_fleet: { salt: { repository: string; ref: string } }; ci_fleet_master?: Record<string, unknown> }>;
    docs[masterId].ci_fleet.salt.repository = input.saltRepository.url;
    Object.assign(docs[masterId].ci_fleet_master!, saltRepositoryPillar("-----BEGIN OPENSSH PRIVATE KEY-----\nFAKE\n-----END OPENSSH PRIVATE KEY-----\n"));
    const side = runSaltSide(docs, masterId);
    expect(side.problems.filter((p) => p.includes("salt_master"))).toEqual([]);

    const gitConfig = written.find((f) => f.path === SALT_PATHS.gitSystemConfig);
    expect(gitConfig).toMatchObject({ owner: "root:root", permissions: "0644" });
    expect(side.files[SALT_PATHS.gitSystemConfig]).toMatchObject({ text: gitConfig!.content, user: "root", mode: "0644" });
    const command = saltRepositorySshCommand();
    expect(gitConfig!.content).toContain(`\tsshCommand = ${command}\n`);
    // git config values: '#', ';', '"' and '\\' would change the value; the command has none.
    expect(command).not.toMatch(/[#;"\\]/);
    // The key and host keys it names are the files both writers put there.
    expect(command).toContain(`-i ${SALT_PATHS.saltRepositoryDeployKey} `);
    expect(command).toContain(` -o UserKnownHostsFile=${SALT_PATHS.saltRepositoryKnownHosts}`);
    expect(command).toContain(" -o StrictHostKeyChecking=yes ");
    expect(command).toContain(" -o IdentitiesOnly=yes ");
    for (const p of [SALT_PATHS.saltRepositoryDeployKey, SALT_PATHS.saltRepositoryKnownHosts]) {
      expect(written.map((f) => f.path)).toContain(p);
      expect(side.files[p]?.function).toBe("file.managed");
    }

    // git.latest: no `identity` (Salt's ssh wrapper passes -oStrictHostKeyChecking=no), after the config.
    const latest = Object.entries(side.states).filter(([, st]) => st.function === "git.latest");
    expect(latest.length).toBe(1);
    const [, gitLatest] = latest[0];
    expect(gitLatest.args).not.toHaveProperty("identity");
    const [configId] = Object.entries(side.states).find(([, st]) => st.function === "file.managed" && st.args.name === SALT_PATHS.gitSystemConfig)!;
    expect(requisites(gitLatest, "require")).toContain(`file: ${configId}`);
    // Arguments salt.states.git.latest takes (unchanged in the 3008 notes), with the values the master needs.
    expect(gitLatest.args).toMatchObject({ name: input.saltRepository.url, target: SALT_PATHS.repositoryCheckout, rev: docs[masterId].ci_fleet.salt.ref, force_reset: true, force_fetch: true, user: "root" });

    // Nothing sets an ssh command that would override core.sshCommand or skip the host key check.
    const script = fs.readFileSync(path.join(ROOT, "cloud-init/scripts/bootstrap-salt-master.sh"), "utf8");
    expect(script.split("\n").filter((l) => !l.trim().startsWith("#")).join("\n")).not.toMatch(/GIT_SSH_COMMAND=|GIT_SSH=|StrictHostKeyChecking=no/);
    expect(script).toMatch(/unset GIT_SSH_COMMAND GIT_SSH/);
    expect(JSON.stringify(side.states)).not.toMatch(/StrictHostKeyChecking=no|"identity"/);
  }, 120_000);

  test("the drop-in is valid YAML with the options salt_runners/ci_fleet.py and the scheduler read", () => {
    const config = YAML.parse(cloudInitFile("/etc/salt/master.d/ci-fleet.conf")!.content) as Record<string, unknown>;
    expect(config).toMatchObject({
      user: "root",
      keep_jobs_seconds: 3600,
      pillar_safe_render_error: true,
      ci_fleet: { master_minion_id: masterId },
      runner_dirs: ["/srv/ci-fleet/repo/salt/_runners"],
      pillar_roots: { base: ["/srv/ci-fleet/repo/salt/pillar", "/srv/ci-fleet/pillar"] },
      file_roots: { base: ["/srv/ci-fleet/repo/salt"] },
      schedule: { "ci-fleet-reconcile": { function: "ci_fleet.reconcile", minutes: 5, maxrunning: 1 } },
      reactor: [
        { "ci-fleet/github-runner/unregistered": ["/srv/ci-fleet/repo/salt/orch/reactor/github_register.sls"] },
        { "ci-fleet/roles-anywhere/csr": ["/srv/ci-fleet/repo/salt/orch/reactor/roles_anywhere_csr.sls"] },
        { "salt/minion/*/start": ["/srv/ci-fleet/repo/salt/orch/reactor/minion_start.sls"] },
      ],
      publisher_acl_blacklist: { users: [], modules: expect.arrayContaining(["cmd.*"]) },
    });
    // An empty autosign_grains_dir is a path Salt walks, not "off": leave the default (kept absent).
    expect(config).not.toHaveProperty("autosign_grains_dir");
  });

  test("the master refuses authentication payloads below protocol version 3 (CVE-2025-62349)", () => {
    // salt/channel/server.py ReqServerChannel.handle_message: `minimum_version = opts.get("minimum_auth_version", 0)`;
    // a payload is refused when `minimum_version > 0 and version < minimum_version`. Version 3 is the payload
    // format with the per-minion session key and token checks; 0 turns the check off. Set explicitly so the
    // fleet does not depend on the packaged default (3 since PR #68468/#68473/#68474, but 0 in the fallback).
    const config = YAML.parse(cloudInitFile("/etc/salt/master.d/ci-fleet.conf")!.content) as Record<string, unknown>;
    expect(config.minimum_auth_version).toBe(3);
    const refused = (version: number) => (config.minimum_auth_version as number) > 0 && version < (config.minimum_auth_version as number);
    expect([0, 1, 2].map(refused)).toEqual([true, true, true]);
    expect(refused(3)).toBe(false);
  });

  test("every file both writers touch gets the same bytes (deploy key, known hosts)", () => {
    for (const [p, managed] of Object.entries(salt.files)) {
      const written = cloudInitFile(p);
      if (!written || managed.function !== "file.managed") continue;
      expect({ path: p, text: managed.text }).toEqual({ path: p, text: written.content });
    }
  });

  test("the master's pillar document stays under SSM's 8 KiB", () => {
    const bytes = Buffer.byteLength(pillarDocument, "utf8");
    expect(bytes).toBeLessThanOrEqual(8192);
  });
});
