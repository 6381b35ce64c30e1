/**
 * One level of a memslot's rmaps (slot->arch.rmap[level - 1]): for each rmap index, the chain of leaf
 * SPTEs — (shadow page, entry) pairs — that map it, in the order they were added. Heads live in
 * Int32Arrays of 512 indices made on first use (a 1 TiB slot with one page mapped costs one chunk);
 * chain links in a pool of typed arrays with a free list. No object per SPTE: the fault path adds one
 * entry per new leaf. Chunks are small so that a sequential first touch makes one every 512 faults: the
 * path that makes one is then warm (has type feedback) by the time V8 optimizes the fault path, which
 * inlines it; with rarer chunks its first use after that deoptimized mmu_set_spte for ~16k faults.
 *
 * Kernel counterpart: struct kvm_rmap_head and pte_list_add / pte_list_remove / pte_list_count
 * (arch/x86/kvm/mmu/mmu.c). Simplifications: a singly linked chain instead of the kernel's
 * pte_list_desc blocks of PTE_LIST_EXT sptes (the count and the entries are the same; the order of
 * entries inside a chain is insertion order here).
 */
import type { ShadowPage } from './shadow_rmap.ts';

const CHUNK_SHIFT = 9;
const CHUNK = 1 << CHUNK_SHIFT;
/** forEach's order: groups of 4096 indices in the order their first chunk was made (as with 4096-index chunks). */
const GROUP_SHIFT = 12;
/** Entries per block of the entry pool. */
const BLOCK_SHIFT = 10;
const BLOCK = 1 << BLOCK_SHIFT;
const BLOCK_MASK = BLOCK - 1;
/**
 * A block of the entry pool's page column, all null: new blocks are copies of it (Array.prototype.slice
 * of a packed array copies its elements in one go; new Array(BLOCK).fill(null) was a C++ fill of a holey
 * array, ~20 instructions per element, ~21 per first-touch fault).
 */
const NULL_BLOCK: (ShadowPage | null)[] = new Array<ShadowPage | null>(BLOCK).fill(null);

export class RmapLevel {
  /** head entry + 1 of each index's chain (0: empty), by chunk of 512 indices */
  private readonly heads = new Map<number, Int32Array>();
  /** every group of 4096 indices with a chunk, in the order the first was made (forEach's order) */
  private readonly groups = new Map<number, true>();
  private lastKey = -1;
  private last: Int32Array | undefined = undefined;
  /**
   * Entry pool, in blocks of BLOCK entries made as the pool grows (never copied: a pool grown by copying
   * made ~35 bytes of garbage per first-touch fault, much of it in large-object space): for entry e, the
   * page, the SPTE index in it and the next entry + 1 (0: end of chain) at e & BLOCK_MASK of block
   * e >>> BLOCK_SHIFT.
   */
  private readonly spsB: (ShadowPage | null)[][] = [];
  private readonly idxB: Int32Array[] = [];
  private readonly nextB: Int32Array[] = [];
  /** free entries, linked through `next` (entry + 1; 0: none) */
  private free = 0;
  private used = 0;

  private chunk(k: number, make: boolean): Int32Array | undefined {
    const key = k >>> CHUNK_SHIFT;
    if (key === this.lastKey) return this.last;
    let c = this.heads.get(key);
    if (c === undefined) {
      if (!make) return undefined;
      this.heads.set(key, (c = new Int32Array(CHUNK)));
      this.groups.set(k >>> GROUP_SHIFT, true); // keeps its place if already there
    }
    this.lastKey = key;
    this.last = c;
    return c;
  }

  /** Entry e's next entry + 1. */
  private nx(e: number): number {
    return this.nextB[e >>> BLOCK_SHIFT]![e & BLOCK_MASK]!;
  }
  private setNx(e: number, h: number): void {
    this.nextB[e >>> BLOCK_SHIFT]![e & BLOCK_MASK] = h;
  }
  private spOf(e: number): ShadowPage {
    return this.spsB[e >>> BLOCK_SHIFT]![e & BLOCK_MASK]!;
  }
  private idxOf(e: number): number {
    return this.idxB[e >>> BLOCK_SHIFT]![e & BLOCK_MASK]!;
  }

  private alloc(sp: ShadowPage, i: number): number {
    // The common case in few bytecodes (add is inlined into the fault path): no free entry, room in the
    // last block.
    const e = this.free === 0 && (this.used & BLOCK_MASK) !== 0 ? this.used++ : this.allocSlow();
    const b = e >>> BLOCK_SHIFT;
    const o = e & BLOCK_MASK;
    this.spsB[b]![o] = sp;
    this.idxB[b]![o] = i;
    this.nextB[b]![o] = 0;
    return e;
  }

