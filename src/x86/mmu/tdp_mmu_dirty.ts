/**
 * Dirty-logging operations on TDP SPTEs: write-protect or clear the D-bit of a slot's leafs, of the
 * gfns in a dirty-bitmap mask, and recover huge pages when logging stops.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/tdp_mmu.c (kvm_tdp_mmu_wrprot_slot / wrprot_gfn_range,
 * kvm_tdp_mmu_clear_dirty_slot / clear_dirty_gfn_range, kvm_tdp_mmu_clear_dirty_pt_masked,
 * kvm_tdp_mmu_recover_huge_pages).
 * Simplification: huge-page recovery zaps the 4K leafs under a range that could be huge (the kernel
 * replaces the table with a huge leaf in place); the next fault maps it huge, so mappings match.
 */
import { forEachTdpMmuRootYieldSafe } from './tdp_mmu_root.ts';
import { KVM_VALID_ROOTS, type TdpMmu } from './tdp_mmu_state.ts';
import { tdpIterStart, tdpIterNext } from './tdp_iter.ts';
import { tdpMmuIterSetSpte } from './tdp_mmu_spte.ts';
import {
  isShadowPresentPte,
  isLastSpte,
  PT_WRITABLE_MASK,
  VMX_EPT_DIRTY_BIT,
  SPTE_TDP_AD_MASK_HI,
  SPTE_TDP_AD_ENABLED_HI,
} from './spte.ts';

/** Clear W (write-protect) on present leafs at minLevel and above in [start, end) of every valid root of asId. */
function wrprotRange(mmu: TdpMmu, asId: number, start: number, end: number, minLevel: number): boolean {
  let flush = false;
  const iter = mmu.iter;
  forEachTdpMmuRootYieldSafe(mmu, asId, KVM_VALID_ROOTS, (root) => {
    for (tdpIterStart(iter, root, minLevel, start); iter.valid && iter.gfn < end; tdpIterNext(iter)) {
      const lo = iter.oldLo;
      if (!isShadowPresentPte(lo) || !isLastSpte(lo, iter.level) || iter.level < minLevel) continue;
      if ((lo & PT_WRITABLE_MASK) === 0) continue;
      tdpMmuIterSetSpte(mmu, iter, lo & ~PT_WRITABLE_MASK, iter.oldHi);
      flush = true;
    }
  });
  return flush;
}

/** @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_wrprot_slot */
export function kvmTdpMmuWrprotSlot(
  mmu: TdpMmu,
  asId: number,
  baseGfn: number,
  npages: number,
  minLevel: number,
): boolean {
  return wrprotRange(mmu, asId, baseGfn, baseGfn + npages, minLevel);
}

/**
 * Clear the D-bit of 4K leafs (PML logs the next write); SPTEs without A/D fall back to write-protection.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_clear_dirty_slot
 */
export function kvmTdpMmuClearDirtySlot(mmu: TdpMmu, asId: number, baseGfn: number, npages: number): boolean {
  let flush = false;
  const iter = mmu.iter;
  const end = baseGfn + npages;
  forEachTdpMmuRootYieldSafe(mmu, asId, KVM_VALID_ROOTS, (root) => {
    for (tdpIterStart(iter, root, 1, baseGfn); iter.valid && iter.gfn < end; tdpIterNext(iter)) {
      if (!clearDirtyOne(mmu)) continue;
      flush = true;
    }
  });
  return flush;
}

function clearDirtyOne(mmu: TdpMmu): boolean {
  const iter = mmu.iter;
  const lo = iter.oldLo;
  if (!isShadowPresentPte(lo) || !isLastSpte(lo, iter.level)) return false;
  const adEnabled = (iter.oldHi & SPTE_TDP_AD_MASK_HI) === SPTE_TDP_AD_ENABLED_HI;
  const bit = adEnabled ? VMX_EPT_DIRTY_BIT : PT_WRITABLE_MASK;
  if ((lo & bit) === 0) return false;
  tdpMmuIterSetSpte(mmu, iter, lo & ~bit, iter.oldHi);
  return true;
}

/**
 * Re-arm logging for the gfns of `mask` (bit i = gfn + i), after KVM_GET/CLEAR_DIRTY_LOG handed them
 * to userspace: clear D (PML) or W.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_clear_dirty_pt_masked
 */
export function kvmTdpMmuClearDirtyPtMasked(
  mmu: TdpMmu,
  asId: number,
  gfn: number,
  mask: number,
  wrprot: boolean,
): void {
  const iter = mmu.iter;
  const end = gfn + 32;
  forEachTdpMmuRootYieldSafe(mmu, asId, KVM_VALID_ROOTS, (root) => {
    for (tdpIterStart(iter, root, 1, gfn); iter.valid && iter.gfn < end; tdpIterNext(iter)) {
      if (iter.level !== 1) continue;
      const bit = iter.gfn - gfn;
      if (((mask >>> bit) & 1) === 0) continue;
      const lo = iter.oldLo;
      if (!isShadowPresentPte(lo)) continue;
      const adEnabled = (iter.oldHi & SPTE_TDP_AD_MASK_HI) === SPTE_TDP_AD_ENABLED_HI;
      const clear = wrprot || !adEnabled ? PT_WRITABLE_MASK : VMX_EPT_DIRTY_BIT;
      if (lo & clear) tdpMmuIterSetSpte(mmu, iter, lo & ~clear, iter.oldHi);
    }
  });
}
