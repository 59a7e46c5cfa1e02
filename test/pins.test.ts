import * as fs from "fs";
import * as path from "path";
import * as YAML from "yaml";
import { TELEPORT_VERSION } from "../infra/teleport/config-v3-fields";

/**
 * Every artifact a machine downloads is pinned by version and checksum, once: these tests
 * fail on a placeholder checksum, a version that disagrees with its URL, two places that
 * pin the same thing differently, or anything piped from the network into a shell.
 */

const ROOT = path.resolve(__dirname, "..");
const yaml = (rel: string) => YAML.parse(fs.readFileSync(path.join(ROOT, rel), "utf8")) as Record<string, any>;
const SHA256 = /^[0-9a-f]{64}$/;
const PLACEHOLDER = /^0+$/;

const cloudInitPins = yaml("cloud-init/pins.yaml");
const salt = (formula: string) => yaml(`salt/${formula}/parameters/defaults.yaml`)[formula];

const DOWNLOADS: [string, { version: string; source?: string; url?: string; sha256: string }][] = [
  ["GitHub Actions runner (salt/github_runner)", salt("github_runner")],
  ["aws_signing_helper (salt/aws_credentials)", salt("aws_credentials").signing_helper],
  ["aws_signing_helper (cloud-init/pins.yaml)", cloudInitPins.aws_signing_helper],
];

test.each(DOWNLOADS)("%s: a real sha256, and the version in its URL", (_what, pin) => {
  expect(pin.sha256).toMatch(SHA256);
  expect(pin.sha256).not.toMatch(PLACEHOLDER);
  expect(pin.source ?? pin.url).toContain(pin.version);
});

test("the signing helper is the same download in cloud-init and in Salt", () => {
  const fromSalt = salt("aws_credentials").signing_helper;
  expect({ version: cloudInitPins.aws_signing_helper.version, url: cloudInitPins.aws_signing_helper.url, sha256: cloudInitPins.aws_signing_helper.sha256 }).toEqual({
    version: fromSalt.version,
    url: fromSalt.source,
    sha256: fromSalt.sha256,
  });
});

test("signing keys are pinned by full fingerprints, none a placeholder", () => {
  const fingerprints = [cloudInitPins.salt.key_fingerprint, salt("teleport").repo.key_fingerprint, salt("buildkite").repo.key_fingerprint];
  for (const fingerprint of fingerprints) {
    expect(fingerprint).toMatch(/^[0-9A-F]{40}$/);
    expect(fingerprint).not.toMatch(PLACEHOLDER);
  }
  expect(new Set(fingerprints).size).toBe(fingerprints.length);
});

test("buildkite-agent's repository key is looked up by its pinned fingerprint; no tarball sha256 is left", () => {
  // buildkite-agent comes from Buildkite's signed apt repository (no tarball, no sha256 to pin):
  // its key is looked up by that fingerprint and installed only if it has it (salt/buildkite/repo.sls).
  const repo = salt("buildkite").repo;
  expect(repo.key_url).toBe(`https://keys.openpgp.org/vks/v1/by-fingerprint/${repo.key_fingerprint}`);
  expect(salt("buildkite")).not.toHaveProperty("sha256");
});

/**
 * Salt advisories, as published (OSV/PyPA advisory database, Salt release notes and pull requests):
 * the pinned release must be at or after every fix, on the line it belongs to. The pin is on the
 * 3008 LTS line (loadPins accepts nothing else); the first release of each line that has the fix:
 */
const SALT_ADVISORIES: [string, string, Record<number, number>][] = [
  // PYSEC-2026-1902: authentication protocol version downgrade allows minion impersonation;
  // affected 3007.4 through 3007.8, fixed in 3007.9 (which adds the master's minimum_auth_version).
  // 3008: the fix reached master with saltstack/salt PR #68474 ("Merge forward 3007.x into master",
  // 2025-11-20, minimum_auth_version default 3), months before the 3008 branch: 3008.0 has it.
  ["CVE-2025-62349", "minion impersonation by an authentication-protocol downgrade", { 3007: 9, 3008: 0 }],
  // Fixed in the same releases and merged forward the same way: unsafe YAML loader in the junos module.
  ["CVE-2025-62348", "unsafe YAML loading in the junos module", { 3007: 9, 3008: 0 }],
];

test.each(SALT_ADVISORIES)("the pinned Salt release has the fix for %s (%s)", (_cve, _what, fixedIn) => {
  const [major, patch] = String(cloudInitPins.salt.version).split(".").map(Number);
  expect(major).toBe(3008);
  expect(Object.keys(fixedIn).map(Number)).toContain(major);
  expect(patch).toBeGreaterThanOrEqual(fixedIn[major]);
});

test("every Salt version the project names is the one cloud-init/pins.yaml pins", () => {
  const pinned = String(cloudInitPins.salt.version);
  const mentions: string[] = [];
  const walk = (rel: string) => {
    const abs = path.join(ROOT, rel);
    if (fs.statSync(abs).isDirectory()) {
      for (const e of fs.readdirSync(abs)) if (e !== "__snapshots__" && e !== "node_modules") walk(path.join(rel, e));
      return;
    }
    // The conformance record cites other Salt releases as evidence (where a fix landed, which
    // release a source was read at); it pins nothing.
    if (rel === path.join("docs", "upstream-conformance.md")) return;
    for (const m of fs.readFileSync(abs, "utf8").matchAll(/\b300[6-9]\.\d+\b/g)) mentions.push(`${rel}: ${m[0]}`);
  };
  ["README.md", "docs", "salt", "cloud-init", "infra", "test/bootstrap"].forEach(walk);
  expect(mentions.filter((m) => !m.endsWith(`: ${pinned}`))).toEqual([]);
});

test("Salt installs the Teleport release the program renders configs for", () => {
  expect(String(salt("teleport").version)).toBe(TELEPORT_VERSION);
});

test("nothing is piped from the network into a shell", () => {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
      const rel = path.join(dir, e.name);
      if (e.isDirectory()) walk(rel);
      else if (!rel.endsWith(".js")) files.push(rel);
    }
  };
  ["salt", "cloud-init", "infra", "scripts"].forEach(walk);
  const offenders = files.filter((f) => /\b(curl|wget)\b[^\n|]*\|\s*(sudo\s+)?(ba|z)?sh\b/.test(fs.readFileSync(path.join(ROOT, f), "utf8")));
  expect(offenders).toEqual([]);
  expect(files.length).toBeGreaterThan(50);
});
