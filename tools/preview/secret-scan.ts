/**
 * The preview's leak scan: does any secret value, in any of its forms, occur in a text?
 *
 * Every secret (at least MIN_SCANNED_SECRET characters, other than the mask itself) is
 * looked for in three forms: plain, base64 and JSON-escaped. Base64 at any alignment: inside
 * a larger base64 text the secret starts 0, 1 or 2 bytes into a 3-byte group, and each
 * alignment's stable core (the characters that depend on the secret's bytes alone) is a
 * needle, when at least MIN_BASE64_CORE long (a secret shorter than 12 bytes has no core that
 * long, one of 12 bytes only at offset 0: at other alignments only its standalone base64 is
 * looked for). A PEM's body (its base64, without armor lines, RFC 1421 header lines and line
 * breaks) is a needle of its own. Each text is read twice when it has line
 * breaks: as written, and folded (every line break and the spaces or tabs around it removed),
 * so a secret split by a fold (base64 wrapped at 64 or 76 columns, a PEM re-wrapped,
 * re-indented or unwrapped) is found; needles are looked for folded too. A fleet of N runners has
 * O(N) secrets (keys, user-data, pillar documents) and O(N) bytes of output, so comparing
 * every form with every file costs O(N²). This scanner costs O(bytes scanned + needle
 * bytes), whatever the number of secrets:
 *
 * - each needle gets an anchor: the ANCHOR characters that end where the needle first differs
 *   from every other needle (so needles with a long common prefix, such as the runners'
 *   user-data, get anchors of their own, not one shared anchor), or a window near it when
 *   MAX_SHARED_ANCHOR needles already share that one;
 * - the anchors go into one hash table, keyed by a polynomial hash of ANCHOR characters,
 *   built once; each text's prefix hashes are computed once (twice when it has line breaks:
 *   as written and folded), and the hash of every window of ANCHOR characters looked up;
 * - a window whose hash is an anchor's is checked against each needle sharing that anchor by
 *   the hash of the span the needle would cover (one step), and an equal hash is compared
 *   character by character: a hash collision fails that comparison, so the scan finds
 *   exactly what comparing every needle at every position would.
 *
 * `work` counts what the scan did (characters hashed, windows looked up, table slots probed,
 * needles checked, needle characters hashed and compared), `buildWork` what building the table did (needle characters made,
 * characters compared to find anchors, anchor characters hashed, table slots probed), and SCAN_TOTALS
 * both over every scanner built (and how many were built): deterministic cost measures for
 * tests, independent of timing.
 */

/** Cost of every scanner built in this process so far (tests reset it; see the file comment). */
export const SCAN_TOTALS = { scanners: 0, buildWork: 0, work: 0, scannedChars: 0 };

/** Secrets shorter than this are too likely to match ordinary text to be meaningful. */
export const MIN_SCANNED_SECRET = 8;
/** What the preview writes wherever a secret would be; never itself a needle. */
const MASK = "[secret]";
/** Times masked() masks its own result again when that still leaks (see masked). */
const MASK_ROUNDS = 3;
/**
 * Anchor length (every needle is at least this long: MIN_SCANNED_SECRET): long enough to be
 * specific (an anchor ends where its needle first differs from every other, so even short
 * anchors rarely occur where no needle is), short enough that the hash of a window is cheap.
 * The Aho-Corasick automaton this table replaced had 0.7 million states at 1000 runners and
 * took as long to build as the scan took to read every file.
 */
export const ANCHOR = 8;
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
 * `text` with every line break (CR or LF) and the spaces and tabs around it removed (a
 * wrapped line's trailing blanks, the next line's indentation); with `positions`, where each
 * character of the result was in `text`. Linear.
 */
