/**
 * The preview's leak scan: does any secret value, in any of its forms, occur in a text?
 *
 * Every secret (at least MIN_SCANNED_SECRET characters, other than the mask itself) is
 * looked for in three forms: plain, base64 and JSON-escaped. Base64 at any alignment: inside
 * a larger base64 text the secret starts 0, 1 or 2 bytes into a 3-byte group, and each
 * alignment's stable core (the characters that depend on the secret's bytes alone) is a
 * needle, when at least MIN_BASE64_CORE long (a secret shorter than 13 bytes has no core that
 * long: only its standalone base64 is looked for). A PEM's body (its base64, without armor
 * lines and line breaks) is a needle of its own. Each text is read twice when it has line
 * breaks: as written, and folded (every line break and the spaces or tabs after it removed),
 * so a secret split by a fold (base64 wrapped at 64 or 76 columns, a PEM re-wrapped,
 * re-indented or unwrapped) is found; needles are looked for folded too. A fleet of N runners has
 * O(N) secrets (keys, user-data, pillar documents) and O(N) bytes of output, so comparing
 * every form with every file costs O(N²). This scanner costs O(bytes scanned + needle
 * bytes), whatever the number of secrets:
 *
 * - each needle gets an anchor: the window of at most ANCHOR characters that ends where the
 *   needle first differs from every other needle (so needles with a long common prefix,
 *   such as the runners' user-data, get anchors of their own, not one shared anchor);
 * - one Aho-Corasick automaton over all anchors, built once, reads each text once (twice
 *   when it has line breaks: as written and folded);
 * - an anchor found is verified against its needle(s) in place.
 *
 * `work` counts what the scan did (automaton steps, failure-link steps, characters
 * compared while verifying), `buildWork` what building the automaton did (needle characters
 * made, characters compared to find anchors, trie steps, failure-link steps), and SCAN_TOTALS
 * both over every scanner built (and how many were built): deterministic cost measures for
 * tests, independent of timing.
 */

/** Cost of every scanner built in this process so far (tests reset it; see the file comment). */
export const SCAN_TOTALS = { scanners: 0, buildWork: 0, work: 0, scannedChars: 0 };

/** Secrets shorter than this are too likely to match ordinary text to be meaningful. */
export const MIN_SCANNED_SECRET = 8;
/** What the preview writes wherever a secret would be; never itself a needle. */
const MASK = "[secret]";
/**
 * Longest anchor: long enough to be specific (an anchor ends where its needle first differs
 * from every other, so even short anchors rarely match where no needle is), short enough to
 * keep the automaton small: at 1000 runners, 8 characters make 0.3 million states where 24
 * made 1.1 million, and the scan does no more verifying.
 */
const ANCHOR = 8;
/** Shortest base64 core looked for: 16 characters are 96 bits of the secret, not ordinary text. */
export const MIN_BASE64_CORE = 16;
/**
 * Longest secret looked for in every form; a longer one, a whole document such as a
 * machine's user-data or a pillar, only plain, base64 and JSON-escaped: the secrets in it
 * (keys, tokens, the lines its masking hid) are secrets of their own, each looked for in
 * every form, and its base64 cores and folded copy made most of the needles at fleet scale
 * (about 120 KB a runner, seven times the scan's time at 1000 runners). A longer PEM (an RSA
 * key) gets its body and the cores of a part of it besides.
 */
