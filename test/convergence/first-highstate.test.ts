/**
 * Issue 13: the first highstate on equinix-metal must not fail while the machine's Roles
 * Anywhere certificate has not arrived (it comes through the signed CSR event flow, delivered
 * by a `state.apply queue=True` that waits for the running highstate: the first highstate can
 * never see it). Checked on the Salt tree as real Jinja2 renders it with the program's own
 * pillar (test/support/salt-render.ts): which states need the certificate, and what Salt does
 * with each of them on a first run without it.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { renderStack, type RenderedMinion, type StackRender } from "../support/salt-render";

const ROOT = path.resolve(__dirname, "..", "..");
/** The state that writes root's credential_process config (it names the machine's certificate). */
const ROOT_AWS_CONFIG = "aws_credentials-roles_anywhere-config-file-managed";
const LOCAL_FIRST_CERTIFICATE = "aws_credentials-roles_anywhere-first-certificate-cmd-run";
const REQUISITES = ["require", "watch"] as const;
const PENDING_PREFIX = JSON.parse(/^PENDING_PREFIX = (".*")$/m.exec(fs.readFileSync(path.join(ROOT, "salt/_runners/ci_fleet_converge.py"), "utf8"))![1]) as string;

type Ref = Record<string, string>;
const refs = (value: unknown): Ref[] => (Array.isArray(value) ? (value as Ref[]) : []);
const refId = (ref: Ref) => Object.values(ref)[0];

/**
 * States that cannot succeed without the certificate: those that require or watch root's Roles
 * Anywhere config (they start with its credential_process), everything that requires or watches
 * one of them, and commands that talk to the Teleport auth service (tctl), which is one of them.
 */
function needsCertificate(minion: RenderedMinion): Set<string> {
  const need = new Set<string>();
  // The master issues its own first certificate in the same run, before its config is written
  // (aws_credentials-roles_anywhere-first-certificate-cmd-run): nothing there waits for the CSR flow.
  const config = minion.states[ROOT_AWS_CONFIG];
  if (config && refs(config.args.require).some((ref) => refId(ref) === LOCAL_FIRST_CERTIFICATE)) return need;
  for (const [id, state] of Object.entries(minion.states)) {
    if (REQUISITES.some((r) => refs(state.args[r]).some((ref) => refId(ref) === ROOT_AWS_CONFIG))) need.add(id);
    const text = JSON.stringify([state.args.name, state.args.unless, state.args.onlyif]);
    if (/\btctl\b/.test(text)) need.add(id);
  }
  for (let grew = true; grew; ) {
    grew = false;
    for (const [id, state] of Object.entries(minion.states)) {
      if (need.has(id)) continue;
      if (REQUISITES.some((r) => refs(state.args[r]).some((ref) => need.has(refId(ref))))) {
        need.add(id);
        grew = true;
      }
    }
  }
  return need;
}

/** The gates: stateful commands whose onchanges_in name the states they hold back. */
function gates(minion: RenderedMinion): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [id, state] of Object.entries(minion.states)) {
    const held = refs(state.args.onchanges_in).map(refId);
    if (state.function === "cmd.run" && held.length > 0) out.set(id, held);
  }
  return out;
}

/** What salt/states/cmd.py `_reinterpreted_state` makes of a stateful command's last stdout line. */
function runStateful(command: string, env: Record<string, string>): { changed: boolean; comment: string } {
  const r = spawnSync("sh", ["-c", command], { encoding: "utf8", env: { PATH: "/usr/bin:/bin", ...env } });
  expect(r.status).toBe(0);
  const last = r.stdout.trimEnd().split("\n").pop()!;
  const parsed = spawnSync("python3", ["-c", "import shlex,sys,json; print(json.dumps(dict(i.split('=') for i in shlex.split(sys.argv[1]))))", last], { encoding: "utf8" });
  expect(parsed.status).toBe(0); // a second "=" in a pair fails Salt's parse too
  const data = JSON.parse(parsed.stdout) as Record<string, string>;
  return { changed: ["yes", "true", "1"].includes((data.changed ?? "no").toLowerCase()), comment: data.comment ?? "" };
}

/** The production stack's tree, rendered once for this file. */
let productionRender: Promise<StackRender> | undefined;
const production = () => (productionRender ??= renderStack("production"));

