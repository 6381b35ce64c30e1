/**
 * VFIO's type1 IOMMU backend for one container. MAP_DMA pins the host pages behind [vaddr, vaddr + size)
 * (a long-term pin: the pages can be neither freed nor migrated until unpinned) and maps them at
 * [iova, iova + size) in every IOMMU domain of the container; UNMAP_DMA unmaps, flushes the IOTLB, and
 * only then unpins. Attaching a group puts it in a domain whose cache-coherency enforcement matches the
 * group's (a new domain gets the existing mappings replayed into it).
 *
 * Kernel counterpart: drivers/vfio/vfio_iommu_type1.c (vfio_dma_do_map, vfio_pin_map_dma,
 * vfio_pin_pages_remote, vfio_dma_do_unmap, vfio_remove_dma, vfio_unmap_unpin,
 * vfio_iommu_type1_attach_group, vfio_iommu_replay, vfio_iommu_type1_detach_group,
 * vfio_domains_have_enforce_cache_coherency).
 *
 * Simplifications: type1v2 semantics only; pins are taken page by page (the kernel batches contiguous
 * pfns); no locked_vm / RLIMIT_MEMLOCK accounting (so no ENOMEM); no VADDR update, dirty tracking or
 * mdev page pinning; the only reserved IOVA region is the x86 MSI window.
 */
import { KvmError, hex } from '../kvm/kvm_error.ts';
import { copyIn, type FieldKind, type StructSpec, type U64 } from '../kvm/args.ts';
import type { HostMm, HvaPfn } from '../host/host_mm.ts';
import { asPfn } from '../types/addr.ts';
import {
  IOMMU_APERTURE_END,
  IOMMU_READ,
  IOMMU_WRITE,
  IommuDomain,
  X86_MSI_RESV_END,
  X86_MSI_RESV_START,
  type IommuUnit,
  type SnoopScope,
} from './iommu.ts';
import {
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_VADDR,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_DMA_UNMAP_FLAG_ALL,
  VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
  VFIO_DMA_UNMAP_FLAG_VADDR,
} from '../uapi/vfio.ts';

const PAGE = 4096;

/** struct vfio_iommu_type1_dma_map */
export interface VfioDmaMap {
  iova: number;
  vaddr: number;
  size: number;
  flags?: number;
}

/** struct vfio_iommu_type1_dma_unmap */
export interface VfioDmaUnmap {
  iova?: number;
  size?: number;
  flags?: number;
}

/** struct vfio_dma: one MAP_DMA, with the pfn pinned behind each of its pages. */
export interface VfioDma {
  readonly iova: number;
  readonly vaddr: number;
  readonly size: number;
  readonly prot: number;
  readonly pfns: Float64Array;
}

/** What the backend needs of a VFIO group. */
export interface Type1Group {
  readonly devices: readonly { readonly unit: IommuUnit }[];
  domain: IommuDomain | null;
}

/** What the backend needs of the VFIO subsystem. */
export interface Type1Env {
  readonly host: HostMm;
  readonly units: readonly IommuUnit[];
  readonly snoopScope: SnoopScope;
  newDomainId(): number;
}

/** dma_entry_limit module parameter default (U16_MAX). */
const DMA_ENTRY_LIMIT = 65535;

const isPageAligned = (v: number): boolean => Number.isSafeInteger(v) && v >= 0 && v % PAGE === 0;

/** struct vfio_iommu */
export class VfioIommuType1 {
  /** The container's mappings, sorted by iova (the kernel's dma_list rb-tree). */
  readonly dmas: VfioDma[] = [];
  readonly domains: IommuDomain[] = [];
  dmaAvail = DMA_ENTRY_LIMIT;
  /** Model counters. */
  pagesPinned = 0;

  constructor(private readonly env: Type1Env) {}

  /** The mapping covering any of [iova, iova + size), or undefined. @kernel drivers/vfio/vfio_iommu_type1.c#vfio_find_dma */
  findDma(iova: number, size: number): VfioDma | undefined {
    return this.dmas.find((d) => iova < d.iova + d.size && d.iova < iova + size);
  }

