import * as fs from "fs";
import * as path from "path";
import * as YAML from "yaml";
import { ROOT } from "../support/preview";
import { buildkiteMinions, renderFixtures, renderStack, type RenderedMinion, type StackRender } from "./support";

/**
 * buildkite-agent.cfg as the pinned agent reads it (buildkite/agent@v3.123.1
 * cliconfig/file.go parseLine: `key=value`, `#` comments, one pair of quotes trimmed;
 * cliconfig/loader.go: a bool is strconv.ParseBool, a slice is split on ",").
 */
function parseAgentConfig(text: string): Map<string, string> {
  const config = new Map<string, string>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq < 0) throw new Error(`the agent cannot parse this config line: ${raw}`);
    let value = line.slice(eq + 1).trim();
    if ((value.match(/"/g) ?? []).length === 2 || (value.match(/'/g) ?? []).length === 2) value = value.replace(/^["']+|["']+$/g, "");
    config.set(line.slice(0, eq).trim(), value);
  }
  return config;
}

/**
 * The `start` flags ci-fleet may set, as named at v3.123.1 (clicommand/agent_start.go
 * AgentStartConfig `cli:` tags and clicommand/global.go shared flags). A key the agent
 * does not know is silently ignored, so a misspelt key would quietly drop a setting.
 */
const START_FLAGS = new Set([
  "name", "tags", "build-path", "hooks-path", "plugins-path", "git-clean-flags",
  "disconnect-after-job", "no-command-eval", "no-local-hooks", "no-plugins",
]);

const BOOL = new Set(["true", "false", "1", "0", "t", "f", "TRUE", "FALSE", "True", "False", "T", "F"]);

describe("buildkite-agent.cfg on the production runners", () => {
  let render: StackRender;
  beforeAll(async () => {
    render = await renderStack("production");
  });

  test("every key is a start flag of the pinned agent; booleans parse", () => {
    for (const id of buildkiteMinions(render)) {
      const cfg = parseAgentConfig(render.minions[id].files["/etc/buildkite-agent/buildkite-agent.cfg"]);
      for (const [key, value] of cfg) {
        expect({ id, key, known: START_FLAGS.has(key) }).toEqual({ id, key, known: true });
        if (key.startsWith("no-") || key === "disconnect-after-job") expect({ id, key, bool: BOOL.has(value) }).toEqual({ id, key, bool: true });
      }
      expect(cfg.get("name")).toBe(id);
      expect(cfg.get("disconnect-after-job")).toBe("true");
      expect(cfg.get("build-path")).toBe("/var/lib/ci-agent/work/builds");
      expect(cfg.get("hooks-path")).toBe("/etc/buildkite-agent/hooks");
    }
  });

  test("tags carry the queue (the agent splits the value on commas)", () => {
    for (const id of buildkiteMinions(render)) {
      const doc = render.documents[id].ci_fleet;
      const cfg = parseAgentConfig(render.minions[id].files["/etc/buildkite-agent/buildkite-agent.cfg"]);
      const tags = cfg.get("tags")!.split(",");
      expect(tags).toContain(`queue=${doc.runner!.queue}`);
      expect(tags).toContain(`trusted=${doc.runner!.trusted}`);
    }
  });

  test("plugins stay on on trusted queues (no-plugins named explicitly)", () => {
    // v3.123.1 agent_start.go: `if (cfg.NoCommandEval || cfg.NoLocalHooks) && !isSetNoPlugins
    // { cfg.NoPlugins = true }` -- no-command-eval alone silently disables plugins unless the
    // file names no-plugins.
    for (const id of buildkiteMinions(render)) {
      expect(render.documents[id].ci_fleet.runner!.trusted).toBe(true);
      const cfg = parseAgentConfig(render.minions[id].files["/etc/buildkite-agent/buildkite-agent.cfg"]);
      expect({ id, "no-command-eval": cfg.get("no-command-eval"), "no-plugins": cfg.get("no-plugins"), "no-local-hooks": cfg.get("no-local-hooks") }).toEqual({
        id,
        "no-command-eval": "true",
        "no-plugins": "false",
        "no-local-hooks": undefined,
      });
    }
  });
});

describe("buildkite-agent.cfg on an untrusted queue (test/salt/fixtures.py staging-default-r1)", () => {
  let minions: Record<string, RenderedMinion>;
  beforeAll(() => {
    minions = renderFixtures();
  });

  test("no command eval, no repository hooks, no plugins; only known keys", () => {
    const cfg = parseAgentConfig(minions["staging-default-r1"].files["/etc/buildkite-agent/buildkite-agent.cfg"]);
    expect(cfg.get("tags")!.split(",")).toContain("trusted=false");
    expect([cfg.get("no-command-eval"), cfg.get("no-local-hooks"), cfg.get("no-plugins")]).toEqual(["true", "true", "true"]);
    for (const key of cfg.keys()) expect({ key, known: START_FLAGS.has(key) }).toEqual({ key, known: true });
  });
});

describe("the pinned agent release", () => {
  const defaults = YAML.parse(fs.readFileSync(path.join(ROOT, "salt/buildkite/parameters/defaults.yaml"), "utf8")).buildkite as {
    version: string;
    source: string;
    sha256: string;
  };

  test("is 3.41 or later (OIDC), and source and sha256 name that exact asset", () => {
    const [major, minor] = defaults.version.split(".").map(Number);
    expect(major === 3 && minor >= 41).toBe(true);
    expect(defaults.source).toBe(
      `https://github.com/buildkite/agent/releases/download/v${defaults.version}/buildkite-agent-linux-amd64-${defaults.version}.tar.gz`,
    );
    expect(defaults.sha256).toMatch(/^[0-9a-f]{64}$/);
  });
});
