/**
 * The VMM process's address space as KVM sees it through the primary MMU: mappings with a backing page
 * size, the host page (pfn) behind each hva with a refcount and a content version, and the mm events
 * that make the kernel invalidate secondary MMUs (munmap, mprotect, migration/compaction, THP split and
 * collapse, swap-out, KSM merge). Every such event brackets its page-table change with
 * invalidate_range_start/end to the registered MMU notifiers, as mm/ does.
 *
 * Kernel counterpart: mm/ as reached from KVM: hva_to_pfn (GUP), host_pfn_mapping_level, and the
 * mmu_notifier_invalidate_range_start/end call sites in mm/{mmap,mprotect,migrate,huge_memory,khugepaged,
 * vmscan,ksm}.c. Not a model of mm/ itself.
 *
 * Simplifications: one process; anonymous memory only; a freed pfn goes on a LIFO free list so the next
 * allocation reuses it (that is what makes a stale SPTE observable as "someone else's page");
 * content is a version number per pfn, bumped on every write the model is told about.
 * One mapping's pages, and the range walks and cuts over the list of mappings, are vma.ts.
 */
import { gup4k } from './gup_4k.ts';
import { asHva, asPfn, HVA_LIMIT, type Hva, type Pfn } from '../types/addr.ts';
import { PfnPool } from './pfn_pool.ts';
import { FaultLog } from './fault_log.ts';
import {
  forPresentPages,
  frameIndex,
  pageAt,
  pageInto,
  setPage,
  splitFrame,
  splitVmasAround,
  vmasIn,
  type Backing,
  type PageAt,
  type Vma,
} from './vma.ts';
import { argBool, argOneOf, argOpts, readHostNumber } from '../kvm/args.ts';
import {
  checkRange,
  ksmMerge,
  migrate,
  readStepwise,
  swapOut,
  thpCollapse,
  thpSplit,
} from './page_events.ts';

export type { Backing, Vma } from './vma.ts';

const FRAME_PAGES: Record<Backing, number> = { '4k': 1, '2m': 512, '1g': 262144, thp: 512 };
const BACKINGS: readonly Backing[] = ['4k', '2m', '1g', 'thp'];
const PAGE = 4096;
/**
 * The most frames one mapping may have: its frame table is a Float64Array (8 bytes a frame), so 4K-backed
 * mappings stop at 1 TiB, a 2 GiB table (hugetlb and THP backings reach the 128 TiB address space). A
 * model limit, not mm's.
 */
export const MAX_FRAMES_PER_MAPPING = 2 ** 28;

export type MmuNotifierEvent =
  'unmap' | 'protection' | 'migrate' | 'thp_split' | 'thp_collapse' | 'swap' | 'ksm' | 'clear';

/** The mmu_notifier_ops KVM registers (virt/kvm/kvm_main.c#kvm_mmu_notifier_ops). */
export interface MmuNotifier {
  /** `blockable`: MMU_NOTIFIER_RANGE_BLOCKABLE (default true: every modelled host event may block). */
  invalidateRangeStart(start: number, end: number, event: MmuNotifierEvent, blockable?: boolean): void;
  invalidateRangeEnd(start: number, end: number, event: MmuNotifierEvent): void;
  /** The mm is going away: KVM zaps everything (kvm_arch_flush_shadow_all). */
  release(): void;
}

export interface HvaPfn {
  pfn: Pfn;
  /** Level of the host mapping: 1 = 4K, 2 = 2M, 3 = 1G (host_pfn_mapping_level). */
  level: 1 | 2 | 3;
  writable: boolean;
}

export class HostMm {
  private vmas: Vma[] = [];
  private nextHva = 2 ** 40;
  readonly pfns = new PfnPool();

  private notifiers: MmuNotifier[] = [];
  /** Events in flight, for step-by-step driving: start called, end not yet. */
  private pending: { start: number; end: number; event: MmuNotifierEvent; finish: () => void }[] = [];

  /** mmu_notifier_register() */
  registerNotifier(n: MmuNotifier): void {
    this.notifiers.push(n);
  }
  unregisterNotifier(n: MmuNotifier): void {
    this.notifiers = this.notifiers.filter((x) => x !== n);
  }

