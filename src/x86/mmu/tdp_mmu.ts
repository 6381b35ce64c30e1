/**
 * The TDP MMU engine's walks: the resched point, page-table link and huge-page split, the map primitive
 * the fault path installs SPTEs with, and the lookup walk of the guest-access path. Leaf and root zaps
 * are in tdp_mmu_zap.ts (re-exported here); SPTE writes and their bookkeeping in tdp_mmu_spte.ts; roots
 * (allocation, refcounts, invalidation, the all-roots entry points) in tdp_mmu_root.ts; the engine state
 * in tdp_mmu_state.ts.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/tdp_mmu.c. Functions take the engine state (what the kernel
 * reaches through struct kvm: kvm->arch.tdp_mmu_roots, tdp_mmu_pages, stats) plus plain values; the
 * engine knows nothing of memslots, vCPUs or the VM type.
 *
 * Simplifies: mmu_lock is asserted by the caller, not here; yields happen only when env.needResched says
 * so. No NX-huge-page tracking, no dirty logging, no eager splitting. The flush the kernel issues inline on
 * the map path (kvm_flush_remote_tlbs_gfn after a table became a huge leaf) is returned as TDP_MAP_FLUSH
 * for the caller to perform before its next engine call.
 */
import { isMirrorSp, ROLE_AD_DISABLED, ROLE_IS_MIRROR } from './mmu_internal.ts';
import {
  SPTE_MMU_PRESENT_MASK,
  PT_PAGE_SIZE_MASK,
  isFrozenSpte,
  isLargePte,
  isLastSpte,
  isShadowPresentPte,
  makeNonleafSpte,
  makeSmallSpte,
  spteToPfn,
  spteValue,
} from './spte.ts';
import {
  CHUNK_MASK,
  CHUNK_SHIFT,
  HI_OFFSET,
  SP_EXTERNAL_SPT,
  SPTE_ENT_PER_PAGE,
  TABLE_WORDS,
  spToPfn,
  childTableOf,
} from './sp_pool.ts';
import { INV_PAGES_PER_LEVEL, tdpIterNext, tdpIterStart, type TdpIter } from './tdp_iter.ts';
import { tdpMmuAllocSp, tdpMmuIterSetSpte, tdpMmuSetSpteAtomic } from './tdp_mmu_spte.ts';
import { EBUSY, kvmBugOn, warnOnce, type TdpMmu, type TdpMmuEnv } from './tdp_mmu_state.ts';

export { kvmTdpMmuZapSp, tdpMmuZapLeafs, tdpMmuZapRoot } from './tdp_mmu_zap.ts';

// ---- results of kvmTdpMmuMap: an outcome in bits 0-1, plus a flush request bit -----------------------
export const TDP_MAP_FIXED = 0;
export const TDP_MAP_SPURIOUS = 1;
export const TDP_MAP_RETRY = 2;
export const TDP_MAP_OUTCOME_MASK = 3;
/** A present non-leaf was replaced by the new leaf: flush [round(gfn, level), +pages(level)) now. */
export const TDP_MAP_FLUSH = 4;

/** @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_init_child_sp (with the allocation) */
function tdpMmuAllocChildSp(mmu: TdpMmu, iter: TdpIter): number {
  const parentRole = mmu.pool.role[iter.table]!;
  const role = ((parentRole & ~0xf) | ((parentRole & 0xf) - 1)) >>> 0;
  const sp = tdpMmuAllocSp(mmu, iter.table, iter.index, iter.gfn, role);
  // kvm_mmu_alloc_external_spt: a mirror table gets its S-EPT page before it is linked.
  if (role & ROLE_IS_MIRROR) mmu.pool.flags[sp]! |= SP_EXTERNAL_SPT;
  return sp;
}

/**
 * Yield if the scenario says the lock is contended (env.needResched), flushing first if a flush is owed:
 * TLB entries for zapped SPTEs must not survive into the window where mmu_lock is dropped.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_iter_cond_resched
 */
export function tdpMmuIterCondResched(mmu: TdpMmu, iter: TdpIter, flush: boolean): boolean {
  const needResched = mmu.env.needResched;
  if (needResched === undefined) return false;
  warnOnce(mmu, iter.yielded, 'cond_resched on a yielded iterator');
  // Forward progress: never yield twice at the same gfn.
  if (iter.nextLastLevelGfn === iter.yieldedGfn || !needResched()) return false;
  if (flush) mmu.env.flushRemoteTlbs?.();
  mmu.yields++;
  const env = mmu.env;
  if (env.onYield !== undefined) runWhileYielded(iter, env);
  iter.yielded = true;
  return true;
}

