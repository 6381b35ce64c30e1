/**
 * The readings of scan.ts on a trace reader's bytes (TraceReader.b: chunks of whole lines, each character
 * below 128 its code, any other NON_ASCII), and the byte-only pieces: words compared four bytes at a time,
 * and event texts read as templates. Model-only file (no kernel counterpart).
 */
import { HEX } from './scan.ts';

// The same readings on a reader's bytes (TraceReader.b, positions relative to its chunk): a byte is the
// character's code when that is ASCII, else NON_ASCII, which is no digit, space or delimiter, so each
// answers what its string twin in scan.ts answers for the same characters. Numbers past 2^53 are read from
// their digits as text, as the twins do (the digits are ASCII, so the bytes are their codes).

/** The bytes b[a, k) as text (ASCII only). */
function textOf(b: Uint8Array, a: number, k: number): string {
  return String.fromCharCode(...b.subarray(a, k));
}

/** hexToken on bytes; bytesStop is where it stopped reading (tokenStop). */
export function hexTokenB(b: Uint8Array, j: number, te: number): number {
  let a = j;
  if (a + 1 < te && b[a] === 48 && (b[a + 1]! | 0x20) === 120) a += 2;
  let v = 0;
  let k = a;
  for (; k < te; k++) {
    const d = HEX[b[k]!]!;
    if (d < 0) break;
    v = v * 16 + d;
  }
  bytesStop = k;
  if (k < te && b[k] !== 32) return NaN;
  const n = k - a;
  if (n <= 0 || n > 16) return NaN;
  return n > 13 ? parseInt(textOf(b, a, k), 16) : v;
}

/** hexTokenLow12 on bytes (and where it stopped reading, in bytesStop). */
export function hexTokenLow12B(b: Uint8Array, j: number, te: number): number {
  let a = j;
  if (a + 1 < te && b[a] === 48 && (b[a + 1]! | 0x20) === 120) a += 2;
  let v = 0;
  let k = a;
  for (; k < te; k++) {
    const d = HEX[b[k]!]!;
    if (d < 0) break;
    v = ((v << 4) | d) & 0xfff;
  }
  bytesStop = k;
  if (k < te && b[k] !== 32) return -1;
  const n = k - a;
  return n <= 0 || n > 16 ? -1 : v;
}

/** intToken on bytes. */
export function intTokenB(b: Uint8Array, j: number, te: number): number {
  if (j + 1 < te && b[j] === 48 && b[j + 1] === 120) return hexTokenB(b, j, te);
  const d0 = j < te && b[j] === 45 ? j + 1 : j;
  let v = 0;
  let k = d0;
  for (; k < te; k++) {
    const c = b[k]!;
    if (c < 48 || c > 57) break;
    v = v * 10 + (c - 48);
  }
  bytesStop = k;
  if (k === d0 || (k < te && b[k] !== 32)) return NaN;
  if (k - d0 > 15) return Number(textOf(b, j, k));
  return d0 > j ? -v : v;
}

/** Where the last hexTokenB/intTokenB stopped reading (as tokenStop). */
export let bytesStop = 0;

/** digitsAt on bytes. */
export function digitsAtB(b: Uint8Array, a: number, e: number): boolean {
  if (a >= e) return false;
  for (let i = a; i < e; i++) {
    const c = b[i]!;
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** digitsValue on bytes. */
export function digitsValueB(b: Uint8Array, a: number, e: number): number {
  if (e - a > 15) return Number(textOf(b, a, e));
  let v = 0;
  for (let i = a; i < e; i++) v = v * 10 + (b[i]! - 48);
  return v;
}

/** secondsOf on bytes. */
export function secondsOfB(b: Uint8Array, a: number, e: number, dot: number, sec: number): number {
  const fl = e - dot - 1;
  if (dot <= a || fl < 1 || fl > 9) return NaN;
  const n = fl >= 6 ? 6 : fl;
  let f = 0;
  for (let i = dot + 1; i < dot + 1 + n; i++) f = f * 10 + (b[i]! - 48);
  const us = fl >= 6 ? f : f * 10 ** (6 - fl);
  if (dot - a > 15) return Number(textOf(b, a, dot)) * 1e6 + us;
  return sec * 1e6 + us;
}

/**
 * An ASCII word for `wordAt`: its bytes as little-endian 32-bit words, the last one masked to the word's
 * length. Comparing four bytes at a time through a DataView costs about a third of a byte loop and a
 * fifth of startsWith on this V8 (19 characters: ~25-45 ns, ~70 ns, ~210 ns).
 */
export class Word {
  readonly w: Int32Array;
  readonly m: Int32Array;

  private constructor(
    readonly length: number,
    code: (i: number) => number,
  ) {
    this.w = new Int32Array((length + 3) >> 2);
    this.m = new Int32Array((length + 3) >> 2);
    for (let i = 0; i < length; i++) {
      this.w[i >> 2]! |= code(i) << (8 * (i & 3));
      this.m[i >> 2]! |= 0xff << (8 * (i & 3));
    }
  }

  static of(text: string): Word {
    return new Word(text.length, (i) => text.charCodeAt(i));
  }

  /** The bytes b[a, a + n) as a word. */
  static ofBytes(b: Uint8Array, a: number, n: number): Word {
    return new Word(n, (i) => b[a + i]!);
  }
}

/**
 * Does the reader's chunk hold `w` at a? The caller has checked that a + w.length is within the line; the
 * bytes read past it (up to 3, under the mask) must exist in the buffer (TraceReader keeps WORD_SLACK
 * bytes after the chunk). A NON_ASCII byte never equals a byte of the ASCII word.
 */
export function wordAt(dv: DataView, a: number, w: Word): boolean {
  const ws = w.w;
  const ms = w.m;
  for (let k = 0; k < ws.length; k++) if ((dv.getInt32(a + 4 * k, true) & ms[k]!) !== ws[k]) return false;
  return true;
}

/** Bytes a reader's buffer holds after its chunk's sentinel newline, for `wordAt`'s masked reads. */
export const WORD_SLACK = 8;

/**
 * A known event text read as a template (literal words and number tokens) instead of a FieldFinder per
 * field: where the text is exactly `lit tok lit tok …`, with each `tok` a run of number bytes (hex digits,
 * 'x', 'X', '-': no key can be made of them) and each literal a key between single spaces, every key's
 * first qualifying occurrence (FieldFinder.value) is the one in its literal, and its value starts right
 * after it. Where the text is anything else the template says -1 and the reader asks the FieldFinders.
 */

/** Bytes of a number token the template skips: hex digits, x, X and '-'. */
const NUM = new Uint8Array(256);
for (const c of '0123456789abcdefABCDEFxX-') NUM[c.charCodeAt(0)] = 1;

/** p + w.length when the bytes hold word w at p and it ends by e, else -1 (also for p = -1). */
export function litAt(dv: DataView, p: number, e: number, w: Word): number {
  return p >= 0 && p + w.length <= e && wordAt(dv, p, w) ? p + w.length : -1;
}

/** The end of the number token at p (one byte or more), else -1 (also for p = -1). */
export function numEnd(b: Uint8Array, p: number, e: number): number {
  if (p < 0 || p >= e || NUM[b[p]!] === 0) return -1;
  let q = p + 1;
  while (q < e && NUM[b[q]!] === 1) q++;
  return q;
}

/** A value that starts at p: p when p is before e and no space (FieldFinder skips spaces), else -1. */
export function valueAt(b: Uint8Array, p: number, e: number): number {
  return p >= 0 && p < e && b[p] !== 32 ? p : -1;
}