export function foldLines(text: string, positions?: number[]): string {
  let out = "";
  let from = 0;
  for (let i = 0; i < text.length; ) {
    if (!isBreak(text.charCodeAt(i))) {
      i++;
      continue;
    }
    let end = i;
    while (end > from && isIndent(text.charCodeAt(end - 1))) end--;
    out += text.slice(from, end);
    if (positions) for (let p = from; p < end; p++) positions.push(p);
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
/** RFC 1421 header lines of a legacy encrypted PEM (`Proc-Type: 4,ENCRYPTED`, `DEK-Info: AES-128-CBC,…`): not its body. */
const PEM_HEADER_LINE = /^[ \t]*[A-Za-z][A-Za-z0-9-]*:[^\n]*$/gm;
const WHOLE_PEM = /^\s*(-----BEGIN [A-Z0-9 ]+-----(?:\s*[A-Za-z][A-Za-z0-9-]*:[^\n]*\n)*[A-Za-z0-9+/=\s]*-----END [A-Z0-9 ]+-----\s*)+$/;

/**
 * The forms of each secret the scan looks for (each at least MIN_SCANNED_SECRET long, each
 * once per secret; two secrets may share a form, which the scanner keeps once: a Set of every
 * form, kilobytes each, cost more than the rest of this function).
 */
export function secretNeedles(secrets: Iterable<string>): string[] {
  const needles: string[] = [];
  let everyForm = false;
  let forms: string[] = [];
  const add = (n: string, min = MIN_SCANNED_SECRET) => {
    // Never the mask itself (a secret "[secret]\n" folds to it): every masked file would leak.
    if (n.length < min || n === MASK || forms.includes(n)) return;
    forms.push(n);
    // As found in a folded text (a secret with line breaks, e.g. a PEM).
    if (everyForm && hasBreak(n)) {
      const folded = foldLines(n);
      if (folded.length >= min && folded !== MASK && !forms.includes(folded)) forms.push(folded);
    }
  };
  for (const s of secrets) {
    // The mask itself, up to line folds and surrounding whitespace, is written wherever a
    // secret was: as a needle it would flag every masked file (and masking could not end).
    if (s.length < MIN_SCANNED_SECRET || foldLines(s).trim() === MASK) continue;
    forms = [];
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
        const lines = m[1].replace(PEM_HEADER_LINE, "");
        const body = lines.replace(/\s+/g, "");
        add(body, MIN_BASE64_CORE);
        // A long PEM (an RSA key): any base64 of a text holding it holds, at one of three
        // alignments, the cores of its first body line past the DER header (the same in
        // every key of its kind): cores of that, not of the whole PEM.
        const chunk = (lines.split(/\s+/).find((l) => l.length > 0) ?? "").slice(PEM_CHUNK_START);
        if (!everyForm && chunk.length >= PEM_CHUNK_MIN) for (let offset = 0; offset < 3; offset++) add(base64Core(chunk, offset), MIN_BASE64_CORE);
      }
    }
    for (const f of forms) needles.push(f);
  }
  return needles;
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

/** Multiplier of the polynomial hash (odd, so no character's bits are shifted out of every window). */
const HASH_BASE = 0x01000193;
/** HASH_BASE to the power `n` (mod 2^32). */
function basePower(n: number): number {
  let p = 1;
  for (let i = 0; i < n; i++) p = Math.imul(p, HASH_BASE);
  return p;
}
/** The weight of the first character of a window of ANCHOR characters, times HASH_BASE. */
const WINDOW_POWER = basePower(ANCHOR);
/** Spreads a window's hash over the table (whose slot is the product's high bits, which depend on every bit of the hash). */
const SPREAD = 0x9e3779b1;
/**
 * Needles that may share one anchor window: a needle takes another window of its own (one
 * still shared by fewer) when it can. Every hit of a window costs one step per needle
 * sharing it, so a window shared by thousands (anchors of different needles can be the same
 * 8 characters) made the scan cost the text times their number.
 */
const MAX_SHARED_ANCHOR = 4;
/** Extensions of a needle checked one by one where it is found; more are looked up by length and hash. */
const FEW_EXTENSIONS = 8;
/** Windows a needle tries, each way from where it first differs from the others, for one shared by fewer than MAX_SHARED_ANCHOR. */
const ANCHOR_TRIES = 64;

/** The hash of `text`'s ANCHOR characters ending just before `end` (exported for tests). */
export function windowHash(text: string, end: number): number {
  let h = 0;
  for (let p = end - ANCHOR; p < end; p++) h = (Math.imul(h, HASH_BASE) + text.charCodeAt(p)) | 0;
  return h;
}

/**
 * The prefix hashes of `text`: `h[k]` is the hash of its first k characters, so that of
 * `text[a, b)` is `h[b] - h[a] * HASH_BASE^(b - a)` (mod 2^32): any window, any needle-long
 * span, in one step.
 */
function prefixHashes(text: string): Int32Array {
  const h = new Int32Array(text.length + 1);
  let v = 0;
  for (let i = 0; i < text.length; i++) h[i + 1] = v = (Math.imul(v, HASH_BASE) + text.charCodeAt(i)) | 0;
  return h;
}

export class SecretScanner {
  /** Deterministic cost of every scan so far (see the file comment). */
  work = 0;
  /** Deterministic cost of building this scanner (see the file comment). */
  readonly buildWork: number;
  /** Characters read by every scan so far (folded copies included). */
  scannedChars = 0;
  /** Slots of the anchor table in use (one per distinct anchor hash): its size, for tests. */
  readonly anchors: number;
  /** Needles kept out of the table because another needle is their prefix (see the constructor). */
  readonly covered: number;
  /** Per needle: its extensions (the needles whose longest needle prefix it is), a linked list through extensionNext, and how many. */
  private readonly extensionHead: Int32Array;
  private readonly extensionNext: Int32Array;
  private readonly extensionCount: Int32Array;
  /**
   * For a needle with more than FEW_EXTENSIONS extensions, made when it is first found: their
   * lengths, shortest first, and the extensions by their whole hash, so that each length is
   * one look-up where the needle is found, whatever the number of extensions (tried one by one,
   * 8000 of them made masking take 17 s).
   */
  private readonly extensionIndex = new Map<number, { lengths: { length: number; power: number }[]; byHash: Map<number, number[]> }>();
  readonly needles: readonly string[];
  /** Per needle: where its anchor ends (exclusive) within the needle. */
  private readonly anchorEnd: Int32Array;
  // The anchor table, open addressing: slot -> the anchor hash it holds and the first of the
  // needles with that hash (a linked list through needleNext; -1: slot empty).
  private readonly shift: number;
  private readonly mask: number;
  private readonly slotHash: Int32Array;
  private readonly slotHead: Int32Array;
  /** One bit per slot, set when the slot is used: a window that hits no anchor (nearly every one) reads only this small bitmap. */
  private readonly used: Uint8Array;
  private readonly needleNext: Int32Array;
  /**
   * Per needle: the hash of the whole needle, and HASH_BASE to the power of its length, made
   * when its anchor is first hit (most never are: hashing every needle was a fifth of the build).
   */
  private readonly needleHash: Int32Array;
  private readonly needlePower: Int32Array;
  private readonly needleHashed: Uint8Array;

  constructor(secrets: Iterable<string>) {
    const all = secretNeedles(secrets);
    const build = { work: all.reduce((a, n) => a + n.length, 0) };

    // Anchors: the shortest prefix that tells a needle from every other (the whole needle if
    // it is a prefix of another), keeping its last ANCHOR characters. Needles are grouped by
    // the hash of their first ANCHOR characters: needles of two groups differ within those,
    // so a needle's anchor depends only on its own group's needles, and only groups of more
    // than one (a few: the documents' forms, the keys of one kind) are sorted, their repeats
    // dropped, and each needle compared with its sorted neighbours.
    const groups = new Map<number, string[]>();
    for (const n of all) {
      const h = windowHash(n, ANCHOR);
      build.work += ANCHOR;
      const group = groups.get(h);
      if (group) group.push(n);
      else groups.set(h, [n]);
    }
    const needles: string[] = [];
    const ends: number[] = [];
    // A needle that has another as its prefix is found through that one (the longest such):
    // it occurs only where its prefix does. Such needles stay out of the anchor table (a chain
    // of secrets each extending the last, `token=0…0`, put every one on one window of zeros);
    // masking checks them where their prefix was found.
    const parents: number[] = [];
    for (const group of groups.values()) {
      if (group.length === 1) {
        needles.push(group[0]);
        ends.push(ANCHOR);
        parents.push(-1);
        continue;
      }
      group.sort();
      const distinct: string[] = [];
      const lcp: number[] = [];
      for (const n of group) {
        const previous = distinct[distinct.length - 1];
        const shared = previous === undefined ? 0 : commonPrefix(previous, n, build);
        if (previous !== undefined && shared === n.length && shared === previous.length) continue;
        distinct.push(n);
        lcp.push(shared);
      }
      // The needles each a prefix of the last one (sorted order puts a prefix first): those of
      // them not longer than the last's common prefix with this one are prefixes of this one.
      const path: number[] = [];
      distinct.forEach((n, i) => {
        const unique = Math.min(n.length, Math.max(lcp[i], i + 1 < distinct.length ? lcp[i + 1] : 0) + 1);
        while (path.length && needles[path[path.length - 1]].length > lcp[i]) path.pop();
        parents.push(path.length ? path[path.length - 1] : -1);
        path.push(needles.length);
        needles.push(n);
        ends.push(Math.max(unique, ANCHOR));
      });
    }
    this.needles = needles;
    this.anchorEnd = Int32Array.from(ends);
    this.needleHash = new Int32Array(needles.length);
    this.needlePower = new Int32Array(needles.length);
    this.needleHashed = new Uint8Array(needles.length);
    this.extensionHead = new Int32Array(needles.length).fill(-1);
    this.extensionNext = new Int32Array(needles.length).fill(-1);
    this.extensionCount = new Int32Array(needles.length);
    let covered = 0;
    parents.forEach((parent, i) => {
      if (parent < 0) return;
      covered++;
      this.extensionNext[i] = this.extensionHead[parent];
      this.extensionHead[parent] = i;
      this.extensionCount[parent]++;
    });
    this.covered = covered;

    let bits = 4;
    while (1 << bits < needles.length * 4) bits++;
    this.shift = 32 - bits;
    this.mask = (1 << bits) - 1;
    this.slotHash = new Int32Array(1 << bits);
    this.slotHead = new Int32Array(1 << bits).fill(-1);
    const slotShared = new Int32Array(1 << bits);
    this.used = new Uint8Array(Math.max(1, (1 << bits) >> 3));
    this.needleNext = new Int32Array(needles.length).fill(-1);
    /** The slot holding hash `h`, or the empty slot where it would go. */
    const slotOf = (h: number): number => {
      let slot = Math.imul(h, SPREAD) >>> this.shift;
      while (this.slotHead[slot] !== -1 && this.slotHash[slot] !== h) (slot = (slot + 1) & this.mask), build.work++;
      return slot;
    };
    let anchors = 0;
    needles.forEach((n, i) => {
      if (parents[i] >= 0) return;
      // The window where the needle first differs from the others, else the nearest one
      // (later, then earlier) that fewer than MAX_SHARED_ANCHOR needles share, else the
      // least shared of those tried.
      const first = this.anchorEnd[i];
      let end = first;
      let slot = slotOf(windowHash(n, first));
      const sharedBy = (at: number) => (this.slotHead[at] === -1 ? 0 : slotShared[at]);
      for (let k = 1; sharedBy(slot) >= MAX_SHARED_ANCHOR && k <= 2 * ANCHOR_TRIES; k++) {
        const e = k <= ANCHOR_TRIES ? first + k : first - (k - ANCHOR_TRIES);
        if (e > n.length || e < ANCHOR) continue;
        build.work += ANCHOR;
        const candidate = slotOf(windowHash(n, e));
        if (sharedBy(candidate) < sharedBy(slot)) (slot = candidate), (end = e);
      }
      this.anchorEnd[i] = end;
      if (this.slotHead[slot] === -1) {
        anchors++;
        this.slotHash[slot] = windowHash(n, end);
        this.used[slot >> 3] |= 1 << (slot & 7);
      }
      slotShared[slot]++;
      this.needleNext[i] = this.slotHead[slot];
      this.slotHead[slot] = i;
    });
    this.anchors = anchors;
    this.buildWork = build.work;
    SCAN_TOTALS.scanners++;
    SCAN_TOTALS.buildWork += build.work;
  }

  private extensionIndexOf(p: number): { lengths: { length: number; power: number }[]; byHash: Map<number, number[]> } {
    let index = this.extensionIndex.get(p);
    if (index) return index;
    index = { lengths: [], byHash: new Map() };
    for (let c = this.extensionHead[p]; c >= 0; c = this.extensionNext[c]) {
      if (!this.needleHashed[c]) this.addWork(this.hashNeedle(c));
      const length = this.needles[c].length;
      if (!index.lengths.some((l) => l.length === length)) index.lengths.push({ length, power: this.needlePower[c] });
      index.byHash.set(this.needleHash[c], [...(index.byHash.get(this.needleHash[c]) ?? []), c]);
    }
    index.lengths.sort((a, b) => a.length - b.length);
    this.extensionIndex.set(p, index);
    return index;
  }

  /** Sets needle `i`'s hash and power; returns the characters hashed. */
  private hashNeedle(i: number): number {
    const n = this.needles[i];
    let hash = 0;
    let power = 1;
    for (let p = 0; p < n.length; p++) {
      hash = (Math.imul(hash, HASH_BASE) + n.charCodeAt(p)) | 0;
      power = Math.imul(power, HASH_BASE);
    }
    this.needleHash[i] = hash;
    this.needlePower[i] = power;
    this.needleHashed[i] = 1;
    return n.length;
  }

  /** Does needle `n` occur in `text` (whose prefix hashes are `prefix`) at `start`: by hash, and character by character when `exact`? */
  private occursAt(text: string, prefix: Int32Array, n: number, start: number, exact: boolean): boolean {
    const needle = this.needles[n];
    const stop = start + needle.length;
    if (stop > text.length) return false;
    if (!this.needleHashed[n]) this.addWork(this.hashNeedle(n));
    if (((prefix[stop] - Math.imul(prefix[start], this.needlePower[n])) | 0) !== this.needleHash[n]) return false;
    return !exact || this.verify(text, needle, start);
  }

  /** Does `needle` occur in `text` starting at `start`? Counts the characters compared. */
  private verify(text: string, needle: string, start: number): boolean {
    let i = 0;
    while (i < needle.length && text.charCodeAt(start + i) === needle.charCodeAt(i)) i++;
    this.addWork(i + 1);
    return i === needle.length;
  }

  /**
   * Reads `text` once, calling `found(start, end)` for every needle occurrence; stops early
   * when `found` returns true. A hit of an anchor is checked against each needle sharing it
   * by the hash of the text's span the needle would cover (one step, whatever its length:
   * comparing characters from the needle's start cost the needle's length at every hit, the
   * text's length times the needle's for a needle starting with a run such as a `#` banner);
   * only an equal hash is compared character by character when `exact` (a leak is reported
   * only when certain; masking takes the hash's word, which can only mask more).
   */
  private scan(text: string, exact: boolean, found: (start: number, end: number) => boolean): boolean {
    // Every table in a local: this loop is the scan.
    const { shift, mask, slotHash, slotHead, used, needleNext, needles, anchorEnd } = this;
    let work = 0;
    this.scannedChars += text.length;
    SCAN_TOTALS.scannedChars += text.length;
    if (text.length < ANCHOR) {
      this.addWork(text.length);
      return false;
    }
    const prefix = prefixHashes(text);
    work += text.length;
    for (let end = ANCHOR; end <= text.length; end++) {
      work++;
      const h = (prefix[end] - Math.imul(prefix[end - ANCHOR], WINDOW_POWER)) | 0;
      let slot = Math.imul(h, SPREAD) >>> shift;
      if (!(used[slot >> 3] & (1 << (slot & 7)))) continue;
      for (; slotHead[slot] !== -1; slot = (slot + 1) & mask) {
        work++;
        if (slotHash[slot] !== h) continue;
        for (let n = slotHead[slot]; n >= 0; n = needleNext[n]) {
          work++;
          const start = end - anchorEnd[n];
          if (start < 0 || !this.occursAt(text, prefix, n, start, exact)) continue;
          if (found(start, start + needles[n].length)) {
            this.addWork(work);
            return true;
          }
          // The needles that extend this one, found where it was (and theirs, where they are).
          const matched = [n];
          while (matched.length) {
            const p = matched.pop()!;
            if (this.extensionCount[p] === 0) continue;
            const candidates: number[] = [];
            if (this.extensionCount[p] <= FEW_EXTENSIONS) {
              for (let c = this.extensionHead[p]; c >= 0; c = this.extensionNext[c]) work++, candidates.push(c);
            } else {
              const index = this.extensionIndexOf(p);
              for (const { length, power } of index.lengths) {
                work++;
                const stop = start + length;
                if (stop > text.length) break;
                candidates.push(...(index.byHash.get((prefix[stop] - Math.imul(prefix[start], power)) | 0) ?? []));
              }
            }
            for (const c of candidates) {
              work++;
              if (!this.occursAt(text, prefix, c, start, exact)) continue;
              if (found(start, start + needles[c].length)) {
                this.addWork(work);
                return true;
              }
              matched.push(c);
            }
          }
        }
        break;
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
    if (this.scan(text, true, () => true)) return true;
    return hasBreak(text) && this.scan(foldLines(text), true, () => true);
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
   * Masking can itself make a leak (the mask's own characters completing a secret, or the
   * indentation after a masked line break no longer folded away): masked again, at most
   * MASK_ROUNDS times, and if something still leaks the whole text is the mask.
   */
  masked(text: string): string {
    let out = text;
    for (let round = 0; round < MASK_ROUNDS; round++) {
      const next = this.maskedOnce(out);
      if (next === out) return out;
      out = next;
      if (!this.leaks(out)) return out;
    }
    return MASK;
  }

  private maskedOnce(text: string): string {
    const ranges: [number, number][] = [];
    this.scan(text, false, (start, end) => {
      ranges.push([start, end]);
      return false;
    });
    if (hasBreak(text)) {
      const positions: number[] = [];
      this.scan(foldLines(text, positions), false, (start, end) => {
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
