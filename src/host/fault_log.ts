/**
 * A ring of the VMM process's most recent page fault-ins (GUP faulting a page in), as hva ranges.
 * Checks that reason about "what has been faulted in since X" read it instead of rescanning every
 * mapping; when more than the ring holds happened since, they fall back to the full scan.
 *
 * The slots it writes are noted (written_range.ts): a snapshot restore copies back those, not 16 KB.
 *
 * Kernel counterpart: none (bookkeeping of the model, not of mm/).
 */
import { SNAPSHOT_WRITTEN, WRITTEN, WrittenRange, type SnapshotWritten } from '../kvm/written_range.ts';

/** The last FAULT_LOG_SIZE page fault-ins as hva ranges, numbered by `seq`. */
const FAULT_LOG_SIZE = 1024;
export class FaultLog implements SnapshotWritten {
  /** fault-ins recorded so far */
  seq = 0;
  private readonly starts = new Float64Array(FAULT_LOG_SIZE);
  private readonly lens = new Float64Array(FAULT_LOG_SIZE);
  /** the slots written */
  readonly [WRITTEN] = new WrittenRange();

  [SNAPSHOT_WRITTEN](): [ArrayBufferView, number][] {
    return [
      [this.starts, 0],
      [this.lens, 0],
    ];
  }

  record(start: number, len: number): void {
    const i = this.seq % FAULT_LOG_SIZE;
    this.starts[i] = start;
    this.lens[i] = len;
    // Slots fill in order, so the range holds [0, min(seq, size)): once the ring wraps, every slot is in it.
    if (this.seq < FAULT_LOG_SIZE) this[WRITTEN].note(i);
    this.seq++;
  }

  /** Visit the fault-ins numbered [from, seq); false (nothing visited) when some are no longer kept. */
  since(from: number, f: (start: number, len: number) => void): boolean {
    if (this.seq - from > FAULT_LOG_SIZE) return false;
    for (let k = from; k < this.seq; k++) f(this.starts[k % FAULT_LOG_SIZE]!, this.lens[k % FAULT_LOG_SIZE]!);
    return true;
  }
}
