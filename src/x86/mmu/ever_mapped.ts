/**
 * The TDP MMU's record of which gfns a fault has ever mapped, so a fault on one of them counts as a
 * refault (the model's 'refaults' counter): bitmaps of 32768 gfns (4 KB) made on first use, in a Map by
 * gfn / 32768. Model-only; no kernel counterpart (the shadow MMU keeps the same record in a GfnBitmap,
 * gfn_bitmap.ts, whose small chunks suit its slower, sequential first touch).
 *
 * Written-range owner (kvm/written_range.ts): every bit it sets is noted by byte index within its chunk,
 * so a snapshot restore copies back only the bytes written, in every chunk and spare, instead of whole
 * 4 KB chunks. It also keeps a few zeroed spare chunks made with it: an explorer schedule that maps a gfn
 * of a new chunk takes a spare instead of making 4 KB off the V8 heap (microseconds), and the restore
 * puts the spares back, zeroed (their bytes are in the written range). Several, as the setup before a
 * snapshot may take some. The spares sit under a symbol key: storage, not state (state hashes read
 * string keys only).
 */
import { SNAPSHOT_WRITTEN, WRITTEN, WrittenRange, type SnapshotWritten } from '../../kvm/written_range.ts';

/** gfns per chunk: 4 KB of bits */
const CHUNK_GFNS = 32768;
const SPARES: unique symbol = Symbol('zaplab.spareChunks');

export class EverMapped implements SnapshotWritten {
  /** chunk key (gfn / 32768) → its bits */
  private readonly chunks = new Map<number, Uint8Array>();
  /** the bytes of the chunks written, by index in a chunk (written_range.ts: restores copy those) */
  readonly [WRITTEN] = new WrittenRange();
  private readonly [SPARES]: Uint8Array[] = [0, 1, 2, 3].map(() => new Uint8Array(CHUNK_GFNS / 8));
  /** the chunk used last (faults come in runs) */
  private lastKey = -1;
  private last: Uint8Array | undefined = undefined;

  /** Record that gfn was mapped; true if it had been mapped before. */
  testAndSet(gfn: number): boolean {
    const key = gfn < 0x80000000 ? gfn >>> 15 : Math.floor(gfn / CHUNK_GFNS);
    // (the chunk pointer is stored only when it changes: a pointer store pays the GC write barrier)
    const bits = key === this.lastKey && this.last !== undefined ? this.last : this.chunkOf(key);
    const i = gfn - key * CHUNK_GFNS;
    const j = i >>> 3;
    const byte = bits[j]!;
    if (((byte >> (i & 7)) & 1) === 1) return true;
    bits[j] = byte | (1 << (i & 7));
    // A byte that held a bit was written before, so it lies in the range already (written_range.ts: a
    // noted write need not be noted again): only a byte's first bit is noted, 1 first touch in 8 of a run.
    if (byte === 0) this[WRITTEN].note(j);
    return false;
  }

  /** The chunk of key (made, or taken from the spares, on first use), now the last one used. */
  private chunkOf(key: number): Uint8Array {
    let bits = this.chunks.get(key);
    if (bits === undefined) {
      bits = this[SPARES].pop() ?? new Uint8Array(CHUNK_GFNS / 8);
      this.chunks.set(key, bits);
    }
    this.lastKey = key;
    this.last = bits;
    return bits;
  }

  /** The chunks and the spares, each numbered from its first byte. */
  [SNAPSHOT_WRITTEN](): [ArrayBufferView, number][] {
    return [...this.chunks.values(), ...this[SPARES]].map((c): [ArrayBufferView, number] => [c, 0]);
  }
}
