import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as zlib from "zlib";

/**
 * The Teleport machine's first highstate and every retry after it (salt/teleport/auth.sls,
 * salt/top.sls):
 * - on equinix-metal the audit backend (DynamoDB/S3) is reached through the drop-in's
 *   AWS_CONFIG_FILE=/root/.aws/config, so teleport must not start before aws_credentials wrote it;
 * - `tctl create -f` of the roles and the GitHub connector must wait until the auth service
 *   answers (`tctl status`, bounded), or the first apply fails;
 * - a failed apply is retried by the next highstate (stamp = sha256 of what was applied, written
 *   only on success; `unless` the stamp matches, never `onchanges` of the resources file);
 * - the decoded resources (the connector's client secret) never outlive the command.
 * The rendered command is run against a fake `tctl` in a temp dir.
 */

const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
const ROOT = path.resolve(__dirname, "../..");

type Fn = { function: string; args: Record<string, any> };
type Minion = { errors: string[]; states: Record<string, { sls: string; functions: Fn[] }> };

function highstates(): Record<string, Minion> {
  const proc = spawnSync(python, [path.join(ROOT, "test/access/highstate.py"), "--salt-root", path.join(ROOT, "salt")], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  if (proc.status !== 0) throw new Error(`highstate.py exited ${proc.status}:\n${proc.stderr}`);
  return JSON.parse(proc.stdout);
}

/** The top file's sls list for a minion, in order (render.py, real Jinja2). */
function topOrder(minionId: string): string[] {
  const script = String.raw`
import json, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
import render
root, minion_id = sys.argv[2], sys.argv[3]
docs = render.fixtures.documents()
with tempfile.TemporaryDirectory() as pillar_dir:
    os.makedirs(os.path.join(pillar_dir, "minions"))
    for mid, doc in docs.items():
        with open(os.path.join(pillar_dir, "minions", mid + ".json"), "w") as handle:
            json.dump(doc, handle)
    pillar, _, _ = render.compile_pillar(root, pillar_dir, minion_id, render.Recorder())
grains = render.grains_for(minion_id)
extra = {"salt": render.salt_functions(pillar, grains, render.Recorder())}
env = render.make_env([root])
top = render.parse_rendered(render.render_file(env, "top.sls", pillar, grains, minion_id, extra))
print(json.dumps(render.top_sls_for(top, minion_id)[0]))
`;
  const proc = spawnSync(python, ["-c", script, path.join(ROOT, "test/salt"), path.join(ROOT, "salt"), minionId], { encoding: "utf8" });
  if (proc.status !== 0) throw new Error(proc.stderr);
  return JSON.parse(proc.stdout);
}

const refs = (list: unknown): string[] => ((list as Record<string, string>[] | undefined) ?? []).map((r) => Object.entries(r).map(([m, id]) => `${m}: ${id}`)[0]);
const only = (m: Minion, id: string): Fn => {
  const s = m.states[id];
  expect({ id, present: s !== undefined }).toEqual({ id, present: true });
  return s.functions[0];
};

describe("teleport.auth: first boot and retries", () => {
  const minions = highstates();

  test.each(["production-teleport", "staging-teleport"])("%s: aws_credentials comes before teleport.auth in the top file", (id) => {
    const order = topOrder(id);
    expect(order).toContain("teleport.auth");
    expect(order).toContain("aws_credentials");
    expect(order.indexOf("aws_credentials")).toBeLessThan(order.indexOf("teleport.auth"));
  });

  test("equinix-metal: teleport starts only after root's AWS config (the drop-in's AWS_CONFIG_FILE) is written", () => {
    const m = minions["production-teleport"];
    expect(m.errors).toEqual([]);
    const config = Object.entries(m.states).find(([sid, s]) => sid.startsWith("aws_credentials-") && s.functions.some((f) => f.function === "file.managed" && f.args.name === "/root/.aws/config"));
    expect(config).toBeDefined();
    const service = only(m, "teleport-auth-service-running");
    expect(refs(service.args.require)).toContain(`file: ${config![0]}`);
    // The drop-in itself is loaded explicitly before the (re)start.
    const reload = Object.entries(m.states).find(([, s]) => s.functions.some((f) => f.function === "cmd.run" && f.args.name === "systemctl daemon-reload" && refs(f.args.onchanges).includes("file: teleport-auth-aws-dropin-file-managed")));
    expect(reload).toBeDefined();
    expect(refs(service.args.require)).toContain(`cmd: ${reload![0]}`);
  });

  test.each(["production-teleport", "staging-teleport"])("%s: the apply is retried until it succeeds (unless the stamp matches, no onchanges)", (id) => {
    const m = minions[id];
    expect(m.errors).toEqual([]);
    const apply = only(m, "teleport-auth-resources-apply-cmd-run");
    expect(apply.args).not.toHaveProperty("onchanges");
    expect(apply.args.unless).toMatch(/^grep -qx "[0-9a-f]{64} \$\(date \+%F\)" \/var\/lib\/ci-fleet\/teleport-resources\.sha256$/);
    expect(refs(apply.args.require)).toEqual(expect.arrayContaining(["file: teleport-auth-resources-file-managed", "service: teleport-auth-service-running"]));
    const file = only(m, "teleport-auth-resources-file-managed");
    expect(file.args.unless).toBe(apply.args.unless);
    // Cleanup runs whether or not the apply succeeded (no requisite on the cmd).
    for (const sid of ["teleport-auth-resources-file-absent", "teleport-auth-resources-gz-b64-file-absent"]) {
      expect(only(m, sid).args.require).toBeUndefined();
    }
  });

  describe("the rendered command against a fake tctl", () => {
    const m = minions["production-teleport"];
    const apply = () => only(m, "teleport-auth-resources-apply-cmd-run");
    const pillarValue = (): string => {
      const docs = spawnSync(python, ["-c", "import sys,json;sys.path.insert(0,sys.argv[1]);import fixtures;print(json.dumps(fixtures.documents()))", path.join(ROOT, "test/salt")], { encoding: "utf8" });
      return JSON.parse(docs.stdout)["production-teleport"].ci_fleet_teleport.resources_gzip_base64;
    };

    /** Runs `unless` then `name` the way Salt's cmd.run does (sh -c), with paths moved under `dir`. */
    function highstate(dir: string, tctl: string): { ran: boolean; status: number; stderr: string } {
      const move = (s: string) => s.split("/run/ci-fleet").join(`${dir}/run`).split("/var/lib/ci-fleet").join(`${dir}/lib`);
      fs.mkdirSync(path.join(dir, "run"), { recursive: true, mode: 0o700 });
      fs.mkdirSync(path.join(dir, "bin"), { recursive: true });
      fs.writeFileSync(path.join(dir, "bin", "tctl"), tctl, { mode: 0o755 });
      fs.writeFileSync(path.join(dir, "bin", "sleep"), "#!/bin/sh\nexit 0\n", { mode: 0o755 });
      const env = { ...process.env, PATH: `${dir}/bin:${process.env.PATH}`, FAKE: dir };
      const unless = spawnSync("/bin/sh", ["-c", move(apply().args.unless)], { env });
      if (unless.status === 0) return { ran: false, status: 0, stderr: "" };
      // file.managed (contents_pillar) writes the encoded resources before the command.
      fs.writeFileSync(path.join(dir, "run", "teleport-resources.yaml.gz.b64"), pillarValue() + "\n", { mode: 0o600 });
      const run = spawnSync("/bin/sh", ["-c", move(apply().args.name)], { env, encoding: "utf8" });
      return { ran: true, status: run.status ?? -1, stderr: run.stderr };
    }

    // status answers after FAKE/ready exists; create records what it was given.
    const fakeTctl = `#!/bin/sh
case "$1" in
  status) [ -e "$FAKE/ready" ] || { echo "connection refused" >&2; exit 1; }; echo "Cluster test"; exit 0 ;;
  create) [ -e "$FAKE/ready" ] || exit 1; [ -e "$FAKE/fail-create" ] && exit 1; cat "$3" >> "$FAKE/created"; echo ok; exit 0 ;;
esac
exit 2
`;

    test("waits for the auth service, applies the decoded stream, stamps only on success, cleans up either way", () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-tctl-"));
      try {
        // 1. Auth never answers: bounded wait, failure, no stamp, no decoded file left behind.
        let r = highstate(dir, fakeTctl);
        expect(r).toMatchObject({ ran: true });
        expect(r.status).not.toBe(0);
        expect(fs.existsSync(path.join(dir, "lib", "teleport-resources.sha256"))).toBe(false);
        expect(fs.existsSync(path.join(dir, "created"))).toBe(false);
        expect(fs.readdirSync(path.join(dir, "run"))).toEqual([]);
        // 2. Auth answers but create fails: still no stamp, so the next highstate tries again.
        fs.writeFileSync(path.join(dir, "ready"), "");
        fs.writeFileSync(path.join(dir, "fail-create"), "");
        r = highstate(dir, fakeTctl);
        expect(r.status).not.toBe(0);
        expect(fs.existsSync(path.join(dir, "lib", "teleport-resources.sha256"))).toBe(false);
        expect(fs.readdirSync(path.join(dir, "run"))).toEqual([]);
        // 3. Next highstate: applied, stamped, cleaned.
        fs.rmSync(path.join(dir, "fail-create"));
        r = highstate(dir, fakeTctl);
        expect(r).toMatchObject({ ran: true, status: 0 });
        expect(fs.readFileSync(path.join(dir, "created"), "utf8")).toBe(zlib.gunzipSync(new Uint8Array(Buffer.from(pillarValue(), "base64"))).toString("utf8"));
        expect(fs.readdirSync(path.join(dir, "run"))).toEqual([]);
        // 4. Unchanged resources: nothing runs the same day.
        expect(highstate(dir, fakeTctl).ran).toBe(false);
        // 5. A day later they are applied again (tctl create -f overwrites): roles or the
        //    connector lost or edited in the backend come back within a day.
        const stamp = path.join(dir, "lib", "teleport-resources.sha256");
        fs.writeFileSync(stamp, fs.readFileSync(stamp, "utf8").replace(/ \d{4}-\d{2}-\d{2}$/m, " 2000-01-01"));
        r = highstate(dir, fakeTctl);
        expect(r).toMatchObject({ ran: true, status: 0 });
        expect(highstate(dir, fakeTctl).ran).toBe(false);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});
