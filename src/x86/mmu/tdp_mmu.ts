/**
 * The TDP MMU engine: SPTE writes and their bookkeeping, page-table link/split/teardown, leaf and root
 * zaps, the map primitive the fault path installs leafs with, and a lookup walk. Roots (allocation,
 * refcounts, invalidation, the all-roots entry points) are in tdp_mmu_root.ts.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/tdp_mmu.c. Functions take the engine state (what the kernel
 * reaches through struct kvm: kvm->arch.tdp_mmu_roots, tdp_mmu_pages, stats) plus plain values; the
 * engine knows nothing of memslots, vCPUs or the VM type.
 *
 * Simplifies: one thread, so every cmpxchg succeeds unless the SPTE changed since the snapshot and
 * "shared" (mmu_lock for read) only selects the kernel's shared-mode code paths (atomic sets, freezing
 * every entry of a removed table); mmu_lock itself is asserted by the caller. No A/D writeback to struct
 * page, no NX-huge-page tracking, no dirty logging here. Flushes the kernel issues inline on the map path
 * (kvm_flush_remote_tlbs_gfn) are returned as TDP_MAP_FLUSH for the caller to perform.
 */
import { ModelCorruption } from '../../kvm/model_corruption.ts';
import {
  spGfn,
  spLevel,
  isMirrorSp,
  ROLE_AD_DISABLED,
  ROLE_INVALID,
  ROLE_IS_MIRROR,
} from './mmu_internal.ts';
import {
  FROZEN_SPTE_HI,
  FROZEN_SPTE_LO,
  SHADOW_NONPRESENT_HI,
  SHADOW_NONPRESENT_LO,
  SPTE_MMU_PRESENT_MASK,
  PT_PAGE_SIZE_MASK,
  EPT_SPTE_HOST_WRITABLE_HI,
  EPT_SPTE_MMU_WRITABLE_HI,
  PT_WRITABLE_MASK,
  isFrozenSpte,
  isLargePte,
  isLastSpte,
  isMmioSpte,
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
  SP_SCHEDULED_ROOT_TO_ZAP,
  SPTE_ENT_PER_PAGE,
  TABLE_WORDS,
  spToPfn,
  childTableOf,
} from './sp_pool.ts';
import { PAGES_PER_LEVEL, tdpIterNext, tdpIterStart, tdpIterWriteSpte, type TdpIter } from './tdp_iter.ts';
import type { MmuTraceEvent } from './mmu_trace.ts';
import { EBUSY, kvmBugOn, warnOnce, type TdpMmu } from './tdp_mmu_state.ts';

// ---- results of kvmTdpMmuMap: an outcome in bits 0-1, plus a flush request bit -----------------------
export const TDP_MAP_FIXED = 0;
export const TDP_MAP_SPURIOUS = 1;
export const TDP_MAP_RETRY = 2;
export const TDP_MAP_OUTCOME_MASK = 3;
/** A present non-leaf was replaced by the new leaf: flush [round(gfn, level), +pages(level)) now. */
export const TDP_MAP_FLUSH = 4;

/** KVM_MMU_PAGE_FIELDS of table `sp`, for kvm_mmu_get_page / kvm_mmu_prepare_zap_page. */
function spTraceFields(mmu: TdpMmu, sp: number) {
  const pool = mmu.pool;
  return {
    mmuValidGen: pool.flags[sp]! & SP_SCHEDULED_ROOT_TO_ZAP ? 1 : 0,
    gfn: spGfn(pool, sp),
    role: pool.role[sp]!,
    rootCount: pool.rootCount[sp]!,
    unsync: false,
  };
}
export function traceSp(
  mmu: TdpMmu,
  name: 'kvm_mmu_get_page' | 'kvm_mmu_prepare_zap_page',
  sp: number,
): void {
  const ev: MmuTraceEvent =
    name === 'kvm_mmu_get_page'
      ? { name, created: true, ...spTraceFields(mmu, sp) }
      : { name, ...spTraceFields(mmu, sp) };
  mmu.trace!(ev);
}

