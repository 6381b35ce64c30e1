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
 * Kernel counterpart: none (the checker's own bookkeeping).
 */
/** Regions per chunk of counts (1 GiB of guest: small enough that a snapshot of a small VM copies little). */
const CHUNK = 512;

export class LeafCounts {
  /** chunk (q / CHUNK) → the counts of its regions; a chunk is dropped when it holds none */
  private readonly chunks = new Map<number, Int32Array>();
  /** live (non-zero) counts per chunk */
  private readonly live = new Map<number, number>();
  private lastC = -1;
  private last: Int32Array | null = null;

  /** Present 4K leafs in 2M region q (0 when none is known). */
  at(q: number): number {
    const c = Math.floor(q / CHUNK);
    const a = c === this.lastC ? this.last : this.chunks.get(c);
    return a === undefined || a === null ? 0 : a[q - c * CHUNK]!;
  }

  add(q: number, by: number): void {
    const c = Math.floor(q / CHUNK);
    let a = c === this.lastC ? this.last : this.chunks.get(c);
    if (a === undefined || a === null) {
      a = new Int32Array(CHUNK);
      this.chunks.set(c, a);
      this.live.set(c, 0);
    }
    this.lastC = c;
    this.last = a;
    const i = q - c * CHUNK;
    const was = a[i]!;
    const now = (a[i] = was + by);
    if ((was === 0) !== (now === 0)) {
      const n = this.live.get(c)! + (now === 0 ? -1 : 1);
      if (n === 0) {
        this.chunks.delete(c);
        this.live.delete(c);
        this.lastC = -1;
        this.last = null;
      } else this.live.set(c, n);
    }
  }

  /** Forget everything (a whole walk counts again from the tables). */
  clear(): void {
    if (this.chunks.size > 0) {
      this.chunks.clear();
      this.live.clear();
    }
    this.lastC = -1;
    this.last = null;
  }

  /** [region, count] of every non-zero count, in region order (for tests comparing against a recount). */
  entries(): [number, number][] {
    const out: [number, number][] = [];
    for (const c of [...this.chunks.keys()].sort((x, y) => x - y)) {
      const a = this.chunks.get(c)!;
      for (let i = 0; i < CHUNK; i++) if (a[i] !== 0) out.push([c * CHUNK + i, a[i]!]);
    }
    return out;
  }
}