export const MAX_EVERY_FORM_SECRET = 1024;
/** What JSON.stringify escapes (lone surrogates included; paired ones merely take the slow path). */
const JSON_ESCAPED = /["\\\u0000-\u001f\ud800-\udfff]/;

const isBreak = (c: number) => c === 10 || c === 13;
const isIndent = (c: number) => c === 32 || c === 9;

/**
 * `text` with every line break (CR or LF) and the spaces and tabs that follow it removed;
 * with `positions`, where each character of the result was in `text`. Linear.
 */
export function foldLines(text: string, positions?: number[]): string {
  let out = "";
  let from = 0;
  for (let i = 0; i < text.length; ) {
    if (!isBreak(text.charCodeAt(i))) {
      i++;
      continue;
    }
    out += text.slice(from, i);
    if (positions) for (let p = from; p < i; p++) positions.push(p);
    while (i < text.length && (isBreak(text.charCodeAt(i)) || isIndent(text.charCodeAt(i)))) {
      // Indentation only after a break: a break, its indentation, a break, its indentation...
      i++;
    }
    from = i;
  }
  if (positions) for (let p = from; p < text.length; p++) positions.push(p);
  return out + text.slice(from);
}

const BREAK = /[\r\n]/;
const hasBreak = (text: string) => BREAK.test(text);

/**
 * The base64 characters that stand for `secret`'s UTF-8 bytes alone when they start `offset` (0, 1 or 2)
 * bytes into a 3-byte group of a larger base64 text: without the first characters, which
 * carry bits of the bytes before, and the last, which carry bits of what follows.
 */
export function base64Core(secret: string, offset: number): string {
  const length = Buffer.byteLength(secret);
  const padded = Buffer.alloc(offset + length);
  padded.write(secret, offset, "utf8");
  const full = padded.toString("base64").replace(/=+$/, "");
  return full.slice(Math.ceil((offset * 8) / 6), Math.floor(((offset + length) * 8) / 6));
}

/** A long PEM's first body line from this character on (at least PEM_CHUNK_MIN of them): its base64 cores are looked for (see secretNeedles). */
const PEM_CHUNK_START = 24;
const PEM_CHUNK_MIN = 32;
const WHOLE_PEM = /^\s*(-----BEGIN [A-Z0-9 ]+-----[A-Za-z0-9+/=\s]*-----END [A-Z0-9 ]+-----\s*)+$/;

/** The forms of each secret the scan looks for (deduplicated, each at least MIN_SCANNED_SECRET long). */
export function secretNeedles(secrets: Iterable<string>): string[] {
  const needles = new Set<string>();
  let everyForm = false;
  const add = (n: string, min = MIN_SCANNED_SECRET) => {
    if (n.length < min) return;
    needles.add(n);
    // As found in a folded text (a secret with line breaks, e.g. a PEM).
    if (everyForm && hasBreak(n)) {
      const folded = foldLines(n);
      if (folded.length >= min) needles.add(folded);
    }
  };
  for (const s of secrets) {
    if (s.length < MIN_SCANNED_SECRET || s === MASK) continue;
    const pem = WHOLE_PEM.test(s);
    everyForm = s.length <= MAX_EVERY_FORM_SECRET;
    add(s);
    add(Buffer.from(s).toString("base64"));
    if (everyForm) for (let offset = 0; offset < 3; offset++) add(base64Core(s, offset), MIN_BASE64_CORE);
    // The JSON-escaped form is the secret itself unless it has a character JSON escapes.
    if (JSON_ESCAPED.test(s)) add(JSON.stringify(s).slice(1, -1));
    // A PEM's body, wrapped any way or not at all (its armor lines are no secret). Only of a
    // secret that is PEM through and through: a secret document (a user-data, a pillar)
    // holds public keys and certificates too, whose bodies are written openly.
    if (pem) {
      const block = /-----BEGIN [A-Z0-9 ]+-----([\s\S]*?)-----END [A-Z0-9 ]+-----/g;
      for (let m = block.exec(s); m; m = block.exec(s)) {
        const body = m[1].replace(/\s+/g, "");
        add(body, MIN_BASE64_CORE);
        // A long PEM (an RSA key): any base64 of a text holding it holds, at one of three
        // alignments, the cores of its first body line past the DER header (the same in
        // every key of its kind): cores of that, not of the whole PEM.
        const chunk = (m[1].split(/\s+/).find((l) => l.length > 0) ?? "").slice(PEM_CHUNK_START);
        if (!everyForm && chunk.length >= PEM_CHUNK_MIN) for (let offset = 0; offset < 3; offset++) add(base64Core(chunk, offset), MIN_BASE64_CORE);
      }
    }
  }
  return [...needles];
}

/** Length of the common prefix of `a` and `b`; adds the characters compared to `cost.work` (at least 1). */
function commonPrefix(a: string, b: string, cost: { work: number }): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  let compared = 1;
  // Compare in large steps first: needles often share kilobytes of prefix.
  for (let step = 1024; step >= 1; step >>= 4) {
    while (i + step <= n && (compared += step, a.slice(i, i + step) === b.slice(i, i + step))) i += step;
  }
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++, compared++;
  cost.work += compared;
  return i;
}

