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
 */
import { asHva, asPfn, HVA_LIMIT, type Hva, type Pfn } from '../types/addr.ts';
import { PfnPool } from './pfn_pool.ts';

export type Backing = '4k' | '2m' | '1g' | 'thp';
const FRAME_PAGES: Record<Backing, number> = { '4k': 1, '2m': 512, '1g': 262144, thp: 512 };
const PAGE = 4096;

export type MmuNotifierEvent =
  'unmap' | 'protection' | 'migrate' | 'thp_split' | 'thp_collapse' | 'swap' | 'ksm' | 'clear';

/** The mmu_notifier_ops KVM registers (virt/kvm/kvm_main.c#kvm_mmu_notifier_ops). */
export interface MmuNotifier {
  invalidateRangeStart(start: number, end: number, event: MmuNotifierEvent): void;
  invalidateRangeEnd(start: number, end: number, event: MmuNotifierEvent): void;
  /** The mm is going away: KVM zaps everything (kvm_arch_flush_shadow_all). */
  release(): void;
}

export interface Vma {
  start: number;
  length: number;
  backing: Backing;
  writable: boolean;
  /** pfn per 4K page of the mapping (0 = not present). Huge frames fill 512 / 262144 consecutive pfns. */
  pages: Float64Array;
  /** Per-page mapping level: 1 = 4K pte, 2 = inside a 2M pmd, 3 = inside a 1G pud. */
  levels: Uint8Array;
  /** KSM-merged pages are mapped read-only until a write breaks the sharing (COW). */
  cow: Uint8Array;
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
    const backing = opts.backing ?? '4k';
    if (!(backing in FRAME_PAGES))
      throw new TypeError(`unknown backing '${String(backing)}' (4k, 2m, 1g, thp)`);
    const frame = FRAME_PAGES[backing] * PAGE;
    if (!Number.isSafeInteger(length) || length <= 0)
      throw new RangeError(`mmap length ${length} must be a positive integer`);
    if ((backing === '2m' || backing === '1g') && length % frame !== 0) {
      throw new RangeError(
        `hugetlb mapping length 0x${length.toString(16)} must be a multiple of 0x${frame.toString(16)}`,
      );
    }
    const len = Math.ceil(length / PAGE) * PAGE;
    const start = Math.ceil(this.nextHva / frame) * frame;
    if (start + len > HVA_LIMIT) throw new RangeError('host address space exhausted');
    this.nextHva = start + len + frame; // a guard gap, so adjacent mappings never merge by accident
    const n = len / PAGE;
    this.vmas.push({
      start,
      length: len,
      backing,
      writable: true,
      pages: new Float64Array(n),
      levels: new Uint8Array(n),
      cow: new Uint8Array(n),
    });
    this.vmas.sort((a, b) => a.start - b.start);
    return asHva(start);
  }

  findVma(addr: number): Vma | null {
    let lo = 0;
    let hi = this.vmas.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = this.vmas[mid]!;
      if (addr < v.start) hi = mid - 1;
      else if (addr >= v.start + v.length) lo = mid + 1;
      else return v;
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
    const v = this.findVma(addr);
    if (v === null || (write && !v.writable)) return null;
    const i = Math.floor((addr - v.start) / PAGE);
    if (v.pages[i] === 0) this.faultIn(v, i);
    if (write && v.cow[i]) this.breakCow(v, i);
    return { pfn: asPfn(v.pages[i]!), level: v.levels[i] as 1 | 2 | 3, writable: v.writable && !v.cow[i] };
  }

  /** Peek without faulting: the pfn mapped at hva now, or 0. */
  pfnAt(addr: number): number {
    const v = this.findVma(addr);
    return v === null ? 0 : v.pages[Math.floor((addr - v.start) / PAGE)]!;
  }

  private faultIn(v: Vma, i: number): void {
    const fp = this.framePagesAt(v, i);
    const first = i - ((v.start / PAGE + i) % fp);
    const base = this.pfns.alloc(fp);
    const level = fp === 1 ? 1 : fp === 512 ? 2 : 3;
    for (let k = 0; k < fp; k++) {
      v.pages[first + k] = base + k;
      v.levels[first + k] = level;
    }
    if (fp === 1) this.pfns.swapSlotRestore(v.start + i * PAGE, base);
  }

  /** Backing frame size (pages) the host would use at page i: THP only for whole aligned 2M frames. */
  private framePagesAt(v: Vma, i: number): number {
    const fp = FRAME_PAGES[v.backing];
    if (v.backing !== 'thp') return fp;
    const addr = v.start + i * PAGE;
    const f = Math.floor(addr / 0x200000) * 0x200000;
    if (f < v.start || f + 0x200000 > v.start + v.length) return 1;
    // A frame already partly populated at 4K (e.g. after a split) stays 4K until collapsed.
    const fi = (f - v.start) / PAGE;
    for (let k = 0; k < 512; k++) if (v.pages[fi + k] !== 0) return 1;
    return 512;
  }

  private breakCow(v: Vma, i: number): void {
    this.changePages(v.start + i * PAGE, PAGE, 'ksm', () => {
      const old = v.pages[i]!;
      const nu = this.pfns.alloc(1);
      this.pfns.copyContent(old, nu);
      this.pfns.put(old);
      v.pages[i] = nu;
      v.cow[i] = 0;
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
    for (const n of this.notifiers) n.invalidateRangeStart(start, end, event);
    const finish = () => {
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

  /** Walk the present pages of [start, start+len), calling f(vma, index). */
  private forPages(start: number, len: number, f: (v: Vma, i: number) => void): void {
    for (let a = start; a < start + len;) {
      const v = this.findVma(a);
      if (v === null) {
        a += PAGE;
        continue;
      }
      const i0 = (a - v.start) / PAGE;
      const n = Math.min((start + len - a) / PAGE, v.length / PAGE - i0);
      for (let i = i0; i < i0 + n; i++) f(v, i);
      a += n * PAGE;
    }
  }

  /** munmap(addr, length): pages are freed and may be reused by the next allocation. */
  munmap(addr: number, length: number, opts: { stepwise?: boolean } = {}): () => void {
    checkRange(addr, length);
    return this.changePages(
      addr,
      length,
      'unmap',
      () => {
        this.forPages(addr, length, (v, i) => {
          if (v.pages[i]) this.pfns.put(v.pages[i]!);
          v.pages[i] = 0;
        });
        this.splitVmasAround(addr, length);
        this.vmas = this.vmas.filter((v) => !(v.start >= addr && v.start + v.length <= addr + length));
      },
      opts.stepwise,
    );
  }

  /** mprotect(addr, length, PROT_READ[|PROT_WRITE]) on whole mappings. */
  mprotect(addr: number, length: number, writable: boolean): void {
    checkRange(addr, length);
    this.changePages(addr, length, 'protection', () => {
      this.splitVmasAround(addr, length);
      for (const v of this.vmas)
        if (v.start >= addr && v.start + v.length <= addr + length) v.writable = writable;
    });
  }

  /** Page migration / compaction: each present page (or huge frame) under [addr, addr+len) moves to a new pfn. */
  migrate(addr: number, length: number, opts: { stepwise?: boolean } = {}): () => void {
    checkRange(addr, length);
    return this.changePages(
      addr,
      length,
      'migrate',
      () => {
        this.forPages(addr, length, (v, i) => {
          const old = v.pages[i]!;
          if (old === 0) return;
          const nu = this.pfns.alloc(1);
          this.pfns.copyContent(old, nu);
          this.pfns.put(old);
          v.pages[i] = nu;
          v.levels[i] = 1; // migration of a THP splits it in this model
        });
      },
      opts.stepwise,
    );
  }

  /** split_huge_pmd: a 2M THP becomes 512 4K ptes on the same pfns. */
  thpSplit(addr: number): void {
    const f = Math.floor(addr / 0x200000) * 0x200000;
    this.changePages(f, 0x200000, 'thp_split', () =>
      this.forPages(f, 0x200000, (v, i) => (v.levels[i] = v.pages[i] ? 1 : v.levels[i]!)),
    );
  }

  /** khugepaged collapse: 512 4K pages are copied into a fresh 2M frame. */
  thpCollapse(addr: number): void {
    const f = Math.floor(addr / 0x200000) * 0x200000;
    const v = this.findVma(f);
    if (v === null || v.backing !== 'thp' || f + 0x200000 > v.start + v.length)
      throw new RangeError('thpCollapse needs a whole 2M frame of a THP mapping');
    this.changePages(f, 0x200000, 'thp_collapse', () => {
      const base = this.pfns.alloc(512);
      const i0 = (f - v.start) / PAGE;
      for (let k = 0; k < 512; k++) {
        const old = v.pages[i0 + k]!;
        if (old) {
          this.pfns.copyContent(old, base + k);
          this.pfns.put(old);
        }
        v.pages[i0 + k] = base + k;
        v.levels[i0 + k] = 2;
      }
    });
  }

  /** Reclaim: pages are written to swap and freed; the next touch faults in a new page with the same content. */
  swapOut(addr: number, length: number): void {
    checkRange(addr, length);
    this.changePages(addr, length, 'swap', () => {
      this.forPages(addr, length, (v, i) => {
        const old = v.pages[i]!;
        if (old === 0) return;
        this.pfns.swapSlotSave(v.start + i * PAGE, old);
        this.pfns.put(old);
        v.pages[i] = 0;
      });
    });
  }

  /** KSM: the page at b becomes a read-only share of the page at a (same content assumed). */
  ksmMerge(a: number, b: number): void {
    const va = this.findVma(a);
    const vb = this.findVma(b);
    if (va === null || vb === null) throw new RangeError('ksmMerge needs two mapped pages');
    this.hvaToPfn(a);
    this.hvaToPfn(b);
    const ia = Math.floor((a - va.start) / PAGE);
    const ib = Math.floor((b - vb.start) / PAGE);
    this.changePages(Math.floor(b / PAGE) * PAGE, PAGE, 'ksm', () => {
      this.pfns.put(vb.pages[ib]!);
      this.pfns.get(va.pages[ia]!);
      vb.pages[ib] = va.pages[ia]!;
      vb.levels[ib] = 1;
      va.cow[ia] = 1;
      vb.cow[ib] = 1;
    });
  }

  /** The process exits: every notifier's release runs (KVM zaps all). */
  exitMm(): void {
    for (const n of this.notifiers) n.release();
  }

  private splitVmasAround(addr: number, length: number): void {
    const out: Vma[] = [];
    for (const v of this.vmas) {
      const cuts = [v.start, v.start + v.length];
      for (const c of [addr, addr + length]) if (c > v.start && c < v.start + v.length) cuts.push(c);
      cuts.sort((x, y) => x - y);
      for (let k = 0; k + 1 < cuts.length; k++) {
        const s = cuts[k]!;
        const e = cuts[k + 1]!;
        if (s === e) continue;
        const i0 = (s - v.start) / PAGE;
        const i1 = (e - v.start) / PAGE;
        out.push({
          ...v,
          start: s,
          length: e - s,
          pages: v.pages.slice(i0, i1),
          levels: v.levels.slice(i0, i1),
          cow: v.cow.slice(i0, i1),
        });
      }
    }
    this.vmas = out;
  }
}

function checkRange(addr: number, length: number): void {
  if (
    !Number.isSafeInteger(addr) ||
    addr % PAGE ||
    !Number.isSafeInteger(length) ||
    length <= 0 ||
    length % PAGE
  ) {
    throw new RangeError(
      `range 0x${addr.toString(16)}+0x${length.toString(16)} must be page aligned and non-empty`,
    );
  }
}
