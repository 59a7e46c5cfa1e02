/**
 * The boot scripts, run for real: the metadata guard in a private network namespace with
 * the real nft (a non-root process is refused, root is not), and the Salt installer's key
 * check with real gpg (a key that is not the pinned one is never trusted).
 */
import { execFileSync, spawnSync } from "child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import * as path from "path";
import { PINS, compactScript } from "../../infra/bootstrap/cloud-config";
import { requireTool } from "./fixtures";

const SCRIPTS = path.join(__dirname, "..", "..", "cloud-init", "scripts");
const scriptPath = (name: string) => path.join(SCRIPTS, name);

describe("every script", () => {
  it.each(readdirSync(SCRIPTS))("%s parses with dash (sh -n), as shipped and compacted", (name) => {
    const sh = requireTool("dash", "dash");
    execFileSync(sh, ["-n", scriptPath(name)]);
    execFileSync(sh, ["-n", "-c", compactScript(readFileSync(scriptPath(name), "utf8"))]);
  });
});

describe("metadata guard (nft, in a private network namespace)", () => {
  /** Runs a shell script as root inside a fresh network namespace; returns its stdout. */
  function inNetns(script: string): string {
    requireTool("nft", "nftables");
    requireTool("ip", "iproute2");
    requireTool("setpriv", "util-linux");
    const unshare = requireTool("unshare", "util-linux");
    const result = spawnSync(unshare, ["--net", "sh", "-ec", script], { encoding: "utf8", timeout: 30000 });
    if (result.status !== 0) throw new Error(`netns script failed (${result.status}): ${result.stderr}`);
    return result.stdout;
  }

  it("refuses non-root users, admits root, and is idempotent", () => {
    // Debian's python3: the probe also runs as `nobody`, who cannot use a per-user install.
    const python = "/usr/bin/python3";
    if (!existsSync(python)) throw new Error("/usr/bin/python3 is missing: install the Debian package python3");
    const guard = scriptPath("metadata-guard.sh");
    // A listener on the metadata addresses (IPv4 and IPv6) stands in for the service.
    const out = inNetns(`
      ip link set lo up
      ip addr add 169.254.169.254/32 dev lo
      ip addr add fd00:ec2::254/128 dev lo nodad
      ${python} -c '
import socket, threading
for family, addr in ((socket.AF_INET, "169.254.169.254"), (socket.AF_INET6, "fd00:ec2::254")):
    s = socket.socket(family); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((addr, 80)); s.listen(16)
    threading.Thread(target=lambda s=s: [s.accept()[0].close() for _ in iter(int, 1)], daemon=True).start()
import time; time.sleep(20)' >/dev/null 2>&1 &
      listener=$!
      sleep 0.5
      sh ${guard} 169.254.169.254 fd00:ec2::254
      sh ${guard} 169.254.169.254 fd00:ec2::254
      probe='import socket, sys
try:
    socket.create_connection((sys.argv[1], 80), timeout=3).close(); print("open")
except OSError as e:
    print("refused")'
      for addr in 169.254.169.254 fd00:ec2::254; do
        echo "root $addr $(${python} -c "$probe" $addr)"
        echo "nobody $addr $(setpriv --reuid=65534 --regid=65534 --clear-groups ${python} -c "$probe" $addr)"
      done
      echo "tables $(nft list tables | grep -c ci_fleet_metadata)"
      kill $listener
    `);
    expect(out.trim().split("\n")).toEqual([
      "root 169.254.169.254 open",
      "nobody 169.254.169.254 refused",
      "root fd00:ec2::254 open",
      "nobody fd00:ec2::254 refused",
      "tables 1",
    ]);
  });

  it("the Salt master's firewall loads, is idempotent, and admits only loopback and the given networks", () => {
    const out = inNetns(`
      sh ${scriptPath("salt-master-firewall.sh")} 10.0.0.0/16 192.168.0.0/24
      sh ${scriptPath("salt-master-firewall.sh")} 10.0.0.0/16 192.168.0.0/24
      nft list table inet ci_fleet_salt_master
    `);
    expect(out.match(/table inet ci_fleet_salt_master/g)).toHaveLength(1);
    expect(out).toMatch(/iif "lo" tcp dport \{ 4505, 4506 \} accept/);
    expect(out).toMatch(/ip saddr \{ 10\.0\.0\.0\/16, 192\.168\.0\.0\/24 \} tcp dport \{ 4505, 4506 \} accept/);
    expect(out).toMatch(/tcp dport \{ 4505, 4506 \} counter packets \d+ bytes \d+ drop/);
  });
});