/** tdp_mmu_alloc_sp + tdp_mmu_init_sp: a fresh table with the given identity. */
export function tdpMmuAllocSp(
  mmu: TdpMmu,
  parent: number,
  parentIndex: number,
  gfn: number,
  role: number,
): number {
  const pool = mmu.pool;
  const sp = pool.alloc();
  pool.role[sp] = role;
  pool.gfn512[sp] = gfn / SPTE_ENT_PER_PAGE;
  pool.parent[sp] = parent;
  pool.parentIndex[sp] = parentIndex;
  mmu.spAllocated++;
  if (mmu.trace) traceSp(mmu, 'kvm_mmu_get_page', sp);
  return sp;
}

/** @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_init_child_sp (with the allocation) */
function tdpMmuAllocChildSp(mmu: TdpMmu, iter: TdpIter): number {
  const parentRole = mmu.pool.role[iter.table]!;
  const role = ((parentRole & ~0xf) | ((parentRole & 0xf) - 1)) >>> 0;
  const sp = tdpMmuAllocSp(mmu, iter.table, iter.index, iter.gfn, role);
  // kvm_mmu_alloc_external_spt: a mirror table gets its S-EPT page before it is linked.
  if (role & ROLE_IS_MIRROR) mmu.pool.flags[sp]! |= SP_EXTERNAL_SPT;
  return sp;
}

/** @kernel arch/x86/kvm/mmu/tdp_mmu.c#remove_external_spte */
function removeExternalSpte(mmu: TdpMmu, gfn: number, oldLo: number, oldHi: number, level: number): void {
  // External page tables are torn down by free_external_spt, in order; only leafs are removed here.
  if (!isLastSpte(oldLo, level) || mmu.external === undefined) return;
  const ret = mmu.external.removeExternalSpte(gfn, level, spteToPfn(oldLo, oldHi));
  kvmBugOn(mmu, ret !== 0, `remove_external_spte(gfn ${gfn.toString(16)}, level ${level}) failed: ${ret}`);
}

/**
 * A table was removed from the paging structure: freeze and account for every entry (recursing through
 * handleChangedSpte), then free it through RCU. In shared mode every entry is frozen, present or not,
 * as the kernel's xchg loop does; in exclusive mode only present entries.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#handle_removed_pt
 */
export function handleRemovedPt(mmu: TdpMmu, sp: number, shared: boolean): void {
  const pool = mmu.pool;
  const level = spLevel(pool, sp);
  const baseGfn = spGfn(pool, sp);
  const asId = (pool.role[sp]! >>> 24) & 0xff ? 1 : 0;
  const mirror = isMirrorSp(pool, sp);
  const step = PAGES_PER_LEVEL[level]!;
  if (mmu.trace) traceSp(mmu, 'kvm_mmu_prepare_zap_page', sp);
  mmu.tdpMmuPages--; // tdp_mmu_unlink_sp -> tdp_unaccount_mmu_page
  // Teardown of external (S-EPT) tables needs mmu_lock for write.
  if (mirror) kvmBugOn(mmu, shared, 'handle_removed_pt: mirror table removed under shared mmu_lock');
  const arr = pool.chunks[sp >>> CHUNK_SHIFT]!;
  const base = (sp & CHUNK_MASK) * TABLE_WORDS;
  for (let i = 0; i < SPTE_ENT_PER_PAGE; i++) {
    const lo = arr[base + i]!;
    const hi = arr[base + HI_OFFSET + i]!;
    // Non-present entries have no backing page and cannot become present under an exclusive lock.
    if (!shared && (lo & SPTE_MMU_PRESENT_MASK) === 0) continue;
    arr[base + i] = FROZEN_SPTE_LO;
    arr[base + HI_OFFSET + i] = FROZEN_SPTE_HI;
    handleChangedSpte(mmu, asId, baseGfn + i * step, lo, hi, FROZEN_SPTE_LO, FROZEN_SPTE_HI, level, shared);
    if (mirror) removeExternalSpte(mmu, baseGfn + i * step, lo, hi, level);
  }
  if (mirror && pool.flags[sp]! & SP_EXTERNAL_SPT && mmu.external !== undefined) {
    const ret = mmu.external.freeExternalSpt(baseGfn, level, sp);
    // On failure the kernel leaks the S-EPT page on purpose (it may still be encrypted).
    if (warnOnce(mmu, ret !== 0, `free_external_spt(gfn ${baseGfn.toString(16)}, level ${level}) failed`)) {
      mmu.externalSptLeaked++;
    }
  }
  pool.flags[sp]! &= ~SP_EXTERNAL_SPT;
  // call_rcu: lockless walkers may still be reading the table; it is reused only after a grace period.
  pool.freeRcu(sp);
  mmu.spFreed++;
}

