/**
 * Host physical pages: allocation with reuse, a refcount and a content version per page, and the swap
 * slots that keep a page's content while it is out. A freed pfn is handed out again (LIFO), so a
 * secondary-MMU mapping that outlives its page points at whatever the host reused it for.
 *
 * Kernel counterpart: the buddy allocator and struct page / folio refcounts as KVM observes them. Like a
 * compound page, a huge allocation keeps its refcount and content version in its head page until it is
 * split; that keeps a 1 TiB guest backed by 2M pages at a few MB of bookkeeping.
 *
 * The refcount and version chunks are made lazily: a chunk is made the first time one of its pfns needs
 * a value other than a fresh page's. Until then every pfn of it below `next` was handed out once, as a
 * single page from the never-used end of the pool, and nothing changed it since, so its refcount and
 * content version are both 1 (0 at and past `next`); a huge allocation makes the chunks under its
 * alignment gap and block first. That keeps a guest touched once at 4K (a 1 TiB guest is 268 M pages)
 * at no bookkeeping bytes per page. (`eagerChunks` makes every chunk at once, as a reference for tests.)
 */
import { SNAPSHOT_EXTENTS, type SnapshotExtents } from '../kvm/snapshot.ts';

/**
 * 4096 pfns a chunk: a chunk made during an explorer schedule (the first migration or free of a fresh
 * page) is dropped again by the next restore, so making one must be cheap; 16 KiB comes from the malloc
 * heap where 256 KiB (65536 pfns) took an mmap, page faults and a GC's external-memory pressure each time.
 */
const CHUNK_SHIFT = 12;
const CHUNK = 1 << CHUNK_SHIFT;
/**
 * Zeroed spare refcount/version chunks (two of each), taken before a new chunk is made. An explorer
 * schedule's first free or migration of a fresh page made a chunk of each kind, dropped again by the
 * next restore (3.7% + 2.4% of notifier-vs-fault); a spare taken instead is in the snapshot, so the
 * restore puts it back among the spares and copies zeros over what it held (its extent as a chunk now:
 * SNAPSHOT_EXTENTS). Under a symbol key: storage, not state (state hashes read string keys only).
 */
const SPARES: unique symbol = Symbol('zaplab.pfnPoolSpares');
const NSPARES = 2;

export class PfnPool implements SnapshotExtents {
  /** next never-used pfn; pfn 0 is never handed out so typed arrays can use 0 for "none" */
  private next = 1;
  private readonly refChunks = new Map<number, Int32Array>();
  private readonly verChunks = new Map<number, Uint32Array>();
  /** head pfn → pages, for unsplit huge allocations */
  private readonly compound = new Map<number, number>();
  /** free single pages, most recently freed last */
  private readonly free: number[] = [];
  private readonly swap = new Map<number, number>();
  /** Pages currently allocated. */
  allocated = 0;
  /**
   * Moves whenever a pfn that was handed out before changes hands (freed, reused, split out of its
   * block), and when a huge allocation's alignment gap makes pfns past the old end free: what
   * isFree/refs answer for existing pfns may have changed. Other fresh allocations leave it.
   */
  epoch = 0;

  /** Make every refcount/version chunk as its first pfn is handed out (tests' reference; see the header). */
  private readonly eager: boolean;
  constructor(opts: { eagerChunks?: boolean } = {}) {
    this.eager = opts.eagerChunks ?? false;
  }

  /** The pool's end: every pfn handed out so far is below it (and none at or past it is free). */
  get end(): number {
    return this.next;
  }

  /** Is pfn fresh (handed out once as a single page, unchanged) if its chunk is not made? (pfn 0 never is) */
  private fresh(pfn: number): boolean {
    return !this.eager && pfn >= 1 && pfn < this.next;
  }
  private readonly [SPARES] = {
    ref: Array.from({ length: NSPARES }, () => new Int32Array(CHUNK)),
    ver: Array.from({ length: NSPARES }, () => new Uint32Array(CHUNK)),
  };

