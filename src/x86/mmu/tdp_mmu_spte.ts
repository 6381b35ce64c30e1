/**
 * SPTE writes and their bookkeeping in the TDP MMU: handle_changed_spte (page stats, the missing-notifier
 * BUG, the tracepoint), recursive teardown of removed page tables, exclusive and atomic SPTE setters, and
 * the TDX external-page-table calls made at those points.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/tdp_mmu.c (handle_changed_spte, handle_removed_pt,
 * tdp_mmu_set_spte, tdp_mmu_set_spte_atomic, set_external_spte_present, remove_external_spte,
 * tdp_mmu_alloc_sp/tdp_mmu_init_sp).
 *
 * Simplifies: one thread, so a cmpxchg fails only if the SPTE changed since the iterator's snapshot;
 * "shared" selects the kernel's mmu_lock-for-read code paths (freeze every entry of a removed table). No
 * A/D writeback to struct page (kvm_set_pfn_dirty/accessed are gone from recent kernels too).
 * Invariant owned here: a present leaf is never replaced by a present leaf with another PFN (BUG()).
 */
import { ModelCorruption } from '../../kvm/model_corruption.ts';
import { spGfn, spLevel, isMirrorSp, ROLE_IS_MIRROR } from './mmu_internal.ts';
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
  isLastSpte,
  isMmioSpte,
  isShadowPresentPte,
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
  childTableOf,
} from './sp_pool.ts';
import { PAGES_PER_LEVEL, tdpIterWriteSpte, type TdpIter } from './tdp_iter.ts';
import type { MmuTraceEvent } from './mmu_trace.ts';
import { EBUSY, kvmBugOn, warnOnce, type TdpMmu } from './tdp_mmu_state.ts';
import { isBlankTable, sameRunEnd } from './spte_scan.ts';

/** The low halves of a table of FROZEN_SPTE entries (freezeNonPresentRun copies it over a whole table). */
const FROZEN_LO_HALF = new Int32Array(SPTE_ENT_PER_PAGE).fill(FROZEN_SPTE_LO);

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
  const rec = mmu.recorder;
  if (mmu.trace === undefined && rec !== undefined && rec.spPage !== undefined) {
    // only a numeric listener: the same fields, no object (TdpTraceRecorder.spPage)
    const pool = mmu.pool;
    const gen = pool.flags[sp]! & SP_SCHEDULED_ROOT_TO_ZAP ? 1 : 0;
    rec.spPage(name === 'kvm_mmu_get_page', gen, spGfn(pool, sp), pool.role[sp]!, pool.rootCount[sp]!);
    return;
  }
  const ev: MmuTraceEvent =
    name === 'kvm_mmu_get_page'
      ? { name, created: true, ...spTraceFields(mmu, sp) }
      : { name, ...spTraceFields(mmu, sp) };
  mmu.trace?.(ev);
  mmu.recorder?.event(ev);
}

/**
 * A fresh table with the given identity (parent -1 for a root), traced as kvm_mmu_get_page(created).
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_init_sp (with tdp_mmu_alloc_sp)
 */
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
  if (mmu.trace || mmu.recorder) traceSp(mmu, 'kvm_mmu_get_page', sp);
  return sp;
}

