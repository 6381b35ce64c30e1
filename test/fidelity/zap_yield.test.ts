/**
 * Issue #12 finding 6 (zap yield): the precise memslot zap drops mmu_lock *inside* its SPTE walk.
 * arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_zap_leafs calls tdp_mmu_iter_cond_resched at the top of every
 * iteration (linux-next 6.19-rc5, same in 6.18): once the walk has made progress (next_last_level_gfn !=
 * yielded_gfn) it flushes what it zapped, drops the lock and later restarts from the root. No resched point
 * follows the last SPTE, so a party waiting for the lock (vm.onMmuLockDrop) sees a half-done zap and one
 * flush already issued; the walk flushes again at the end for what it zapped after the yield.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';

const MiB = 1 << 20;
const BAR = 0x1000_0000;

describe('kvm_mmu_zap_memslot on the TDP MMU yields inside tdp_mmu_zap_leafs', () => {
  it('the party runs after the first zapped SPTE, after a flush; the zap finishes and flushes again', () => {
    const kvm = new Kvm();
    const vm = kvm.createVm(0);
    vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
    const bar = kvm.host.mmap(2 * MiB);
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR, memorySize: 2 * MiB, userspaceAddr: bar });
    const v = vm.createVcpu(0);
    for (let i = 0; i < 100; i++) v.access(BAR + i * 4096, 'write');
    const pages0 = vm.getStats().pages_4k!;
    const seen: unknown[] = [];
    vm.onMmuLockDrop = () => {
      const s = vm.getStats();
      seen.push(pages0 - s.pages_4k!, s.remote_tlb_flush_requests);
      // Page 50 is still mapped (the slot is INVALID, but its SPTE is not zapped yet); page 0 is gone and
      // its fault retries on the INVALID slot.
      seen.push(v.access(BAR + 50 * 4096, 'read').exit, v.access(BAR, 'read').exit);
    };
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR, memorySize: 0 });
    expect(seen).toEqual([1, 1, 'none', 'retry']);
    expect(vm.onMmuLockDrop).toBeUndefined();
    expect(pages0 - vm.getStats().pages_4k!).toBe(100);
    expect(vm.getStats().remote_tlb_flush_requests).toBe(2);
    expect(v.access(BAR + 50 * 4096, 'read').exit).toBe('mmio');
  });

  it('a slot whose walk makes no progress (nothing mapped under it) never drops the lock', () => {
    const kvm = new Kvm();
    const vm = kvm.createVm(0);
    vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
    const bar = kvm.host.mmap(2 * MiB);
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR, memorySize: 2 * MiB, userspaceAddr: bar });
    vm.createVcpu(0);
    let ran = false;
    vm.onMmuLockDrop = () => void (ran = true);
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR, memorySize: 0 });
    expect([ran, vm.getStats().remote_tlb_flush_requests]).toEqual([false, 0]);
    vm.onMmuLockDrop = undefined;
  });
});
