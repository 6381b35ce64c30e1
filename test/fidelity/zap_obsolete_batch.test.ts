/**
 * arch/x86/kvm/mmu/mmu.c#kvm_zap_obsolete_pages (linux-next 6.19-rc5, as 6.18): zap-all-fast on the shadow
 * MMU walks active_mmu_pages from the oldest page and may drop mmu_lock (cond_resched_rwlock_write) only
 * after BATCH_ZAP_PAGES (10) zapped pages; the prepared pages stay on its local invalid list across the
 * drop, with no flush (every vCPU must load a new root first, and loading one flushes), and one
 * kvm_mmu_commit_zap_page at the end flushes once. The model committed (flushed) before every drop.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';

const MiB = 1 << 20;

describe('kvm_zap_obsolete_pages: lock break after a batch of 10, no flush before it', () => {
  it('EPT on the shadow MMU: the party sees 10 pages zapped (plus the active root) and no flush yet', () => {
    const kvm = new Kvm({ tdpMmu: false });
    const vm = kvm.createVm(0); // quirk on: DELETE is zap-all-fast
    const ram = kvm.host.mmap(64 * MiB);
    const bar = kvm.host.mmap(2 * MiB);
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 64 * MiB, userspaceAddr: ram });
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x1000_0000, memorySize: 2 * MiB, userspaceAddr: bar });
    const [v0, v1] = [vm.createVcpu(0), vm.createVcpu(1)];
    // One 4K page every 2 MiB: a level-1 direct page each (the slot is not 2M-aligned in the host).
    for (let i = 0; i < 32; i++) v0.access(i * 2 * MiB + 4096, 'read');
    v1.access(0x1000_0000, 'write');
    const z0 = vm.getStats().mmu_shadow_zapped!;
    const f0 = vm.getStats().remote_tlb_flush_requests!;
    const atDrop: unknown[] = [];
    vm.onMmuLockDrop = () => {
      const s = vm.getStats();
      atDrop.push(s.mmu_shadow_zapped! - z0, s.remote_tlb_flush_requests! - f0);
      // A vCPU running now frees its obsolete root and loads (and flushes) a new one before it translates.
      atDrop.push(v1.access(8 * MiB + 4096, 'read').exit);
    };
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x1000_0000, memorySize: 0 });
    expect(atDrop).toEqual([11, 0, 'none']);
    expect(vm.getModelStats().memslot_zap_all_fast).toBe(1);
    // One commit at the end. (v1 dropped the shared obsolete root in the party, but v0 still holds it, so
    // nothing was freed then.)
    expect(vm.getStats().remote_tlb_flush_requests! - f0).toBe(1);
  });
});