  /** Make a chunk: its fresh pfns at 1, the rest 0. */
  private makeChunk<T extends Int32Array | Uint32Array>(c: T, k: number): T {
    if (!this.eager)
      c.fill(1, Math.max(1 - k * CHUNK, 0), Math.max(0, Math.min(CHUNK, this.next - k * CHUNK)));
    return c;
  }

  private lastRefKey = -1;
  private lastRef: Int32Array = new Int32Array(0);
  /** The refcount chunk of pfn, made (fresh pfns at 1) if it was not. */
  private ref(pfn: number): Int32Array {
    const k = pfn >>> CHUNK_SHIFT;
    if (k === this.lastRefKey) return this.lastRef;
    let c = this.refChunks.get(k);
    if (c === undefined) {
      this.refChunks.set(k, (c = this.makeChunk(this[SPARES].ref.pop() ?? new Int32Array(CHUNK), k)));
    }
    this.lastRefKey = k;
    this.lastRef = c;
    return c;
  }
  private lastVerKey = -1;
  private lastVer: Uint32Array = new Uint32Array(0);
  /** The version chunk of pfn, made (fresh pfns at 1) if it was not. */
  private ver(pfn: number): Uint32Array {
    const k = pfn >>> CHUNK_SHIFT;
    if (k === this.lastVerKey) return this.lastVer;
    let c = this.verChunks.get(k);
    if (c === undefined) {
      this.verChunks.set(k, (c = this.makeChunk(this[SPARES].ver.pop() ?? new Uint32Array(CHUNK), k)));
    }
    this.lastVerKey = k;
    this.lastVer = c;
    return c;
  }

  /**
   * Snapshots copy a chunk only up to the pfns ever handed out: nothing writes past `next`. A spare holds
   * nothing (zeros); one taken since the snapshot is a chunk now, with the extent of one.
   */
  *[SNAPSHOT_EXTENTS](): Generator<[Int32Array | Uint32Array, number]> {
    for (const m of [this.refChunks, this.verChunks, this.pinChunks])
      for (const [k, c] of m) yield [c, Math.max(0, Math.min(CHUNK, this.next - k * CHUNK))];
    for (const c of this[SPARES].ref) yield [c, 0];
    for (const c of this[SPARES].ver) yield [c, 0];
  }

  /** Unsplit 1G (262144-page) blocks in `compound`: head() skips their lookup while there are none. */
  private giants = 0;

  /** The pfn that holds this page's refcount/version: its compound head, or itself. */
  head(pfn: number): number {
    const c = this.compound;
    if (c.size === 0) return pfn;
    const h2 = pfn - (pfn % 512);
    if (c.get(h2) === 512) return h2;
    if (this.giants > 0) {
      const h1 = pfn - (pfn % 262144);
      if (c.get(h1) === 262144) return h1;
    }
    return pfn;
  }

  /**
   * Do pfn … pfn + n - 1 all lie in one unsplit compound block? Then they share its refcount (and
   * content version), so isFree/refs answer the same for each of them.
   */
  inOneBlock(pfn: number, n: number): boolean {
    const h = this.head(pfn);
    const size = this.compound.get(h);
    return size !== undefined && pfn + n <= h + size;
  }

