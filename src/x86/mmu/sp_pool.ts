/**
 * The page-table pool: every TDP page table (struct kvm_mmu_page + its 4 KiB spt page) lives here as an
 * index. The 512 SPTEs of a table are 1024 int32 words in a large chunk — the 512 low halves, then the 512
 * high halves — and the per-table metadata (the kvm_mmu_page fields) are parallel typed arrays.
 *
 * Kernel counterpart: the page allocations behind struct kvm_mmu_page (mmu_page_header_cache,
 * mmu_shadow_page_cache with init_value = SHADOW_NONPRESENT_VALUE), and call_rcu freeing
 * (tdp_mmu_free_sp_rcu_callback).
 *
 * Simplifies: RCU is a "pending" list. A table freed by handle_removed_pt is not reused until
 * `rcuReclaim()`; the TDP MMU engine calls it at the start of each top-level operation, which stands for
 * the grace period (and the TLB flush the caller owed) having elapsed between operations.
 *
 * Memory: 4096 B of SPTEs per table, the same as hardware, plus 19 B of metadata and 4 B of free list:
 * ~8.05 B per mapped 4K page when dense.
 */
import { SNAPSHOT_EXTENTS, type SnapshotExtents } from '../../kvm/snapshot.ts';

export const SPTE_ENT_PER_PAGE = 512;
/** int32 words per table: 512 low halves then 512 high halves. */
export const TABLE_WORDS = 1024;
/** Offset of the high halves inside a table. */
export const HI_OFFSET = 512;
export const CHUNK_SHIFT = 8;
/** Tables per chunk (1 MiB of SPTEs). */
export const CHUNK_TABLES = 1 << CHUNK_SHIFT;
export const CHUNK_MASK = CHUNK_TABLES - 1;
/**
 * Page-table pages are given host pfns SPT_PFN_BASE + index (hpa 256 TiB and up), a region the host model
 * never hands out for guest memory, so a non-leaf SPTE carries a real-looking child address.
 */
export const SPT_PFN_BASE = 2 ** 36;

/** Per-table flag bits (pool.flags). */
export const SP_ALLOCATED = 1;
/** tdp_mmu_scheduled_root_to_zap */
export const SP_SCHEDULED_ROOT_TO_ZAP = 2;
/** sp->external_spt != NULL: a TDX S-EPT page mirrors this table (the handle is the table index). */
export const SP_EXTERNAL_SPT = 4;
/** Freed (call_rcu) but not yet reclaimed. */
export const SP_RCU_PENDING = 8;

const INITIAL_META = 64;

/** A table of 512 SHADOW_NONPRESENT_VALUE entries (low halves 0, high halves SUPPRESS_VE), as alloc() makes it. */
const BLANK_TABLE = new Int32Array(TABLE_WORDS).fill(0x80000000 | 0, HI_OFFSET);

export class SpPool implements SnapshotExtents {
  /** SPTE storage; a chunk never moves once created, so cached references stay valid. */
  readonly chunks: Int32Array[] = [];
  /** union kvm_mmu_page_role word. */
  role = new Uint32Array(INITIAL_META);
  /** sp->gfn / 512 (every table's base gfn is 512-aligned; < 2^31 for gfns < 2^40). */
  gfn512 = new Uint32Array(INITIAL_META);
  /** sp->ptep as (parent table, index); -1 for roots. */
  parent = new Int32Array(INITIAL_META);
  parentIndex = new Uint16Array(INITIAL_META);
  /** tdp_mmu_root_count (roots only). */
  rootCount = new Int32Array(INITIAL_META);
  flags = new Uint8Array(INITIAL_META);

  private freeList = new Int32Array(INITIAL_META);
  private freeLen = 0;
  private pending: number[] = [];
  /** Tables ever created (the high-water mark of indices). */
  private top = 0;
  /** Tables allocated and not yet freed. */
  live = 0;

  get pendingRcu(): number {
    return this.pending.length;
  }
  /** Table indices ever created (the pool's high-water mark). */
  get created(): number {
    return this.top;
  }

  /** Allocate a table with all 512 entries SHADOW_NONPRESENT_VALUE and blank metadata. */
  alloc(): number {
    let t: number;
    if (this.freeLen > 0) t = this.freeList[--this.freeLen]!;
    else t = this.grow();
    const arr = this.chunks[t >>> CHUNK_SHIFT]!;
    // one copy of a blank table (a memmove): fill() is a C++ builtin call per half, and a fill with a
    // value other than 0 an element loop
    arr.set(BLANK_TABLE, (t & CHUNK_MASK) * TABLE_WORDS);
    this.role[t] = 0;
    this.gfn512[t] = 0;
    this.parent[t] = -1;
    this.parentIndex[t] = 0;
    this.rootCount[t] = 0;
    this.flags[t] = SP_ALLOCATED;
    this.live++;
    return t;
  }

