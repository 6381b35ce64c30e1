/**
 * In-place scanning of trace text for the readers' hot loops: lines, fields and numbers are read from the
 * whole file's string by index, so a record costs no substring, no regex match array and no per-field
 * object (the 1 M lines/s target of issue #14). Each function has the semantics of its string twin in
 * events.ts (parseHex, parseInteger, parseSecondsUs, fieldAfter), which the rare paths still use.
 * Searches that could run past the line remember where the needle occurs next, so a needle missing from
 * many lines costs one pass over the file, not one per line. Model-only file (no kernel counterpart).
 */

/** A trace reader's byte for any character not in ASCII (TraceReader.b); its callers look at the text. */
export const NON_ASCII = 0x80;

/** Each character code below 128 (and each byte): its value as a hex digit (either case), or -1. */
export const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 10; c++) HEX[48 + c] = c;
for (let c = 0; c < 6; c++) HEX[65 + c] = HEX[97 + c] = 10 + c;

/** Value of hex digit c (either case), or -1: one load instead of two ranges tested. */
function hexDigit(c: number): number {
  return c < 128 ? HEX[c]! : -1;
}

/** parseHex of s[a, b): hex with or without 0x, 1 to 16 digits; NaN otherwise. */
export function hexAt(s: string, a: number, b: number): number {
  if (b - a >= 2 && s.charCodeAt(a) === 48 && (s.charCodeAt(a + 1) | 0x20) === 120) a += 2;
  const n = b - a;
  if (n <= 0 || n > 16) return NaN;
  let v = 0;
  for (let i = a; i < b; i++) {
    const d = hexDigit(s.charCodeAt(i));
    if (d < 0) return NaN;
    v = v * 16 + d;
  }
  // up to 13 digits the sum is exact; past 2^52 use parseInt's rounding, as parseHex does
  return n > 13 ? parseInt(s.slice(a, b), 16) : v;
}

/** Are s[a, b) all hex digits (after an optional 0x), 1 to 16 of them? (an SPTE: only its low bits are read) */
export function isHexAt(s: string, a: number, b: number): boolean {
  if (b - a >= 2 && s.charCodeAt(a) === 48 && (s.charCodeAt(a + 1) | 0x20) === 120) a += 2;
  if (b - a <= 0 || b - a > 16) return false;
  for (let i = a; i < b; i++) if (hexDigit(s.charCodeAt(i)) < 0) return false;
  return true;
}

/** The low 12 bits of the hex number s[a, b) (already checked by isHexAt). */
export function low12At(s: string, a: number, b: number): number {
  if (b - a >= 2 && s.charCodeAt(a) === 48 && (s.charCodeAt(a + 1) | 0x20) === 120) a += 2;
  let v = 0;
  for (let i = Math.max(a, b - 3); i < b; i++) v = v * 16 + hexDigit(s.charCodeAt(i));
  return v;
}

/** parseInteger of s[a, b): decimal (optionally negative) or 0x-prefixed hex; NaN otherwise. */
export function intAt(s: string, a: number, b: number): number {
  if (b - a >= 2 && s.charCodeAt(a) === 48 && s.charCodeAt(a + 1) === 120) return hexAt(s, a, b);
  const neg = s.charCodeAt(a) === 45;
  const d0 = neg ? a + 1 : a;
  if (d0 >= b) return NaN;
  let v = 0;
  for (let i = d0; i < b; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return NaN;
    v = v * 10 + (c - 48);
  }
  if (b - d0 > 15) return Number(s.slice(a, b));
  return neg ? -v : v;
}

