/**
 * arch/x86/kvm/mmu/tdp_mmu.c#recover_huge_pages_range (linux-next 1c60d04a): each root's walk keeps its
 * own `flush`; tdp_mmu_iter_cond_resched(kvm, &iter, flush, true) flushes before dropping mmu_lock and
 * clears it, and the walk ends with `if (flush) kvm_flush_remote_tlbs_memslot(kvm, slot)`. So a yield
 * after the last replacement leaves nothing owed: one flush in all, not a second one for the slot.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_MEM_LOG_DIRTY_PAGES } from '../../src/uapi/kvm.ts';

const MiB = 1 << 20;
const PAGE = 4096;

function loggedRange() {
  const kvm = new Kvm({ kernel: '6.18' });
  const vm = kvm.createVm(0);
  const hva = kvm.host.mmap(4 * MiB, { backing: 'thp' });
  const region = { slot: 0, guestPhysAddr: 0, memorySize: 4 * MiB, userspaceAddr: hva };
  vm.setUserMemoryRegion({ ...region, flags: KVM_MEM_LOG_DIRTY_PAGES });
  const v = vm.createVcpu(0);
  // Logging maps 4K: one full 4K table under the first 2M range, nothing else.
  for (let i = 0; i < 512; i++) v.access(i * PAGE, 'write');
  return { vm, logOff: () => vm.setUserMemoryRegion({ ...region, flags: 0 }) };
}

const stats = (vm: { getStats(): Record<string, number> }) => vm.getStats();

describe('recover_huge_pages_range: the slot flush covers only what was replaced since the last yield', () => {
  it('no yield: one flush after the walk', () => {
    const { vm, logOff } = loggedRange();
    const before = stats(vm).remote_tlb_flush_requests!;
    logOff();
    expect(stats(vm).pages_2m).toBe(1);
    expect(stats(vm).remote_tlb_flush_requests! - before).toBe(1);
  });

  it('a yield right after the replacement flushes there; the walk then owes nothing', () => {
    const { vm, logOff } = loggedRange();
    const before = stats(vm).remote_tlb_flush_requests!;
    const seen: number[] = [];
    // A party waiting for mmu_lock: the walk yields at its next resched point, after the replacement.
    vm.onMmuLockDrop = () => seen.push(stats(vm).pages_2m!, stats(vm).remote_tlb_flush_requests! - before);
    logOff();
    expect(seen).toEqual([1, 1]); // the 2M leaf is in, and the flush came before the lock was dropped
    expect(stats(vm).pages_2m).toBe(1);
    expect(stats(vm).remote_tlb_flush_requests! - before).toBe(1);
  });
});