  /** VFIO_IOMMU_MAP_DMA. @kernel drivers/vfio/vfio_iommu_type1.c#vfio_dma_do_map */
  mapDma(arg: VfioDmaMap): void {
    const sc = 'VFIO_IOMMU_MAP_DMA';
    const map = copyInDma(sc, arg, { argsz: 'u32', flags: 'u32', vaddr: 'u64', iova: 'u64', size: 'u64' });
    const flags = map.flags;
    if (flags & ~(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE | VFIO_DMA_MAP_FLAG_VADDR))
      throw new KvmError('EINVAL', sc, `unknown flags ${hex(flags)}`);
    const setVaddr = (flags & VFIO_DMA_MAP_FLAG_VADDR) !== 0;
    // READ/WRITE are from the device's point of view.
    const prot =
      (flags & VFIO_DMA_MAP_FLAG_READ ? IOMMU_READ : 0) | (flags & VFIO_DMA_MAP_FLAG_WRITE ? IOMMU_WRITE : 0);
    const { iova, vaddr, size } = map;
    if (prot !== 0 && setVaddr) throw new KvmError('EINVAL', sc, 'VFIO_DMA_MAP_FLAG_VADDR with READ/WRITE');
    if (prot === 0 && !setVaddr) throw new KvmError('EINVAL', sc, 'neither READ nor WRITE requested');
    if (!size || !isPageAligned(size) || !isPageAligned(iova) || !isPageAligned(vaddr))
      throw new KvmError(
        'EINVAL',
        sc,
        `iova ${hex(iova)}, vaddr ${hex(vaddr)}, size ${hex(size)} must be non-zero and 4 KiB aligned`,
      );
    const clash = this.findDma(iova, size);
    if (setVaddr) {
      // A new vaddr is only taken for a mapping whose vaddr an UNMAP_DMA with VFIO_DMA_UNMAP_FLAG_VADDR
      // invalidated; the model has no such unmap, so no mapping is ever waiting for one.
      if (clash === undefined)
        throw new KvmError('ENOENT', sc, `no mapping at iova ${hex(iova)}+${hex(size)}`);
      throw new KvmError('EINVAL', sc, `the mapping at ${hex(clash.iova)} has a valid vaddr`);
    }
    if (clash)
      throw new KvmError(
        'EEXIST',
        sc,
        `iova ${hex(iova)}+${hex(size)} overlaps mapping at ${hex(clash.iova)}`,
      );
    if (this.dmaAvail === 0) throw new KvmError('ENOSPC', sc, `dma_entry_limit ${DMA_ENTRY_LIMIT} reached`);
    // vfio_iommu_iova_dma_valid: inside the aperture and clear of reserved regions.
    if (iova + size > IOMMU_APERTURE_END || (iova < X86_MSI_RESV_END && X86_MSI_RESV_START < iova + size))
      throw new KvmError('EINVAL', sc, `iova ${hex(iova)}+${hex(size)} is outside the aperture or reserved`);
    const pfns = this.pinPagesRemote(vaddr, size, prot, sc);
    const dma: VfioDma = { iova, vaddr, size, prot, pfns };
    for (const d of this.domains) this.mapIntoDomain(d, dma);
    this.dmas.push(dma);
    this.dmas.sort((a, b) => a.iova - b.iova);
    this.dmaAvail--;
  }

  /**
   * Pin every page of [vaddr, vaddr + size) with FOLL_LONGTERM (a write pin if the device may write: COW
   * is broken first). A hole or a read-only mapping under a write pin fails the whole call with EFAULT,
   * after dropping the pins already taken.
   * @kernel drivers/vfio/vfio_iommu_type1.c#vfio_pin_pages_remote
   */
  private pinPagesRemote(vaddr: number, size: number, prot: number, sc: string): Float64Array {
    const n = size / PAGE;
    const pfns = new Float64Array(n);
    const host = this.env.host;
    const p: HvaPfn = { pfn: asPfn(0), level: 1, writable: false };
    const write = (prot & IOMMU_WRITE) !== 0;
    // GUP every page first, then take the pins in one pass: pinning a page changes nothing that a later
    // page's GUP reads, and a failed GUP drops every pin already taken, so no pin is ever left behind.
    for (let i = 0; i < n; i++) {
      if (!host.hvaToPfnInto(vaddr + i * PAGE, write, p))
        throw new KvmError(
          'EFAULT',
          sc,
          `cannot pin vaddr ${hex(vaddr + i * PAGE)} (not mapped or not writable)`,
        );
      pfns[i] = p.pfn;
    }
    host.pfns.pinPages(pfns, n);
    this.pagesPinned += n;
    return pfns;
  }

  private mapIntoDomain(d: IommuDomain, dma: VfioDma): void {
    d.mapPages(dma.iova / PAGE, dma.pfns, dma.prot);
  }