/**
 * Bookkeeping for one SPTE change: the missing-notifier BUG, the tracepoint, page stats on leaf
 * transitions, zap counters, and recursive teardown when a present non-leaf goes away.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#handle_changed_spte
 */
export function handleChangedSpte(
  mmu: TdpMmu,
  asId: number,
  gfn: number,
  oldLo: number,
  oldHi: number,
  newLo: number,
  newHi: number,
  level: number,
  shared: boolean,
): void {
  const wasPresent = (oldLo & SPTE_MMU_PRESENT_MASK) !== 0;
  const isPresent = (newLo & SPTE_MMU_PRESENT_MASK) !== 0;
  const wasLeaf = wasPresent && (level === 1 || (oldLo & PT_PAGE_SIZE_MASK) !== 0);
  const isLeaf = isPresent && (level === 1 || (newLo & PT_PAGE_SIZE_MASK) !== 0);
  const pfnChanged = oldLo >>> 12 !== newLo >>> 12 || ((oldHi ^ newHi) & 0xfffff) !== 0;
  if (wasLeaf && isLeaf && pfnChanged) {
    // A present leaf never changes PFN in place: the notifier must zap (and flush) first.
    throw new ModelCorruption(
      `Invalid SPTE change: cannot replace a present leaf SPTE with another present leaf SPTE mapping a ` +
        `different PFN! as_id: ${asId} gfn: ${gfn.toString(16)} old_spte: ${spteValue(oldLo, oldHi).toString(16)} ` +
        `new_spte: ${spteValue(newLo, newHi).toString(16)} level: ${level}`,
    );
  }
  if (oldLo === newLo && oldHi === newHi) return;
  if (mmu.trace) {
    mmu.trace({
      name: 'kvm_tdp_mmu_spte_changed',
      asId,
      gfn,
      level,
      oldSpte: spteValue(oldLo, oldHi),
      newSpte: spteValue(newLo, newHi),
    });
  }
  if (isLeaf) checkSpteWritableInvariants(mmu, newLo, newHi);
  if (!wasPresent && !isPresent) {
    // Only MMIO SPTEs and the frozen value may replace one non-present value with another.
    warnOnce(
      mmu,
      !isMmioSpte(oldLo, oldHi, mmu.mmioValue) &&
        !isMmioSpte(newLo, newHi, mmu.mmioValue) &&
        !isFrozenSpte(newLo, newHi),
      `Unexpected SPTE change! Nonpresent SPTEs should not be replaced with another, different nonpresent SPTE (gfn ${gfn.toString(16)})`,
    );
    return;
  }
  if (isLeaf !== wasLeaf) mmu.pages[level - 1]! += isLeaf ? 1 : -1; // kvm_update_page_stats
  if (wasPresent && !isPresent) mmu.sptesZapped[level - 1]!++;
  // A subtree left the paging structure (zapped, or replaced by a huge leaf): tear it down.
  if (
    wasPresent &&
    !wasLeaf &&
    (isLeaf || !isPresent || warnOnce(mmu, pfnChanged, 'non-leaf SPTE changed PFN'))
  ) {
    handleRemovedPt(mmu, childTableOf(oldLo, oldHi), shared);
  }
}

/** @kernel arch/x86/kvm/mmu/spte.h#check_spte_writable_invariants */
function checkSpteWritableInvariants(mmu: TdpMmu, lo: number, hi: number): void {
  if (hi & EPT_SPTE_MMU_WRITABLE_HI)
    warnOnce(mmu, (hi & EPT_SPTE_HOST_WRITABLE_HI) === 0, 'MMU-writable SPTE is not Host-writable');
  else warnOnce(mmu, (lo & PT_WRITABLE_MASK) !== 0, 'Writable SPTE is not MMU-writable');
}

