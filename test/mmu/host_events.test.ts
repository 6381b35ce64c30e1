/**
 * Host mm events reaching KVM through the MMU notifier: after munmap, migration and THP split no SPTE
 * maps the old pfn and the next access reaches the new page; a fault racing an invalidation retries.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { beginFault } from '../../src/x86/mmu/guest_access_step.ts';
import type { X86Mmu } from '../../src/x86/mmu/mmu.ts';
import { kvmTdpMmuGetWalk } from '../../src/x86/mmu/tdp_mmu.ts';
import { spteToPfn } from '../../src/x86/mmu/spte.ts';

const MiB = 1 << 20;

function setup(backing: '4k' | 'thp') {
  const kvm = new Kvm();
  const vm = kvm.createVm(0);
  const hva = kvm.host.mmap(4 * MiB, { backing });
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0x40000000, memorySize: 4 * MiB, userspaceAddr: hva });
  const v = vm.createVcpu(0);
  return { kvm, vm, v, hva };
}

/** The pfn the SPTEs map for gpa now (0 if nothing is mapped). */
function mapped(vm: ReturnType<Kvm['createVm']>, v: { mmu: { root: number } }, gpa: number): number {
  const mmu = vm.mmu as X86Mmu;
  const w = { lo: 0, hi: 0, level: 0 };
  if (v.mmu.root < 0 || !kvmTdpMmuGetWalk(mmu.tdp, v.mmu.root, gpa / 4096, w)) return 0;
  const span = w.level === 1 ? 1 : w.level === 2 ? 512 : 262144;
  return spteToPfn(w.lo, w.hi) + ((gpa / 4096) % span);
}

describe('host events through the MMU notifier', () => {
  it('migration: the old pfn is unmapped, the next access reaches the new page', () => {
    const { kvm, vm, v, hva } = setup('4k');
    const gpa = 0x40000000 + 5 * 4096;
    const old = (v.access(gpa, 'read') as { pfn: number }).pfn;
    kvm.host.migrate(hva + 5 * 4096, 4096);
    expect(mapped(vm, v, gpa)).toBe(0);
    const now = kvm.host.pfnAt(hva + 5 * 4096);
    expect(now).not.toBe(old);
    expect(v.access(gpa, 'read')).toMatchObject({ exit: 'none', pfn: now });
    expect(vm.getStats().remote_tlb_flush_requests).toBe(1);
  });

  it('munmap: the gfn loses its mapping; the access then fails as KVM would (-EFAULT, memory fault)', () => {
    const { kvm, vm, v, hva } = setup('4k');
    v.access(0x40000000, 'write');
    kvm.host.munmap(hva, 4096);
    expect(mapped(vm, v, 0x40000000)).toBe(0);
    expect(v.access(0x40000000, 'read')).toEqual({
      exit: 'memory_fault',
      gpa: 0x40000000,
      size: 4096,
      private: false,
    });
    // The freed page is reused by the host; no SPTE points at it.
    expect(v.access(0x40001000, 'read').exit).toBe('none');
  });

  it('THP split: the 2M leaf goes; the refault maps 4K on the same host pages', () => {
    const { kvm, vm, v, hva } = setup('thp');
    const r = v.access(0x40000000 + 7 * 4096, 'read');
    expect(r).toMatchObject({ level: 2 });
    kvm.host.thpSplit(hva);
    expect(vm.getStats()).toMatchObject({ pages_2m: 0, pages_4k: 0 });
    expect(v.access(0x40000000 + 7 * 4096, 'read')).toMatchObject({
      exit: 'none',
      level: 1,
      pfn: (r as { pfn: number }).pfn,
    });
  });

  it('a fault during an in-progress invalidation of its gfn retries until the invalidation ends', () => {
    const { kvm, v, hva, vm } = setup('4k');
    const finish = kvm.host.migrate(hva, 4096, { stepwise: true });
    expect(v.access(0x40000000, 'read')).toMatchObject({ exit: 'retry' });
    expect(vm.getModelStats().fault_retries).toBe(8);
    finish();
    expect(v.access(0x40000000, 'read')).toMatchObject({ exit: 'none', pfn: kvm.host.pfnAt(hva) });
  });

  it('a fault that got its pfn before an invalidation completed retries (stale mmu_invalidate_seq)', () => {
    const { kvm, vm, v, hva } = setup('4k');
    const f = beginFault(vm.mmu as X86Mmu, v, 0x40000000, 'write');
    const stale = f.fault.pfn;
    kvm.host.migrate(hva, 4096);
    const r = f.finish();
    expect(r).toMatchObject({ exit: 'none', pfn: kvm.host.pfnAt(hva) });
    expect(mapped(vm, v, 0x40000000)).not.toBe(stale);
    expect(vm.getModelStats().fault_retries).toBe(1);
  });
});