  /** mmap(NULL, length, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS[|MAP_HUGETLB]) */
  mmap(length: number, opts: { backing?: Backing } = {}): Hva {
    const o = argOpts('mmap', opts, ['backing']);
    const backing = o['backing'] === undefined ? '4k' : argOneOf('mmap', 'backing', o['backing'], BACKINGS);
    const frame = FRAME_PAGES[backing] * PAGE;
    readHostNumber('mmap', 'length', length);
    if (length === 0) throw new RangeError('mmap: length must be positive (got 0)');
    if ((backing === '2m' || backing === '1g') && length % frame !== 0) {
      throw new RangeError(
        `mmap: hugetlb mapping length 0x${length.toString(16)} must be a multiple of 0x${frame.toString(16)}`,
      );
    }
    const len = Math.ceil(length / PAGE) * PAGE;
    const start = Math.ceil(this.nextHva / frame) * frame;
    if (start + len > HVA_LIMIT)
      throw new RangeError(`mmap: length 0x${len.toString(16)} does not fit in the host address space left`);
    if (Math.ceil(len / frame) > MAX_FRAMES_PER_MAPPING)
      throw new RangeError(
        `mmap: length 0x${len.toString(16)} at ${backing} backing is more than ${MAX_FRAMES_PER_MAPPING} frames (the model's limit per mapping; use a 2m, 1g or thp backing)`,
      );
    // (no mmEpoch move: a new mapping has no pages yet, so no hva's pfn changes until a fault-in)
    this.nextHva = start + len + frame; // a guard gap, so adjacent mappings never merge by accident
    const fp = FRAME_PAGES[backing];
    this.vmas.push({
      start,
      length: len,
      backing,
      writable: true,
      framePages: fp,
      frameBase: start,
      frames: new Float64Array(Math.ceil(len / (fp * PAGE))),
      split: new Map(),
      cow: new Set(),
    });
    this.vmas.sort((a, b) => a.start - b.start);
    return asHva(start);
  }

  /** Index in `vmas` of the last mapping findVma returned (a guest touches its memory in runs). */
  private lastVma = 0;