  /** A free entry, else the next unused one (in a new block when the last is full). */
  private allocSlow(): number {
    if (this.free !== 0) {
      const e = this.free - 1;
      this.free = this.nx(e);
      return e;
    }
    const e = this.used++;
    if ((e & BLOCK_MASK) === 0) {
      this.spsB.push(NULL_BLOCK.slice()); // a copy of a packed array: no per-element fill()
      this.idxB.push(new Int32Array(BLOCK));
      this.nextB.push(new Int32Array(BLOCK));
    }
    return e;
  }

  private release(e: number): void {
    this.spsB[e >>> BLOCK_SHIFT]![e & BLOCK_MASK] = null;
    this.setNx(e, this.free);
    this.free = e + 1;
  }

  /** Append (sp, i) to index k's chain; returns the chain's length with it. @kernel arch/x86/kvm/mmu/mmu.c#pte_list_add */
  add(k: number, sp: ShadowPage, i: number): number {
    const c = k >>> CHUNK_SHIFT === this.lastKey ? this.last! : this.chunk(k, true)!;
    const e = this.alloc(sp, i);
    const o = k & (CHUNK - 1);
    let h = c[o]!;
    if (h === 0) {
      c[o] = e + 1;
      return 1;
    }
    let n = 2;
    for (let nx = this.nx(h - 1); nx !== 0; nx = this.nx(h - 1)) {
      h = nx;
      n++;
    }
    this.setNx(h - 1, e + 1);
    return n;
  }

  /** Unlink (sp, i) from index k's chain, if it is there. @kernel arch/x86/kvm/mmu/mmu.c#pte_list_remove */
  remove(k: number, sp: ShadowPage, i: number): void {
    const c = this.chunk(k, false);
    if (c === undefined) return;
    const o = k & (CHUNK - 1);
    let prev = 0;
    for (let h = c[o]!; h !== 0; prev = h, h = this.nx(h - 1)) {
      const e = h - 1;
      if (this.spOf(e) !== sp || this.idxOf(e) !== i) continue;
      if (prev === 0) c[o] = this.nx(e);
      else this.setNx(prev - 1, this.nx(e));
      this.release(e);
      return;
    }
  }

  /** Is (sp, i) on index k's chain? */
  has(k: number, sp: ShadowPage, i: number): boolean {
    const c = this.chunk(k, false);
    if (c === undefined) return false;
    for (let h = c[k & (CHUNK - 1)]!; h !== 0; h = this.nx(h - 1))
      if (this.spOf(h - 1) === sp && this.idxOf(h - 1) === i) return true;
    return false;
  }

  /** Drop index k's whole chain (the SPTEs are not touched); true if it had one. */
  delete(k: number): boolean {
    const c = this.chunk(k, false);
    if (c === undefined) return false;
    const o = k & (CHUNK - 1);
    let h = c[o]!;
    if (h === 0) return false;
    c[o] = 0;
    while (h !== 0) {
      const nx = this.nx(h - 1);
      this.release(h - 1);
      h = nx;
    }
    return true;
  }

  /**
   * Append the entries of every chain with an index in [lo, hi] to sps/is (by index, then chain order);
   * returns how many. The caller may then change the chains (a zap removes what it visits).
   */
  collect(lo: number, hi: number, sps: ShadowPage[], is: number[]): number {
    let n = 0;
    for (let key = lo >>> CHUNK_SHIFT; key <= hi >>> CHUNK_SHIFT; key++) {
      const c = this.heads.get(key);
      if (c === undefined) continue;
      const base = key * CHUNK;
      const from = Math.max(lo, base) - base;
      const to = Math.min(hi, base + CHUNK - 1) - base;
      for (let o = from; o <= to; o++) {
        for (let h = c[o]!; h !== 0; h = this.nx(h - 1)) {
          sps.push(this.spOf(h - 1));
          is.push(this.idxOf(h - 1));
          n++;
        }
      }
    }
    return n;
  }

  /** Every (index, sp, i): by group of 4096 indices in the order each was first used, then by index (the checker's walk). */
  forEach(fn: (k: number, sp: ShadowPage, i: number) => void): void {
    const per = 1 << (GROUP_SHIFT - CHUNK_SHIFT);
    for (const g of this.groups.keys()) {
      for (let key = g * per; key < (g + 1) * per; key++) {
        const c = this.heads.get(key);
        if (c === undefined) continue;
        for (let o = 0; o < CHUNK; o++)
          for (let h = c[o]!; h !== 0; h = this.nx(h - 1))
            fn(key * CHUNK + o, this.spOf(h - 1), this.idxOf(h - 1));
      }
    }
  }
}
