/**
 * A sparse set of gfns as bitmaps of 1024 gfns each, made on first use: the model's record of which
 * gfns a fault has ever mapped (its 'refaults' counter). Model-only; no kernel counterpart. Chunks are
 * small so that a sequential first touch makes one often: the path that makes one has type feedback by
 * the time V8 optimizes the fault path (a rarer first use after that deoptimized it).
 */

const CHUNK = 1024;

export class GfnBitmap {
  private readonly chunks = new Map<number, Uint8Array>();
  /** the chunk used last (faults come in runs) */
  private lastKey = -1;
  private last: Uint8Array | undefined = undefined;

  /** Add gfn; true if it was already there. */
  testAndSet(gfn: number): boolean {
    const key = Math.floor(gfn / CHUNK);
    let bits = key === this.lastKey ? this.last : this.chunks.get(key);
    if (bits === undefined) this.chunks.set(key, (bits = new Uint8Array(CHUNK / 8)));
    this.lastKey = key;
    this.last = bits;
    const i = gfn - key * CHUNK;
    const was = (bits[i >>> 3]! >> (i & 7)) & 1;
    bits[i >>> 3]! |= 1 << (i & 7);
    return was === 1;
  }
}