describe("the first highstate on equinix-metal, before the Roles Anywhere certificate arrives", () => {
  let render: StackRender;
  beforeAll(async () => {
    render = await production();
  }, 120_000);

  test("the rendered tree has no problems for any machine", () => {
    for (const [id, minion] of Object.entries(render.minions)) expect({ id, problems: minion.problems }).toEqual({ id, problems: [] });
  });

  test("every state that needs the certificate is held back by a gate, and nothing else is", () => {
    const found: Record<string, string[]> = {};
    for (const [id, minion] of Object.entries(render.minions)) {
      const need = needsCertificate(minion);
      const held = new Set([...gates(minion).values()].flat());
      expect({ id, ungated: [...need].filter((s) => !held.has(s)).sort() }).toEqual({ id, ungated: [] });
      expect({ id, heldButNotNeeded: [...held].filter((s) => !need.has(s)).sort() }).toEqual({ id, heldButNotNeeded: [] });
      if (need.size > 0) found[id] = [...need].sort();
    }
    // Today only the Teleport machine (cluster state and audit in DynamoDB/S3); the graph says so.
    expect(found).toEqual({
      "production-teleport": ["teleport-auth-resources-apply-cmd-run", "teleport-auth-resources-file-managed", "teleport-auth-service-running"],
    });
  });

  test("without the certificate the gate reports no change and a pending comment (its states are skipped, True); with it, a change (they run)", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-gate-"));
    try {
      for (const [id, minion] of Object.entries(render.minions)) {
        for (const [gate] of gates(minion)) {
          const command = String(minion.states[gate].args.name);
          expect(minion.states[gate].args.stateful).toBe(true);
          const certificate = /test -s (\S+);/.exec(command)![1];
          expect(certificate).toBe("/etc/ci-fleet/roles-anywhere/current/certificate.pem");
          const local = path.join(dir, `${id}.pem`);
          const run = () => runStateful(command.replace(certificate, local), {});
          const before = run();
          expect(before.changed).toBe(false);
          expect(before.comment.startsWith(PENDING_PREFIX)).toBe(true);
          fs.writeFileSync(local, "-----BEGIN CERTIFICATE-----\n");
          const after = run();
          expect(after).toEqual({ changed: true, comment: "the Roles Anywhere certificate is in place" });
        }
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("on a first run without the certificate no state fails for want of it: every state that needs it is skipped", () => {
    // Salt's requisite semantics (salt/state.py check_requisite): a state with `onchanges` whose
    // targets report no changes is not run and returns True; a state that requires a True state runs.
    const minion = render.minions["production-teleport"];
    const need = needsCertificate(minion);
    const gated = new Set([...gates(minion).values()].flat());
    const outcome: Record<string, string> = {};
    for (const id of Object.keys(minion.states)) outcome[id] = gated.has(id) ? "skipped (pending)" : need.has(id) ? "FAILS" : "runs";
    expect(Object.entries(outcome).filter(([, v]) => v === "FAILS")).toEqual([]);
    expect(Object.values(outcome).filter((v) => v === "skipped (pending)")).toHaveLength(3);
  });
});

// Review of issue 13: a dpkg killed mid-install (a first-boot salt-call stopped by its bound, a
// power loss) leaves its journal behind, and apt then refuses every install until someone runs
// `dpkg --configure -a` (apt-pkg/deb/debsystem.cc CheckUpdates): every later pkg state failed.
describe("an interrupted dpkg is repaired before any package state", () => {
  const ID = "base-dpkg_recovery-configure-pending-cmd-run";
  let render: StackRender;
  beforeAll(async () => {
    render = await production();
  }, 120_000);

  test("every machine's highstate runs `dpkg --configure -a` first (order: first), and nothing else claims first", () => {
    for (const [id, minion] of Object.entries(render.minions)) {
      const state = minion.states[ID];
      expect({ id, fun: state?.function, name: state?.args.name, order: state?.args.order }).toEqual({
        id,
        fun: "cmd.run",
        name: "dpkg --force-confdef --force-confold --configure -a",
        order: "first",
      });
      const others = Object.entries(minion.states).filter(([sid, st]) => sid !== ID && (st.args.order === "first" || (typeof st.args.order === "number" && st.args.order <= 0)));
      expect({ id, others: others.map(([sid]) => sid) }).toEqual({ id, others: [] });
      // Nothing requires a package state before it could run.
      expect(Object.keys(state!.args).filter((k) => /^(require|watch|onchanges|prereq)$/.test(k))).toEqual([]);
    }
  });

  test("it runs only when dpkg's journal holds an entry apt would refuse (all-digit names), as apt tests it", () => {
    const onlyif = String(render.minions["production-teleport"].states[ID].args.onlyif);
    expect(onlyif).toContain("/var/lib/dpkg/updates");
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-dpkg-"));
    try {
      const updates = path.join(dir, "updates");
      const check = () => spawnSync("sh", ["-c", onlyif.split("/var/lib/dpkg/updates").join(updates)], { encoding: "utf8" }).status;
      expect(check()).not.toBe(0); // no directory
      fs.mkdirSync(updates);
      expect(check()).not.toBe(0); // empty: a clean dpkg
      fs.writeFileSync(path.join(updates, "tmp.i"), "");
      expect(check()).not.toBe(0); // dpkg's temporary file: apt ignores it too
      fs.writeFileSync(path.join(updates, "0001"), "Package: x\n");
      expect(check()).toBe(0); // an interrupted run
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("on aws no gate: the instance profile is there from the first boot", () => {
  test("no state is held back", async () => {
    const render = await renderStack("production-aws");
    for (const [id, minion] of Object.entries(render.minions)) {
      expect({ id, problems: minion.problems }).toEqual({ id, problems: [] });
      expect({ id, gates: [...gates(minion).keys()] }).toEqual({ id, gates: [] });
    }
  }, 120_000);
});
