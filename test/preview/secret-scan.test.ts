import { createHash } from "crypto";
import { findSecretLeaks } from "../../tools/preview/main";
import { MIN_SCANNED_SECRET, SecretScanner, secretNeedles } from "../../tools/preview/secret-scan";

/**
 * The leak scan: exactly as strict as comparing every form of every secret with every text,
 * at a cost that depends on the bytes scanned, not on bytes × secrets. Cost is measured by
 * the scanner's own deterministic work counter, never by a clock.
 */

const hex = (seed: string, bytes: number) => {
  let out = "";
  for (let i = 0; out.length < bytes * 2; i++) out += createHash("sha256").update(`${seed}:${i}`).digest("hex");
  return out.slice(0, bytes * 2);
};
const b64 = (seed: string, bytes: number) => Buffer.from(hex(seed, bytes), "hex").toString("base64");

/** The definition the scanner must agree with (the scan as it was before it was made linear). */
function naiveLeaks(files: Record<string, string>, secrets: string[]): string[] {
  const needles: string[] = [];
  for (const s of secrets) {
    if (s.length < MIN_SCANNED_SECRET || s === "[secret]") continue;
    needles.push(s, Buffer.from(s).toString("base64"), JSON.stringify(s).slice(1, -1));
  }
  return Object.keys(files).filter((f) => needles.some((n) => n.length >= MIN_SCANNED_SECRET && files[f].includes(n))).sort();
}

/** Like the runners' user-data: a long common text, one key per machine, and its masked copy. */
function machine(i: number): { real: string; masked: string; key: string } {
  const head = `#cloud-config\nhostname: runner-${i}\n${"packages: [qemu-system-x86, ipxe-qemu, dnsmasq-base]\n".repeat(40)}`;
  const key = `-----BEGIN EC PRIVATE KEY-----\n${b64(`key${i}`, 120).match(/.{1,64}/g)!.join("\n")}\n-----END EC PRIVATE KEY-----\n`;
  const tail = "runcmd:\n  - [systemctl, enable, --now, salt-minion]\n".repeat(20);
  return {
    real: `${head}write_files:\n  - path: /etc/salt/pki/minion/minion.pem\n    content: ${JSON.stringify(key)}\n${tail}`,
    masked: `${head}write_files:\n  - path: /etc/salt/pki/minion/minion.pem\n    content: "[secret]"\n${tail}`,
    key,
  };
}

/** A fleet of n machines: the written files (masked) and the secrets (keys and whole real user-data). */
function fleet(n: number): { files: Record<string, string>; secrets: string[] } {
  const files: Record<string, string> = {};
  const secrets: string[] = [];
  for (let i = 1; i <= n; i++) {
    const m = machine(i);
    files[`machines/runner-${i}/user-data`] = m.masked;
    secrets.push(m.key, m.real, ...m.key.split("\n").filter((l) => l.length >= 16));
  }
  files["resources.json"] = JSON.stringify({ resources: Array.from({ length: n }, (_, i) => ({ name: `runner-${i + 1}`, userData: "[secret]", publicKey: b64(`pub${i}`, 91) })) }, null, 2);
  return { files, secrets };
}

