/**
 * Present 4K leafs per 2M region (hardware gfn / 512), summed over every root and address space of a VM,
 * so an incremental audit can step over the 4K tables of a region that holds none: an empty or
 * non-present entry has no finding that depends on memslots or host pages (audit_mmu.ts#auditEntry reads
 * only its value), and a region with no present leaf puts nothing into the pfn memo.
 *
 * Kept from what the TDP engine reports to the checker (checker.ts#recorderFor): every SPTE change at
 * level 1 moves its region's count when presence changes; tdp_mmu_split_huge_page reports its parent's
 * change and then the split (it writes the 512 children before linking the table, without a change per
 * child), which adds 512. Frozen runs are non-present entries (no move). Tables freed without a
 * teardown report hold nothing present (handle_removed_pt reports every present entry it freezes).
 * A count can start wrong (the checker watched a VM that already had leafs, or the engine wrote
 * something it did not report, which the incremental audit trusts it not to do: audit_delta.ts); every
 * whole walk recounts from the tables, and the first audit of a VM is always a whole one.
 *
 * Stored as an open-addressing table (region → count, linear probing) in typed arrays made with the
 * object: a VM's leafs lie in a few regions, and the explorer restores this object from a snapshot before
 * every schedule, so storage made during a run (a chunk of counts per region range, as before) was made
 * again in every run, and an off-heap typed array costs microseconds to make. A region keeps its slot
 * (with a count of 0) until clear().
 *
 * Kernel counterpart: none (the checker's own bookkeeping).
 */
/** Slots of a new table (a power of two; the table doubles when half full). */
const FIRST_SLOTS = 64;
/** An empty slot's key. */
export const FREE = -1;

/**
 * Linear probing in an open-addressing table of regions (keys: a power-of-two length, FREE where empty,
 * never full): the slot holding region q, or the free slot where it would go. Shared by LeafCounts and
 * entry_bits.ts#EntryBits, which keep their own last-found cache in front of it.
 */
export function probeRegion(keys: Float64Array, q: number): number {
  const mask = keys.length - 1;
  // (regions are small integers in practice; `% 2^32` keeps the hash exact for larger ones)
  let s = (q < 0x80000000 ? q : q % 0x100000000) & mask;
  for (;;) {
    const k = keys[s]!;
    if (k === q || k === FREE) return s;
    s = (s + 1) & mask;
  }
}

export class LeafCounts {
  /** the region held in each slot (FREE: none) */
  private keys = new Float64Array(FIRST_SLOTS).fill(FREE);
  /** its count of present 4K leafs */
  private counts = new Int32Array(FIRST_SLOTS);
  /** slots in use */
  private used = 0;
  /** the slot add() or at() found last (faults come in runs over one region) */
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

  /** Present 4K leafs in 2M region q (0 when none is known). */
  at(q: number): number {
    const s = this.slotOf(q);
    return this.keys[s] === q ? this.counts[s]! : 0;
  }

  add(q: number, by: number): void {
    let s = this.slotOf(q);
    if (this.keys[s] !== q) {
      if (2 * (this.used + 1) > this.keys.length) {
        this.grow();
        s = this.slotOf(q);
      }
      this.keys[s] = q;
      this.used++;
      this.lastQ = q;
      this.lastSlot = s;
    }
    this.counts[s] = this.counts[s]! + by;
  }

  /** Twice the slots, every region placed again. */
  private grow(): void {
    const keys = this.keys;
    const counts = this.counts;
    this.keys = new Float64Array(2 * keys.length).fill(FREE);
    this.counts = new Int32Array(2 * keys.length);
    this.lastQ = FREE;
    for (let s = 0; s < keys.length; s++) {
      if (keys[s] === FREE) continue;
      const t = this.slotOf(keys[s]!);
      this.keys[t] = keys[s]!;
      this.counts[t] = counts[s]!;
    }
  }

  /** Forget everything (a whole walk counts again from the tables). */
  clear(): void {
    if (this.used > 0) {
      this.keys.fill(FREE);
      this.counts.fill(0);
      this.used = 0;
    }
    this.lastQ = FREE;
  }

  /** [region, count] of every non-zero count, in region order (for tests comparing against a recount). */
  entries(): [number, number][] {
    const out: [number, number][] = [];
    for (let s = 0; s < this.keys.length; s++)
      if (this.keys[s] !== FREE && this.counts[s] !== 0) out.push([this.keys[s]!, this.counts[s]!]);
    return out.sort((x, y) => x[0] - y[0]);
  }
}