/**
 * Set an SPTE with mmu_lock held for write. On a mirror SPTE only zapping is allowed, and the external
 * (S-EPT) leaf is removed after the bookkeeping.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_set_spte
 */
export function tdpMmuSetSpte(
  mmu: TdpMmu,
  asId: number,
  table: number,
  index: number,
  oldLo: number,
  oldHi: number,
  newLo: number,
  newHi: number,
  gfn: number,
  level: number,
): void {
  // The frozen value is a shared-mode lock; exclusive writers never need it.
  warnOnce(
    mmu,
    isFrozenSpte(oldLo, oldHi) || isFrozenSpte(newLo, newHi),
    'tdp_mmu_set_spte on a frozen SPTE',
  );
  mmu.pool.write(table, index, newLo, newHi);
  handleChangedSpte(mmu, asId, gfn, oldLo, oldHi, newLo, newHi, level, false);
  if (mmu.pool.role[table]! & ROLE_IS_MIRROR) {
    kvmBugOn(mmu, isShadowPresentPte(newLo), 'tdp_mmu_set_spte: present SPTE written to a mirror root');
    removeExternalSpte(mmu, gfn, oldLo, oldHi, level);
  }
}

/** Set the SPTE under the iterator; iter.old* keeps the value that was replaced, as in the kernel. */
export function tdpMmuIterSetSpte(mmu: TdpMmu, iter: TdpIter, newLo: number, newHi: number): void {
  warnOnce(mmu, iter.yielded, 'tdp_mmu_iter_set_spte after a yield');
  tdpMmuSetSpte(
    mmu,
    iter.asId,
    iter.table,
    iter.index,
    iter.oldLo,
    iter.oldHi,
    newLo,
    newHi,
    iter.gfn,
    iter.level,
  );
}

/**
 * Freeze the mirror SPTE, propagate the new leaf or table to the external page tables, then publish the
 * new value (or restore the old one if the TDX module refused).
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#set_external_spte_present
 */
function setExternalSptePresent(mmu: TdpMmu, iter: TdpIter, newLo: number, newHi: number): number {
  kvmBugOn(mmu, isShadowPresentPte(iter.oldLo), 'set_external_spte_present over a present SPTE');
  tdpIterWriteSpte(iter, FROZEN_SPTE_LO, FROZEN_SPTE_HI);
  let ret = 0;
  const ext = mmu.external;
  if (ext !== undefined) {
    if (isLastSpte(newLo, iter.level))
      ret = ext.setExternalSpte(iter.gfn, iter.level, spteToPfn(newLo, newHi));
    else {
      const child = childTableOf(newLo, newHi);
      kvmBugOn(mmu, (mmu.pool.flags[child]! & SP_EXTERNAL_SPT) === 0, 'mirror table without external_spt');
      ret = ext.linkExternalSpt(iter.gfn, iter.level, child);
    }
  }
  if (ret !== 0) tdpIterWriteSpte(iter, iter.oldLo, iter.oldHi);
  else tdpIterWriteSpte(iter, newLo, newHi);
  return ret;
}

/**
 * Set the SPTE under the iterator as with mmu_lock held for read: fails with -EBUSY if the SPTE no longer
 * matches the snapshot (the snapshot is refreshed), else writes and does the bookkeeping in shared mode.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_set_spte_atomic
 */
