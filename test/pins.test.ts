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
  ["buildkite-agent (salt/buildkite)", salt("buildkite")],
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
  for (const fingerprint of [cloudInitPins.salt.key_fingerprint, salt("teleport").repo.key_fingerprint]) {
    expect(fingerprint).toMatch(/^[0-9A-F]{40}$/);
    expect(fingerprint).not.toMatch(PLACEHOLDER);
  }
});

/**
 * Salt advisories on the 3007 line, as published (OSV/PyPA advisory database, Salt release notes):
 * the pinned release must be at or after every fix.
 */
const SALT_3007_ADVISORIES: [string, string, number][] = [
  // PYSEC-2026-1902: authentication protocol version downgrade allows minion impersonation;
  // affected 3007.4 through 3007.8, fixed in 3007.9 (which adds the master's minimum_auth_version).
  ["CVE-2025-62349", "minion impersonation by an authentication-protocol downgrade", 9],
  // Fixed in the same release: unsafe YAML loader in the junos execution module.
  ["CVE-2025-62348", "unsafe YAML loading in the junos module", 9],
];

test.each(SALT_3007_ADVISORIES)("the pinned Salt release has the fix for %s (%s)", (_cve, _what, fixedInPatch) => {
  const [major, patch] = String(cloudInitPins.salt.version).split(".").map(Number);
  expect(major).toBe(3007);
  expect(patch).toBeGreaterThanOrEqual(fixedInPatch);
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
