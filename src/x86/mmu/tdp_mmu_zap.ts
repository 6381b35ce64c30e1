/**
 * TDP MMU zapping: zap the leafs of a gfn range in one root, zap a whole root in bounded passes
 * (4K → 2M → 1G → root level), and zap one page table through its parent SPTE. A 4K table's run of leafs
 * is zapped in one tight loop when nothing can observe the individual zaps.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/tdp_mmu.c (tdp_mmu_zap_leafs, tdp_mmu_zap_root,
 * kvm_tdp_mmu_zap_sp). The all-roots entry points that call these are in tdp_mmu_root.ts; the resched
 * point (tdp_mmu_iter_cond_resched) in tdp_mmu.ts.
 *
 * Simplifies: mmu_lock is asserted by the caller, not here; yields happen only when env.needResched says so.
 */
import { spGfn, spLevel, isMirrorSp, ROLE_INVALID } from './mmu_internal.ts';
import {
  SHADOW_NONPRESENT_HI,
  SHADOW_NONPRESENT_LO,
  SPTE_MMU_PRESENT_MASK,
  PT_PAGE_SIZE_MASK,
  isShadowPresentPte,
} from './spte.ts';
import { HI_OFFSET, SPTE_ENT_PER_PAGE } from './sp_pool.ts';
import { tdpIterNext, tdpIterSkipNonPresent, tdpIterStart, type TdpIter } from './tdp_iter.ts';
import { tdpMmuIterCondResched } from './tdp_mmu.ts';
import { tdpMmuIterSetSpte, tdpMmuSetSpte, tdpMmuSetSpteAtomic } from './tdp_mmu_spte.ts';
import { warnOnce, type TdpMmu } from './tdp_mmu_state.ts';
import { pairsOf, skipZeroQuads } from './spte_scan.ts';

/**
 * Zap every present leaf SPTE mapping [start, end) in one root; non-leaf tables stay. Returns whether a
 * TLB flush is owed: only zaps in a valid root need one (an invalid root is unreachable by vCPUs, and
 * loading a new root flushes).
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_zap_leafs
 */
export function tdpMmuZapLeafs(
  mmu: TdpMmu,
  root: number,
  start: number,
  end: number,
  canYield = true,
  flush = false,
): boolean {
  end = Math.min(end, mmu.maxGfnExclusive);
  const invalid = (mmu.pool.role[root]! & ROLE_INVALID) !== 0;
  const batch = canBatchLeafZaps(mmu, root);
  const iter = mmu.iter;
  let walked = 0;
  for (tdpIterStart(iter, root, 1, start); iter.valid && iter.gfn < end; tdpIterNext(iter)) {
    if (batch && iter.level === 1) {
      walked -= iter.index;
      if (tdpMmuZapLeafTableRun(mmu, iter, end) !== 0 && !invalid) flush = true;
      walked += iter.index + 1;
      continue;
    }
    walked++;
    if (canYield && tdpMmuIterCondResched(mmu, iter, flush)) {
      flush = false;
      continue;
    }
    const lo = iter.oldLo;
    if ((lo & SPTE_MMU_PRESENT_MASK) === 0 || (iter.level !== 1 && (lo & PT_PAGE_SIZE_MASK) === 0)) continue;
    tdpMmuIterSetSpte(mmu, iter, SHADOW_NONPRESENT_LO, SHADOW_NONPRESENT_HI);
    if (!invalid) flush = true;
  }
  mmu.sptesWalked += walked;
  return flush;
}

/**
 * Nothing can observe individual 4K leaf zaps but the numeric recorder (which the batched run feeds
 * leaf by leaf): no trace sink, no yield hook, not a mirror root.
 */
function canBatchLeafZaps(mmu: TdpMmu, root: number): boolean {
  return mmu.trace === undefined && !mayYield(mmu, root) && !isMirrorSp(mmu.pool, root);
}

/** Can a resched point of a walk over `root` yield (a hook is set and does not rule the root out)? */
function mayYield(mmu: TdpMmu, root: number): boolean {
  const env = mmu.env;
  return env.needResched !== undefined && env.mayYieldIn?.(root) !== false;
}

/**
 * Zap the present leafs of the rest of the 4K table under the iterator (entries below `end`) in one tight
 * loop, leaving the iterator on the last entry handled. This visits the same SPTEs in the same order with
 * the same effect as one tdpMmuIterSetSpte per entry — a present 4K leaf going non-present moves only
 * pages_4k and the zap counter — and is taken only when canBatchLeafZaps. Returns the leafs zapped.
 */
