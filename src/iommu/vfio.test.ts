import { describe, expect, it } from 'vitest';
import { Kvm, KvmError } from '../index.ts';
import {
  KVM_DEV_TYPE_VFIO,
  KVM_DEV_VFIO_FILE,
  KVM_DEV_VFIO_FILE_ADD,
  VFIO_DMA_CC_IOMMU,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_DMA_UNMAP_FLAG_ALL,
  VFIO_TYPE1v2_IOMMU,
} from '../uapi/vfio.ts';
import type { VfioContainer, VfioDevice } from './vfio.ts';

const RW = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
const PAGE = 4096;

function setup(snoopControl = true): { kvm: Kvm; dev: VfioDevice; c: VfioContainer } {
  const kvm = new Kvm();
  const unit = snoopControl ? kvm.vfio.units[0]! : kvm.vfio.addIommu({ snoopControl: false });
  const dev = kvm.vfio.addDevice({ name: 'nic', iommu: unit });
  const c = kvm.vfio.openContainer();
  dev.group.setContainer(c.fd);
  c.setIommu(VFIO_TYPE1v2_IOMMU);
  return { kvm, dev, c };
}

const code = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    if (e instanceof KvmError) return `${e.syscall}:${e.code}`;
    throw e;
  }
  return 'ok';
};

