import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { parse } from "yaml";
import { TELEPORT_CA_PIN_PATH } from "../../infra/teleport/config";
import { pillarDocuments, previewStack, ROOT } from "../support/preview";
import type { RenderedMinion } from "../support/salt-render";

/**
 * Issue 12: nodes pin the Teleport cluster's CA. What both stacks really render (the program's
 * pillar documents through the real Salt tree, test/salt/render.py):
 * - every node config names the pin file in `ca_pin` (never trust on first use);
 * - before the master knows the pins, a node's highstate leaves its agent alone with a
 *   `ci-fleet pending:` comment; with them, Salt writes the pin file root 0600 and the agent
 *   requires it;
 * - the pins are never in a pillar document the program writes (SSM): only the master serves
 *   them, from its own state (salt/pillar/minion.sls, tested with the real Jinja2 render in
 *   test_teleport_trust.py together with the pin computation, the impostor locks and the
 *   forged-returns check).
 */

const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
const PINS = [`sha256:${"0".repeat(63)}1`, `sha256:${"f".repeat(64)}`];

interface Rendered {
  documents: Record<string, any>;
  minions: Record<string, RenderedMinion>;
}

/** The stack's Salt tree rendered with its pillar documents, optionally with the pins the master would serve each node. */
function renderTree(documents: Record<string, any>, withPins: boolean): Record<string, RenderedMinion> {
  const served: Record<string, any> = {};
  for (const [id, doc] of Object.entries(documents)) {
    served[id] = withPins && doc.ci_fleet?.role !== "teleport" ? { ...doc, ci_fleet_teleport_ca: { pins: PINS } } : doc;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-ca-pin-"));
  const file = path.join(dir, "documents.json");
  fs.writeFileSync(file, JSON.stringify(served), { mode: 0o600 });
  try {
    const proc = spawnSync(python, [path.join(ROOT, "test/salt/render.py"), "--salt-root", path.join(ROOT, "salt"), "--contracts", path.join(ROOT, "docs/contracts.md"), "--documents", file], {
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    });
    if (proc.error) throw proc.error;
    const result = JSON.parse(proc.stdout);
    if (result.fatal) throw new Error(result.fatal);
    return result.minions;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const cache = new Map<string, Promise<Rendered & { pinned: Record<string, RenderedMinion> }>>();
function rendered(stack: string) {
  if (!cache.has(stack)) {
    cache.set(
      stack,
      previewStack(stack).then((run) => {
        const documents = pillarDocuments(run);
        const machines = new Set(run.machines.map((m) => m.hostname));
        const own = Object.fromEntries(Object.entries(documents).filter(([id]) => machines.has(id)));
        return { documents: own, minions: renderTree(documents, false), pinned: renderTree(documents, true) };
      }),
    );
  }
  return cache.get(stack)!;
}

const defaults = parse(fs.readFileSync(path.join(ROOT, "salt/teleport/parameters/defaults.yaml"), "utf8")).teleport;

describe("Teleport CA pins (python: pin = SPKI sha256 vs OpenSSL, master's record, pillar, impostor locks, forged returns)", () => {
  test("test/teleport/test_teleport_trust.py passes", () => {
    const run = spawnSync(python, [path.join(__dirname, "test_teleport_trust.py")], { encoding: "utf8" });
    if (run.status !== 0) throw new Error(`${run.stdout}\n${run.stderr}`);
  });

  test("the node config and the Salt formula name the same pin file", () => {
    expect(defaults.ca_pin_file).toBe(TELEPORT_CA_PIN_PATH);
    expect(defaults.ca_pin_pending_comment.startsWith("ci-fleet pending:")).toBe(true);
  });
});

describe.each(["production", "production-aws"])("stack %s: nodes pin the cluster CA", (stack) => {
  test("every node config names the pin file in ca_pin; the Teleport machine has no node config", async () => {
    const { documents } = await rendered(stack);
    const nodes = Object.entries(documents).filter(([, doc]) => doc.ci_fleet.role !== "teleport");
    expect(nodes.length).toBeGreaterThan(2);
    for (const [id, doc] of nodes) {
      expect([id, parse(doc.ci_fleet.teleport.node_config).teleport.ca_pin]).toEqual([id, [TELEPORT_CA_PIN_PATH]]);
    }
    for (const doc of Object.values(documents).filter((d) => d.ci_fleet.role === "teleport")) expect(doc.ci_fleet.teleport.node_config).toBeUndefined();
  });

  test("no pillar document the program writes carries pins: only the master serves them", async () => {
    const { documents } = await rendered(stack);
    for (const doc of Object.values(documents)) {
      expect(doc.ci_fleet_teleport_ca).toBeUndefined();
      expect(JSON.stringify(doc)).not.toMatch(/"sha256:[0-9a-f]{64}"/);
    }
  });

  test("without pins a node's agent is neither started nor restarted: a pending comment instead", async () => {
    const { minions, documents } = await rendered(stack);
    for (const [id, doc] of Object.entries(documents)) {
      const states = minions[id].states;
      if (doc.ci_fleet.role === "teleport") {
        expect(Object.keys(states).filter((s) => s.startsWith("teleport-node-"))).toEqual([]);
        continue;
      }
      expect(minions[id].problems).toEqual([]);
      const pending = states["teleport-node-ca-pin-test-succeed_without_changes"];
      expect([id, pending?.function, pending?.args.comment]).toEqual([id, "test.succeed_without_changes", defaults.ca_pin_pending_comment]);
      expect(Object.values(states).filter((s) => s.function.startsWith("service.") && s.args.name === "teleport")).toEqual([]);
      expect(Object.values(states).filter((s) => s.args.name === TELEPORT_CA_PIN_PATH && s.function === "file.managed")).toEqual([]);
      expect(states["teleport-node-join-token-file-absent"]?.function).toBe("file.absent");
    }
  });

  test("with pins Salt writes them root 0600 to the file the config names, and the agent requires and watches it", async () => {
    const { pinned, documents } = await rendered(stack);
    for (const [id, doc] of Object.entries(documents)) {
      if (doc.ci_fleet.role === "teleport") continue;
      const states = pinned[id].states;
      expect(pinned[id].problems).toEqual([]);
      expect(states["teleport-node-ca-pin-test-succeed_without_changes"]).toBeUndefined();
      const file = states["teleport-node-ca-pin-file-managed"];
      expect([id, file.function, file.args.name, file.args.contents, file.args.user, file.args.group, file.args.mode]).toEqual([id, "file.managed", TELEPORT_CA_PIN_PATH, PINS.join("\n"), "root", "root", "0600"]);
      // Teleport reads the file as newline-separated pins after TrimSpace (lib/utils TryReadValueAsFile).
      expect((file.args.contents as string).trim().split("\n")).toEqual(PINS);
      expect(file.args.watch_in).toEqual([{ service: "teleport-node-service-running" }]);
      const service = states["teleport-node-service-running"];
      expect([service.function, service.args.name, service.args.require]).toEqual(["service.running", "teleport", [{ file: "teleport-node-ca-pin-file-managed" }]]);
    }
  });
});
