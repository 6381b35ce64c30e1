/**
 * Dirty-logging operations on TDP SPTEs: write-protect or clear the D-bit of a slot's leafs, of the
 * gfns in a dirty-bitmap mask, and, when logging stops, bring huge pages back: from 6.13 by replacing
 * each page table that could be a huge leaf with that leaf in place (recover_huge_pages_range), before
 * by zapping the table so the next fault maps huge (zap_collapsible_spte_range).
 *
 * Kernel counterpart: arch/x86/kvm/mmu/tdp_mmu.c (kvm_tdp_mmu_wrprot_slot / wrprot_gfn_range,
 * kvm_tdp_mmu_clear_dirty_slot / clear_dirty_gfn_range, kvm_tdp_mmu_clear_dirty_pt_masked,
 * kvm_tdp_mmu_recover_huge_pages / recover_huge_pages_range / tdp_mmu_make_huge_spte (v6.19-rc5),
 * kvm_tdp_mmu_zap_collapsible_sptes / zap_collapsible_spte_range (v6.12)).
 * Simplification: no NX huge pages (make_huge_spte clears shadow_nx_mask, 0 on EPT anyway).
 */
import { forEachTdpMmuRootYieldSafe } from './tdp_mmu_root.ts';
import { KVM_VALID_ROOTS, type TdpMmu } from './tdp_mmu_state.ts';
import {
  tdpIterStart,
  tdpIterNext,
  tdpIterReadSpte,
  tdpIterWriteSpte,
  spteToChildPt,
  TdpIter,
  PAGES_PER_LEVEL,
} from './tdp_iter.ts';
import { handleChangedSpte, tdpMmuIterSetSpte, tdpMmuSetSpteAtomic } from './tdp_mmu_spte.ts';
import { HI_OFFSET } from './sp_pool.ts';
import { tdpMmuIterCondResched } from './tdp_mmu.ts';
import {
  isShadowPresentPte,
  isLastSpte,
  PT_WRITABLE_MASK,
  VMX_EPT_DIRTY_BIT,
  SPTE_TDP_AD_MASK_HI,
  SPTE_TDP_AD_ENABLED_HI,
  PT_PAGE_SIZE_MASK,
  SPTE_BASE_ADDR_MASK_LO,
  SPTE_BASE_ADDR_MASK_HI,
  spteToPfn,
  pfnLo,
  pfnHi,
  FROZEN_SPTE_LO,
  FROZEN_SPTE_HI,
  SHADOW_NONPRESENT_LO,
  SHADOW_NONPRESENT_HI,
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

/** KVM_MAX_HUGEPAGE_LEVEL */
const MAX_HUGE_LEVEL = 3;
/** The recovery's inner iterator (tdp_root_for_each_leaf_pte over a child table), per page pool. */
const leafIters = new WeakMap<object, TdpIter>();

/**
 * The huge leaf that would replace the table under `parent`: the first present leaf below it, marked
 * huge, its address rounded down to the huge frame (the host maps the frame huge, so the pfns are
 * contiguous); its permissions, memtype and A/D bits carry over. False if the table maps nothing.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_make_huge_spte (with spte.c#make_huge_spte)
 */
function tdpMmuMakeHugeSpte(mmu: TdpMmu, parent: TdpIter, out: { lo: number; hi: number }): boolean {
  const child = spteToChildPt(parent.oldLo, parent.oldHi, parent.level);
  let it = leafIters.get(mmu.pool);
  if (it === undefined) leafIters.set(mmu.pool, (it = new TdpIter(mmu.pool)));
  const end = parent.gfn + PAGES_PER_LEVEL[parent.level]!;
  for (tdpIterStart(it, child, 1, parent.gfn); it.valid && it.gfn < end; tdpIterNext(it)) {
    if (!isShadowPresentPte(it.oldLo) || !isLastSpte(it.oldLo, it.level)) continue;
    const pfn = spteToPfn(it.oldLo, it.oldHi);
    const huge = pfn - (pfn % PAGES_PER_LEVEL[parent.level]!);
    out.lo = (it.oldLo & ~SPTE_BASE_ADDR_MASK_LO) | pfnLo(huge) | PT_PAGE_SIZE_MASK;
    out.hi = (it.oldHi & ~SPTE_BASE_ADDR_MASK_HI) | pfnHi(huge);
    return true;
  }
  return false;
}

/**
 * Is the SPTE under iter a present page table (not a leaf) at 2M or 1G whose range starts inside
 * [start, end)? Only those can become a huge leaf (a collapsible leaf's parent would have been taken
 * instead of stepping down to it; a range sticking out of the slot has no lpage_info entry).
 */
function collapsibleTable(iter: TdpIter, start: number, end: number): boolean {
  if (iter.level > MAX_HUGE_LEVEL || !isShadowPresentPte(iter.oldLo)) return false;
  if (isLastSpte(iter.oldLo, iter.level)) return false;
  return iter.gfn >= start && iter.gfn < end;
}

/**
 * 6.13+: replace every page table in [start, end) that could be a huge leaf (maxLevel(gfn) ≥ its level)
 * with that leaf, under mmu_lock for read; the tables below are freed as a zap frees them. Each root's
 * walk flushes what it owes itself (kvm_flush_remote_tlbs_memslot). Returns whether anything was replaced.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_recover_huge_pages
 */
export function kvmTdpMmuRecoverHugePages(
  mmu: TdpMmu,
  asId: number,
  start: number,
  end: number,
  maxLevel: (gfn: number) => number,
): boolean {
  let any = false;
  mmu.pool.rcuReclaim();
  forEachTdpMmuRootYieldSafe(mmu, asId, KVM_VALID_ROOTS, (root) => {
    if (recoverHugePagesRange(mmu, root, start, end, maxLevel)) any = true;
  });
  return any;
}

/** One root. @kernel arch/x86/kvm/mmu/tdp_mmu.c#recover_huge_pages_range */
function recoverHugePagesRange(
  mmu: TdpMmu,
  root: number,
  start: number,
  end: number,
  maxLevel: (gfn: number) => number,
): boolean {
  const iter = mmu.iter;
  const huge = { lo: 0, hi: 0 };
  let flush = false;
  let any = false;
  for (tdpIterStart(iter, root, 2, start); iter.valid && iter.gfn < end; tdpIterNext(iter)) {
    // A yield flushes what this loop owes first, so vCPUs never run on freed tables.
    if (tdpMmuIterCondResched(mmu, iter, flush)) {
      flush = false;
      continue;
    }
    if (!collapsibleTable(iter, start, end) || maxLevel(iter.gfn) < iter.level) continue;
    if (!tdpMmuMakeHugeSpte(mmu, iter, huge)) continue;
    // The model is single-threaded: the snapshot is current, so the atomic set cannot lose a race.
    if (tdpMmuSetSpteAtomic(mmu, iter, huge.lo, huge.hi) !== 0) continue;
    flush = any = true;
  }
  // Per root, and only what was replaced since the last yield (which flushed before dropping the lock).
  if (flush) mmu.env.flushRemoteTlbs?.(); // kvm_flush_remote_tlbs_memslot: a full flush on these hosts
  return any;
}

/**
 * Before 6.13: zap every page table in [start, end) that could be a huge leaf; the next fault maps the
 * range huge. Each zap flushes the gfn's range at once (tdp_mmu_zap_spte_atomic freezes the SPTE,
 * flushes, then clears it), so the caller owes nothing. Returns the number of tables zapped.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_zap_collapsible_sptes
 */
export function kvmTdpMmuZapCollapsibleSptes(
  mmu: TdpMmu,
  asId: number,
  start: number,
  end: number,
  maxLevel: (gfn: number) => number,
): number {
  let zapped = 0;
  mmu.pool.rcuReclaim();
  forEachTdpMmuRootYieldSafe(mmu, asId, KVM_VALID_ROOTS, (root) => {
    const iter = mmu.iter;
    for (tdpIterStart(iter, root, 2, start); iter.valid && iter.gfn < end; tdpIterNext(iter)) {
      if (tdpMmuIterCondResched(mmu, iter, false)) continue;
      if (!collapsibleTable(iter, start, end) || maxLevel(iter.gfn) < iter.level) continue;
      if (tdpMmuZapSpteAtomic(mmu, iter) !== 0) continue;
      zapped++;
    }
  });
  return zapped;
}

/**
 * Freeze the SPTE (other threads retry on it), flush the TLBs for its range, then clear it.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_zap_spte_atomic
 */
function tdpMmuZapSpteAtomic(mmu: TdpMmu, iter: TdpIter): number {
  const i = iter.base + iter.index;
  if (iter.arr[i] !== iter.oldLo || iter.arr[i + HI_OFFSET] !== iter.oldHi) {
    tdpIterReadSpte(iter); // __tdp_mmu_set_spte_atomic lost a race: -EBUSY with the snapshot refreshed
    return -16;
  }
  tdpIterWriteSpte(iter, FROZEN_SPTE_LO, FROZEN_SPTE_HI);
  // kvm_flush_remote_tlbs_gfn: no ranged flush on this host, so a full remote flush.
  mmu.env.flushRemoteTlbs?.();
  tdpIterWriteSpte(iter, SHADOW_NONPRESENT_LO, SHADOW_NONPRESENT_HI);
  // Processed after the flush and the clear, so vCPUs wait on the frozen SPTE as briefly as possible.
  handleChangedSpte(
    mmu,
    iter.asId,
    iter.gfn,
    iter.oldLo,
    iter.oldHi,
    SHADOW_NONPRESENT_LO,
    SHADOW_NONPRESENT_HI,
    iter.level,
    true,
  );
  return 0;
}
