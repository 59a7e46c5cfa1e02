import { createHash } from "crypto";
import { findSecretLeaks } from "../../tools/preview/main";
import { collectMasked } from "../../tools/preview/run";
import { rsaPrivateKeyPem } from "../config/secret-fixtures";
import { ANCHOR, base64Core, foldLines, MAX_EVERY_FORM_SECRET, MIN_BASE64_CORE, MIN_SCANNED_SECRET, SecretScanner, secretNeedles, windowHash } from "../../tools/preview/secret-scan";

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

/** The definition the scanner must agree with (the scan as it was before it was made linear): every form in every text, as written and folded. */
function naiveLeaks(files: Record<string, string>, secrets: string[]): string[] {
  const needles = secretNeedles(secrets);
  for (const s of secrets) {
    if (s.length < MIN_SCANNED_SECRET || s === "[secret]") continue;
    // The forms the scan always had are among them.
    for (const n of [s, Buffer.from(s).toString("base64"), JSON.stringify(s).slice(1, -1)]) expect(needles).toContain(n);
  }
  return Object.keys(files).filter((f) => needles.some((n) => files[f].includes(n) || foldLines(files[f]).includes(n))).sort();
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

  test("agrees with the naive scan on random texts over a small alphabet: overlapping, repeated and prefix needles", () => {
    // Two letters: windows of every needle occur everywhere, so every hit is verified, and
    // needles overlap, repeat and prefix one another.
    let seed = 12345;
    const rand = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8) % n;
    let letters = ["a", "b"];
    const word = (length: number) => Array.from({ length }, () => letters[rand(letters.length)]).join("");
    for (let round = 0; round < 400; round++) {
      // Every other round: line breaks, indentation, a surrogate pair's halves, a code unit
      // with its top bit set (the hash's arithmetic is signed), NUL.
      letters = round % 2 ? ["a", "b", "\n", " ", "\ud83d", "\ude00", "\uffff", "\u8000", "\u0000"] : ["a", "b"];
      const secrets = Array.from({ length: 1 + rand(6) }, () => word(MIN_SCANNED_SECRET + rand(5)));
      const files = Object.fromEntries(Array.from({ length: 6 }, (_, i) => [`f${i}`, Array.from({ length: 3 }, () => word(rand(14))).join("\n  ")]));
      expect(new SecretScanner(secrets).leakingFiles(files)).toEqual(naiveLeaks(files, secrets));
    }
  });

  test("a window whose hash is an anchor's but whose characters differ is verified, and is no leak", () => {
    // Two different windows of ANCHOR characters with one hash (a birthday search over 32 bits).
    const seen = new Map<number, string>();
    let collision: [string, string] | undefined;
    for (let i = 0; !collision; i++) {
      const w = createHash("sha256").update(String(i)).digest("hex").slice(0, ANCHOR);
      const h = windowHash(w, ANCHOR);
      const other = seen.get(h);
      if (other !== undefined && other !== w) collision = [other, w];
      seen.set(h, w);
    }
    const [a, b] = collision;
    expect(a).not.toBe(b);
    expect(windowHash(a, ANCHOR)).toBe(windowHash(b, ANCHOR));
    const secret = `${a}-the-rest-of-the-secret`;
    const scanner = new SecretScanner([secret]);
    const lookalike = `text ${b}-the-rest-of-the-secret end`;
    expect(scanner.leaks(lookalike)).toBe(false);
    // It was compared (the work counts the characters compared), not skipped.
    const before = scanner.work;
    scanner.leaks(lookalike.replace(/\n/g, ""));
    expect(scanner.work - before).toBeGreaterThan(lookalike.length);
    expect(scanner.leaks(`${lookalike} ${secret}`)).toBe(true);
    expect(scanner.masked(`${b} ${a}-the-rest-of-the-secret`)).toBe(`${b} [secret]`);
  });

  test("the JSON-escaped form of a secret with any character JSON escapes, and of one with none", () => {
    const secrets = Array.from({ length: 0x10000 }, (_, c) => `secret-${String.fromCharCode(c)}-value`);
    const needles = new Set(secretNeedles(secrets));
    expect(secrets.filter((s) => !needles.has(JSON.stringify(s).slice(1, -1)))).toEqual([]);
    const odd = ["\ud83d\ude00 paired surrogates", "a\u2028b\u2029 line separators"];
    expect(secretNeedles(odd).sort()).toEqual(
      odd
        .flatMap((s) => [s, Buffer.from(s).toString("base64"), JSON.stringify(s).slice(1, -1), base64Core(s, 0), base64Core(s, 1), base64Core(s, 2)])
        .filter((n, i, all) => all.indexOf(n) === i)
        .sort(),
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

describe("the leak scan finds a secret however it was encoded or wrapped", () => {
  const secret = "tk_live_9f8e7d6c5b4a39281706f5e4"; // 32 bytes
  const pem = `-----BEGIN EC PRIVATE KEY-----\n${b64("pem-body", 121).match(/.{1,64}/g)!.join("\n")}\n-----END EC PRIVATE KEY-----\n`;
  const body = pem.split("\n").slice(1, -2).join("");

  test("base64 of a larger text: the secret at any of the three byte alignments, followed by anything", () => {
    const scanner = new SecretScanner([secret]);
    for (let before = 0; before < 6; before++) {
      for (let after = 0; after < 4; after++) {
        const text = Buffer.from(`${"{\"t\":\"".slice(0, before)}${secret}${"\"}\n".slice(0, after)}`).toString("base64");
        expect({ before, after, leaks: scanner.leaks(`data: ${text}\n`) }).toEqual({ before, after, leaks: true });
        expect(scanner.masked(`data: ${text}\n`)).toContain("[secret]");
      }
    }
  });

  test("long secrets: an RSA key at any alignment by the cores of part of its body; a document by the secrets in it", () => {
    const rsa = rsaPrivateKeyPem("ALIGN");
    const token = "tok-7c1d9e3a5b2f4e6d8a0c";
    const doc = `#cloud-config\n${"packages: [qemu-system-x86]\n".repeat(60)}token: ${token}\n`;
    expect(rsa.length).toBeGreaterThan(MAX_EVERY_FORM_SECRET);
    expect(doc.length).toBeGreaterThan(MAX_EVERY_FORM_SECRET);
    const scanner = new SecretScanner([rsa, doc, token]);
    for (const before of ["", "a", "ab"]) {
      expect(scanner.leaks(Buffer.from(`${before}key: ${rsa} end`).toString("base64"))).toBe(true);
      expect(scanner.leaks(Buffer.from(`${before}${doc}more`).toString("base64"))).toBe(true);
    }
    // The cores of a document are not needles (its parts' are); its public lines are no leak.
    expect(scanner.leaks(Buffer.from(`ab${doc.slice(0, 400)}`).toString("base64"))).toBe(false);
  });

  test("each alignment's core is the characters that depend on the secret alone; a secret too short for a 16-character core has none", () => {
    for (let offset = 0; offset < 3; offset++) {
      const core = base64Core(secret, offset);
      for (const filler of [0x00, 0xff, 0x5a]) {
        for (const next of [[], [0x00], [0xff, 0xff]]) {
          const bytes = Buffer.from([...Array(offset).fill(filler), ...Buffer.from(secret), ...next]);
          expect(bytes.toString("base64")).toContain(core);
        }
      }
      expect(core.length).toBeGreaterThanOrEqual(Math.floor((Buffer.byteLength(secret) * 8) / 6) - 2);
    }
    // 12 bytes give a 16-character core at offset 0 only (its base64 whole), 15 at offsets 1
    // and 2; 11 bytes give 13 to 14. Cores under 16 characters are not looked for (too likely
    // to match other base64): such a secret is found in base64 only at offset 0, standing alone.
    expect(secretNeedles(["abcdefghijkl"]).sort()).toEqual(["YWJjZGVmZ2hpamts", "abcdefghijkl"]);
    expect(secretNeedles(["abcdefghijk"]).sort()).toEqual(["YWJjZGVmZ2hpams=", "abcdefghijk"]);
    expect([1, 2].map((k) => base64Core("abcdefghijkl", k).length)).toEqual([15, 15]);
    expect(MIN_BASE64_CORE).toBe(16);
    for (const n of secretNeedles([secret])) expect(n.length).toBeGreaterThanOrEqual(MIN_SCANNED_SECRET);
  });

  test("split by line folds: base64 wrapped at 64 or 76 columns, indented; a PEM re-wrapped, re-indented or unwrapped", () => {
    const scanner = new SecretScanner([secret, pem]);
    const encoded = Buffer.from(`header ${secret} trailer, long enough to wrap`).toString("base64");
    const wrapped = (text: string, width: number, indent = "", eol = "\n") => text.match(new RegExp(`.{1,${width}}`, "g"))!.map((l) => indent + l).join(eol);
    const texts: Record<string, string> = {
      "base64 at 64": wrapped(encoded, 64),
      "base64 at 76, CRLF": wrapped(encoded, 76, "", "\r\n"),
      "base64 at 20, indented": `key: |\n${wrapped(encoded, 20, "    ")}\n`,
      "secret split by a fold": `value: ${secret.slice(0, 13)}\n  ${secret.slice(13)}\n`,
      "PEM re-wrapped at 76": `-----BEGIN EC PRIVATE KEY-----\n${wrapped(body, 76)}\n-----END EC PRIVATE KEY-----\n`,
      "PEM re-indented": `content: |\n${pem.split("\n").map((l) => `      ${l}`).join("\n")}`,
      "PEM body unwrapped": `key = "${body}"`,
      "PEM body JSON-escaped in a string": JSON.stringify({ pem: pem.replace(/\n/g, "\n") }),
    };
    const found = Object.keys(texts).filter((k) => scanner.leaks(texts[k]));
    expect(found).toEqual(Object.keys(texts));
    expect(scanner.leakingFiles(texts)).toEqual(Object.keys(texts).sort());
    // Masking a folded match masks the characters it came from, the breaks between them too.
    for (const k of Object.keys(texts)) expect({ k, leaks: scanner.leaks(scanner.masked(texts[k])) }).toEqual({ k, leaks: false });
    expect(scanner.masked(texts["secret split by a fold"])).toBe("value: [secret]\n");
  });

  test("a legacy encrypted PEM (RFC 1421 headers) is found by its body however it is wrapped (review finding 4)", () => {
    const body = b64("encrypted-rsa", 1190).match(/.{1,64}/g)!;
    const pem = `-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,${hex("iv", 16).toUpperCase()}\n\n${body.join("\n")}\n-----END RSA PRIVATE KEY-----\n`;
    expect(pem.length).toBeGreaterThan(MAX_EVERY_FORM_SECRET);
    const scanner = new SecretScanner([pem]);
    const joined = body.join("");
    expect(scanner.leaks(pem.replace(/^/gm, "    "))).toBe(true);
    expect(scanner.leaks(`body: ${joined}`)).toBe(true);
    expect(scanner.leaks(joined.match(/.{1,76}/g)!.join("\n"))).toBe(true);
    // Its header lines are no secret.
    expect(scanner.leaks("Proc-Type: 4,ENCRYPTED\n")).toBe(false);
  });

  test("a value that is the mask up to folds and whitespace is no secret to look for: masked files stay unflagged (second review)", () => {
    for (const secret of ["[secret]\n", "[sec\n  ret]", "[secret]\r\n  ", " [secret]"]) {
      const scanner = new SecretScanner([secret, "a-real-secret-value"]);
      expect(scanner.needles.filter((n) => n.includes("[sec"))).toEqual([]);
      expect(scanner.leakingFiles({ "user-data": "user-data: [secret]\n  more: [secret]\n" })).toEqual([]);
      expect(scanner.masked("k: a-real-secret-value\n")).toBe("k: [secret]\n");
    }
    // The mask inside a longer secret is no reason to skip it.
    expect(new SecretScanner(["x[secret]y-more"]).leaks("x[secret]y-more")).toBe(true);
  });

  test("masked() output never leaks: masking again what masking made (review finding 5)", () => {
    const cases: [string[], string][] = [
      // The indentation after a masked line break is no longer folded away.
      [["abcdefgh\n", " ijk\nlmnop"], "abcdefgh\n ijk\n lmnop"],
      // The mask's own characters complete a secret.
      [["cret]xyz1234", "SECRETVALUE1"], "SECRETVALUE1xyz1234"],
    ];
    for (const [secrets, text] of cases) {
      const scanner = new SecretScanner(secrets);
      expect(scanner.leaks(text)).toBe(true);
      const out = scanner.masked(text);
      expect({ out, leaks: scanner.leaks(out) }).toEqual({ out, leaks: false });
    }
  });

  test("a secret wrapped with blanks left at the ends of its lines is found (first review, LOW)", () => {
    const secret = b64("wrapped-with-trailing-blanks", 60);
    const scanner = new SecretScanner([secret]);
    const wrapped = secret.match(/.{1,20}/g)!.join("  \n    ");
    expect(scanner.leaks(`key: |\n    ${wrapped}\t\r\n`)).toBe(true);
    expect(scanner.masked(`key: ${wrapped} end`)).toBe("key: [secret] end");
    expect(foldLines("ab \t\n  cd\n")).toBe("abcd");
  });

  test("a PEM's armor lines are not secrets: a file holding one is not a leak, its body is", () => {
    const real = `write_files:\n  - path: /etc/salt/pki/minion/minion.pem\n    content: |\n${pem.split("\n").map((l) => (l ? `      ${l}` : l)).join("\n")}`;
    const masked = `write_files:\n  - path: /etc/salt/pki/minion/minion.pem\n    content: "[secret]"\n`;
    const collected = new Set<string>();
    collectMasked(real, masked, collected);
    expect([...collected]).toEqual(expect.arrayContaining(pem.split("\n").slice(1, -2).filter((l) => l.length >= 16)));
    expect([...collected].filter((l) => l.startsWith("-----"))).toEqual([]);
    const scanner = new SecretScanner([...collected, pem]);
    expect(scanner.leaks("# the minion's key:\n-----BEGIN EC PRIVATE KEY-----\n[secret]\n-----END EC PRIVATE KEY-----\n")).toBe(false);
    expect(scanner.leaks(`x ${body} y`)).toBe(true);
  });
});

describe("the leak scan costs the bytes it reads, not bytes × secrets", () => {
  const { files } = fleet(40);
  const text = Object.values(files).join("\n");

  test("nearly every needle has an anchor of its own, however long the needles and their shared prefixes", () => {
    const { secrets } = fleet(40);
    const scanner = new SecretScanner(secrets);
    // The whole user-data documents share kilobytes of prefix: anchored at their starts they
    // would share one anchor, and every masked user-data (which starts the same) would be
    // compared with every one of them.
    // Needles with another needle as their prefix (a PEM's body starts with its first line, a
    // secret in its own secret) are found through it and take no anchor. Of the others only a
    // document's plain and JSON-escaped forms may share one (they agree up to its first line
    // break, where both are told from the other machines' documents).
    const anchored = scanner.needles.length - scanner.covered;
    console.log(`${scanner.anchors} anchors for ${anchored} needles (${scanner.covered} more found through their prefixes)`);
    expect(scanner.anchors).toBeLessThanOrEqual(anchored);
    expect(scanner.anchors).toBeGreaterThanOrEqual(0.85 * anchored);
  });

  test("the same text costs the same whatever the number of secrets", () => {
    const work = (count: number) => {
      const secrets = Array.from({ length: count }, (_, i) => b64(`absent${i}`, 48));
      const scanner = new SecretScanner(secrets);
      scanner.leaks(text);
      return scanner.work;
    };
    // Each character is two steps (its prefix hash, its window's lookup), plus a probe of the
    // anchor table when its window's slot is in use (the table is at most a quarter full): at
    // most three times the bytes, however many secrets. The scan
    // that compared every needle with every text did 1000 times more work for 1000 times the secrets.
    const counts = [10, 100, 1000, 3000];
    const works = counts.map(work);
    console.log(`leak scan of ${text.length} characters: ${counts.map((c, i) => `${c} secrets -> ${works[i]} steps`).join(", ")}`);
    // The text is read as written and folded: at most twice its length.
    const scanned = text.length + foldLines(text).length;
    for (const w of works) {
      expect(w).toBeGreaterThanOrEqual(scanned);
      expect(w).toBeLessThanOrEqual(3 * scanned);
    }
  });

  test("a fleet twice as large costs about twice as much, with its secrets sharing long prefixes with the files", () => {
    const work = (n: number) => {
      const f = fleet(n);
      const scanner = new SecretScanner(f.secrets);
      expect(scanner.leakingFiles(f.files)).toEqual([]);
      return { work: scanner.work, bytes: scanner.scannedChars, buildWork: scanner.buildWork, needleChars: scanner.needles.reduce((a, n) => a + n.length, 0) };
    };
    const small = work(50);
    const large = work(100);
    const huge = work(200);
    expect(large.work / small.work).toBeLessThan(2.2);
    expect(huge.work / large.work).toBeLessThan(2.2);
    // Bounded by the bytes: the real user-data (a secret) shares kilobytes with each masked file.
    expect(huge.work).toBeLessThan(huge.bytes * 3);
    // Building the anchor table too: about twice the work for twice the needles, and bounded by
    // their length (finding each anchor compares a needle with its sorted neighbours only;
    // comparing it with every other needle made the build quadratic).
    console.log(`anchor table build: ${[small, large, huge].map((w) => `${w.needleChars} needle characters -> ${w.buildWork} steps`).join(", ")}`);
    expect(large.buildWork / small.buildWork).toBeLessThan(2.2);
    expect(huge.buildWork / large.buildWork).toBeLessThan(2.2);
    expect(huge.buildWork).toBeLessThan(huge.needleChars * 4);
  });

  test("a secret that starts with a run (a `#` banner) costs no more on a text of that run (review finding 1)", () => {
    // Each window of the text is the secret's first window: comparing from the secret's start
    // at every hit cost the text's length times the secret's (287 times the input at 1000).
    const ratio = (length: number) => {
      const secret = `${"#".repeat(length)}-secret-value-here`;
      const scanner = new SecretScanner([secret]);
      const text = "#".repeat(4 * length);
      expect(scanner.leaks(text)).toBe(false);
      const work = scanner.work;
      expect(scanner.leaks(`${text}\n${secret}`)).toBe(true);
      return work / text.length;
    };
    // Per character of the text: its prefix hash, its window, a probe, the one needle there.
    const [short, long] = [1000, 4000].map(ratio);
    expect(short).toBeLessThan(5);
    expect(long).toBeLessThan(short * 1.05);
  });

  test("needles whose anchors would be the same 8 characters take windows of their own (review finding 2)", () => {
    // Pairs told apart only by their last character: each pair's anchor is its last 8
    // characters, the same for every pair; every hit of that window stepped through all of them.
    const count = 2000;
    const secrets = Array.from({ length: count }, (_, i) => `QQQQQQQQ${String(i).padStart(4, "0")}ZZZZZZZ`).flatMap((s) => [`${s}c`, `${s}d`]);
    const scanner = new SecretScanner(secrets);
    const text = "ZZZZZZZc".repeat(4 * count);
    expect(scanner.leaks(text)).toBe(false);
    expect(scanner.work / text.length).toBeLessThan(6);
    expect(scanner.leaks(`${text} ${secrets[1234]}`)).toBe(true);
  });

  test("masking a text full of overlapping occurrences costs the text, not the text times the secret (review finding 3)", () => {
    const length = 3200;
    const secret = "ab".repeat(length / 2);
    const scanner = new SecretScanner([secret]);
    const text = "ab".repeat(2 * length);
    const before = scanner.work;
    expect(scanner.masked(text)).toBe("[secret]");
    expect((scanner.work - before) / text.length).toBeLessThan(12);
  });

  test("secrets each extending the last cost the text once, and the longest one found is masked (second review)", () => {
    // Each is a prefix of the next: all of them anchored on one window of zeros, every window
    // of a text of zeros stepped through every one of them (106 times the input at 800).
    const count = 400;
    const secrets = Array.from({ length: count }, (_, k) => `token=${"0".repeat(8 + k)}`);
    const scanner = new SecretScanner(secrets);
    const text = "0".repeat(200 * count);
    expect(scanner.leaks(text)).toBe(false);
    expect(scanner.work / text.length).toBeLessThan(4);
    expect(scanner.leaks(`${text} ${secrets[250]} `)).toBe(true);
    expect(scanner.masked(`x ${secrets[10]} y`)).toBe("x [secret] y");
    expect(scanner.masked(`x ${secrets[count - 1]}0 y`)).toBe("x [secret]0 y");
    expect(scanner.covered).toBeGreaterThanOrEqual(count - 1);
  });

  test("a secret extended by thousands of others: masking looks up each extension length once where it is found (third review)", () => {
    const count = 2000;
    const root = "tok-7f3a9c21";
    const secrets = [root, ...Array.from({ length: count }, (_, i) => `${root}:${String(i).padStart(4, "0")}`)];
    const scanner = new SecretScanner(secrets);
    const text = `${root} `.repeat(count);
    const before = scanner.work;
    expect(scanner.masked(text)).toBe("[secret] ".repeat(count));
    // Tried one by one, the 2000 extensions cost 17 steps per character of the text.
    expect((scanner.work - before) / text.length).toBeLessThan(8);
    expect(scanner.masked(`a ${root}:1234 b ${root}:12 c`)).toBe("a [secret] b [secret]:12 c");
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
