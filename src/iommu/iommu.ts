/**
 * The host IOMMU as VFIO and device DMA see it: DMA-remapping units (with or without snoop control) and
 * IOMMU domains — an I/O page table iova → host pfn with read/write permission, an IOTLB that caches
 * translations until it is flushed, and whether the domain enforces cache coherency (blocks no-snoop
 * DMA, so the device's writes are always coherent with the CPU caches).
 *
 * Kernel counterpart: drivers/iommu/iommu.c (iommu_map, iommu_unmap, iommu_iova_to_phys,
 * iommu_iotlb_sync, device_iommu_capable), drivers/iommu/intel/iommu.c (intel_iommu_capable,
 * intel_iommu_enforce_cache_coherency, domain_support_force_snooping; before v5.19-rc1
 * domain_update_iommu_snooping(NULL), which looked at every IOMMU in the system).
 *
 * Simplifications: 4 KiB I/O pages only (no IOMMU superpages), one flat map per domain, an unbounded
 * IOTLB that only an explicit flush empties (no capacity misses), no PASID, nesting, dirty tracking or
 * interrupt remapping. A DMA is one page-sized access.
 */

/** IOMMU_READ / IOMMU_WRITE (include/linux/iommu.h) */
export const IOMMU_READ = 1;
export const IOMMU_WRITE = 2;

/** Intel VT-d address width the model assumes (48-bit, 4-level second-stage tables). */
export const IOMMU_APERTURE_END = 2 ** 48;
/** The x86 MSI window, an IOMMU_RESV_MSI region: never mappable for DMA. */
export const X86_MSI_RESV_START = 0xfee00000;
export const X86_MSI_RESV_END = 0xfef00000;

const PAGE = 4096;

/** One DMA-remapping hardware unit (a DMAR unit on Intel). */
export interface IommuUnit {
  readonly id: number;
  /** ECAP.SC: the unit can force snooping (IOMMU_CAP_ENFORCE_CACHE_COHERENCY). */
  readonly snoopControl: boolean;
}

/**
 * How the IOMMU driver decides whether a domain can enforce cache coherency:
 * 'attached' — every unit that has a device attached to the domain supports snoop control (v5.19+,
 *              fc0051cb9590 "iommu/vt-d: Check domain force_snooping against attached devices");
 * 'system'   — every unit in the system supports it (before v5.19-rc1: one unit without SC, e.g. the one
 *              dedicated to an integrated GPU, made every domain non-coherent).
 */
export type SnoopScope = 'attached' | 'system';

export type DmaKind = 'read' | 'write';

/** What a device DMA reached: a host page, or a DMA-remapping fault. */
export type DmaResult =
  | { ok: true; pfn: number; coherent: boolean; iotlb: 'hit' | 'miss' }
  | { ok: false; fault: 'no-domain' | 'not-present' | 'permission'; iova: number };

/** struct iommu_domain with its page table and IOTLB. */
export class IommuDomain {
  /** Units of the devices attached to this domain (drives 'attached' snoop control). */
  readonly units = new Set<IommuUnit>();
  /** Whether the domain blocks no-snoop DMA (dmar_domain->force_snooping). */
  enforceCacheCoherency = false;
  /** I/O page table: iova page → pfn * 4 + prot (a MAP_DMA of guest RAM maps every page of it). */
  private readonly pt = new IoPageTable();
  /** IOTLB: iova page → cached pt entry. */
  private readonly iotlb = new Map<number, number>();
  iotlbHits = 0;
  iotlbMisses = 0;
  iotlbFlushes = 0;
  dmaFaults = 0;

  constructor(
    readonly id: number,
    readonly snoopScope: SnoopScope,
  ) {}

  /** Pages currently mapped. */
  get mappedPages(): number {
    return this.pt.count;
  }

  /**
   * Can this domain force snooping for everything attached to it (given all units of the system)?
   * @kernel drivers/iommu/intel/iommu.c#intel_iommu_enforce_cache_coherency
   */
  canEnforceCacheCoherency(allUnits: readonly IommuUnit[]): boolean {
    const scope = this.snoopScope === 'system' ? allUnits : [...this.units];
    return scope.every((u) => u.snoopControl);
  }

  /** Map one 4 KiB I/O page. @kernel drivers/iommu/iommu.c#iommu_map */
  map(iovaPage: number, pfn: number, prot: number): void {
    this.pt.set(iovaPage, pfn * 4 + (prot & 3));
  }

  /** map() of pfns[i] at iovaPage + i for every i. */
  mapPages(iovaPage: number, pfns: Float64Array, prot: number): void {
    this.pt.setRun(iovaPage, pfns, prot & 3);
  }