export class SecretScanner {
  /** Deterministic cost of every scan so far (see the file comment). */
  work = 0;
  /** Deterministic cost of building this scanner (see the file comment). */
  readonly buildWork: number;
  /** Characters read by every scan so far (folded copies included). */
  scannedChars = 0;
  /** States of the automaton (the root included): its size, for tests. */
  readonly states: number;
  readonly needles: readonly string[];
  /** Per needle: where its anchor ends (exclusive) within the needle. */
  private readonly anchorEnd: Int32Array;
  // The automaton: states 0..size-1, state 0 the root.
  private readonly root: Int32Array; // root transitions by UTF-16 code unit (-1: none)
  private readonly keyState: Int32Array; // open-addressed transition table: (state, char) -> next
  private readonly keyChar: Uint16Array;
  private readonly keyNext: Int32Array;
  private readonly mask: number;
  private readonly fail: Int32Array;
  /** Nearest state on the failure chain (itself included) that ends an anchor, else -1. */
  private readonly outState: Int32Array;
  /** Needles whose anchor ends at a state: a linked list through needleNext. */
  private readonly needleHead: Int32Array;
  private readonly needleNext: Int32Array;

  constructor(secrets: Iterable<string>) {
    const needles = secretNeedles(secrets).sort();
    this.needles = needles;
    const build = { work: needles.reduce((a, n) => a + n.length, 0) };

    // Anchors: the shortest prefix that tells a needle from its sorted neighbours (the
    // whole needle if it is a prefix of another), keeping its last ANCHOR characters.
    this.anchorEnd = new Int32Array(needles.length);
    const lcp = needles.map((n, i) => (i === 0 ? 0 : commonPrefix(needles[i - 1], n, build)));
    let total = 1;
    needles.forEach((n, i) => {
      const unique = Math.min(n.length, Math.max(lcp[i], i + 1 < needles.length ? lcp[i + 1] : 0) + 1);
      this.anchorEnd[i] = Math.max(unique, Math.min(n.length, ANCHOR));
      total += Math.min(ANCHOR, this.anchorEnd[i]);
    });

    let capacity = 16;
    while (capacity < total * 2) capacity <<= 1;
    this.mask = capacity - 1;
    this.keyState = new Int32Array(capacity).fill(-1);
    this.keyChar = new Uint16Array(capacity);
    this.keyNext = new Int32Array(capacity);
    this.root = new Int32Array(65536).fill(-1);
    this.fail = new Int32Array(total);
    this.outState = new Int32Array(total).fill(-1);
    this.needleHead = new Int32Array(total).fill(-1);
    this.needleNext = new Int32Array(needles.length).fill(-1);
    // Children lists, for the breadth-first pass that sets the failure links.
    const firstChild = new Int32Array(total).fill(-1);
    const sibling = new Int32Array(total).fill(-1);
    const edgeChar = new Uint16Array(total);

    let size = 1;
    needles.forEach((n, i) => {
      const end = this.anchorEnd[i];
      let state = 0;
      for (let p = Math.max(0, end - ANCHOR); p < end; p++) {
        build.work++;
        const c = n.charCodeAt(p);
        let next = this.step(state, c);
        if (next < 0) {
          next = size++;
          this.setStep(state, c, next);
          edgeChar[next] = c;
          sibling[next] = firstChild[state];
          firstChild[state] = next;
        }
        state = next;
      }
      this.needleNext[i] = this.needleHead[state];
      this.needleHead[state] = i;
    });

    this.states = size;

    // Failure links, breadth first.
    const queue = new Int32Array(size);
    let head = 0;
    let tail = 0;
    for (let child = firstChild[0]; child >= 0; child = sibling[child]) {
      this.fail[child] = 0;
      queue[tail++] = child;
    }
    while (head < tail) {
      const state = queue[head++];
      this.outState[state] = this.needleHead[state] >= 0 ? state : this.outState[this.fail[state]];
      for (let child = firstChild[state]; child >= 0; child = sibling[child]) {
        const c = edgeChar[child];
        let f = this.fail[state];
        build.work++;
        while (f > 0 && this.step(f, c) < 0) (f = this.fail[f]), build.work++;
        const target = this.step(f, c);
        this.fail[child] = target >= 0 && target !== child ? target : 0;
        queue[tail++] = child;
      }
    }
    this.buildWork = build.work;
    SCAN_TOTALS.scanners++;
    SCAN_TOTALS.buildWork += build.work;
  }

