/**
 * What the shadow MMU does when a memslot changes or is logged: the precise zap of a deleted or moved
 * slot (its leafs through the rmaps, then the pages that shadow guest tables inside it), range unmaps
 * for notifiers and kvm_zap_gfn_range, and dirty logging's write-protection and collapsible-SPTE zap.
 * The page lifecycle (hash, prepare/commit zap, zap-all-fast, roots) stays in shadow_mmu.ts.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/mmu.c (kvm_mmu_zap_memslot, kvm_mmu_zap_memslot_pages_and_flush,
 * kvm_unmap_gfn_range, kvm_rmap_zap_gfn_range, kvm_rmap_zap_collapsible_sptes,
 * kvm_mmu_write_protect_pt_masked), arch/x86/kvm/x86.c#kvm_mmu_slot_apply_flags.
 * Simplifications: see shadow_mmu.ts and shadow_rmap.ts (one address space; the rmap walks yield to a
 * waiting party only where simplifications.md says).
 */
import type { KvmGfnRange, KvmMemorySlot } from '../../kvm/kvm_host.ts';
import {
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  KVM_DIRTY_LOG_INITIALLY_SET,
  type KvmMrChange,
} from '../../uapi/kvm.ts';
import {
  rmapEntriesInRange,
  rmapRemoveWriteAccess,
  rmapWriteProtectGfn,
  type ShadowPage,
} from './shadow_rmap.ts';
import { kvmMmuMaxMappingLevel } from './page_fault.ts';
import type { ShadowMmu } from './shadow_mmu.ts';

/** @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_zap_memslot */
export function kvmMmuZapMemslot(mmu: ShadowMmu, slot: KvmMemorySlot): void {
  let flush = mmu.kvmUnmapGfnRange({
    slot,
    start: slot.baseGfn,
    end: (slot.baseGfn + slot.npages) as typeof slot.baseGfn,
    attrFilter: 3,
    mayBlock: true,
  });
  // A resched in the rmap walk flushes before it drops mmu_lock (flush_on_yield).
  // BUG shadow-2019-precise-zap: v5.1 walked with lock_flush_tlb=false, so vCPUs kept translating the
  // zapped SPTEs while the lock was dropped ("definitely a bug", Sean, Jul 2020).
  flush = mmu.vm.mmuLockYield(flush, !mmu.bug2019PreciseZap);
  kvmMmuZapMemslotPagesAndFlush(mmu, slot, flush);
}

/**
 * Zap the shadow pages that shadow guest tables inside the slot (their accounting lives in the slot),
 * then commit or flush. With the 2019 bug switch: every valid page, direct or not, whose base gfn is
 * in the slot — which misses pages covering the slot from a base gfn below it.
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_zap_memslot_pages_and_flush
 */
function kvmMmuZapMemslotPagesAndFlush(mmu: ShadowMmu, slot: KvmMemorySlot, flush: boolean): void {
  if (mmu.active.size === 0) {
    if (flush) mmu.vm.flushRemoteTlbs();
    return;
  }
  // BUG shadow-leafs-only-zap: 6.12-rc1 stopped after the leafs, so pages with gPTEs outlive the slot.
  if (mmu.bugLeafsOnlyZap) {
    if (flush) mmu.vm.flushRemoteTlbs();
    return;
  }
  const list: ShadowPage[] = [];
  const end = slot.baseGfn + slot.npages;
  // The kernel loops over every gfn of the slot and its hash bucket; walking the (smaller) active list
  // with the same predicate selects the same pages.
  for (const sp of [...mmu.active]) {
    if (sp.gfn < slot.baseGfn || sp.gfn >= end || mmu.isObsoleteSp(sp)) continue;
    if (mmu.bug2019PreciseZap || sp.hasGptes) mmu.prepareZapPage(sp, list);
  }
  mmu.remoteFlushOrZap(list, flush);
}