  /**
   * Clear the I/O PTEs of [iovaPage, iovaPage + npages). The IOTLB still holds them until iotlbSync():
   * a caller must flush before it lets the pages go (VFIO unpins only after the flush).
   * @kernel drivers/iommu/iommu.c#iommu_unmap
   */
  unmap(iovaPage: number, npages: number): number {
    let n = 0;
    for (let p = iovaPage; p < iovaPage + npages; p++) if (this.pt.delete(p)) n++;
    return n;
  }

  /** Invalidate cached translations of [iovaPage, iovaPage + npages). @kernel drivers/iommu/iommu.c#iommu_iotlb_sync */
  iotlbSync(iovaPage: number, npages: number): void {
    this.iotlbFlushes++;
    if (npages >= this.iotlb.size) {
      for (const p of [...this.iotlb.keys()])
        if (p >= iovaPage && p < iovaPage + npages) this.iotlb.delete(p);
    } else {
      for (let p = iovaPage; p < iovaPage + npages; p++) this.iotlb.delete(p);
    }
  }

  /** The pfn mapped at an iova page, or -1 (the page table, not the IOTLB). @kernel drivers/iommu/iommu.c#iommu_iova_to_phys */
  iovaToPfn(iovaPage: number): number {
    const e = this.pt.get(iovaPage);
    return e < 0 ? -1 : Math.floor(e / 4);
  }

  /** A device DMA through this domain: the IOTLB first, then a page walk that fills it. */
  translate(iova: number, kind: DmaKind): DmaResult {
    const page = Math.floor(iova / PAGE);
    let e = this.iotlb.get(page);
    let iotlb: 'hit' | 'miss' = 'hit';
    if (e === undefined) {
      iotlb = 'miss';
      this.iotlbMisses++;
      e = this.pt.get(page);
      if (e < 0) {
        this.dmaFaults++;
        return { ok: false, fault: 'not-present', iova };
      }
      this.iotlb.set(page, e);
    } else this.iotlbHits++;
    const need = kind === 'write' ? IOMMU_WRITE : IOMMU_READ;
    if ((e & need) === 0) {
      this.dmaFaults++;
      return { ok: false, fault: 'permission', iova };
    }
    return { ok: true, pfn: Math.floor(e / 4), coherent: this.enforceCacheCoherency, iotlb };
  }
}

const PT_CHUNK = 65536;

/**
 * The I/O page table's entries (iova page → pfn * 4 + prot) in chunks of 64 Ki pages, each a Float64Array
 * holding entry + 1 (0 = not present): no hash-map entry per mapped page.
 */
class IoPageTable {
  private readonly chunks = new Map<number, Float64Array>();
  private lastKey = -1;
  private last: Float64Array | undefined;
  /** Entries present. */
  count = 0;

  private chunk(page: number, create: boolean): Float64Array | undefined {
    const k = Math.floor(page / PT_CHUNK);
    if (k === this.lastKey) return this.last;
    let c = this.chunks.get(k);
    if (c === undefined) {
      if (!create) return undefined;
      this.chunks.set(k, (c = new Float64Array(PT_CHUNK)));
    }
    this.lastKey = k;
    this.last = c;
    return c;
  }

  /** The entry at page, or -1. */
  get(page: number): number {
    const c = this.chunk(page, false);
    return c === undefined ? -1 : c[page % PT_CHUNK]! - 1;
  }

  set(page: number, e: number): void {
    const c = this.chunk(page, true)!;
    const i = page % PT_CHUNK;
    if (c[i] === 0) this.count++;
    c[i] = e + 1;
  }

  /** set() of pfns[i] * 4 + prot at page + i for every i, a chunk at a time. */
  setRun(page: number, pfns: Float64Array, prot: number): void {
    const n = pfns.length;
    for (let i = 0; i < n;) {
      const c = this.chunk(page + i, true)!;
      const off = (page + i) % PT_CHUNK;
      const m = Math.min(n - i, PT_CHUNK - off);
      for (let k = 0; k < m; k++) {
        if (c[off + k] === 0) this.count++;
        c[off + k] = pfns[i + k]! * 4 + prot + 1;
      }
      i += m;
    }
  }

  /** Clear the entry at page; true if there was one. */
  delete(page: number): boolean {
    const c = this.chunk(page, false);
    const i = page % PT_CHUNK;
    if (c === undefined || c[i] === 0) return false;
    c[i] = 0;
    this.count--;
    return true;
  }
}
