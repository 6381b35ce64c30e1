/**
 * Issue #12 finding 6 (may_block): virt/kvm/kvm_main.c#kvm_mmu_notifier_invalidate_range_start passes
 * `.may_block = mmu_notifier_range_blockable(range)` down to kvm_unmap_gfn_range, and
 * arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_unmap_gfn_range uses it as tdp_mmu_zap_leafs' can_yield
 * (linux-next 6.19-rc5, as 6.18): a non-blockable invalidation (the OOM reaper's) never drops mmu_lock,
 * a blockable one may, flushing first.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KvmMmuNotifier } from '../../src/kvm/mmu_notifier.ts';

const MiB = 1 << 20;

function setup() {
  const kvm = new Kvm();
  const vm = kvm.createVm(0);
  const hva = kvm.host.mmap(2 * MiB);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 2 * MiB, userspaceAddr: hva });
  const v = vm.createVcpu(0);
  for (let i = 0; i < 64; i++) v.access(i * 4096, 'write');
  // A second notifier object for the same VM: the test drives start/end itself.
  return { vm, hva, n: new KvmMmuNotifier(vm) };
}

describe('kvm_mmu_notifier_invalidate_range_start: may_block follows the range', () => {
  for (const blockable of [false, true]) {
    it(`${blockable ? 'blockable' : 'non-blockable'} range: the zap ${blockable ? 'yields inside the walk' : 'never drops mmu_lock'}`, () => {
      const { vm, hva, n } = setup();
      const pages0 = vm.getStats().pages_4k!;
      const atDrop: number[] = [];
      vm.onMmuLockDrop = () =>
        atDrop.push(pages0 - vm.getStats().pages_4k!, vm.getStats().remote_tlb_flush_requests!);
      n.invalidateRangeStart(hva, hva + 64 * 4096, 'unmap', blockable);
      n.invalidateRangeEnd(hva, hva + 64 * 4096, 'unmap');
      vm.onMmuLockDrop = undefined;
      // Blockable: one SPTE zapped and flushed when the lock dropped, then a second flush at the end.
      expect(atDrop).toEqual(blockable ? [1, 1] : []);
      expect(pages0 - vm.getStats().pages_4k!).toBe(64);
      expect(vm.getStats().remote_tlb_flush_requests).toBe(blockable ? 2 : 1);
    });
  }
});
