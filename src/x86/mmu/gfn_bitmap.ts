/**
 * Sparse per-gfn records in chunks of 1024 gfns: GfnBitmap, the model's record of which gfns a fault has
 * ever mapped (its 'refaults' counter), and GfnCounter, a count per gfn (the shadow page hash's index of
 * guest tables it shadows). Model-only; no kernel counterpart. Chunks are small so that a sequential
 * first touch makes one often: the path that makes one has type feedback by the time V8 optimizes the
 * fault path (a rarer first use after that deoptimized it).
 */

const CHUNK = 1024;

/** A sparse set of gfns, as bitmaps of 1024 gfns made on first use. */
export class GfnBitmap {
  private readonly chunks = new Map<number, Uint8Array>();
  /** the chunk used last (faults come in runs) */
  private lastKey = -1;
  private last: Uint8Array | undefined = undefined;

  /** Add gfn; true if it was already there. */
  testAndSet(gfn: number): boolean {
    const key = Math.floor(gfn / CHUNK);
    // (the last chunk is stored only when it changes: a pointer store is a write barrier per call)
    const bits = key === this.lastKey ? this.last! : this.chunkOf(key);
    const i = gfn - key * CHUNK;
    const byte = bits[i >>> 3]!;
    const bit = 1 << (i & 7);
    if ((byte & bit) !== 0) return true;
    bits[i >>> 3] = byte | bit;
    return false;
  }

  /** The chunk of `key`, made on first use, as the last one used. */
  private chunkOf(key: number): Uint8Array {
    let bits = this.chunks.get(key);
    if (bits === undefined) this.chunks.set(key, (bits = new Uint8Array(CHUNK / 8)));
    this.lastKey = key;
    this.last = bits;
    return bits;
  }
}

/**
 * A count per gfn, sparse: chunks of 1024 counts made on first use and dropped when they fall back to
 * all zero (so the chunks held are a function of the counts, not of their history). Model-only; no
 * kernel counterpart.
 */
export class GfnCounter {
  /** chunk key (gfn / 1024) → the 1024 counts and, at index 1024, how many of them are not zero */
  private readonly chunks = new Map<number, Int32Array>();
  /** the key looked up last and its chunk (undefined: none), kept in step by add (lookups come in runs) */
  private lastKey = -1;
  private last: Int32Array | undefined = undefined;

  /** The count at gfn. */
  get(gfn: number): number {
    const key = Math.floor(gfn / CHUNK);
    if (key !== this.lastKey) {
      this.lastKey = key;
      this.last = this.chunks.get(key);
    }
    const c = this.last;
    return c === undefined ? 0 : c[gfn - key * CHUNK]!;
  }

  /** count(gfn) += delta; a count never goes below zero (a caller's bug: thrown, nothing changed). */
  add(gfn: number, delta: number): void {
    const key = Math.floor(gfn / CHUNK);
    const i = gfn - key * CHUNK;
    let c = this.chunks.get(key);
    const was = c === undefined ? 0 : c[i]!;
    const now = was + delta;
    if (now < 0) throw new RangeError(`GfnCounter: count of gfn 0x${gfn.toString(16)} would go below 0`);
    if (c === undefined) this.chunks.set(key, (c = new Int32Array(CHUNK + 1)));
    c[i] = now;
    c[CHUNK] = c[CHUNK]! + (now !== 0 ? 1 : 0) - (was !== 0 ? 1 : 0);
    if (c[CHUNK] === 0) this.chunks.delete(key);
    if (key === this.lastKey) this.last = this.chunks.get(key);
  }
}