function tdpMmuZapLeafTableRun(mmu: TdpMmu, iter: TdpIter, end: number): number {
  const arr = iter.arr;
  const base = iter.base;
  const first = iter.index;
  const last = Math.min(SPTE_ENT_PER_PAGE, first + (end - iter.gfn)) - 1;
  const lastLo = arr[base + last]!;
  const lastHi = arr[base + HI_OFFSET + last]!;
  const hiBase = base + HI_OFFSET;
  let zapped = 0;
  const rec = mmu.recorder;
  const pairs = pairsOf(arr);
  // the end of the whole groups of 8 entries up to last, as an index of pairs
  const kStop = (base + ((last + 1) & ~7)) >>> 1;
  for (let i = first; i <= last; i++) {
    // Most entries of a table being zapped are empty: step over eight at a time while none is present,
    // reading their low words as four doubles (spte_scan.ts#pairsOf; base is even, i a multiple of 8).
    // A double is 0 only when both words are 0 or the upper one 0x80000000 (-0): no present bit either
    // way; any other group is looked at entry by entry.
    if ((i & 7) === 0) {
      i = 2 * skipZeroQuads(pairs, (base + i) >>> 1, kStop) - base;
      if (i > last) break;
    }
    if ((arr[base + i]! & SPTE_MMU_PRESENT_MASK) !== 0) {
      // kvm_tdp_mmu_spte_changed, in the order the per-entry path would record it
      if (rec !== undefined)
        rec.spteChanged(
          iter.asId,
          iter.gfn + (i - first),
          1,
          arr[base + i]!,
          arr[hiBase + i]!,
          SHADOW_NONPRESENT_LO,
          SHADOW_NONPRESENT_HI,
        );
      arr[base + i] = SHADOW_NONPRESENT_LO;
      arr[hiBase + i] = SHADOW_NONPRESENT_HI;
      zapped++;
    }
  }
  mmu.pages[0]! -= zapped;
  mmu.sptesZapped[0]! += zapped;
  mmu.leafsZapped[0]! += zapped;
  iter.gfn += last - first;
  iter.nextLastLevelGfn = iter.gfn;
  iter.index = last;
  iter.oldLo = lastLo;
  iter.oldHi = lastHi;
  return zapped;
}

/** One pass of tdp_mmu_zap_root: zap present SPTEs at zapLevel and below (children go recursively). */
function tdpMmuZapRootLevel(mmu: TdpMmu, root: number, shared: boolean, zapLevel: number): void {
  const iter = mmu.iter;
  const end = mmu.maxGfnExclusive;
  const batch = zapLevel === 1 && canBatchLeafZaps(mmu, root);
  // without resched points that can yield, runs of empty SPTEs are stepped over at once (same walk,
  // same count)
  const skip = !mayYield(mmu, root);
  let walked = 0;
  for (tdpIterStart(iter, root, zapLevel, 0); iter.valid && iter.gfn < end; tdpIterNext(iter)) {
    if (batch && iter.level === 1) {
      walked -= iter.index;
      tdpMmuZapLeafTableRun(mmu, iter, end);
      walked += iter.index + 1;
      continue;
    }
    walked++;
    if (tdpMmuIterCondResched(mmu, iter, false)) continue;
    if (!isShadowPresentPte(iter.oldLo)) {
      if (skip) walked += tdpIterSkipNonPresent(iter, end);
      continue;
    }
    if (iter.level > zapLevel) continue;
    if (!shared) {
      tdpMmuIterSetSpte(mmu, iter, SHADOW_NONPRESENT_LO, SHADOW_NONPRESENT_HI);
      continue;
    }
    // A failed cmpxchg refreshed the snapshot: retry while the SPTE is still present (the kernel's
    // `goto retry`); a mirror SPTE under the shared lock fails for good, already KVM_BUG_ON'd.
    while (tdpMmuSetSpteAtomic(mmu, iter, SHADOW_NONPRESENT_LO, SHADOW_NONPRESENT_HI) !== 0) {
      if (mmu.bugged || !isShadowPresentPte(iter.oldLo)) break;
    }
  }
  mmu.sptesWalked += walked;
}

/**
 * Zap a whole root (invalid roots, VM teardown), in passes 4K → 2M → 1G → root level so each step's
 * latency stays bounded. No TLB flush: the root is unreachable once vCPUs reload.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_zap_root
 */
export function tdpMmuZapRoot(mmu: TdpMmu, root: number, shared: boolean): void {
  // The root must stay reachable by mmu_notifiers while it is zapped, so it must hold a reference.
  warnOnce(mmu, mmu.pool.rootCount[root]! === 0, 'tdp_mmu_zap_root on a root with no reference');
  if (!mmu.proveMmu) {
    tdpMmuZapRootLevel(mmu, root, shared, 1);
    tdpMmuZapRootLevel(mmu, root, shared, 2);
  }
  tdpMmuZapRootLevel(mmu, root, shared, 3);
  tdpMmuZapRootLevel(mmu, root, shared, mmu.pool.role[root]! & 0xf);
}

/**
 * Zap the page table `sp` through its parent SPTE (sp->ptep); roots have none.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_zap_sp
 */
export function kvmTdpMmuZapSp(mmu: TdpMmu, sp: number): boolean {
  const pool = mmu.pool;
  const parent = pool.parent[sp]!;
  if (warnOnce(mmu, parent < 0, 'kvm_tdp_mmu_zap_sp on a root')) return false;
  const index = pool.parentIndex[sp]!;
  const lo = pool.readLo(parent, index);
  const hi = pool.readHi(parent, index);
  if (warnOnce(mmu, !isShadowPresentPte(lo), 'kvm_tdp_mmu_zap_sp: parent SPTE not present')) return false;
  const asId = (pool.role[sp]! >>> 24) & 0xff ? 1 : 0;
  tdpMmuSetSpte(
    mmu,
    asId,
    parent,
    index,
    lo,
    hi,
    SHADOW_NONPRESENT_LO,
    SHADOW_NONPRESENT_HI,
    spGfn(pool, sp),
    spLevel(pool, sp) + 1,
  );
  return true;
}
