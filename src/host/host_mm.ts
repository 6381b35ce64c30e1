/**
 * The VMM process's address space as KVM sees it through the primary MMU: anonymous mappings with a
 * backing page size, and the host page (pfn) behind each hva, allocated on first touch.
 *
 * Kernel counterpart: mm/ as reached from KVM (hva_to_pfn / GUP, host_pfn_mapping_level for the backing
 * size), not a model of mm/ itself.
 *
 * Simplifications: one process; 'thp' behaves as 2M backing wherever a whole 2M-aligned frame lies inside
 * the mapping, else 4K; pfns come from a bump allocator and are never reused yet (the host-memory issue
 * adds freeing, migration and reuse). Page contents are not modelled.
 */
import { asHva, asPfn, HVA_LIMIT, type Hva, type Pfn } from '../types/addr.ts';

export type Backing = '4k' | '2m' | '1g' | 'thp';
const BACKING_PAGES: Record<Backing, number> = { '4k': 1, '2m': 512, '1g': 262144, thp: 512 };

export interface Vma {
  readonly start: number;
  readonly length: number;
  readonly backing: Backing;
  /** base pfn per backing frame (0 = not yet touched) */
  readonly frames: Uint32Array;
}

export interface HvaPfn {
  pfn: Pfn;
  /** Level of the host mapping: 1 = 4K, 2 = 2M, 3 = 1G (host_pfn_mapping_level). */
  level: 1 | 2 | 3;
  writable: boolean;
}

export class HostMm {
  private vmas: Vma[] = [];
  /** Next free hva; mappings are placed upwards from 1 TiB, aligned to their backing size. */
  private nextHva = 2 ** 40;
  /** pfn 0 is never handed out, so 0 can mean "not present" in typed arrays. */
  private nextPfn = 1;

  /** mmap(NULL, length, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS[|MAP_HUGETLB]) */
  mmap(length: number, opts: { backing?: Backing } = {}): Hva {
    const backing = opts.backing ?? '4k';
    const frame = BACKING_PAGES[backing] * 4096;
    if (!(backing in BACKING_PAGES)) throw new TypeError(`unknown backing '${String(backing)}'`);
    if (!Number.isSafeInteger(length) || length <= 0)
      throw new RangeError(`mmap length ${length} must be positive`);
    if ((backing === '2m' || backing === '1g') && length % frame !== 0) {
      throw new RangeError(
        `hugetlb mapping length 0x${length.toString(16)} must be a multiple of 0x${frame.toString(16)}`,
      );
    }
    const len = Math.ceil(length / 4096) * 4096;
    const start = Math.ceil(this.nextHva / frame) * frame;
    if (start + len > HVA_LIMIT) throw new RangeError('host address space exhausted');
    this.nextHva = start + len;
    const frames = new Uint32Array(Math.ceil(len / frame) + 1);
    this.vmas.push({ start, length: len, backing, frames });
    this.vmas.sort((a, b) => a.start - b.start);
    return asHva(start);
  }

  /** munmap of a whole mapping made by mmap. */
  munmap(addr: Hva): void {
    const i = this.vmas.findIndex((v) => v.start === addr);
    if (i < 0) throw new RangeError(`munmap: no mapping starts at 0x${addr.toString(16)}`);
    this.vmas.splice(i, 1);
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

  /**
   * The host page behind hva, faulting it in on first touch (GUP with FOLL_WRITE for a write), or null
   * if nothing is mapped there (KVM then reports -EFAULT to userspace).
   */
  hvaToPfn(addr: number): HvaPfn | null {
    const v = this.findVma(addr);
    if (v === null) return null;
    const off = addr - v.start;
    let pages = BACKING_PAGES[v.backing];
    let level: 1 | 2 | 3 = pages === 1 ? 1 : pages === 512 ? 2 : 3;
    if (v.backing === 'thp') {
      // A THP needs a whole aligned 2M frame inside the VMA; otherwise the host maps 4K pages.
      const f = Math.floor(addr / 0x200000) * 0x200000;
      if (f < v.start || f + 0x200000 > v.start + v.length) ((pages = 1), (level = 1));
    }
    const frameIdx =
      pages === 1 ? Math.floor(off / 4096) : Math.floor((addr - alignDown(v.start, pages)) / (pages * 4096));
    const table = pages === 1 && v.backing === 'thp' ? this.thpSmall(v) : v.frames;
    let base = table[frameIdx]!;
    if (base === 0) {
      base = this.allocPfns(pages);
      table[frameIdx] = base;
    }
    const within = pages === 1 ? 0 : Math.floor(addr / 4096) % pages;
    return { pfn: asPfn(base + within), level, writable: true };
  }

  private smallTables = new WeakMap<Vma, Uint32Array>();
  private thpSmall(v: Vma): Uint32Array {
    let t = this.smallTables.get(v);
    if (t === undefined) this.smallTables.set(v, (t = new Uint32Array(v.length / 4096)));
    return t;
  }

  private allocPfns(n: number): number {
    const base = Math.ceil(this.nextPfn / n) * n;
    this.nextPfn = base + n;
    return base;
  }
}

function alignDown(addr: number, pages: number): number {
  const sz = pages * 4096;
  return Math.floor(addr / sz) * sz;
}