/** Drop every leaf SPTE of [start, end) found through the slot's rmaps, at every level. @kernel arch/x86/kvm/mmu/mmu.c#kvm_unmap_gfn_range */
export function kvmUnmapGfnRange(mmu: ShadowMmu, range: KvmGfnRange): boolean {
  const sps: ShadowPage[] = [];
  const is: number[] = [];
  const n = rmapEntriesInRange(range.slot, range.start, range.end, sps, is);
  for (let k = 0; k < n; k++) mmu.dropSpte(sps[k]!, is[k]!); // kvm_zap_rmap
  return n > 0;
}

/**
 * kvm_zap_gfn_range's rmap half: the same drop in every memslot that intersects [start, end), in every
 * address space (kvm_arch_nr_memslot_as_ids); true if something was dropped (the caller flushes).
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_rmap_zap_gfn_range
 */
export function kvmRmapZapGfnRange(mmu: ShadowMmu, start: number, end: number): boolean {
  let flush = false;
  for (let as = 0; as < mmu.vm.nrAs; as++) {
    for (const slot of [...mmu.vm.activeMemslots(as).inGfnRange(start, end)]) {
      const lo = Math.max(start, slot.baseGfn) as typeof slot.baseGfn;
      const hi = Math.min(end, slot.baseGfn + slot.npages) as typeof slot.baseGfn;
      if (mmu.kvmUnmapGfnRange({ slot, start: lo, end: hi, attrFilter: 3, mayBlock: true })) flush = true;
    }
  }
  return flush;
}

/** @kernel arch/x86/kvm/x86.c#kvm_mmu_slot_apply_flags */
export function kvmMmuSlotApplyFlags(
  mmu: ShadowMmu,
  old: KvmMemorySlot | null,
  nu: KvmMemorySlot | null,
  change: KvmMrChange,
): void {
  if (change !== 'FLAGS_ONLY' || nu === null || nu.flags & KVM_MEM_READONLY) return;
  const was = (old!.flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0;
  const now = (nu.flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0;
  if (was === now) return;
  if (!now) {
    mmu.kvmRmapZapCollapsibleSptes(nu); // kvm_mmu_recover_huge_pages' rmap half (all versions)
    return;
  }
  if (mmu.vm.manualDirtyLogProtect & KVM_DIRTY_LOG_INITIALLY_SET) return;
  // kvm_mmu_slot_remove_write_access from 4K up through the rmaps, then an unconditional flush ("a
  // flush is almost always going to be necessary", and it lets the helpers skip the subtle checks).
  rmapRemoveWriteAccess(nu);
  mmu.vm.flushRemoteTlbs();
}

/**
 * Dirty logging stopped: drop every leaf of a direct page that could now be mapped at the page's own
 * level or higher, so the next fault maps it huge; one flush for the slot. Indirect pages follow the
 * guest's own 4K mappings and stay. Rmaps at 4K and 2M (KVM_MAX_HUGEPAGE_LEVEL - 1) are walked.
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_rmap_zap_collapsible_sptes (kvm_mmu_zap_collapsible_spte)
 */
export function kvmRmapZapCollapsibleSptes(mmu: ShadowMmu, slot: KvmMemorySlot): void {
  let flush = false;
  const sps: ShadowPage[] = [];
  const is: number[] = [];
  const n = rmapEntriesInRange(slot, slot.baseGfn, slot.baseGfn + slot.npages, sps, is);
  for (let k = 0; k < n; k++) {
    const sp = sps[k]!;
    if (!sp.direct || sp.level >= kvmMmuMaxMappingLevel(mmu.vm, slot, sp.gfn)) continue;
    mmu.dropSpte(sp, is[k]!); // kvm_zap_one_rmap_spte
    flush = true; // no ranged flush on this host: need_tlb_flush, one flush at the end
  }
  if (flush) mmu.vm.flushRemoteTlbs(); // kvm_flush_remote_tlbs_memslot
}

/** Write-protect the logged pages again. @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_write_protect_pt_masked */
export function kvmArchMmuEnableLogDirtyPtMasked(
  mmu: ShadowMmu,
  slot: KvmMemorySlot,
  gfnOffset: number,
  mask: number,
): void {
  for (let b = 0; b < 32; b++) if ((mask >>> b) & 1) rmapWriteProtectGfn(slot, slot.baseGfn + gfnOffset + b);
}
