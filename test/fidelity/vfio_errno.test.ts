/**
 * VFIO and kvm-vfio answers read against the kernel (drivers/vfio/{container,group,vfio_main}.c in the
 * torvalds/linux 6.x copy, vfio_iommu_type1.c in linux-next 412dcb0c, virt/kvm/vfio.c in a 6.12 copy).
 * Each case below is one the model answered differently before:
 *  - container.c#vfio_ioctl_set_iommu: a second VFIO_SET_IOMMU is EINVAL (`container->iommu_driver`
 *    is tested together with the empty group list), not EBUSY;
 *  - group.c#vfio_group_ioctl_set_container: "already has an IOMMU" (EINVAL) is checked before the fd's
 *    kind, and an fd that is neither a container nor an iommufd is EBADFD ("The FD passed is not
 *    recognized"), not EINVAL;
 *  - virt/kvm/vfio.c#kvm_vfio_file_add: kvm_vfio_file_is_valid (vfio_main.c#vfio_file_is_valid) accepts
 *    group and device files only; a container fd is EINVAL (the model added it and called it coherent);
 *  - vfio_iommu_type1.c#vfio_dma_do_map: VFIO_DMA_MAP_FLAG_VADDR without READ/WRITE is a vaddr update:
 *    ENOENT with no mapping there, EINVAL for a mapping whose vaddr was not invalidated.
 */
import { describe, expect, it } from 'vitest';
import { Kvm, KvmError } from '../../src/index.ts';
import {
  KVM_DEV_TYPE_VFIO,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_VADDR,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_TYPE1v2_IOMMU,
} from '../../src/uapi/vfio.ts';

const PAGE = 4096;
const RW = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;

function code(f: () => unknown): string {
  try {
    f();
    return 'ok';
  } catch (e) {
    if (e instanceof KvmError) return `${e.syscall}:${e.code}`;
    throw e;
  }
}

function setup() {
  const kvm = new Kvm();
  const dev = kvm.vfio.addDevice();
  const c = kvm.vfio.openContainer();
  return { kvm, dev, c };
}

describe('VFIO container and group ioctls', () => {
  it('vfio_ioctl_set_iommu: a container whose IOMMU is set answers EINVAL', () => {
    const { dev, c } = setup();
    dev.group.setContainer(c.fd);
    expect(code(() => c.setIommu(VFIO_TYPE1v2_IOMMU))).toBe('ok');
    expect(code(() => c.setIommu(VFIO_TYPE1v2_IOMMU))).toBe('VFIO_SET_IOMMU:EINVAL');
  });

  it('vfio_group_ioctl_set_container: EBADFD for an fd that is no container; EINVAL first if attached', () => {
    const { kvm, dev, c } = setup();
    const other = kvm.vfio.addDevice();
    expect(code(() => dev.group.setContainer(other.group.fd))).toBe('VFIO_GROUP_SET_CONTAINER:EBADFD');
    expect(code(() => dev.group.setContainer(kvm.createVm(0).fd))).toBe('VFIO_GROUP_SET_CONTAINER:EBADFD');
    expect(code(() => dev.group.setContainer(9999))).toBe('VFIO_GROUP_SET_CONTAINER:EBADF');
    dev.group.setContainer(c.fd);
    expect(code(() => dev.group.setContainer(other.group.fd))).toBe('VFIO_GROUP_SET_CONTAINER:EINVAL');
  });
});

describe('kvm-vfio KVM_DEV_VFIO_FILE_ADD', () => {
  it('a container fd is not a VFIO file: EINVAL, nothing added', () => {
    const { kvm, dev, c } = setup();
    dev.group.setContainer(c.fd);
    c.setIommu(VFIO_TYPE1v2_IOMMU);
    const vm = kvm.createVm(0);
    const kv = vm.createDevice({ type: KVM_DEV_TYPE_VFIO });
    expect(code(() => kv.fileAdd(c.fd))).toBe('KVM_SET_DEVICE_ATTR:EINVAL');
    expect(kv.files).toEqual([]);
    expect(code(() => kv.fileAdd(dev.group.fd))).toBe('ok');
    expect(kv.files).toEqual([dev.group.fd]);
  });
});

describe('vfio_dma_do_map with VFIO_DMA_MAP_FLAG_VADDR', () => {
  it('ENOENT without a mapping, EINVAL with READ/WRITE or over a mapping whose vaddr is valid', () => {
    const { kvm, dev, c } = setup();
    dev.group.setContainer(c.fd);
    c.setIommu(VFIO_TYPE1v2_IOMMU);
    const hva = kvm.host.mmap(4 * PAGE);
    const V = VFIO_DMA_MAP_FLAG_VADDR;
    expect(code(() => c.mapDma({ iova: 0, vaddr: hva, size: PAGE, flags: V }))).toBe(
      'VFIO_IOMMU_MAP_DMA:ENOENT',
    );
    expect(code(() => c.mapDma({ iova: 0, vaddr: hva, size: PAGE, flags: V | RW }))).toBe(
      'VFIO_IOMMU_MAP_DMA:EINVAL',
    );
    // The alignment checks come first.
    expect(code(() => c.mapDma({ iova: 0x800, vaddr: hva, size: PAGE, flags: V }))).toBe(
      'VFIO_IOMMU_MAP_DMA:EINVAL',
    );
    c.mapDma({ iova: 0, vaddr: hva, size: 2 * PAGE, flags: RW });
    expect(code(() => c.mapDma({ iova: 0, vaddr: hva, size: 2 * PAGE, flags: V }))).toBe(
      'VFIO_IOMMU_MAP_DMA:EINVAL',
    );
    expect(c.iommu!.dmas.length).toBe(1);
  });
});
