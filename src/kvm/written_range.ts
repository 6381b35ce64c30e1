/**
 * Written ranges: an object that owns typed arrays notes which of their elements it has written, so a
 * snapshot restore (snapshot.ts) copies back only those instead of the whole arrays (a vCPU's TLB is
 * ~42 KB, and an explorer schedule writes a few of its entries).
 *
 * The owner keeps a WrittenRange under the symbol key WRITTEN (snapshots save and restore it like any
 * field; state hashes, which read string keys only, leave it out: it says where the arrays were written,
 * not what they hold) and implements SNAPSHOT_WRITTEN: the arrays the range covers, each with the index
 * its element 0 has in the range's numbering (arrays that share one numbering: a TLB's tag, pfn and meta
 * arrays, by place). Every write to those arrays after the owner is made must be noted (`note`,
 * `noteRange`), on every path: a write not noted is not undone by a restore. (Writes made while the
 * owner is constructed, before any snapshot can see it, need not be; nor a write to an element already
 * noted, since the range never shrinks but by a restore, which puts back a range that covered it.)
 *
 * Why a restore may copy only the range: the range covers every element written since the owner was
 * made in the history of the current state (writes add to it; a restore puts back, with the arrays, the
 * range they had then). An element that differs between now and a snapshot's state was written in the
 * history of one of the two, so it lies in the range now or in the range at the snapshot: a restore
 * copies the elements from the lower of the two starts to the higher of the two ends.
 *
 * Model-only file (no kernel counterpart).
 */
export const WRITTEN: unique symbol = Symbol('zaplab.written');
export const SNAPSHOT_WRITTEN: unique symbol = Symbol('zaplab.snapshotWritten');

/** lo of an empty range: above every index (and a small integer, so the field stays one) */
const EMPTY_LO = 0x3fffffff;

/** The elements written so far: indices [lo, hi) (empty while hi <= lo). */
export class WrittenRange {
  lo = EMPTY_LO;
  hi = 0;

  /** Element i was written. */
  note(i: number): void {
    if (i < this.lo) this.lo = i;
    if (i >= this.hi) this.hi = i + 1;
  }

  /** Elements [a, b) were written. */
  noteRange(a: number, b: number): void {
    if (b <= a) return;
    if (a < this.lo) this.lo = a;
    if (b > this.hi) this.hi = b;
  }
}

/** What an owner of written-range arrays implements (see the header). */
export interface SnapshotWritten {
  readonly [WRITTEN]: WrittenRange;
  /** the arrays the range covers, each with the range index of its element 0 */
  [SNAPSHOT_WRITTEN](): Iterable<readonly [ArrayBufferView, number]>;
}

export const hasWritten = (o: object): o is SnapshotWritten =>
  typeof (o as Partial<SnapshotWritten>)[SNAPSHOT_WRITTEN] === 'function' &&
  (o as Partial<SnapshotWritten>)[WRITTEN] instanceof WrittenRange;
