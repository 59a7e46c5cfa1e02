/**
 * Render checks of the Salt tree (salt/) with real Jinja2/PyYAML (Debian python3-jinja2,
 * python3-yaml): one python3 process renders every sls for every test minion and
 * returns JSON (test/salt/render.py); this file asserts on it.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { METADATA_SERVICE_ADDRESSES } from "../../infra/bootstrap/cloud-config";
import { MachineProviderName } from "../../infra/config/model";

const repo = path.resolve(__dirname, "..", "..");
const saltRoot = path.join(repo, "salt");
const contracts = path.join(repo, "docs", "contracts.md");
// Debian's interpreter (its dist-packages hold python3-jinja2); override for other hosts.
const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");

interface MinionResult {
  problems: string[];
  pillar_sls: string[];
  pillar_matchers: string[];
  pillar_minion_id: string | null;
  pillar_provider: string | null;
  pillar_top_keys: string[];
  pillar_equals_own_document: boolean;
  top_sls: string[];
  highstate_sls: string[];
  state_ids: string[];
  pillar_paths: string[];
  grain_paths: string[];
  external_sources_missing: string[];
  files: Record<string, string>;
}
interface RenderResult {
  fatal?: string;
  minions: Record<string, MinionResult>;
  fixture_problems: string[];
  pillar_paths_outside_contract: string[];
  contract_top_keys: string[];
}

function render(root: string, args: string[] = []): { status: number | null; result: RenderResult; stderr: string } {
  const run = spawnSync(python, [...args, path.join(__dirname, "render.py"), "--salt-root", root, "--contracts", contracts], {
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  if (run.error) throw new Error(`cannot run ${python} (Debian package python3): ${run.error.message}`);
  let result: RenderResult;
  try {
    result = JSON.parse(run.stdout);
  } catch {
    throw new Error(`render.py did not return JSON (status ${run.status}):\n${run.stderr}`);
  }
  return { status: run.status, result, stderr: run.stderr };
}

/** A grain anywhere in the pillar top or pillar sls would let a minion choose its secrets. */
export function grainMatches(text: string): string[] {
  const patterns = [/grain/i, /G@/, /grains\s*\[/, /grains\.get/, /match:\s*grain/, /P@/];
  return patterns.filter((p) => p.test(text)).map(String);
}

const expectedTop: Record<string, string[]> = {
  "production-salt-master": ["base", "access", "salt_master", "aws_credentials", "teleport.node"],
  "production-teleport": ["base", "access", "aws_credentials", "teleport.auth"],
  "production-default-r1": ["base", "access", "teleport.node", "runner", "aws_credentials", "github_runner"],
  "production-release-r1": ["base", "access", "teleport.node", "runner", "aws_credentials", "buildkite"],
  "staging-salt-master": ["base", "access", "salt_master", "aws_credentials", "teleport.node"],
  "staging-teleport": ["base", "access", "aws_credentials", "teleport.auth"],
  "staging-infra-r1": ["base", "access", "teleport.node", "runner", "aws_credentials", "github_runner"],
  "staging-default-r1": ["base", "access", "teleport.node", "runner", "aws_credentials", "buildkite"],
};
const FAKE_SECRETS = ["FAKE-SECRET-KEY", "kind: github", "H4sI"];

let rendered: RenderResult;
beforeAll(() => {
  const { status, result, stderr } = render(saltRoot);
  if (result.fatal) throw new Error(result.fatal);
  if (status !== 0) throw new Error(`render.py exited ${status}:\n${stderr}`);
  rendered = result;
});

describe("render harness", () => {
  test("a missing python3-jinja2 fails with the Debian package name", () => {
    // -S hides dist-packages, as on a machine without python3-jinja2.
    const { status, result } = render(saltRoot, ["-S"]);
    expect(status).toBe(2);
    expect(result.fatal).toMatch(/python3-jinja2/);
  });

  test("renders every test minion of both providers", () => {
    expect(Object.keys(rendered.minions).sort()).toEqual(Object.keys(expectedTop).sort());
  });

  test("fixtures follow docs/contracts.md exactly (no undeclared key)", () => {
    expect(rendered.contract_top_keys).toEqual(["ci_fleet", "ci_fleet_master", "ci_fleet_roles_anywhere_issued", "ci_fleet_teleport", "ci_fleet_teleport_ca"]);
    expect(rendered.fixture_problems).toEqual([]);
  });

  test("every pillar key the tree reads is declared by the contract (or is common/inline)", () => {
    expect(rendered.pillar_paths_outside_contract).toEqual([]);
  });
});

describe.each(Object.keys(expectedTop))("minion %s", (minionId) => {
  const m = () => rendered.minions[minionId];

  test("every sls renders, parses, has unique ids, known functions, existing includes and requisites", () => {
    expect(m().problems).toEqual([]);
  });

  test("top.sls gives the role's states", () => {
    expect(m().top_sls).toEqual(expectedTop[minionId]);
    expect(m().state_ids.length).toBeGreaterThan(10);
  });

  test("pillar is exactly its own document, chosen by minion id", () => {
    expect(m().pillar_sls).toEqual(["common", "minion"]);
    expect(m().pillar_matchers).not.toContain("grain");
    expect(m().pillar_minion_id).toBe(minionId);
    expect(m().pillar_equals_own_document).toBe(true);
  });

  test("no grain is read and no secret value reaches a rendered file", () => {
    expect(m().grain_paths).toEqual([]);
    const text = Object.values(m().files).join("\n");
    for (const secret of FAKE_SECRETS) expect(text).not.toContain(secret);
  });

  test("rendered files (snapshot)", () => {
    expect(m().files).toMatchSnapshot();
  });

  test("the rendered firewall loads in nft and limits the metadata service to uid 0", () => {
    const firewall = m().files["/etc/nftables.conf"];
    // The same addresses cloud-init's metadata guard blocks for every uid but 0.
    const provider = rendered.minions[minionId].pillar_provider as MachineProviderName;
    const ipv4 = METADATA_SERVICE_ADDRESSES[provider].filter((a) => !a.includes(":"));
    expect(firewall).toContain(`ip daddr { ${ipv4.join(", ")} } meta skuid 0 accept`);
    expect(firewall).toMatch(/policy drop/);
    const saltPorts = /tcp dport \{ 4505, 4506 \}/.test(firewall);
    expect(saltPorts).toBe(minionId.endsWith("-salt-master"));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nft-"));
    try {
      const file = path.join(dir, "nftables.conf");
      fs.writeFileSync(file, firewall);
      const nft = fs.existsSync("/usr/sbin/nft") ? "/usr/sbin/nft" : "nft";
      const check = spawnSync(nft, ["-c", "-f", file], { encoding: "utf8" });
      if (check.error) throw new Error(`nft is missing: apt-get install nftables (${check.error.message})`);
      expect(check.stderr).toBe("");
      expect(check.status).toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("pillar top file", () => {
  const pillarDir = path.join(saltRoot, "pillar");
  test("no grain anywhere in the pillar tree", () => {
    for (const name of fs.readdirSync(pillarDir)) {
      expect([name, grainMatches(fs.readFileSync(path.join(pillarDir, name), "utf8"))]).toEqual([name, []]);
    }
  });
  test("the grain check catches a grain-targeted top file", () => {
    expect(grainMatches("base:\n  'G@role:runner':\n    - match: compound\n")).not.toEqual([]);
    expect(grainMatches("base:\n  {{ grains['id'] }}:\n    - minion\n")).not.toEqual([]);
    expect(grainMatches("base:\n  role:runner:\n    - match: grain\n")).not.toEqual([]);
  });
  test("two minions each see only their own document", () => {
    const a = rendered.minions["production-default-r1"];
    const b = rendered.minions["production-release-r1"];
    expect(a.pillar_minion_id).toBe("production-default-r1");
    expect(b.pillar_minion_id).toBe("production-release-r1");
    expect(a.pillar_top_keys).toEqual(["ci_fleet", "ci_fleet_common"]);
    expect(rendered.minions["production-salt-master"].pillar_top_keys).toContain("ci_fleet_master");
    expect(rendered.minions["production-teleport"].pillar_top_keys).toContain("ci_fleet_teleport");
  });
});

describe("the checks catch a broken tree", () => {
  let broken: RenderResult;
  beforeAll(() => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "salt-broken-"));
    fs.cpSync(saltRoot, dir, { recursive: true });
    fs.appendFileSync(path.join(dir, "base", "packages.sls"), [
      "",
      "base-firewall-nftables-conf-file-managed:",
      "  file.managed: [{name: /tmp/x}]",
      "base-packages-typo-file-manged:",
      "  file.manged: [{name: /tmp/y}]",
      "base-packages-needs-pkg-installed:",
      "  pkg.installed: [{name: x}, {require: [{file: no-such-state}]}]",
      "badly-named-file-absent:",
      "  file.absent: [{name: /tmp/z}]",
      "",
    ].join("\n"));
    fs.writeFileSync(path.join(dir, "base", "init.sls"), "include:\n  - .packages\n  - .no_such_sls\n");
    fs.appendFileSync(path.join(dir, "runner", "user.sls"), "\n{{ pillar['ci_fleet']['no_such_key'] }}\n");
    const run = render(dir);
    fs.rmSync(dir, { recursive: true, force: true });
    broken = run.result;
  });
  test("duplicate id, unknown function, missing include, missing requisite, bad id, bad render", () => {
    const problems = broken.minions["production-default-r1"].problems.join("\n");
    expect(problems).toMatch(/duplicate state id base-firewall-nftables-conf-file-managed/);
    expect(problems).toMatch(/unknown state function file\.manged/);
    expect(problems).toMatch(/sls base\.no_such_sls does not exist/);
    expect(problems).toMatch(/require file: no-such-state not in the highstate/);
    expect(problems).toMatch(/badly-named-file-absent: id must start with 'base-packages-'/);
    expect(problems).toMatch(/runner\/user\.sls: UndefinedError/);
  });
});

describe("files other engineers build are present", () => {
  test.each([
    "runner/files/ci-netboot-selftest",
    "buildkite/files/hooks/environment",
    "buildkite/files/hooks/ci-fleet-job-secrets.js",
  ])("salt/%s", (rel) => {
    expect(fs.existsSync(path.join(saltRoot, rel))).toBe(true);
  });
});

describe("scripts the tree installs (python3 unit tests: fake SSM/GitHub/Salt, real openssl/gpg/dpkg)", () => {
  test("test/salt/test_scripts.py passes", () => {
    const run = spawnSync(python, [path.join(__dirname, "test_scripts.py")], { encoding: "utf8" });
    if (run.error) throw new Error(`cannot run ${python}: ${run.error.message}`);
    expect(run.stderr).toMatch(/Ran \d+ tests/);
    expect([run.status, run.stderr.split("\n").filter((l) => /FAIL|ERROR/.test(l))]).toEqual([0, []]);
  });
});
