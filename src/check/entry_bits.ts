/**
 * The 4K entries the TDP engine changed, per 2M region, between two whole-VM audits (audit_dirty.ts): 512
 * bits per region, as a block of 16 words of one typed array, found through an open-addressing table
 * keyed by region (linear probing, as leaf_counts.ts). A refault of a working set spread over the guest
 * notes hundreds of regions between two audits: a typed array per region (as before) was an allocation
 * per region per audit, and most of what noting a refault cost. clear() resets only the blocks in use.
 *
 * Kernel counterpart: none (the checker's own bookkeeping).
 */
import { FREE, probeRegion } from './leaf_counts.ts';

/** Regions a new table holds before it grows (a power of two; it doubles when half full). */
const FIRST_SLOTS = 16;
/** Words per region: 512 bits. */
export const BLOCK_WORDS = 16;

export class EntryBits {
  /** the region held in each slot (FREE: none) */
  private keys = new Float64Array(FIRST_SLOTS).fill(FREE);
  /** slot s's bits are words [BLOCK_WORDS s, BLOCK_WORDS (s + 1)) */
  words = new Int32Array(BLOCK_WORDS * FIRST_SLOTS);
  /** the slots in use, in the order they were taken */
  private taken = new Int32Array(FIRST_SLOTS);
  private used = 0;
  /** the region blockOf() or find() found last (faults come in runs over one region) */
  private lastQ = FREE;
  private lastSlot = 0;

  /** The slot of region q, or the free slot where it would go (keys[slot] === FREE). */
  private slotOf(q: number): number {
    if (q === this.lastQ) return this.lastSlot;
    const s = probeRegion(this.keys, q);
    if (this.keys[s] === q) {
      this.lastQ = q;
      this.lastSlot = s;
    }
    return s;
  }

  /** Where region q's block starts in `words`, or -1 when no entry of it was noted. */
  find(q: number): number {
    const s = this.slotOf(q);
    return this.keys[s] === q ? s * BLOCK_WORDS : -1;
  }

  /** Where region q's block starts in `words` (a zeroed block taken on first use: read `words` after). */
  blockOf(q: number): number {
    let s = this.slotOf(q);
    if (this.keys[s] !== q) {
      if (2 * (this.used + 1) > this.keys.length) {
        this.grow();
        s = this.slotOf(q);
      }
      this.keys[s] = q;
      this.taken[this.used++] = s;
      this.lastQ = q;
      this.lastSlot = s;
    }
    return s * BLOCK_WORDS;
  }

  /** Twice the slots, every region and its block placed again. */
  private grow(): void {
    const keys = this.keys;
    const words = this.words;
    const n = this.used;
    this.keys = new Float64Array(2 * keys.length).fill(FREE);
    this.words = new Int32Array(2 * words.length);
    const taken = this.taken;
    this.taken = new Int32Array(2 * taken.length);
    this.used = 0;
    this.lastQ = FREE;
    for (let k = 0; k < n; k++) {
      const from = taken[k]!;
      const to = this.blockOf(keys[from]!);
      this.words.set(words.subarray(from * BLOCK_WORDS, (from + 1) * BLOCK_WORDS), to);
    }
  }

  /** Forget every region (only the blocks in use are zeroed). */
  clear(): void {
    for (let k = 0; k < this.used; k++) {
      const s = this.taken[k]!;
      this.keys[s] = FREE;
      this.words.fill(0, s * BLOCK_WORDS, (s + 1) * BLOCK_WORDS);
    }
    this.used = 0;
    this.lastQ = FREE;
  }
}