  /** Allocate `n` contiguous pages (n = 1, 512 or 262144, naturally aligned), refcount 1. */
  alloc(n: number): number {
    let base: number;
    let fresh = false;
    if (n === 1 && this.free.length > 0) {
      base = this.free.pop()!;
      this.epoch++;
    } else {
      base = n === 1 ? this.next : Math.ceil(this.next / n) * n; // (no division for a single page)
      // The alignment gap and the block's tail pages are not fresh single pages: make their chunks
      // (before `next` moves, so the pages handed out so far keep reading 1).
      if (n > 1 && !this.eager)
        for (let k = this.next >>> CHUNK_SHIFT; k <= (base + n - 1) >>> CHUNK_SHIFT; k++) {
          this.ref(k * CHUNK);
          this.ver(k * CHUNK);
        }
      fresh = n === 1 && !this.eager && base >= 1;
      // The gap's pfns were past the end, never free; now they are free pages below it. An audit that
      // checked a mapping of one of them (only a bug or a poke makes one) must look again: a change of
      // hands like a free. A block at the end (no gap) or a fresh single page changes no isFree answer.
      if (base > this.next) this.epoch++;
      this.next = base + n;
    }
    if (n > 1) {
      this.compound.set(base, n);
      if (n === 262144) this.giants++;
    }
    const i = base & (CHUNK - 1);
    const k = base >>> CHUNK_SHIFT;
    // A fresh page in a chunk not yet made reads refcount 1, version 1 from `next` alone.
    // (size first: a guest touched once at 4K has no chunks, and has() hashes the key)
    if (!fresh || (this.refChunks.size !== 0 && this.refChunks.has(k))) this.ref(base)[i] = 1;
    if (!fresh || (this.verChunks.size !== 0 && this.verChunks.has(k))) {
      const ver = this.ver(base);
      ver[i] = (ver[i]! + 1) >>> 0; // new owner, new content
    }
    this.allocated += n;
    return base;
  }

  /**
   * split_huge_page: every page of the compound block gets its own refcount and content version. The
   * head's long-term pins belong to the pages that were pinned, so each page gets the head's other
   * references plus its own pins.
   */
  splitCompound(headPfn: number): void {
    const n = this.compound.get(headPfn);
    if (n === undefined) return;
    this.epoch++;
    const pinned = this.headPins.get(headPfn) ?? 0;
    const r = this.ref(headPfn)[headPfn & (CHUNK - 1)]! - pinned;
    const v = this.ver(headPfn)[headPfn & (CHUNK - 1)]!;
    this.compound.delete(headPfn);
    if (n === 262144) this.giants--;
    this.headPins.delete(headPfn);
    for (let p = headPfn; p < headPfn + n; p++) {
      this.ref(p)[p & (CHUNK - 1)] = r + (pinned === 0 ? 0 : this.pinCount(p));
      this.ver(p)[p & (CHUNK - 1)] = v;
    }
  }

  get(pfn: number): void {
    const h = this.head(pfn);
    if (this.ref(h)[h & (CHUNK - 1)]!++ === 0) this.epoch++;
  }

  /** Drop a reference; at zero the page (or the whole compound block) is free and may be reused. */
  put(pfn: number): void {
    const h = this.head(pfn);
    const r = --this.ref(h)[h & (CHUNK - 1)]!;
    if (r !== 0) return;
    this.epoch++;
    const n = this.compound.get(h);
    if (n === undefined) {
      this.free.push(h);
      this.allocated--;
      return;
    }
    // A freed huge block returns as single pages, so the next 4K allocations reuse it.
    this.splitCompound(h);
    for (let p = h + n - 1; p >= h; p--) this.free.push(p);
    this.allocated -= n;
  }

  /**
   * Long-term pins (FOLL_LONGTERM, as VFIO takes them) per pinned page, in chunks like the refcounts (a
   * VFIO MAP_DMA of guest RAM pins every page of it).
   */
  private readonly pinChunks = new Map<number, Int32Array>();
  private lastPinKey = -1;
  private lastPin: Int32Array = new Int32Array(0);
  private pinArr(pfn: number, create: boolean): Int32Array | undefined {
    const k = pfn >>> CHUNK_SHIFT;
    if (k === this.lastPinKey) return this.lastPin;
    let c = this.pinChunks.get(k);
    if (c === undefined) {
      if (!create) return undefined;
      this.pinChunks.set(k, (c = new Int32Array(CHUNK)));
    }
    this.lastPinKey = k;
    this.lastPin = c;
    return c;
  }
  private pinCount(pfn: number): number {
    return this.pinArr(pfn, false)?.[pfn & (CHUNK - 1)] ?? 0;
  }
  /** Pins inside each unsplit compound block, on its head (the folio's pincount). */
  private readonly headPins = new Map<number, number>();