/**
 * mmu_lock is dropped: run the waiting party (env.onYield), which may walk with the engine's (shared) iterator, then put back
 * what tdp_iter_restart needs to resume this walk from its root at next_last_level_gfn.
 */
function runWhileYielded(iter: TdpIter, env: TdpMmuEnv): void {
  const { nextLastLevelGfn, rootLevel, minLevel, asId } = iter;
  const root = iter.ptPath[rootLevel - 1]!;
  env.onYield!(nextLastLevelGfn); // (called on env: the hook may be a method)
  iter.nextLastLevelGfn = nextLastLevelGfn;
  iter.rootLevel = rootLevel;
  iter.minLevel = minLevel;
  iter.asId = asId;
  iter.ptPath[rootLevel - 1] = root;
  iter.table = -1;
}

/** @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_link_sp */
function tdpMmuLinkSp(mmu: TdpMmu, iter: TdpIter, sp: number, shared: boolean): number {
  const s = makeNonleafSpte(mmu.scratch, spToPfn(sp), (mmu.pool.role[sp]! & ROLE_AD_DISABLED) !== 0);
  if (shared) {
    const ret = tdpMmuSetSpteAtomic(mmu, iter, s.lo, s.hi);
    if (ret !== 0) return ret;
  } else {
    tdpMmuIterSetSpte(mmu, iter, s.lo, s.hi);
  }
  mmu.tdpMmuPages++; // tdp_account_mmu_page
  return 0;
}

/**
 * Replace the huge leaf under the iterator with a table of 512 leafs mapping the same memory, one level
 * down. The children are written before the table is linked, so no walker sees a half-built table.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_split_huge_page
 */
function tdpMmuSplitHugePage(mmu: TdpMmu, iter: TdpIter, sp: number, shared: boolean): number {
  const hugeLo = iter.oldLo;
  const hugeHi = iter.oldHi;
  const level = iter.level;
  // S-EPT has no huge pages in this model's TDX, so a mirror huge leaf cannot exist to be split.
  if (kvmBugOn(mmu, isMirrorSp(mmu.pool, iter.table), 'huge page split on a mirror root')) return EBUSY;
  const pool = mmu.pool;
  const arr = pool.chunks[sp >>> CHUNK_SHIFT]!;
  const base = (sp & CHUNK_MASK) * TABLE_WORDS;
  const exec = mmu.nxHugePages && ((pool.role[sp]! >>> 8) & 1) !== 0;
  const s = mmu.scratch;
  for (let i = 0; i < SPTE_ENT_PER_PAGE; i++) {
    makeSmallSpte(s, hugeLo, hugeHi, level - 1, i, exec);
    arr[base + i] = s.lo;
    arr[base + HI_OFFSET + i] = s.hi;
  }
  const ret = tdpMmuLinkSp(mmu, iter, sp, shared);
  // Linking accounted the huge leaf going away; the 512 new leafs are accounted here.
  if (ret === 0) {
    mmu.pages[level - 2]! += SPTE_ENT_PER_PAGE;
    mmu.hugePagesSplit++;
  }
  if (mmu.trace || mmu.recorder) {
    const ev = {
      name: 'kvm_mmu_split_huge_page' as const,
      gfn: iter.gfn,
      spte: spteValue(hugeLo, hugeHi),
      level,
      errno: ret,
    };
    mmu.trace?.(ev);
    mmu.recorder?.event(ev);
  }
  return ret;
}

/** @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_map_handle_target_level */
function tdpMmuMapHandleTargetLevel(
  mmu: TdpMmu,
  iter: TdpIter,
  newLo: number,
  newHi: number,
  needed: number,
): number {
  const oldLo = iter.oldLo;
  // is_access_allowed: another vCPU already installed a leaf that allows this access (the fault raced
  // with it). Leave it as it is: replacing it could drop a Dirty bit or log the gfn dirty again.
  if (
    needed !== 0 &&
    isShadowPresentPte(oldLo) &&
    (oldLo & needed) === needed &&
    isLastSpte(oldLo, iter.level)
  ) {
    warnOnce(
      mmu,
      spteToPfn(oldLo, iter.oldHi) !== spteToPfn(newLo, newHi),
      'spurious fault: the leaf maps another pfn',
    );
    return TDP_MAP_SPURIOUS;
  }
  if (newLo === oldLo && newHi === iter.oldHi) return TDP_MAP_SPURIOUS;
  if (tdpMmuSetSpteAtomic(mmu, iter, newLo, newHi) !== 0) return TDP_MAP_RETRY;
  // A page table became a huge leaf: vCPUs may still hold translations through the old tables.
  if (isShadowPresentPte(oldLo) && !isLastSpte(oldLo, iter.level)) return TDP_MAP_FIXED | TDP_MAP_FLUSH;
  return TDP_MAP_FIXED;
}