/** @kernel arch/x86/kvm/mmu/tdp_mmu.c#remove_external_spte */
function removeExternalSpte(mmu: TdpMmu, gfn: number, oldLo: number, oldHi: number, level: number): void {
  // External page tables are torn down by free_external_spt, in order; only leafs are removed here.
  if (!isLastSpte(oldLo, level) || mmu.external === undefined) return;
  const ret = mmu.external.removeExternalSpte(gfn, level, spteToPfn(oldLo, oldHi));
  if (ret !== 0)
    kvmBugOn(mmu, true, `remove_external_spte(gfn ${gfn.toString(16)}, level ${level}) failed: ${ret}`);
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
  if (mmu.trace || mmu.recorder) traceSp(mmu, 'kvm_mmu_prepare_zap_page', sp);
  mmu.tdpMmuPages--; // tdp_mmu_unlink_sp -> tdp_unaccount_mmu_page
  // Teardown of external (S-EPT) tables needs mmu_lock for write.
  if (mirror) kvmBugOn(mmu, shared, 'handle_removed_pt: mirror table removed under shared mmu_lock');
  const arr = pool.chunks[sp >>> CHUNK_SHIFT]!;
  const base = (sp & CHUNK_MASK) * TABLE_WORDS;
  // Runs of equal non-present entries are frozen at once (below) unless something must see each one.
  const runs = shared && !mirror && mmu.trace === undefined;
  for (let i = 0; i < SPTE_ENT_PER_PAGE;) {
    const lo = arr[base + i]!;
    const hi = arr[base + HI_OFFSET + i]!;
    if ((lo & SPTE_MMU_PRESENT_MASK) === 0) {
      // Non-present entries have no backing page and cannot become present under an exclusive lock.
      if (!shared) {
        i++;
        continue;
      }
      if (runs) {
        i = freezeNonPresentRun(mmu, arr, base, i, asId, baseGfn, level, step);
        continue;
      }
    }
    arr[base + i] = FROZEN_SPTE_LO;
    arr[base + HI_OFFSET + i] = FROZEN_SPTE_HI;
    handleChangedSpte(mmu, asId, baseGfn + i * step, lo, hi, FROZEN_SPTE_LO, FROZEN_SPTE_HI, level, shared);
    if (mirror) removeExternalSpte(mmu, baseGfn + i * step, lo, hi, level);
    i++;
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
 * Freeze the run of entries from `first` on that hold the same non-present value, as a shared
 * handle_removed_pt freezes each (xchg to FROZEN_SPTE, then handle_changed_spte); returns the index after
 * the run. For a non-present entry becoming FROZEN_SPTE, handle_changed_spte only fires its tracepoint
 * (no stats; no warning, the new value being the frozen one; nothing when the entry already held
 * FROZEN_SPTE), so the run goes to a recorder as one sptesFrozen call. Callers rule out a trace sink
 * (it takes one event object per entry) and mirror tables (never torn down shared).
 */
function freezeNonPresentRun(
  mmu: TdpMmu,
  arr: Int32Array,
  base: number,
  first: number,
  asId: number,
  baseGfn: number,
  level: number,
  step: number,
): number {
  const lo = arr[base + first]!;
  const hi = arr[base + HI_OFFSET + first]!;
  // (a whole blank table, a teardown's usual one, is known blank by one memcmp)
  const blank = first === 0 && lo === SHADOW_NONPRESENT_LO && hi === SHADOW_NONPRESENT_HI;
  const end = blank && isBlankTable(arr, base) ? SPTE_ENT_PER_PAGE : sameRunEnd(arr, base, first + 1, lo, hi);
  const hiBase = base + HI_OFFSET;
  // (a whole table's run, a teardown's usual one, is one copy of frozen low halves: fill() is a C++
  // builtin call and, for a value other than 0, an element loop; high halves that already hold
  // FROZEN_SPTE's, as SHADOW_NONPRESENT_VALUE's do, are left as they are)
  if (end - first === SPTE_ENT_PER_PAGE) arr.set(FROZEN_LO_HALF, base);
  else arr.fill(FROZEN_SPTE_LO, base + first, base + end);
  if (hi !== FROZEN_SPTE_HI) arr.fill(FROZEN_SPTE_HI, hiBase + first, hiBase + end);
  if ((lo !== FROZEN_SPTE_LO || hi !== FROZEN_SPTE_HI) && mmu.recorder !== undefined)
    mmu.recorder.sptesFrozen(asId, baseGfn + first * step, level, end - first, lo, hi);
  return end;
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
  if (mmu.recorder !== undefined) mmu.recorder.spteChanged(asId, gfn, level, oldLo, oldHi, newLo, newHi);
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
    // Only MMIO SPTEs and the frozen value may replace one non-present value with another. (The message
    // is built only when it fires: this runs for every entry of every table a shared zap tears down.)
    if (
      !isMmioSpte(oldLo, oldHi, mmu.mmioValue) &&
      !isMmioSpte(newLo, newHi, mmu.mmioValue) &&
      !isFrozenSpte(newLo, newHi)
    )
      warnOnce(
        mmu,
        true,
        `Unexpected SPTE change! Nonpresent SPTEs should not be replaced with another, different nonpresent SPTE (gfn ${gfn.toString(16)})`,
      );
    return;
  }
  if (isLeaf !== wasLeaf) mmu.pages[level - 1]! += isLeaf ? 1 : -1; // kvm_update_page_stats
  if (wasPresent && !isPresent) {
    mmu.sptesZapped[level - 1]!++;
    if (wasLeaf) mmu.leafsZapped[level - 1]!++;
  }
  // A subtree left the paging structure (zapped, or replaced by a huge leaf): tear it down.
  if (
    wasPresent &&
    !wasLeaf &&
    (isLeaf || !isPresent || warnOnce(mmu, pfnChanged, 'non-leaf SPTE changed PFN'))
  ) {
    handleRemovedPt(mmu, childTableOf(oldLo, oldHi), shared);
  }
}

/** check_spte_writable_invariants would not warn: MMU-writable implies Host-writable, W implies MMU-writable. */
export function spteWritableInvariantsHold(lo: number, hi: number): boolean {
  return hi & EPT_SPTE_MMU_WRITABLE_HI
    ? (hi & EPT_SPTE_HOST_WRITABLE_HI) !== 0
    : (lo & PT_WRITABLE_MASK) === 0;
}

/** @kernel arch/x86/kvm/mmu/spte.h#check_spte_writable_invariants */
function checkSpteWritableInvariants(mmu: TdpMmu, lo: number, hi: number): void {
  if (spteWritableInvariantsHold(lo, hi)) return;
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

/**
 * Set the SPTE under the iterator; iter.old* keeps the value that was replaced, as in the kernel.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_iter_set_spte
 */
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
