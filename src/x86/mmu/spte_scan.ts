/**
 * Eight-entry scans of a page table's words, for the loops that step over the empty (or uniform) parts
 * of a table eight entries at a time: the batched leaf zap, handle_removed_pt's frozen-run scan and the
 * checker's table audit. Small enough for V8 to inline at each call site.
 *
 * Kernel counterpart: none — the kernel reads one SPTE at a time; this only skips entries the per-entry
 * loop would find nothing to do for.
 */
import { Buffer } from 'node:buffer';
import { HI_OFFSET, SPTE_ENT_PER_PAGE, TABLE_WORDS } from './sp_pool.ts';
import { SHADOW_NONPRESENT_HI, SHADOW_NONPRESENT_LO } from './spte.ts';

/** OR of the eight words arr[j], …, arr[j + 7]. */
export function or8(arr: Int32Array, j: number): number {
  return (
    arr[j]! | arr[j + 1]! | arr[j + 2]! | arr[j + 3]! | arr[j + 4]! | arr[j + 5]! | arr[j + 6]! | arr[j + 7]!
  );
}

/** OR of the eight words arr[j + k] ^ v: 0 exactly when all eight equal v. */
export function xorOr8(arr: Int32Array, j: number, v: number): number {
  return (
    (arr[j]! ^ v) |
    (arr[j + 1]! ^ v) |
    (arr[j + 2]! ^ v) |
    (arr[j + 3]! ^ v) |
    (arr[j + 4]! ^ v) |
    (arr[j + 5]! ^ v) |
    (arr[j + 6]! ^ v) |
    (arr[j + 7]! ^ v)
  );
}

/**
 * The chunk's words as doubles (one double: two neighbouring words of one half, entry 2m's word in its
 * low 32 bits): a scan reads half as many elements, each one bounds check and one compare. A double
 * compared with === is exact on its bits except that +0 and -0 are equal and NaN equals nothing, so the
 * scans below use a double only where those two do not matter (they say so).
 *
 * The view of the chunk asked for last is kept (a cache of a view, not model state: a chunk never moves
 * or changes its buffer once made, and a snapshot restore writes into it in place).
 */
let viewedChunk: Int32Array | null = null;
let viewOfChunk: Float64Array = new Float64Array(0);
export function pairsOf(arr: Int32Array): Float64Array {
  if (arr !== viewedChunk) {
    viewOfChunk = new Float64Array(arr.buffer, arr.byteOffset, arr.length >> 1);
    viewedChunk = arr;
  }
  return viewOfChunk;
}

/**
 * From pairs[k] on (k at a group of 8 entries' low words: 4 doubles), the first group before kStop
 * with a double other than +-0 (kStop if none). A group of 0 doubles holds no present SPTE: each word is 0,
 * or 0x80000000 where it is the upper one (-0). A loop of its own: the batched zap's skip over a table's
 * empty entries.
 */
export function skipZeroQuads(pairs: Float64Array, k: number, kStop: number): number {
  for (; k < kStop; k += 4)
    if (pairs[k] !== 0 || pairs[k + 1] !== 0 || pairs[k + 2] !== 0 || pairs[k + 3] !== 0) return k;
  return kStop;
}

/** Two equal words seen as one double (scratch: written and read within pairOf). */
const pairWords = new Int32Array(2);
const pairDouble = new Float64Array(pairWords.buffer);

/** The double two words equal to w make, or 0 where a double cannot stand for them (±0, NaN). */
function pairOf(w: number): number {
  pairWords[0] = w;
  pairWords[1] = w;
  const d = pairDouble[0]!;
  return d === d ? d : 0;
}

/**
 * Where the run of entries equal to (lo, hi) that goes on at entry `from` of the table at `base` ends:
 * the first entry from `from` on that differs, or 512. Eight entries at a time where the run is long (a
 * teardown's tables are mostly empty), as doubles where a double stands for the words (pairOf).
 */
export function sameRunEnd(arr: Int32Array, base: number, from: number, lo: number, hi: number): number {
  const hiBase = base + HI_OFFSET;
  const pairs = pairsOf(arr);
  const loPair = pairOf(lo);
  const hiPair = pairOf(hi);
  let end = from;
  while (end < SPTE_ENT_PER_PAGE) {
    if ((end & 7) === 0) {
      while (
        end + 8 <= SPTE_ENT_PER_PAGE &&
        sameGroup(arr, pairs, hiBase + end, hi, hiPair) &&
        sameGroup(arr, pairs, base + end, lo, loPair)
      )
        end += 8;
      if (end === SPTE_ENT_PER_PAGE) break;
    }
    if (arr[base + end] !== lo || arr[hiBase + end] !== hi) break;
    end++;
  }
  return end;
}

/** Do the eight words from j (a multiple of 8) all equal w? As four doubles where d (pairOf(w)) is not 0. */
function sameGroup(arr: Int32Array, pairs: Float64Array, j: number, w: number, d: number): boolean {
  if (d === 0) return xorOr8(arr, j, w) === 0;
  const k = j >>> 1;
  return pairs[k] === d && pairs[k + 1] === d && pairs[k + 2] === d && pairs[k + 3] === d;
}

/** The bytes of a table of SHADOW_NONPRESENT_VALUE entries, as a chunk holds them. */
const BLANK_BYTES = Buffer.from(
  new Int32Array(TABLE_WORDS).fill(SHADOW_NONPRESENT_LO, 0, HI_OFFSET).fill(SHADOW_NONPRESENT_HI, HI_OFFSET)
    .buffer,
);
/** The chunk's bytes (a Buffer over its memory, no copy), kept for the chunk asked for last as pairsOf's view. */
let bytesChunk: Int32Array | null = null;
let bytesOfChunk: Buffer = Buffer.alloc(0);

/**
 * Does the table at word `base` of the chunk hold SHADOW_NONPRESENT_VALUE in every entry? One memcmp of
 * its 4 KiB with a blank table (Buffer#compare): ~1,700 instructions where a JS loop over the 1,024 words
 * takes ~10,000 (each typed-array read is an index check, a bounds check and a reload of the array's
 * fields in V8's loops). A table handle_removed_pt takes from a teardown is blank once its leafs are zapped.
 */
export function isBlankTable(arr: Int32Array, base: number): boolean {
  if (arr !== bytesChunk) {
    bytesOfChunk = Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength);
    bytesChunk = arr;
  }
  const at = base * 4;
  return bytesOfChunk.compare(BLANK_BYTES, 0, TABLE_WORDS * 4, at, at + TABLE_WORDS * 4) === 0;
}