/** parseSecondsUs of s[a, b): "1796562681.851642" → microseconds; NaN if not seconds.fraction. */
export function secondsUsAt(s: string, a: number, b: number): number {
  let dot = -1;
  for (let i = a; i < b; i++) {
    const c = s.charCodeAt(i);
    if (c === 46 && dot === -1) dot = i;
    else if (c < 48 || c > 57) return NaN;
  }
  const fl = b - dot - 1;
  if (dot <= a || fl < 1 || fl > 9) return NaN;
  if (dot - a > 15) return Number(s.slice(a, dot)) * 1e6 + fractionUs(s, dot + 1, fl);
  let sec = 0;
  for (let i = a; i < dot; i++) sec = sec * 10 + (s.charCodeAt(i) - 48);
  return sec * 1e6 + fractionUs(s, dot + 1, fl);
}

/**
 * secondsUsAt of s[a, c), c being the first `stop` character in s[a, b), in one pass: tokenStop is c. When
 * a character other than a digit or a first '.' comes before any stop, or no stop comes before b, the
 * answer is NaN and tokenStop -1 (the caller finds c by other means; the time would be NaN anyway).
 */
export function secondsUsUntil(s: string, a: number, b: number, stop: number): number {
  let dot = -1;
  let sec = 0;
  let i = a;
  for (; i < b; i++) {
    const c = s.charCodeAt(i);
    if (c === stop) break;
    if (c === 46 && dot === -1) dot = i;
    else if (c < 48 || c > 57) break;
    else if (dot === -1) sec = sec * 10 + (c - 48);
  }
  if (i >= b || s.charCodeAt(i) !== stop) {
    tokenStop = -1;
    return NaN;
  }
  tokenStop = i;
  return secondsOf(s, a, i, dot, sec);
}

/**
 * secondsUsAt of s[a, b) for a caller that has checked its characters (digits and one '.' at dot, -1 if
 * none) and summed the digits before the dot in sec.
 */
export function secondsOf(s: string, a: number, b: number, dot: number, sec: number): number {
  const fl = b - dot - 1;
  if (dot <= a || fl < 1 || fl > 9) return NaN;
  if (dot - a > 15) return Number(s.slice(a, dot)) * 1e6 + fractionUs(s, dot + 1, fl);
  return sec * 1e6 + fractionUs(s, dot + 1, fl);
}

function fractionUs(s: string, f: number, fl: number): number {
  const n = fl >= 6 ? 6 : fl;
  let v = 0;
  for (let i = f; i < f + n; i++) v = v * 10 + (s.charCodeAt(i) - 48);
  return fl >= 6 ? v : v * 10 ** (6 - fl);
}

/**
 * Does s hold `word` at a? The builtin compares in native code: a loop of charCodeAt pairs costs about
 * 4 ns a character on this V8 (measured: a 24-character event name 200 ns, startsWith 15 ns).
 */
export function sameAt(s: string, a: number, word: string): boolean {
  return s.startsWith(word, a);
}

/**
 * Where the last hexToken/intToken stopped reading: the token's end when it was a number, else the first
 * character that made it not one (a caller that needs the token's end scans on from there to the space).
 */
export let tokenStop = 0;

/** hexAt of the space-delimited token starting at j (tokenEnd(s, j, te)), read in one pass. */
export function hexToken(s: string, j: number, te: number): number {
  let a = j;
  if (a + 1 < te && s.charCodeAt(a) === 48 && (s.charCodeAt(a + 1) | 0x20) === 120) a += 2;
  let v = 0;
  let k = a;
  for (; k < te; k++) {
    const d = hexDigit(s.charCodeAt(k));
    if (d < 0) break;
    v = v * 16 + d;
  }
  tokenStop = k;
  if (k < te && s.charCodeAt(k) !== 32) return NaN; // the token goes on with a character that is not hex
  const n = k - a;
  if (n <= 0 || n > 16) return NaN;
  return n > 13 ? parseInt(s.slice(a, k), 16) : v;
}