describe('VFIO type1 MAP_DMA / UNMAP_DMA and device DMA', () => {
  it('MAP_DMA pins and maps; DMA reaches the pinned page; after UNMAP_DMA it faults', () => {
    const { kvm, dev, c } = setup();
    const hva = kvm.host.mmap(16 * PAGE);
    c.mapDma({ iova: 0x100000, vaddr: hva, size: 16 * PAGE, flags: RW });
    const pfn5 = kvm.host.pfnAt(hva + 5 * PAGE);
    expect(kvm.host.pfns.isPinned(pfn5)).toBe(true);
    expect(kvm.host.pfns.refs(pfn5)).toBe(2); // the mapping's reference + the pin
    const v0 = kvm.host.pfns.contentVersion(pfn5);
    expect(dev.dma(0x105000, 'write')).toEqual({ ok: true, pfn: pfn5, coherent: true, iotlb: 'miss' });
    expect(dev.dma(0x105000, 'read')).toEqual({ ok: true, pfn: pfn5, coherent: true, iotlb: 'hit' });
    expect(kvm.host.pfns.contentVersion(pfn5)).toBe(v0 + 1);
    expect(dev.dma(0x110000, 'read')).toEqual({ ok: false, fault: 'not-present', iova: 0x110000 });

    expect(c.unmapDma({ iova: 0x100000, size: 16 * PAGE })).toBe(16 * PAGE);
    // The cached translation went with the unmap: the device is refused, not sent to a freed page.
    expect(dev.dma(0x105000, 'read')).toEqual({ ok: false, fault: 'not-present', iova: 0x105000 });
    expect(dev.dma(0x105000, 'write')).toMatchObject({ ok: false });
    expect(kvm.host.pfns.isPinned(pfn5)).toBe(false);
    expect(kvm.host.pfns.refs(pfn5)).toBe(1);
    expect(c.iommu!.domains[0]!).toMatchObject({
      iotlbHits: 1,
      iotlbMisses: 4,
      iotlbFlushes: 1,
      dmaFaults: 3,
    });
  });

  it('a read-only mapping refuses device writes; a group without an IOMMU domain is blocked', () => {
    const { kvm, dev, c } = setup();
    const hva = kvm.host.mmap(PAGE);
    c.mapDma({ iova: 0, vaddr: hva, size: PAGE, flags: VFIO_DMA_MAP_FLAG_READ });
    expect(dev.dma(0, 'write')).toEqual({ ok: false, fault: 'permission', iova: 0 });
    expect(dev.dma(0, 'read')).toMatchObject({ ok: true });
    const lone = kvm.vfio.addDevice();
    expect(lone.dma(0, 'read')).toEqual({ ok: false, fault: 'no-domain', iova: 0 });
  });

  it('a pinned page is never reused while pinned, and is the next page reused once unpinned', () => {
    const { kvm, c } = setup();
    const hva = kvm.host.mmap(4 * PAGE);
    c.mapDma({ iova: 0, vaddr: hva, size: 4 * PAGE, flags: RW });
    const pinned = [0, 1, 2, 3].map((i) => kvm.host.pfnAt(hva + i * PAGE));
    kvm.host.munmap(hva, 4 * PAGE); // the VMM drops its mapping: the pins keep the pages
    for (const p of pinned) expect(kvm.host.pfns.isFree(p)).toBe(false);
    const other = kvm.host.mmap(64 * PAGE);
    const fresh = Array.from({ length: 64 }, (_, i) => kvm.host.hvaToPfn(other + i * PAGE)!.pfn);
    expect(fresh.filter((p) => pinned.includes(p))).toEqual([]);
    expect(c.unmapDma({ flags: VFIO_DMA_UNMAP_FLAG_ALL })).toBe(4 * PAGE);
    for (const p of pinned) expect(kvm.host.pfns.isFree(p)).toBe(true);
    const again = kvm.host.mmap(PAGE);
    expect(kvm.host.hvaToPfn(again)!.pfn).toBe(pinned[3]); // LIFO: the last page unpinned
  });

  it('pinned pages are not migrated, swapped or KSM-merged; the others are', () => {
    const { kvm, c } = setup();
    const hva = kvm.host.mmap(4 * PAGE);
    for (let i = 0; i < 4; i++) kvm.host.hvaToPfn(hva + i * PAGE, true);
    c.mapDma({ iova: 0, vaddr: hva, size: 2 * PAGE, flags: RW }); // pages 0 and 1 pinned
    const before = [0, 1, 2, 3].map((i) => kvm.host.pfnAt(hva + i * PAGE));
    kvm.host.migrate(hva, 4 * PAGE);
    const after = [0, 1, 2, 3].map((i) => kvm.host.pfnAt(hva + i * PAGE));
    expect(after.map((p, i) => p === before[i])).toEqual([true, true, false, false]);
    kvm.host.swapOut(hva, 4 * PAGE);
    expect([0, 1, 2, 3].map((i) => kvm.host.pfnAt(hva + i * PAGE) !== 0)).toEqual([true, true, false, false]);
    kvm.host.ksmMerge(hva + 2 * PAGE, hva);
    expect(kvm.host.pfnAt(hva)).toBe(before[0]);
  });

  it('pins on a THP survive the frame being split under them', () => {
    const { kvm, dev, c } = setup();
    const hva = kvm.host.mmap(2 << 20, { backing: 'thp' });
    kvm.host.hvaToPfn(hva, true);
    c.mapDma({ iova: 0, vaddr: hva + 8 * PAGE, size: 2 * PAGE, flags: RW });
    const p8 = kvm.host.pfnAt(hva + 8 * PAGE);
    expect(kvm.host.pfns.isPinned(kvm.host.pfnAt(hva))).toBe(true); // the whole folio is pinned
    kvm.host.thpSplit(hva);
    expect(kvm.host.pfns.isPinned(kvm.host.pfnAt(hva))).toBe(false);
    kvm.host.migrate(hva, 16 * PAGE);
    expect(kvm.host.pfnAt(hva + 8 * PAGE)).toBe(p8);
    expect(kvm.host.pfnAt(hva + 7 * PAGE)).not.toBe(p8 - 1);
    expect(dev.dma(0, 'read')).toMatchObject({ ok: true, pfn: p8 });
    expect(c.unmapDma({ iova: 0, size: 2 * PAGE })).toBe(2 * PAGE);
    expect(kvm.host.pfns.isPinned(p8)).toBe(false);
    expect(kvm.host.pfns.refs(p8)).toBe(1);
  });

  it('rejects what the kernel rejects', () => {
    const { kvm, c } = setup();
    const hva = kvm.host.mmap(8 * PAGE);
    const map =
      (iova: number, vaddr: number, size: number, flags = RW) =>
      () =>
        c.mapDma({ iova, vaddr, size, flags });
    expect(code(map(0, hva, 0))).toBe('VFIO_IOMMU_MAP_DMA:EINVAL');
    expect(code(map(0x800, hva, PAGE))).toBe('VFIO_IOMMU_MAP_DMA:EINVAL');
    expect(code(map(0, hva, PAGE, 0))).toBe('VFIO_IOMMU_MAP_DMA:EINVAL');
    expect(code(map(0xfee00000, hva, PAGE))).toBe('VFIO_IOMMU_MAP_DMA:EINVAL'); // MSI window
    expect(code(map(0, hva, 4 * PAGE))).toBe('ok');
    expect(code(map(3 * PAGE, hva + 4 * PAGE, PAGE))).toBe('VFIO_IOMMU_MAP_DMA:EEXIST');
    const pinnedBefore = c.iommu!.pagesPinned;
    expect(code(map(0x100000, hva + 4 * PAGE, 8 * PAGE))).toBe('VFIO_IOMMU_MAP_DMA:EFAULT'); // runs off the mapping
    expect(c.iommu!.pagesPinned).toBe(pinnedBefore);
    expect(kvm.host.pfns.isPinned(kvm.host.pfnAt(hva + 4 * PAGE))).toBe(false); // unwound
    expect(code(() => c.unmapDma({ iova: PAGE, size: PAGE }))).toBe('VFIO_IOMMU_UNMAP_DMA:EINVAL'); // bisects
    expect(c.unmapDma({ iova: 0x200000, size: PAGE })).toBe(0);
    const empty = kvm.vfio.openContainer();
    expect(code(() => empty.mapDma({ iova: 0, vaddr: hva, size: PAGE, flags: RW }))).toBe(
      'VFIO_IOMMU_MAP_DMA:ENOTTY',
    );
    expect(code(() => empty.setIommu(VFIO_TYPE1v2_IOMMU))).toBe('VFIO_SET_IOMMU:EINVAL');
    // container.c#vfio_ioctl_set_iommu: an IOMMU driver already set is EINVAL, like no group
    expect(code(() => c.setIommu(VFIO_TYPE1v2_IOMMU))).toBe('VFIO_SET_IOMMU:EINVAL');
  });
});