  /** pin_user_pages(FOLL_LONGTERM): a reference that also makes the page (its whole folio) unmovable. */
  pin(pfn: number): void {
    const h = this.head(pfn);
    if (this.ref(h)[h & (CHUNK - 1)]!++ === 0) this.epoch++; // get(h): h is its own head
    this.pinArr(pfn, true)![pfn & (CHUNK - 1)]!++;
    if (h !== pfn || this.compound.has(h)) this.headPins.set(h, (this.headPins.get(h) ?? 0) + 1);
  }

  /**
   * pin() of pfns[0], …, pfns[n - 1] in one pass: a run of pages inside one compound block takes its
   * references on the head at once (the same counts as pinning them one by one).
   */
  pinPages(pfns: Float64Array, n: number): void {
    for (let i = 0; i < n;) {
      const pfn = pfns[i]!;
      const h = this.head(pfn);
      const size = h !== pfn || this.compound.has(h) ? this.compound.get(h)! : 0;
      let j = i + 1;
      if (size !== 0) while (j < n && pfns[j] === pfns[j - 1]! + 1 && pfns[j]! < h + size) j++;
      const refs = this.ref(h);
      if (refs[h & (CHUNK - 1)] === 0) this.epoch++;
      refs[h & (CHUNK - 1)]! += j - i;
      for (let m = i; m < j; m++) {
        const p = pfns[m]!;
        this.pinArr(p, true)![p & (CHUNK - 1)]!++;
      }
      if (size !== 0) this.headPins.set(h, (this.headPins.get(h) ?? 0) + (j - i));
      i = j;
    }
  }

  /** unpin_user_page: the pin of exactly this page (it may have been split out of its block since). */
  unpin(pfn: number): void {
    const h = this.head(pfn);
    const pins = this.pinArr(pfn, false);
    const i = pfn & (CHUNK - 1);
    if (pins === undefined || pins[i]! <= 0)
      throw new RangeError(`unpin of pfn 0x${pfn.toString(16)}, which is not pinned`);
    pins[i]!--;
    if (h !== pfn || this.compound.has(h)) {
      const m = this.headPins.get(h)! - 1;
      if (m === 0) this.headPins.delete(h);
      else this.headPins.set(h, m);
    }
    this.put(h);
  }

  /** folio_maybe_dma_pinned: this page, or any page of its unsplit block, is long-term pinned. */
  isPinned(pfn: number): boolean {
    return this.pinCount(pfn) > 0 || (this.headPins.size > 0 && (this.headPins.get(this.head(pfn)) ?? 0) > 0);
  }

  refs(pfn: number): number {
    const h = this.head(pfn);
    const k = h >>> CHUNK_SHIFT;
    if (k === this.lastRefKey) return this.lastRef[h & (CHUNK - 1)]!;
    const c = this.refChunks.get(k);
    return c !== undefined ? c[h & (CHUNK - 1)]! : this.fresh(h) ? 1 : 0;
  }

  isFree(pfn: number): boolean {
    return pfn > 0 && pfn < this.next && this.refs(pfn) === 0;
  }

  /** Content version: bumped by writes and by reallocation to a new owner. */
  contentVersion(pfn: number): number {
    const h = this.head(pfn);
    const c = this.verChunks.get(h >>> CHUNK_SHIFT);
    return c !== undefined ? c[h & (CHUNK - 1)]! : this.fresh(h) ? 1 : 0;
  }

  write(pfn: number): void {
    const h = this.head(pfn);
    this.ver(h)[h & (CHUNK - 1)] = (this.ver(h)[h & (CHUNK - 1)]! + 1) >>> 0;
  }

  copyContent(from: number, to: number): void {
    const h = this.head(to);
    this.ver(h)[h & (CHUNK - 1)] = this.contentVersion(from);
  }

  swapSlotSave(hva: number, pfn: number): void {
    this.swap.set(hva, this.contentVersion(pfn));
  }

  /** Swap-in: the content saved for hva, if it was swapped out, moves into pfn. */
  swapSlotRestore(hva: number, pfn: number): void {
    if (this.swap.size === 0) return;
    const v = this.swap.get(hva);
    if (v === undefined) return;
    this.ver(pfn)[pfn & (CHUNK - 1)] = v;
    this.swap.delete(hva);
  }
}
