/**
 * The preview's leak scan: does any secret value, in any of its forms, occur in a text?
 *
 * Every secret (at least MIN_SCANNED_SECRET characters, other than the mask itself) is
 * looked for in three forms: plain, base64 and JSON-escaped. A fleet of N runners has
 * O(N) secrets (keys, user-data, pillar documents) and O(N) bytes of output, so comparing
 * every form with every file costs O(N²). This scanner costs O(bytes scanned + needle
 * bytes), whatever the number of secrets:
 *
 * - each needle gets an anchor: the window of at most ANCHOR characters that ends where the
 *   needle first differs from every other needle (so needles with a long common prefix,
 *   such as the runners' user-data, get anchors of their own, not one shared anchor);
 * - one Aho-Corasick automaton over all anchors, built once, reads each text once;
 * - an anchor found is verified against its needle(s) in place.
 *
 * `work` counts what the scan did (automaton steps, failure-link steps, characters
 * compared while verifying): a deterministic cost measure for tests, independent of timing.
 */

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
/** What JSON.stringify escapes (lone surrogates included; paired ones merely take the slow path). */
const JSON_ESCAPED = /["\\\u0000-\u001f\ud800-\udfff]/;

/** The forms of each secret the scan looks for (deduplicated, each at least MIN_SCANNED_SECRET long). */
export function secretNeedles(secrets: Iterable<string>): string[] {
  const needles = new Set<string>();
  for (const s of secrets) {
    if (s.length < MIN_SCANNED_SECRET || s === MASK) continue;
    // The JSON-escaped form is the secret itself unless it has a character JSON escapes.
    for (const n of [s, Buffer.from(s).toString("base64"), JSON_ESCAPED.test(s) ? JSON.stringify(s).slice(1, -1) : s]) {
      if (n.length >= MIN_SCANNED_SECRET) needles.add(n);
    }
  }
  return [...needles];
}

function commonPrefix(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  // Compare in large steps first: needles often share kilobytes of prefix.
  for (let step = 1024; step >= 1; step >>= 4) {
    while (i + step <= n && a.slice(i, i + step) === b.slice(i, i + step)) i += step;
  }
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

export class SecretScanner {
  /** Deterministic cost of every scan so far (see the file comment). */
  work = 0;
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

    // Anchors: the shortest prefix that tells a needle from its sorted neighbours (the
    // whole needle if it is a prefix of another), keeping its last ANCHOR characters.
    this.anchorEnd = new Int32Array(needles.length);
    const lcp = needles.map((n, i) => (i === 0 ? 0 : commonPrefix(needles[i - 1], n)));
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
        while (f > 0 && this.step(f, c) < 0) f = this.fail[f];
        const target = this.step(f, c);
        this.fail[child] = target >= 0 && target !== child ? target : 0;
        queue[tail++] = child;
      }
    }
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
    this.work += i + 1;
    return i === needle.length;
  }

  /**
   * Reads `text` once, calling `found(start, end)` for every needle occurrence; stops early
   * when `found` returns true.
   */
  private scan(text: string, found: (start: number, end: number) => boolean): void {
    // The transition lookup (step) inlined, with every table in a local: this loop is the scan.
    const { root, keyState, keyChar, keyNext, mask, fail, outState, needleHead, needleNext, needles, anchorEnd } = this;
    let state = 0;
    let work = 0;
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
            this.work += work;
            return;
          }
        }
      }
    }
    this.work += work;
  }

  /** True when any form of any secret occurs in `text`. */
  leaks(text: string): boolean {
    let leaked = false;
    this.scan(text, () => (leaked = true));
    return leaked;
  }

  /** The names of the files (sorted) in which any form of any secret occurs. */
  leakingFiles(files: Record<string, string>): string[] {
    return Object.keys(files)
      .filter((f) => this.leaks(files[f]))
      .sort();
  }

  /** `text` with every occurrence of any form of any secret replaced by the mask. */
  masked(text: string): string {
    const ranges: [number, number][] = [];
    this.scan(text, (start, end) => {
      ranges.push([start, end]);
      return false;
    });
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
