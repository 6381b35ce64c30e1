/**
 * Issue #12 finding 4: turning dirty logging off brings huge pages back (x86.c#kvm_mmu_slot_apply_flags →
 * mmu.c#kvm_mmu_recover_huge_pages). 6.13+: tdp_mmu.c#recover_huge_pages_range replaces each page table
 * that could be a huge leaf with that leaf in place, then kvm_flush_remote_tlbs_memslot; v6.12:
 * tdp_mmu.c#zap_collapsible_spte_range zaps the table (one flush per zap) and the next fault maps huge.
 */
import { describe, expect, it } from 'vitest';
import { Kvm, type KernelVersion } from '../../src/index.ts';
import { KVM_MEM_LOG_DIRTY_PAGES } from '../../src/uapi/kvm.ts';
import { Checker } from '../../src/check/checker.ts';

const MiB = 1 << 20;
const PAGE = 4096;

function loggedGuest(kernel: KernelVersion, backing: '4k' | 'thp' = 'thp', tdpMmu = true) {
  const kvm = new Kvm({ kernel, tdpMmu });
  const vm = kvm.createVm(0);
  const hva = kvm.host.mmap(4 * MiB, { backing });
  const region = { slot: 0, guestPhysAddr: 0, memorySize: 4 * MiB, userspaceAddr: hva };
  vm.setUserMemoryRegion({ ...region, flags: KVM_MEM_LOG_DIRTY_PAGES });
  const v = vm.createVcpu(0);
  const checker = new Checker(kvm, { audit: 'points' });
  checker.watch(vm);
  // While logging, everything maps at 4K: 512 leafs under the first 2M range, 3 under the second.
  for (let i = 0; i < 512; i++) expect(v.access(i * PAGE, 'write')).toMatchObject({ exit: 'none', level: 1 });
  for (const g of [512, 600, 1000]) v.access(g * PAGE, 'read');
  const logOff = () => vm.setUserMemoryRegion({ ...region, flags: 0 });
  return { kvm, vm, v, checker, logOff };
}

const s = (vm: { getStats(): Record<string, number> }) => vm.getStats();
const m = (vm: { getModelStats(): Record<string, number> }) => vm.getModelStats();

describe('logging off recovers huge pages (kvm_mmu_recover_huge_pages)', () => {
  it.each(['6.13+' as const])('%s (6.18): tables become 2M leafs in place, one flush for the slot', () => {
    const { vm, v, checker, logOff } = loggedGuest('6.18');
    expect([s(vm).pages_4k, s(vm).pages_2m]).toEqual([515, 0]);
    const flushes = s(vm).remote_tlb_flush_requests!;
    const freed = m(vm).pt_pages_freed!;
    const faults = v.getStats().pf_taken!;
    logOff();
    expect([s(vm).pages_4k, s(vm).pages_2m]).toEqual([0, 2]);
    expect(s(vm).remote_tlb_flush_requests! - flushes).toBe(1);
    expect(m(vm).pt_pages_freed! - freed).toBe(2); // the two 4K tables, through RCU
    // No refault: the guest reaches the same pages through the 2M leafs.
    expect(v.access(7 * PAGE, 'read')).toMatchObject({ exit: 'none', level: 2 });
    expect(v.access(2 * MiB + 9 * PAGE, 'write')).toMatchObject({ exit: 'none', level: 2 });
    expect(v.getStats().pf_taken! - faults).toBe(0);
    checker.auditPoint('postStep');
    expect(checker.violations).toEqual([]);
  });

  it('v6.12: the tables are zapped (one flush each); the next fault maps 2M', () => {
    const { vm, v, checker, logOff } = loggedGuest('6.12');
    const flushes = s(vm).remote_tlb_flush_requests!;
    const faults = v.getStats().pf_taken!;
    logOff();
    expect([s(vm).pages_4k, s(vm).pages_2m]).toEqual([0, 0]);
    expect(s(vm).remote_tlb_flush_requests! - flushes).toBe(2);
    expect(m(vm).sptes_zapped_nonleaf).toBe(2);
    expect(v.access(7 * PAGE, 'read')).toMatchObject({ exit: 'none', level: 2 });
    expect(v.getStats().pf_taken! - faults).toBe(1);
    checker.auditPoint('postStep');
    expect(checker.violations).toEqual([]);
  });

  it.each(['6.12', '6.18'] as const)(
    '%s: a 4K-backed slot has nothing to recover: no change, no flush',
    (k) => {
      const { vm, logOff } = loggedGuest(k, '4k');
      const flushes = s(vm).remote_tlb_flush_requests!;
      logOff();
      expect([s(vm).pages_4k, s(vm).pages_2m]).toEqual([515, 0]);
      expect(s(vm).remote_tlb_flush_requests! - flushes).toBe(0);
    },
  );

  it('6.18: a range the host split to 4K (THP split) stays 4K; the other recovers', () => {
    const { kvm, vm, logOff } = loggedGuest('6.18');
    kvm.host.thpSplit(vm.memslots()[0]!.userspaceAddr); // zaps the first 2M range's SPTEs too
    vm.getStats();
    for (let i = 0; i < 4; i++) vm.vcpus[0]!.access(i * PAGE, 'read');
    logOff();
    expect([s(vm).pages_4k, s(vm).pages_2m]).toEqual([4, 1]);
  });
});

describe('the shadow MMU zaps collapsible SPTEs (mmu.c#kvm_rmap_zap_collapsible_sptes), every version', () => {
  it.each(['6.12', '6.18'] as const)(
    '%s, EPT built by the shadow MMU: the 4K leafs of direct pages go, one flush',
    (k) => {
      const { vm, v, checker, logOff } = loggedGuest(k, 'thp', false);
      expect([s(vm).pages_4k, s(vm).pages_2m]).toEqual([515, 0]);
      const flushes = s(vm).remote_tlb_flush_requests!;
      const faults = v.getStats().pf_taken!;
      logOff();
      expect([s(vm).pages_4k, s(vm).pages_2m]).toEqual([0, 0]);
      expect(s(vm).remote_tlb_flush_requests! - flushes).toBe(1);
      expect(v.access(7 * PAGE, 'read')).toMatchObject({ exit: 'none', level: 2 });
      expect(v.getStats().pf_taken! - faults).toBe(1);
      checker.auditPoint('postStep');
      expect(checker.violations).toEqual([]);
    },
  );

  it('a 4K-backed slot: nothing is collapsible, nothing zapped, no flush', () => {
    const { vm, logOff } = loggedGuest('6.18', '4k', false);
    const flushes = s(vm).remote_tlb_flush_requests!;
    logOff();
    expect([s(vm).pages_4k, s(vm).pages_2m]).toEqual([515, 0]);
    expect(s(vm).remote_tlb_flush_requests! - flushes).toBe(0);
  });
});