describe("ci-fleet-install-salt: the signing key is checked before it is trusted", () => {
  let dir: string;
  let gnupg: string;
  let pinnedFingerprint: string;
  let otherFingerprint: string;

  /** A fresh signing key in a throwaway keyring; returns its fingerprint. */
  function newKey(name: string): string {
    execFileSync(requireTool("gpg", "gnupg"), ["--batch", "--homedir", gnupg, "--passphrase", "", "--quick-gen-key", `${name} <${name}@example.invalid>`, "ed25519", "sign", "never"], { stdio: "ignore" });
    const colons = execFileSync("gpg", ["--batch", "--homedir", gnupg, "--with-colons", "--list-keys", `${name}@example.invalid`], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    return colons.split("\n").find((l) => l.startsWith("fpr:"))!.split(":")[9]!;
  }
  const exportKeys = (file: string, ...fingerprints: string[]) =>
    writeFileSync(file, execFileSync("gpg", ["--batch", "--homedir", gnupg, "--armor", "--export", ...fingerprints], { encoding: "utf8" }));

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), "ci-fleet-install-salt-"));
    gnupg = path.join(dir, "gnupg");
    mkdirSync(gnupg, { mode: 0o700 });
    pinnedFingerprint = newKey("pinned");
    otherFingerprint = newKey("other");
    // Stand-ins for apt-get: record the call, touch nothing.
    mkdirSync(path.join(dir, "bin"));
    writeFileSync(path.join(dir, "bin", "apt-get"), `#!/bin/sh\necho "$*" >> ${dir}/apt-get.log\n`);
    chmodSync(path.join(dir, "bin", "apt-get"), 0o755);
    exportKeys(path.join(dir, "pinned.asc"), pinnedFingerprint);
    exportKeys(path.join(dir, "other.asc"), otherFingerprint);
    exportKeys(path.join(dir, "both.asc"), pinnedFingerprint, otherFingerprint);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function install(keyFile: string, run: string) {
    const root = path.join(dir, run);
    mkdirSync(root);
    const env = {
      PATH: `${dir}/bin:${process.env.PATH}`,
      SALT_VERSION: PINS.salt.version,
      SALT_REPOSITORY: "https://packages.broadcom.com/artifactory/saltproject-deb/",
      SALT_KEY_URL: `file://${path.join(dir, keyFile)}`,
      SALT_KEY_FINGERPRINT: pinnedFingerprint,
      SALT_KEYRING: `${root}/keyrings/salt.gpg`,
      SALT_APT_SOURCES: `${root}/salt.sources`,
      SALT_APT_PREFERENCES: `${root}/salt-pin`,
      SALT_POLICY_RC_D: `${root}/policy-rc.d`,
      CI_FLEET_WORK_DIR: `${root}/work`,
    };
    const result = spawnSync("sh", [scriptPath("install-salt.sh"), "salt-minion"], { env, encoding: "utf8" });
    return { ...result, root };
  }

  it("installs the pinned key, source, pin and exact packages when the fingerprint matches", () => {
    const { status, stderr, root } = install("pinned.asc", "good");
    expect({ status, stderr }).toEqual({ status: 0, stderr: "" });
    const keyring = execFileSync("gpg", ["--batch", "--show-keys", "--with-colons", `${root}/keyrings/salt.gpg`], { encoding: "utf8", env: { ...process.env, GNUPGHOME: gnupg } });
    expect(keyring).toContain(pinnedFingerprint);
    expect(keyring).not.toContain(otherFingerprint);
    expect(readFileSync(`${root}/salt.sources`, "utf8")).toContain(`Signed-By: ${root}/keyrings/salt.gpg`);
    expect(readFileSync(`${root}/salt-pin`, "utf8")).toBe(`Package: salt-*\nPin: version ${PINS.salt.version}\nPin-Priority: 1001\n`);
    expect(readFileSync(`${dir}/apt-get.log`, "utf8")).toContain(`install -y -qq --no-install-recommends salt-common=${PINS.salt.version} salt-minion=${PINS.salt.version}`);
    // Daemons were held back during the install, and the hold is gone afterwards.
    expect(existsSync(`${root}/policy-rc.d`)).toBe(false);
  });

  it.each([
    ["another key", "other.asc"],
    ["the pinned key bundled with another", "both.asc"],
  ])("refuses %s and trusts nothing", (_what, keyFile) => {
    const { status, stderr, root } = install(keyFile, `bad-${keyFile}`);
    expect(status).toBe(1);
    expect(stderr).toContain("signing key fingerprint is not the pinned");
    expect(existsSync(`${root}/keyrings/salt.gpg`)).toBe(false);
    expect(existsSync(`${root}/salt.sources`)).toBe(false);
  });
});
