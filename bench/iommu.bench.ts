/**
 * VFIO and the IOMMU: device DMA through the IOTLB (hits, and misses that walk the I/O page table),
 * and MAP_DMA / UNMAP_DMA throughput (pin + map, unmap + IOTLB flush + unpin) per 4 KiB page.
 * No targets yet: scenarios issue few DMAs; this keeps the cost visible.
 */
import { Kvm } from '../src/index.ts';
import { VFIO_TYPE1v2_IOMMU } from '../src/uapi/vfio.ts';
import type { BenchLine } from './report.ts';

const PAGE = 4096;
const PAGES = 1 << 16; // 256 MiB

export async function run(): Promise<BenchLine[]> {
  const kvm = new Kvm();
  const dev = kvm.vfio.addDevice();
  const c = kvm.vfio.openContainer();
  dev.group.setContainer(c.fd);
  c.setIommu(VFIO_TYPE1v2_IOMMU);
  const hva = kvm.host.mmap(PAGES * PAGE);
  const out: BenchLine[] = [];

  let t0 = performance.now();
  c.mapDma({ iova: 0, vaddr: hva, size: PAGES * PAGE, flags: 3 });
  out.push({
    name: 'MAP_DMA: pages pinned+mapped/s (256 MiB, first touch)',
    value: PAGES / ((performance.now() - t0) / 1000),
    unit: 'ops/s',
  });

  t0 = performance.now();
  for (let i = 0; i < PAGES; i++) dev.dma(i * PAGE, 'write');
  out.push({
    name: 'device DMA/s, IOTLB miss (page walk)',
    value: PAGES / ((performance.now() - t0) / 1000),
    unit: 'ops/s',
  });

  const n = 1_000_000;
  t0 = performance.now();
  for (let i = 0; i < n; i++) dev.dma((i & 1023) * PAGE, 'read');
  out.push({ name: 'device DMA/s, IOTLB hit', value: n / ((performance.now() - t0) / 1000), unit: 'ops/s' });

  t0 = performance.now();
  c.unmapDma({ iova: 0, size: PAGES * PAGE });
  out.push({
    name: 'UNMAP_DMA: pages unmapped+unpinned/s',
    value: PAGES / ((performance.now() - t0) / 1000),
    unit: 'ops/s',
  });
  return out;
}