  private slot(state: number, c: number): number {
    return (Math.imul(state, 0x9e3779b1) ^ Math.imul(c, 0x85ebca6b)) & this.mask;
  }

  private step(state: number, c: number): number {
    if (state === 0) return this.root[c];
    for (let s = this.slot(state, c); this.keyState[s] !== -1; s = (s + 1) & this.mask) {
      if (this.keyState[s] === state && this.keyChar[s] === c) return this.keyNext[s];
    }
    return -1;
  }

  private setStep(state: number, c: number, next: number): void {
    if (state === 0) {
      this.root[c] = next;
      return;
    }
    let s = this.slot(state, c);
    while (this.keyState[s] !== -1) s = (s + 1) & this.mask;
    this.keyState[s] = state;
    this.keyChar[s] = c;
    this.keyNext[s] = next;
  }

  /** Does `needle` occur in `text` starting at `start`? Counts the characters compared. */
  private verify(text: string, needle: string, start: number): boolean {
    if (start < 0 || start + needle.length > text.length) return false;
    let i = 0;
    while (i < needle.length && text.charCodeAt(start + i) === needle.charCodeAt(i)) i++;
    this.addWork(i + 1);
    return i === needle.length;
  }

  /**
   * Reads `text` once, calling `found(start, end)` for every needle occurrence; stops early
   * when `found` returns true.
   */
  private scan(text: string, found: (start: number, end: number) => boolean): boolean {
    // The transition lookup (step) inlined, with every table in a local: this loop is the scan.
    const { root, keyState, keyChar, keyNext, mask, fail, outState, needleHead, needleNext, needles, anchorEnd } = this;
    let state = 0;
    let work = 0;
    this.scannedChars += text.length;
    SCAN_TOTALS.scannedChars += text.length;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      let next = -1;
      for (;;) {
        work++;
        if (state === 0) {
          next = root[c];
          break;
        }
        for (let s = (Math.imul(state, 0x9e3779b1) ^ Math.imul(c, 0x85ebca6b)) & mask; keyState[s] !== -1; s = (s + 1) & mask) {
          if (keyState[s] === state && keyChar[s] === c) {
            next = keyNext[s];
            break;
          }
        }
        if (next >= 0) break;
        state = fail[state];
      }
      state = next < 0 ? 0 : next;
      for (let out = outState[state]; out >= 0; out = outState[fail[out]]) {
        work++;
        for (let n = needleHead[out]; n >= 0; n = needleNext[n]) {
          const needle = needles[n];
          const start = i + 1 - anchorEnd[n];
          if (this.verify(text, needle, start) && found(start, start + needle.length)) {
            this.addWork(work);
            return true;
          }
        }
      }
    }
    this.addWork(work);
    return false;
  }

  private addWork(work: number): void {
    this.work += work;
    SCAN_TOTALS.work += work;
  }

  /** True when any form of any secret occurs in `text`, as written or folded (see foldLines). */
  leaks(text: string): boolean {
    if (this.scan(text, () => true)) return true;
    return hasBreak(text) && this.scan(foldLines(text), () => true);
  }

  /** The names of the files (sorted) in which any form of any secret occurs. */
  leakingFiles(files: Record<string, string>): string[] {
    return Object.keys(files)
      .filter((f) => this.leaks(files[f]))
      .sort();
  }

  /**
   * `text` with every occurrence of any form of any secret replaced by the mask; one found
   * in the folded text masks the characters it came from, the line breaks between them too.
   */
  masked(text: string): string {
    const ranges: [number, number][] = [];
    this.scan(text, (start, end) => {
      ranges.push([start, end]);
      return false;
    });
    if (hasBreak(text)) {
      const positions: number[] = [];
      this.scan(foldLines(text, positions), (start, end) => {
        ranges.push([positions[start], positions[end - 1] + 1]);
        return false;
      });
    }
    if (ranges.length === 0) return text;
    ranges.sort((a, b) => a[0] - b[0]);
    let out = "";
    let at = 0;
    for (const [start, end] of ranges) {
      if (end <= at) continue;
      if (start >= at) out += text.slice(at, start) + MASK;
      at = end;
    }
    return out + text.slice(at);
  }
}