/** The low 12 bits of the hex token at j if it is one (isHexAt of the token), else -1: one pass. */
export function hexTokenLow12(s: string, j: number, te: number): number {
  let a = j;
  if (a + 1 < te && s.charCodeAt(a) === 48 && (s.charCodeAt(a + 1) | 0x20) === 120) a += 2;
  let v = 0;
  let k = a;
  for (; k < te; k++) {
    const d = hexDigit(s.charCodeAt(k));
    if (d < 0) break;
    v = ((v << 4) | d) & 0xfff;
  }
  if (k < te && s.charCodeAt(k) !== 32) return -1;
  const n = k - a;
  return n <= 0 || n > 16 ? -1 : v;
}

/** intAt of the space-delimited token starting at j, read in one pass. */
export function intToken(s: string, j: number, te: number): number {
  if (j + 1 < te && s.charCodeAt(j) === 48 && s.charCodeAt(j + 1) === 120) return hexToken(s, j, te);
  const d0 = j < te && s.charCodeAt(j) === 45 ? j + 1 : j;
  let v = 0;
  let k = d0;
  for (; k < te; k++) {
    const c = s.charCodeAt(k);
    if (c < 48 || c > 57) break;
    v = v * 10 + (c - 48);
  }
  tokenStop = k;
  if (k === d0 || (k < te && s.charCodeAt(k) !== 32)) return NaN;
  if (k - d0 > 15) return Number(s.slice(j, k));
  return d0 > j ? -v : v;
}

/** End of the space-delimited token starting at j (at most te). */
export function tokenEnd(s: string, j: number, te: number): number {
  let k = j;
  while (k < te && s.charCodeAt(k) !== 32) k++;
  return k;
}

/**
 * s.indexOf(needle, from) that remembers its last answer: the readers search forward through one file,
 * so a needle absent from many lines is looked for once, not once per line.
 */
export class Needle {
  private from = Infinity;
  private at = -1;

  constructor(readonly text: string) {}

  indexFrom(s: string, f: number): number {
    if (f >= this.from && (this.at === -1 || f <= this.at)) return this.at;
    this.from = f;
    this.at = s.indexOf(this.text, f);
    return this.at;
  }

  /** The first occurrence in s[a, b), or -1. */
  within(s: string, a: number, b: number): number {
    const i = this.indexFrom(s, a);
    return i !== -1 && i + this.text.length <= b ? i : -1;
  }
}

/**
 * fieldAfter on the text s[ts, te): the start of the token after `key ` where key is preceded by a space,
 * a tab or the start of the text; -1 when the key is missing or has no value (fieldAfter's undefined).
 * One finder per key and per file.
 */
export class FieldFinder {
  private readonly needle: Needle;

  constructor(readonly key: string) {
    this.needle = new Needle(key);
  }

  value(s: string, ts: number, te: number): number {
    const kl = this.key.length;
    let i = this.needle.indexFrom(s, ts);
    while (i !== -1 && i + kl <= te) {
      const before = i === ts ? 32 : s.charCodeAt(i - 1);
      const end = i + kl;
      if ((before === 32 || before === 9) && end < te && s.charCodeAt(end) === 32) {
        let j = end + 1;
        while (j < te && s.charCodeAt(j) === 32) j++;
        return j < te ? j : -1;
      }
      i = this.needle.indexFrom(s, i + 1);
    }
    return -1;
  }
}

/** String.prototype.trim's whitespace (ECMAScript WhiteSpace and LineTerminator). */
export function isTrimSpace(c: number): boolean {
  if (c === 32 || (c >= 9 && c <= 13)) return true;
  if (c < 0xa0) return false;
  return (
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000 ||
    c === 0xfeff
  );
}

/** Are s[a, b) one or more decimal digits? */
export function digitsAt(s: string, a: number, b: number): boolean {
  if (a >= b) return false;
  for (let i = a; i < b; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** Decimal digits s[a, b) (checked by digitsAt) as a number. */
export function digitsValue(s: string, a: number, b: number): number {
  if (b - a > 15) return Number(s.slice(a, b));
  let v = 0;
  for (let i = a; i < b; i++) v = v * 10 + (s.charCodeAt(i) - 48);
  return v;
}