  findVma(addr: number): Vma | null {
    // vmas are sorted and disjoint, so the entry at lastVma is the answer whenever it contains addr.
    const c = this.vmas[this.lastVma];
    if (c !== undefined && addr >= c.start && addr < c.start + c.length) return c;
    let lo = 0;
    let hi = this.vmas.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = this.vmas[mid]!;
      if (addr < v.start) hi = mid - 1;
      else if (addr >= v.start + v.length) lo = mid + 1;
      else {
        this.lastVma = mid;
        return v;
      }
    }
    return null;
  }

  /** All mappings (inspection). */
  mappings(): readonly Vma[] {
    return this.vmas;
  }

  /**
   * The host page behind hva, faulted in on first touch (GUP). `write` breaks KSM sharing (COW) and
   * fails on a read-only mapping. Returns null if nothing usable is mapped (KVM reports -EFAULT).
   */
  hvaToPfn(addr: number, write = false): HvaPfn | null {
    const out: HvaPfn = { pfn: asPfn(0), level: 1, writable: false };
    return this.hvaToPfnInto(addr, write, out) ? out : null;
  }

  /** hvaToPfn into `out` (no object per call, for the fault and pin paths); false where it returns null. */
  hvaToPfnInto(addr: number, write: boolean, out: HvaPfn): boolean {
    const v = this.findVma(addr);
    if (v === null || (write && !v.writable)) return false;
    const cow = v.cow.size > 0;
    const i = cow ? Math.floor((addr - v.start) / PAGE) : 0;
    if (write && cow && v.cow.has(i)) this.breakCow(v, i);
    const p = this.page;
    pageInto(v, addr, p);
    if (p.pfn === 0) {
      this.faultIn(v, addr);
      pageInto(v, addr, p);
    }
    out.pfn = asPfn(p.pfn);
    out.level = p.level;
    out.writable = v.writable && !(cow && v.cow.has(i));
    return true;
  }
  private readonly page: PageAt = { pfn: 0, level: 1 };

  /**
   * The level the host page tables map hva at now (1 = 4K, 2 = 2M PMD, 3 = 1G PUD); 1 when nothing is
   * mapped there. No fault. (What host_pfn_mapping_level reads for KVM.)
   */
  mappingLevelAt(addr: number): 1 | 2 | 3 {
    const v = this.findVma(addr);
    if (v === null) return 1;
    const p = this.page;
    pageInto(v, addr, p);
    return p.pfn === 0 ? 1 : p.level;
  }

  /**
   * hvaToPfnInto for page-aligned hva in v, a mapping findVma just returned that gup4k can serve
   * (gup4kUsable): the pfn, faulted in on first touch, the lookup scratch left as hvaToPfnInto leaves it.
   */
  gup4kInto(v: Vma, hva: number): number {
    const pfn = gup4k(v, hva, this.pfns, this.faults);
    this.page.pfn = pfn;
    this.page.level = 1;
    return pfn;
  }

  /** Peek without faulting: the pfn mapped at hva now, or 0. */
  pfnAt(addr: number): number {
    const v = this.findVma(addr);
    if (v === null) return 0;
    pageInto(v, addr, this.page);
    return this.page.pfn;
  }

  /**
   * Change counters for observers that cache conclusions drawn from host state (the checker's incremental
   * audits): mmEpoch moves on every mapping change except a page fault-in, which faults records as the
   * hva range whose pfns it set.
   */
  mmEpoch = 0;
  readonly faults = new FaultLog();

  private faultIn(v: Vma, addr: number): void {
    const fp = v.framePages;
    if (fp === 1) {
      gup4k(v, addr - (addr % PAGE), this.pfns, this.faults);
      return;
    }
    const f = frameIndex(v, addr);
    const fStart = v.frameBase + f * fp * PAGE;
    this.faults.record(fStart, fp * PAGE);
    // A THP needs a whole frame inside the mapping, and a frame already mapped at 4K stays 4K until
    // khugepaged collapses it.
    const small =
      v.split.has(f) ||
      (v.backing === 'thp' && (fStart < v.start || fStart + fp * PAGE > v.start + v.length));
    if (!small) {
      v.frames[f] = this.pfns.alloc(fp);
      return;
    }
    const arr = splitFrame(v, f, this.pfns);
    const k = Math.floor((addr - fStart) / PAGE);
    arr[k] = this.pfns.alloc(1);
    this.pfns.swapSlotRestore(addr - (addr % PAGE), arr[k]!);
  }

  /** Break the KSM sharing of page i of v (COW); also break_cow in page_events.ts#ksmMerge. */
  breakCow(v: Vma, i: number): void {
    const addr = v.start + i * PAGE;
    this.changePages(addr, PAGE, 'ksm', () => {
      const old = pageAt(v, addr).pfn;
      const nu = this.pfns.alloc(1);
      this.pfns.copyContent(old, nu);
      setPage(v, addr, nu, this.pfns);
      this.pfns.put(old);
      v.cow.delete(i);
    });
  }

  /**
   * Bracket a page-table change with the notifiers, as mm/ does. With `stepwise`, only the start runs;
   * the returned function runs the change and the end (a fault can be driven in between).
   */
  changePages(
    start: number,
    len: number,
    event: MmuNotifierEvent,
    change: () => void,
    stepwise = false,
  ): () => void {
    const end = start + len;
    this.mmEpoch++;
    for (const n of this.notifiers) n.invalidateRangeStart(start, end, event);
    const finish = () => {
      this.mmEpoch++;
      change();
      this.pending = this.pending.filter((p) => p.finish !== finish);
      for (const n of this.notifiers) n.invalidateRangeEnd(start, end, event);
    };
    if (!stepwise) {
      finish();
      return () => {};
    }
    this.pending.push({ start, end, event, finish });
    return finish;
  }

  /** Invalidations started and not yet ended (stepwise driving). */
  inFlight(): number {
    return this.pending.length;
  }

  /**
   * Visit every present page of [start, start+len) (vma.ts#forPresentPages: only what is mapped there).
   * Also used by the events in page_events.ts.
   */
  forPages(start: number, len: number, f: (v: Vma, addr: number) => void): void {
    forPresentPages(this.vmas, start, len, f);
  }

  /** munmap(addr, length): pages are freed and may be reused by the next allocation. */
  munmap(addr: number, length: number, opts: { stepwise?: boolean } = {}): () => void {
    checkRange('munmap', addr, length);
    const stepwise = readStepwise('munmap', opts);
    return this.changePages(
      addr,
      length,
      'unmap',
      () => {
        this.vmas = splitVmasAround(this.vmas, addr, length, this.pfns);
        this.forPages(addr, length, (v, a) => {
          const p = pageAt(v, a);
          // An unsplit huge frame holds one reference, in its head: drop it once.
          if (p.pfn !== 0 && (p.level === 1 || (a - v.frameBase) % (v.framePages * PAGE) === 0))
            this.pfns.put(p.pfn);
        });
        this.vmas = this.vmas.filter((v) => !(v.start >= addr && v.start + v.length <= addr + length));
      },
      stepwise,
    );
  }

  /** mprotect(addr, length, PROT_READ[|PROT_WRITE]). */
  mprotect(addr: number, length: number, writable: boolean): void {
    checkRange('mprotect', addr, length);
    if (typeof writable !== 'boolean') argBool('mprotect', 'writable', writable, false);
    this.changePages(addr, length, 'protection', () => {
      this.vmas = splitVmasAround(this.vmas, addr, length, this.pfns);
      for (const v of vmasIn(this.vmas, addr, addr + length))
        if (v.start >= addr && v.start + v.length <= addr + length) v.writable = writable;
    });
  }

  /** Page migration / compaction: each present page under [addr, addr+len) moves to a new pfn (a THP is split first). */
  migrate(addr: number, length: number, opts: { stepwise?: boolean } = {}): () => void {
    return migrate(this, addr, length, opts);
  }

  /** split_huge_pmd: a 2M THP becomes 512 4K ptes on the same pfns. */
  thpSplit(addr: number): void {
    thpSplit(this, addr);
  }

  /** khugepaged collapse: the 512 pages of a 2M frame are copied into a fresh huge page. */
  thpCollapse(addr: number): void {
    thpCollapse(this, addr);
  }

  /** Reclaim: pages are written to swap and freed; the next touch faults in a new page with the same content. */
  swapOut(addr: number, length: number): void {
    swapOut(this, addr, length);
  }

  /** KSM: the page at b becomes a read-only share of the page at a (same content assumed); see page_events.ts. */
  ksmMerge(a: number, b: number): void {
    ksmMerge(this, a, b);
  }

  /** The process exits: every notifier's release runs (KVM zaps all). */
  exitMm(): void {
    for (const n of this.notifiers) n.release();
  }
}