export function tdpMmuSetSpteAtomic(mmu: TdpMmu, iter: TdpIter, newLo: number, newHi: number): number {
  warnOnce(
    mmu,
    iter.yielded || isFrozenSpte(iter.oldLo, iter.oldHi),
    'atomic set on a frozen SPTE or after a yield',
  );
  const i = iter.base + iter.index;
  const curLo = iter.arr[i]!;
  const curHi = iter.arr[i + HI_OFFSET]!;
  if (curLo !== iter.oldLo || curHi !== iter.oldHi) {
    iter.oldLo = curLo;
    iter.oldHi = curHi;
    return EBUSY;
  }
  if (mmu.pool.role[iter.table]! & ROLE_IS_MIRROR && !isFrozenSpte(newLo, newHi)) {
    // Atomic zapping never targets mirror roots (fast zap and collapsing skip them).
    if (kvmBugOn(mmu, !isShadowPresentPte(newLo), 'atomic zap of a mirror SPTE')) return EBUSY;
    const ret = setExternalSptePresent(mmu, iter, newLo, newHi);
    if (ret !== 0) return ret;
  } else {
    tdpIterWriteSpte(iter, newLo, newHi);
  }
  handleChangedSpte(mmu, iter.asId, iter.gfn, iter.oldLo, iter.oldHi, newLo, newHi, iter.level, true);
  return 0;
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
  iter.yielded = true;
  return true;
}

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
  const iter = mmu.iter;
  let walked = 0;
  for (tdpIterStart(iter, root, 1, start); iter.valid && iter.gfn < end; tdpIterNext(iter)) {
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

/** One pass of tdp_mmu_zap_root: zap present SPTEs at zapLevel and below (children go recursively). */
function tdpMmuZapRootLevel(mmu: TdpMmu, root: number, shared: boolean, zapLevel: number): void {
  const iter = mmu.iter;
  const end = mmu.maxGfnExclusive;
  let walked = 0;
  for (tdpIterStart(iter, root, zapLevel, 0); iter.valid && iter.gfn < end; tdpIterNext(iter)) {
    walked++;
    if (tdpMmuIterCondResched(mmu, iter, false)) continue;
    if (!isShadowPresentPte(iter.oldLo) || iter.level > zapLevel) continue;
    if (!shared) tdpMmuIterSetSpte(mmu, iter, SHADOW_NONPRESENT_LO, SHADOW_NONPRESENT_HI);
    else if (tdpMmuSetSpteAtomic(mmu, iter, SHADOW_NONPRESENT_LO, SHADOW_NONPRESENT_HI) !== 0) {
      // Lost a race (or a mirror SPTE under shared lock, already KVM_BUG_ON'd): re-walk from here.
      if (mmu.bugged) break;
      iter.yielded = true;
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
  if (mmu.trace)
    mmu.trace({
      name: 'kvm_mmu_split_huge_page',
      gfn: iter.gfn,
      spte: spteValue(hugeLo, hugeHi),
      level,
      errno: ret,
    });
  return ret;
}

/** @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_map_handle_target_level */
function tdpMmuMapHandleTargetLevel(mmu: TdpMmu, iter: TdpIter, newLo: number, newHi: number): number {
  const oldLo = iter.oldLo;
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
 * set the SPTE. Returns TDP_MAP_FIXED / _SPURIOUS / _RETRY, OR-ed with TDP_MAP_FLUSH when a present
 * table was replaced by a huge leaf (the caller must flush that gfn range at goalLevel).
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_map
 */
export function kvmTdpMmuMap(
  mmu: TdpMmu,
  root: number,
  gfn: number,
  goalLevel: number,
  newLo: number,
  newHi: number,
): number {
  mmu.pool.rcuReclaim();
  const iter = mmu.iter;
  for (tdpIterStart(iter, root, 1, gfn); iter.valid && iter.gfn < gfn + 1; tdpIterNext(iter)) {
    // Another thread froze this SPTE: give up rather than allocate and free a table.
    if (isFrozenSpte(iter.oldLo, iter.oldHi)) return TDP_MAP_RETRY;
    if (iter.level === goalLevel) return tdpMmuMapHandleTargetLevel(mmu, iter, newLo, newHi);
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
    const i = (t & CHUNK_MASK) * TABLE_WORDS + ((gfn / PAGES_PER_LEVEL[level]!) & 511);
    const lo = arr[i]!;
    const hi = arr[i + HI_OFFSET]!;
    const present = (lo & SPTE_MMU_PRESENT_MASK) !== 0;
    if (!present || level === 1 || (lo & PT_PAGE_SIZE_MASK) !== 0) {
      out.lo = lo;
      out.hi = hi;
      out.level = level;
      return present;
    }
    t = childTableOf(lo, hi);
    level--;
  }
}
