/**
 * MMU-notifier invalidations over a populated guest: each host migration of one 4K page runs
 * invalidate_range_start (hva → gfn via the memslots' hva tree, kvm_unmap_gfn_range, a remote flush)
 * and invalidate_range_end. Target (issue 4): report invalidations/s over a populated 64 GiB guest.
 */
import { Kvm } from '../src/index.ts';
import type { X86Mmu } from '../src/x86/mmu/mmu.ts';
import { kvmTdpMmuMap } from '../src/x86/mmu/tdp_mmu.ts';
import { makeSpte, newSptePair, tdpLeafParams, MT_MASK_WB_IPAT } from '../src/x86/mmu/spte.ts';
import { asPfn } from '../src/types/addr.ts';
import { report, type BenchLine } from './report.ts';

const GiB = 2 ** 30;

export async function run(): Promise<BenchLine[]> {
  const kvm = new Kvm();
  const vm = kvm.createVm(0);
  const size = 64 * GiB;
  const hva = kvm.host.mmap(size);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 4 * GiB, memorySize: size, userspaceAddr: hva });
  const v = vm.createVcpu(0);
  v.access(4 * GiB, 'read'); // loads the root
  // Populate the SPTEs directly through the engine (the fault path's own speed is in faults.bench.ts);
  // the pfns are placeholders, since migration only needs present SPTEs to zap.
  const mmu = vm.mmu as X86Mmu;
  const s = newSptePair();
  const n = size / 4096;
  const base = (4 * GiB) / 4096;
  for (let i = 0; i < n; i++) {
    makeSpte(s, tdpLeafParams(1, asPfn(1 + i), MT_MASK_WB_IPAT));
    kvmTdpMmuMap(mmu.tdp, v.mmu.root, base + i, 1, s.lo, s.hi);
  }
  const N = 200_000;
  let x = 7;
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    kvm.host.migrate(hva + (x % n) * 4096, 4096);
  }
  const ms = performance.now() - t0;
  return [
    {
      name: 'notifier invalidations/s (4K migrations, 64 GiB populated)',
      value: (N / ms) * 1000,
      unit: 'ops/s',
    },
    { name: 'SPTEs present during the run', value: vm.getStats()['pages_4k'] ?? 0, unit: 'SPTEs' },
  ];
}

if (import.meta.url === `file://${process.argv[1]}`) report('notifier', await run());