/**
 * Install the SPTE (newLo, newHi) — a leaf from makeSpte, or an MMIO SPTE — at `goalLevel` for `gfn` in
 * `root`, as the fault path does with mmu_lock held for read: step down through existing tables, link
 * new ones where the walk finds nothing, split a huge leaf that covers the goal, and at the goal level
 * set the SPTE. `needed` holds the SPTE bits the fault needs (R, W or X; 0: not a fault, no check): a
 * present leaf that already has them is left alone (spurious). Returns TDP_MAP_FIXED / _SPURIOUS /
 * _RETRY, OR-ed with TDP_MAP_FLUSH when a present table was replaced by a huge leaf (the caller must
 * flush that gfn range at goalLevel).
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_map
 */
export function kvmTdpMmuMap(
  mmu: TdpMmu,
  root: number,
  gfn: number,
  goalLevel: number,
  newLo: number,
  newHi: number,
  needed = 0,
): number {
  mmu.pool.rcuReclaim();
  const iter = mmu.iter;
  for (tdpIterStart(iter, root, 1, gfn); iter.valid && iter.gfn < gfn + 1; tdpIterNext(iter)) {
    // Another thread froze this SPTE: give up rather than allocate and free a table.
    if (isFrozenSpte(iter.oldLo, iter.oldHi)) return TDP_MAP_RETRY;
    if (iter.level === goalLevel) return tdpMmuMapHandleTargetLevel(mmu, iter, newLo, newHi, needed);
    if (isShadowPresentPte(iter.oldLo) && !isLargePte(iter.oldLo)) continue; // step down
    const sp = tdpMmuAllocChildSp(mmu, iter);
    const r = isShadowPresentPte(iter.oldLo)
      ? tdpMmuSplitHugePage(mmu, iter, sp, true)
      : tdpMmuLinkSp(mmu, iter, sp, true);
    if (r !== 0) {
      mmu.pool.freeNow(sp); // never linked: no reader can hold it
      mmu.spFreed++;
      return TDP_MAP_RETRY;
    }
  }
  warnOnce(mmu, true, 'kvm_tdp_mmu_map: walk ended above the goal level');
  return TDP_MAP_RETRY;
}

/** The last SPTE a lookup walk reached, and its level. */
export interface TdpWalkResult {
  lo: number;
  hi: number;
  level: number;
  /** Where that SPTE's low word lives (the walk's sptep), for the CPU's in-place A/D updates. */
  sptep?: Int32Array;
  word?: number;
}

/**
 * Walk `root` for `gfn` down to the last SPTE (a leaf or a non-present entry) and report it; true if a
 * present leaf maps the gfn. This is the guest-access path's translation.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_get_walk
 */
export function kvmTdpMmuGetWalk(mmu: TdpMmu, root: number, gfn: number, out: TdpWalkResult): boolean {
  const chunks = mmu.pool.chunks;
  let t = root;
  let level = mmu.pool.role[root]! & 0xf;
  for (;;) {
    const arr = chunks[t >>> CHUNK_SHIFT]!;
    const i = (t & CHUNK_MASK) * TABLE_WORDS + ((gfn * INV_PAGES_PER_LEVEL[level]!) & 511);
    const lo = arr[i]!;
    const hi = arr[i + HI_OFFSET]!;
    const present = (lo & SPTE_MMU_PRESENT_MASK) !== 0;
    if (!present || level === 1 || (lo & PT_PAGE_SIZE_MASK) !== 0) {
      out.lo = lo;
      out.hi = hi;
      out.level = level;
      out.sptep = arr;
      out.word = i;
      return present;
    }
    t = childTableOf(lo, hi);
    level--;
  }
}

/**
 * Rewrite the low word of the SPTE a walk ended on, in place: the CPU's Accessed/Dirty assists and
 * fast_page_fault's cmpxchg that restores W on a write-protected leaf. Neither changes the pfn or
 * presence, so there is no page-stat or handle_changed_spte bookkeeping.
 * @kernel arch/x86/kvm/mmu/mmu.c#fast_pf_fix_direct_spte
 */
export function tdpMmuWriteWalkedSpteLo(walk: TdpWalkResult, lo: number): number {
  walk.sptep![walk.word!] = lo | 0;
  walk.lo = lo | 0;
  return lo;
}
