/**
 * KVM's MMU notifier: host mm events → the gfn ranges of every overlapping memslot in every address
 * space → kvm_unmap_gfn_range, bracketed by the mmu_invalidate_* protocol that makes racing faults retry.
 *
 * Kernel counterpart: virt/kvm/kvm_main.c (kvm_mmu_notifier_invalidate_range_start/end,
 * kvm_handle_hva_range, kvm_mmu_notifier_release, kvm_mmu_invalidate_begin/end).
 * Simplification: age/test-young are not modelled (they change no mapping the model reports).
 */
import type { MmuNotifier, MmuNotifierEvent } from '../host/host_mm.ts';
import { KVM_FILTER_SHARED } from './kvm_host.ts';
import type { VmState } from './vm_state.ts';

const PAGE = 4096;

export class KvmMmuNotifier implements MmuNotifier {
  /** Ranges whose start found a memslot (and so ran kvm_mmu_invalidate_begin); end must pair with it. */
  private readonly begun: string[] = [];

  constructor(private readonly vm: VmState) {}

  /**
   * `blockable` is mmu_notifier_range_blockable(range): the zap may drop mmu_lock to reschedule only in
   * a blockable range (may_block). Every host event the model has is blockable; the one non-blocking
   * caller, the OOM reaper, is not modelled.
   * @kernel virt/kvm/kvm_main.c#kvm_mmu_notifier_invalidate_range_start
   */
  invalidateRangeStart(start: number, end: number, _event: MmuNotifierEvent, blockable = true): void {
    const vm = this.vm;
    // Memslot swaps wait for this count to drop, so no slot can change under the invalidation.
    vm.mnActiveInvalidateCount++;
    let flush = false;
    let begun = false;
    for (let as = 0; as < vm.nrAs; as++) {
      for (const slot of vm.activeMemslots(as).hvaRange(start, end)) {
        const hs = Math.max(start, slot.userspaceAddr);
        const he = Math.min(end, slot.userspaceAddr + slot.npages * PAGE);
        const gs = slot.baseGfn + Math.floor((hs - slot.userspaceAddr) / PAGE);
        const ge = slot.baseGfn + Math.ceil((he - slot.userspaceAddr) / PAGE);
        if (!begun) {
          // kvm_mmu_invalidate_begin runs once, on the first overlapping slot (the on_lock hook).
          vm.mmuInvalidateBegin();
          begun = true;
        }
        // Host mm events only affect shared (hva-backed) mappings; guest_memfd pages are not in the mm.
        flush = vm.kvmMmuUnmapGfnRange(slot, gs, ge, KVM_FILTER_SHARED, blockable) || flush;
      }
    }
    if (begun) this.begun.push(`${start}:${end}`);
    if (flush) vm.flushRemoteTlbs();
    // Found a memslot, so guest memory was reclaimed (after mmu_lock is dropped: it is slow on SEV).
    if (begun) vm.kvmArchGuestMemoryReclaimed();
  }

  /** @kernel virt/kvm/kvm_main.c#kvm_mmu_notifier_invalidate_range_end */
  invalidateRangeEnd(start: number, end: number, _event: MmuNotifierEvent): void {
    // kvm_mmu_invalidate_end runs only if the start found a memslot (no slot can have appeared since:
    // swaps wait for mn_active_invalidate_count).
    const i = this.begun.indexOf(`${start}:${end}`);
    if (i >= 0) {
      this.begun.splice(i, 1);
      this.vm.mmuInvalidateEnd();
    }
    this.vm.mnActiveInvalidateCount--;
  }

  /** @kernel virt/kvm/kvm_main.c#kvm_mmu_notifier_release (kvm_flush_shadow_all) */
  release(): void {
    this.vm.mmu.kvmArchFlushShadowAll();
    this.vm.kvmArchGuestMemoryReclaimed();
  }
}