describe('snoop control, domains and the kvm-vfio device', () => {
  it('groups share a domain only with the same coherency; a new domain gets the mappings replayed', () => {
    const kvm = new Kvm();
    const noSc = kvm.vfio.addIommu({ snoopControl: false });
    const a = kvm.vfio.addDevice();
    const b = kvm.vfio.addDevice();
    const gpu = kvm.vfio.addDevice({ iommu: noSc });
    const c = kvm.vfio.openContainer();
    a.group.setContainer(c.fd);
    c.setIommu(VFIO_TYPE1v2_IOMMU);
    const hva = kvm.host.mmap(PAGE);
    c.mapDma({ iova: 0, vaddr: hva, size: PAGE, flags: RW });
    b.group.setContainer(c.fd);
    expect(b.group.domain).toBe(a.group.domain);
    expect(c.checkExtension(VFIO_DMA_CC_IOMMU)).toBe(1);
    gpu.group.setContainer(c.fd);
    expect(c.iommu!.domains.length).toBe(2);
    expect(gpu.dma(0, 'read')).toMatchObject({ ok: true, coherent: false, pfn: kvm.host.pfnAt(hva) });
    expect(a.dma(0, 'read')).toMatchObject({ ok: true, coherent: true });
    expect(c.checkExtension(VFIO_DMA_CC_IOMMU)).toBe(0);
    gpu.group.unsetContainer();
    expect(c.iommu!.domains.length).toBe(1);
    expect(kvm.host.pfns.isPinned(kvm.host.pfnAt(hva))).toBe(true);
    a.group.unsetContainer();
    b.group.unsetContainer(); // the last group: everything unmapped and unpinned
    expect(kvm.host.pfns.isPinned(kvm.host.pfnAt(hva))).toBe(false);
    expect(c.iommu).toBeNull();
  });

  it('pre-v5.19 Intel driver: one unit without snoop control anywhere makes every domain non-coherent', () => {
    for (const [scope, coherent] of [
      ['attached', true],
      ['system', false],
    ] as const) {
      const kvm = new Kvm();
      kvm.vfio.snoopScope = scope;
      kvm.vfio.addIommu({ snoopControl: false }); // the IGD's unit, not used by the guest
      const dev = kvm.vfio.addDevice();
      const c = kvm.vfio.openContainer();
      dev.group.setContainer(c.fd);
      c.setIommu(VFIO_TYPE1v2_IOMMU);
      expect(dev.group.domain!.enforceCacheCoherency).toBe(coherent);
      expect(dev.group.enforcedCoherent()).toBe(coherent);
      const vm = kvm.createVm(0);
      vm.createDevice({ type: KVM_DEV_TYPE_VFIO }).fileAdd(dev.group.fd);
      expect(vm.arch.noncoherentDmaCount).toBe(coherent ? 0 : 1);
    }
  });

  it('kvm-vfio registers non-coherent DMA once per device, and unregisters on del/release', () => {
    const kvm = new Kvm();
    const noSc = kvm.vfio.addIommu({ snoopControl: false });
    const g1 = kvm.vfio.addDevice({ iommu: noSc }).group;
    const g2 = kvm.vfio.addDevice({ iommu: noSc }).group;
    const g3 = kvm.vfio.addDevice().group;
    const vm = kvm.createVm(0);
    expect(code(() => vm.createDevice({ type: 1 }))).toBe('KVM_CREATE_DEVICE:ENODEV');
    const kv = vm.createDevice({ type: KVM_DEV_TYPE_VFIO });
    expect(code(() => vm.createDevice({ type: KVM_DEV_TYPE_VFIO }))).toBe('KVM_CREATE_DEVICE:EBUSY');
    // KVM_CREATE_DEVICE_TEST creates nothing in the kernel; the model refuses it instead of creating one.
    expect(() => vm.createDevice({ type: KVM_DEV_TYPE_VFIO, flags: 1 })).toThrow(
      /KVM_CREATE_DEVICE_TEST is not modelled/,
    );
    expect(vm.devices.length).toBe(1);
    kv.fileAdd(g3.fd);
    expect(vm.arch.noncoherentDmaCount).toBe(0);
    kv.setAttr({ group: KVM_DEV_VFIO_FILE, attr: KVM_DEV_VFIO_FILE_ADD, fd: g1.fd });
    kv.fileAdd(g2.fd);
    expect(vm.arch.noncoherentDmaCount).toBe(1);
    expect(code(() => kv.fileAdd(g1.fd))).toBe('KVM_SET_DEVICE_ATTR:EEXIST');
    expect(code(() => kv.fileAdd(vm.fd))).toBe('KVM_SET_DEVICE_ATTR:EINVAL');
    expect(code(() => kv.fileAdd(999))).toBe('KVM_SET_DEVICE_ATTR:EBADF');
    expect(code(() => kv.setAttr({ group: 2, attr: 1, fd: g1.fd }))).toBe('KVM_SET_DEVICE_ATTR:ENXIO');
    kv.fileDel(g1.fd);
    expect(vm.arch.noncoherentDmaCount).toBe(1);
    expect(code(() => kv.fileDel(g1.fd))).toBe('KVM_SET_DEVICE_ATTR:ENOENT');
    kv.fileDel(g2.fd);
    expect(vm.arch.noncoherentDmaCount).toBe(0);
    kv.fileAdd(g1.fd);
    kv.release();
    expect(vm.arch.noncoherentDmaCount).toBe(0);
    expect(vm.devices.length).toBe(0);
    vm.createDevice({ type: KVM_DEV_TYPE_VFIO }); // released: a new one may be created
  });
});