  /** VFIO_IOMMU_UNMAP_DMA → bytes unmapped. @kernel drivers/vfio/vfio_iommu_type1.c#vfio_dma_do_unmap */
  unmapDma(arg: VfioDmaUnmap): number {
    const sc = 'VFIO_IOMMU_UNMAP_DMA';
    const { flags, iova, size } = copyInDma(sc, arg, {
      argsz: 'u32',
      flags: 'u32',
      iova: 'u64',
      size: 'u64',
    });
    const known = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_ALL | VFIO_DMA_UNMAP_FLAG_VADDR;
    if (flags & ~known) throw new KvmError('EINVAL', sc, `unknown flags ${hex(flags)}`);
    if (flags & (VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_VADDR))
      throw new KvmError('EINVAL', sc, 'dirty-bitmap and VADDR unmaps are not modelled');
    const all = (flags & VFIO_DMA_UNMAP_FLAG_ALL) !== 0;
    let end: number;
    if (all) {
      if (iova || size) throw new KvmError('EINVAL', sc, 'VFIO_DMA_UNMAP_FLAG_ALL needs iova = size = 0');
      end = Infinity;
    } else {
      if (!size || !isPageAligned(size) || !isPageAligned(iova))
        throw new KvmError(
          'EINVAL',
          sc,
          `iova ${hex(iova)}, size ${hex(size)} must be non-zero and 4 KiB aligned`,
        );
      end = iova + size;
      // type1v2: an unmap may not bisect a mapping.
      const head = this.findDma(iova, 1);
      const tail = this.findDma(end - 1, 1);
      if ((head && head.iova !== iova) || (tail && tail.iova + tail.size !== end))
        throw new KvmError('EINVAL', sc, `iova ${hex(iova)}+${hex(size)} would split a mapping`);
    }
    let unmapped = 0;
    for (const dma of this.dmas.filter((d) => d.iova >= iova && d.iova < end)) {
      unmapped += dma.size;
      this.removeDma(dma);
    }
    return unmapped;
  }

  /**
   * Unmap from every domain and flush each IOTLB *before* unpinning: until the flush a device could
   * still reach the page through a cached translation, and an unpinned page may be freed and reused.
   * @kernel drivers/vfio/vfio_iommu_type1.c#vfio_unmap_unpin
   */
  private removeDma(dma: VfioDma): void {
    const first = dma.iova / PAGE;
    const n = dma.pfns.length;
    for (const d of this.domains) {
      d.unmap(first, n);
      d.iotlbSync(first, n);
    }
    const pool = this.env.host.pfns;
    for (let i = 0; i < n; i++) pool.unpin(dma.pfns[i]!);
    this.pagesPinned -= n;
    this.dmas.splice(this.dmas.indexOf(dma), 1);
    this.dmaAvail++;
  }

  /**
   * A new domain for the group; if an existing domain enforces coherency the same way, the group joins
   * it instead, so a container has at most one coherent and one non-coherent domain.
   * @kernel drivers/vfio/vfio_iommu_type1.c#vfio_iommu_type1_attach_group
   */
  attachGroup(group: Type1Group): void {
    const nu = new IommuDomain(this.env.newDomainId(), this.env.snoopScope);
    for (const dev of group.devices) nu.units.add(dev.unit);
    // VFIO always asks for enforcement: on Intel it lets KVM skip WBINVD emulation and guest memtypes.
    nu.enforceCacheCoherency = nu.canEnforceCacheCoherency(this.env.units);
    const same = this.domains.find((d) => d.enforceCacheCoherency === nu.enforceCacheCoherency);
    if (same) {
      for (const u of nu.units) same.units.add(u);
      group.domain = same;
      return;
    }
    for (const dma of this.dmas) this.mapIntoDomain(nu, dma); // vfio_iommu_replay
    this.domains.push(nu);
    group.domain = nu;
  }

  /** @kernel drivers/vfio/vfio_iommu_type1.c#vfio_iommu_type1_detach_group */
  detachGroup(group: Type1Group, remaining: readonly Type1Group[]): void {
    const d = group.domain;
    group.domain = null;
    if (d === null) return;
    if (remaining.some((g) => g.domain === d)) {
      d.units.clear();
      for (const g of remaining) if (g.domain === d) for (const dev of g.devices) d.units.add(dev.unit);
      return;
    }
    // Last group of the last domain: the container loses its IOMMU, so every mapping goes (and unpins).
    if (this.domains.length === 1) this.unmapDma({ flags: VFIO_DMA_UNMAP_FLAG_ALL });
    for (const dma of this.dmas) {
      d.unmap(dma.iova / PAGE, dma.pfns.length);
      d.iotlbSync(dma.iova / PAGE, dma.pfns.length);
    }
    this.domains.splice(this.domains.indexOf(d), 1);
  }

  /** VFIO_CHECK_EXTENSION(VFIO_DMA_CC_IOMMU). @kernel drivers/vfio/vfio_iommu_type1.c#vfio_domains_have_enforce_cache_coherency */
  haveEnforceCacheCoherency(): boolean {
    return this.domains.every((d) => d.enforceCacheCoherency);
  }
}

/**
 * Copy a VFIO struct in (copyIn: EFAULT for a non-object, EINVAL for a bad field). The model keeps I/O
 * addresses below 2^53, which the aperture (IOMMU_APERTURE_END) is anyway: a larger one is EINVAL.
 */
function copyInDma<K extends string>(
  sc: string,
  arg: unknown,
  spec: Record<K, FieldKind>,
): Record<K, number> {
  const r = copyIn(sc, arg, spec as StructSpec) as Record<string, U64>;
  const out = {} as Record<string, number>;
  for (const k in r) {
    const v = r[k]!;
    if (typeof v === 'bigint')
      throw new KvmError('EINVAL', sc, `${k} ${hex(v)} is outside the IOMMU aperture`);
    out[k] = v;
  }
  return out;
}
