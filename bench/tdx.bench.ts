/**
 * TDX private memory: private-page faults/s as a TD sees them (TDG.MEM.PAGE.ACCEPT on an unmapped gpa →
 * EPT violation → private fault on the mirror root → TDH.MEM.PAGE.AUG → accept), the SW_PROTECTED
 * private fault for comparison (same guest_memfd path, direct root, no SEAMCALLs), and the rate at which
 * a memslot deletion removes private pages (4 SEAMCALLs each).
 */
import { Kvm } from '../src/index.ts';
import { KVM_MEM_GUEST_MEMFD, KVM_MEMORY_ATTRIBUTE_PRIVATE } from '../src/uapi/kvm.ts';
import { report, type BenchLine } from './report.ts';

const GiB = 2 ** 30;
const PAGE = 4096;

function guest(type: number, bytes: number) {
  const kvm = new Kvm();
  const vm = kvm.createVm(type);
  const fd = vm.createGuestMemfd({ size: bytes });
  vm.setUserMemoryRegion2({
    slot: 0,
    flags: KVM_MEM_GUEST_MEMFD,
    guestPhysAddr: 0,
    memorySize: bytes,
    userspaceAddr: kvm.host.mmap(bytes),
    guestMemfd: fd,
  });
  vm.setMemoryAttributes({ address: 0, size: bytes, attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE });
  return { kvm, vm, v: vm.createVcpu(0), n: bytes / PAGE };
}

export async function run(): Promise<BenchLine[]> {
  const out: BenchLine[] = [];
  const td = guest(5, 1 * GiB);
  const t0 = performance.now();
  for (let i = 0; i < td.n; i++) td.v.tdxAccept(i * PAGE);
  const ms = performance.now() - t0;
  out.push({
    name: 'TDX private-page faults/s (fault + AUG + accept, 1 GiB)',
    value: (td.n / ms) * 1000,
    unit: 'ops/s',
  });

  const t1 = performance.now();
  for (let i = 0; i < td.n; i++) td.v.access(i * PAGE, 'read');
  out.push({
    name: 'TDX private accesses/s after accept (TLB/walk)',
    value: (td.n / (performance.now() - t1)) * 1000,
    unit: 'ops/s',
  });

  const sw = guest(1, 1 * GiB);
  const t2 = performance.now();
  for (let i = 0; i < sw.n; i++) sw.v.access(i * PAGE, 'write');
  out.push({
    name: 'SW_PROTECTED private-page faults/s (1 GiB, comparison)',
    value: (sw.n / (performance.now() - t2)) * 1000,
    unit: 'ops/s',
  });

  const t3 = performance.now();
  td.vm.setUserMemoryRegion2({ slot: 0, memorySize: 0 });
  const dms = performance.now() - t3;
  out.push({
    name: `TDX slot deletion: private pages removed/s (${td.vm.getModelStats()['seamcalls']} SEAMCALLs)`,
    value: (td.n / dms) * 1000,
    unit: 'ops/s',
  });
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) report('tdx', await run());