describe("the leak scan finds exactly what comparing every form with every text finds", () => {
  test("plain, base64 and JSON-escaped forms, at the start, the end, overlapping, and in needles sharing prefixes", () => {
    const shared = "x".repeat(50);
    const secrets = [
      "line one\nline \"two\"",
      `${shared}-alpha-secret`,
      `${shared}-beta-secret`,
      `${shared}-alpha`, // a prefix of another secret
      "short", // too short to scan
      "[secret]",
      "ünïcödé-secret-välue",
      "aaaaaaaaab",
    ];
    const files: Record<string, string> = {
      none: `${shared}-gamma ${shared}-alph [secret] short aaaaaaaaa`,
      plain: `${shared}-beta-secret at the start`,
      end: `at the end ${shared}-alpha`,
      b64: `x ${Buffer.from(secrets[0]).toString("base64")} y`,
      json: JSON.stringify({ s: secrets[0] }),
      unicode: JSON.stringify({ s: "ünïcödé-secret-välue" }),
      overlap: "aaaaaaaaaaaaaaaaab!",
      empty: "",
    };
    const expected = naiveLeaks(files, secrets);
    expect(expected).toEqual(["b64", "end", "json", "overlap", "plain", "unicode"]);
    expect(findSecretLeaks(files, secrets)).toEqual(expected);
  });

  test("agrees with the naive scan on generated fleets and on every needle cut short or written whole", () => {
    const { files, secrets } = fleet(12);
    const scanner = new SecretScanner(secrets);
    expect(scanner.leakingFiles(files)).toEqual([]);
    // Each needle, whole, in some text: found; one character short: found only if another needle is in it.
    for (const needle of secretNeedles(secrets).filter((_, i) => i % 7 === 0)) {
      const texts = { whole: `..${needle}..`, short: `..${needle.slice(0, -1)}..`, late: `${"#cloud-config\n".repeat(3)}${needle}` };
      expect(scanner.leakingFiles(texts)).toEqual(naiveLeaks(texts, secrets));
    }
    // A real user-data written by mistake is caught, in every form.
    const leaked = { ...files, "machines/runner-3/user-data": machine(3).real, "b64.txt": Buffer.from(machine(5).real).toString("base64") };
    expect(scanner.leakingFiles(leaked)).toEqual(naiveLeaks(leaked, secrets));
    expect(scanner.leakingFiles(leaked)).toEqual(["b64.txt", "machines/runner-3/user-data"]);
  });

  test("the JSON-escaped form of a secret with any character JSON escapes, and of one with none", () => {
    const secrets = Array.from({ length: 0x10000 }, (_, c) => `secret-${String.fromCharCode(c)}-value`);
    const needles = new Set(secretNeedles(secrets));
    expect(secrets.filter((s) => !needles.has(JSON.stringify(s).slice(1, -1)))).toEqual([]);
    expect(secretNeedles(["\ud83d\ude00 paired surrogates", "a\u2028b\u2029 line separators"]).sort()).toEqual(
      ["\ud83d\ude00 paired surrogates", "a\u2028b\u2029 line separators"].flatMap((s) => [s, Buffer.from(s).toString("base64"), JSON.stringify(s).slice(1, -1)]).filter((n, i, all) => all.indexOf(n) === i).sort(),
    );
  });

  test("masked() replaces every occurrence of every form, and nothing else", () => {
    const secret = "s3cr3t-value-123";
    const scanner = new SecretScanner([secret]);
    const text = `a ${secret} b ${Buffer.from(secret).toString("base64")} c ${secret}`;
    expect(scanner.masked(text)).toBe("a [secret] b [secret] c [secret]");
    expect(scanner.masked("nothing here")).toBe("nothing here");
  });
});

describe("the leak scan costs the bytes it reads, not bytes × secrets", () => {
  const { files } = fleet(40);
  const text = Object.values(files).join("\n");

  test("the automaton has at most 8 states per needle, however long the needles and their shared prefixes", () => {
    const { secrets } = fleet(40);
    const scanner = new SecretScanner(secrets);
    // Building it is most of the scan's cost at fleet scale (60 000 needles at 1000 runners):
    // anchors of 24 characters made three times the states for no fewer verifications.
    expect(scanner.states).toBeLessThanOrEqual(8 * scanner.needles.length + 1);
    expect(scanner.states).toBeGreaterThan(scanner.needles.length);
  });

  test("the same text costs the same whatever the number of secrets", () => {
    const work = (count: number) => {
      const secrets = Array.from({ length: count }, (_, i) => b64(`absent${i}`, 48));
      const scanner = new SecretScanner(secrets);
      scanner.leaks(text);
      return scanner.work;
    };
    // Each character is one step forward, plus failure steps that never outnumber the
    // forward ones (Aho-Corasick): at most twice the bytes, however many secrets. The scan
    // that compared every needle with every text did 1000 times more work for 1000 times the secrets.
    const counts = [10, 100, 1000, 3000];
    const works = counts.map(work);
    console.log(`leak scan of ${text.length} characters: ${counts.map((c, i) => `${c} secrets -> ${works[i]} steps`).join(", ")}`);
    for (const w of works) {
      expect(w).toBeGreaterThanOrEqual(text.length);
      expect(w).toBeLessThanOrEqual(2 * text.length);
    }
  });

  test("a fleet twice as large costs about twice as much, with its secrets sharing long prefixes with the files", () => {
    const work = (n: number) => {
      const f = fleet(n);
      const scanner = new SecretScanner(f.secrets);
      expect(scanner.leakingFiles(f.files)).toEqual([]);
      return { work: scanner.work, bytes: Object.values(f.files).reduce((a, t) => a + t.length, 0) };
    };
    const small = work(50);
    const large = work(100);
    const huge = work(200);
    expect(large.work / small.work).toBeLessThan(2.2);
    expect(huge.work / large.work).toBeLessThan(2.2);
    // Bounded by the bytes: the real user-data (a secret) shares kilobytes with each masked file.
    expect(huge.work).toBeLessThan(huge.bytes * 3);
  });

  test("findSecretLeaks does not search each text once per secret", () => {
    // The quadratic scan called String.prototype.includes once per (file, needle) pair.
    const { files: f, secrets } = fleet(30);
    const spies = (["includes", "indexOf", "lastIndexOf", "search", "match", "matchAll", "split"] as const).map((m) => jest.spyOn(String.prototype, m));
    let calls: number;
    try {
      findSecretLeaks(f, secrets);
      calls = spies.reduce((a, s) => a + s.mock.calls.length, 0);
    } finally {
      spies.forEach((s) => s.mockRestore());
    }
    expect(calls).toBeLessThanOrEqual(Object.keys(f).length);
  });
});