  /** call_rcu(tdp_mmu_free_sp_rcu_callback): reusable only after the next rcuReclaim(). */
  freeRcu(t: number): void {
    this.checkLive(t);
    this.flags[t] = SP_RCU_PENDING;
    this.live--;
    this.pending.push(t);
  }

  /** tdp_mmu_free_sp on a table that was never linked (no reader can hold it): reusable at once. */
  freeNow(t: number): void {
    this.checkLive(t);
    this.flags[t] = 0;
    this.live--;
    this.pushFree(t);
  }

  /** The RCU grace period has elapsed: pending tables become reusable. */
  rcuReclaim(): void {
    const p = this.pending;
    if (p.length === 0) return;
    for (let i = 0; i < p.length; i++) {
      const t = p[i]!;
      this.flags[t] = 0;
      this.pushFree(t);
    }
    p.length = 0;
  }

  isAllocated(t: number): boolean {
    return t >= 0 && t < this.top && (this.flags[t]! & SP_ALLOCATED) !== 0;
  }

  /** Low half of entry `i` of table `t` (inspection; the hot paths index the chunk directly). */
  readLo(t: number, i: number): number {
    return this.chunks[t >>> CHUNK_SHIFT]![(t & CHUNK_MASK) * TABLE_WORDS + i]!;
  }
  readHi(t: number, i: number): number {
    return this.chunks[t >>> CHUNK_SHIFT]![(t & CHUNK_MASK) * TABLE_WORDS + HI_OFFSET + i]!;
  }
  write(t: number, i: number, lo: number, hi: number): void {
    const arr = this.chunks[t >>> CHUNK_SHIFT]!;
    const base = (t & CHUNK_MASK) * TABLE_WORDS + i;
    arr[base] = lo;
    arr[base + HI_OFFSET] = hi;
  }

  /** Snapshots copy a chunk only up to the tables ever created: nothing writes past them. */
  [SNAPSHOT_EXTENTS](): [Int32Array, number][] {
    return this.chunks.map((c, k) => [
      c,
      Math.max(0, Math.min(CHUNK_TABLES, this.top - k * CHUNK_TABLES)) * TABLE_WORDS,
    ]);
  }

  /** Typed-array bytes the pool holds (SPTE chunks + metadata + free list). */
  bytes(): number {
    let b = this.chunks.length * CHUNK_TABLES * TABLE_WORDS * 4;
    b += this.role.byteLength + this.gfn512.byteLength + this.parent.byteLength;
    b += this.parentIndex.byteLength + this.rootCount.byteLength + this.flags.byteLength;
    return b + this.freeList.byteLength;
  }

  private checkLive(t: number): void {
    if (!this.isAllocated(t)) throw new RangeError(`sp_pool: table ${t} is not allocated`);
  }

  private pushFree(t: number): void {
    if (this.freeLen === this.freeList.length) this.freeList = growI32(this.freeList, this.freeLen * 2);
    this.freeList[this.freeLen++] = t;
  }

  private grow(): number {
    const t = this.top++;
    if ((t & CHUNK_MASK) === 0) this.chunks.push(new Int32Array(CHUNK_TABLES * TABLE_WORDS));
    if (t >= this.role.length) {
      const n = this.role.length * 2;
      this.role = growU32(this.role, n);
      this.gfn512 = growU32(this.gfn512, n);
      this.parent = growI32(this.parent, n);
      this.rootCount = growI32(this.rootCount, n);
      const pi = new Uint16Array(n);
      pi.set(this.parentIndex);
      this.parentIndex = pi;
      const f = new Uint8Array(n);
      f.set(this.flags);
      this.flags = f;
    }
    return t;
  }
}

function growU32(a: Uint32Array, n: number): Uint32Array<ArrayBuffer> {
  const b = new Uint32Array(n);
  b.set(a);
  return b;
}
function growI32(a: Int32Array, n: number): Int32Array<ArrayBuffer> {
  const b = new Int32Array(n);
  b.set(a);
  return b;
}

/** Host pfn of a table's page (__pa(sp->spt) >> PAGE_SHIFT). */
export const spToPfn = (t: number): number => SPT_PFN_BASE + t;
/** Table index from the halves of a present non-leaf SPTE. @kernel arch/x86/kvm/mmu/tdp_iter.c#spte_to_child_pt */
export const childTableOf = (lo: number, hi: number): number => ((hi & 0x7ff) << 20) | (lo >>> 12);
