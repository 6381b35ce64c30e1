/**
 * The TDP iterator: a pre-order walk over one root's page tables, visiting every SPTE whose range
 * intersects [start, end) down to min_level. It descends only through present non-leaf SPTEs, so a walk
 * costs the tables that exist, not the address range covered. It re-reads an SPTE before stepping down
 * (a body that just linked a table is followed into it), and after a yield restarts from the root at
 * next_last_level_gfn.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/tdp_iter.c, tdp_iter.h.
 *
 * Simplifies: sptep is (table, index) into the pool; no RCU dereference; no gfn_bits (the TDX shared bit
 * is not OR-ed in by the iterator — callers pass the gfns they mean). Iterator objects are reusable: start
 * resets every field, and a step allocates nothing.
 */
import { isLastSpte, isShadowPresentPte } from './spte.ts';
import { CHUNK_MASK, CHUNK_SHIFT, HI_OFFSET, TABLE_WORDS, childTableOf, type SpPool } from './sp_pool.ts';

/** PT64_ROOT_MAX_LEVEL */
export const PT64_ROOT_MAX_LEVEL = 5;
/** KVM_PAGES_PER_HPAGE(level) for levels 0..6 (index = level). */
export const PAGES_PER_LEVEL: readonly number[] = [0, 1, 512, 512 ** 2, 512 ** 3, 512 ** 4, 512 ** 5];

/** 1 / KVM_PAGES_PER_HPAGE(level): exact powers of two, so `gfn * x` is an exact, cheap shift. */
export const INV_PAGES_PER_LEVEL: readonly number[] = PAGES_PER_LEVEL.map((n) => (n === 0 ? 0 : 1 / n));

/**
 * SPTE_INDEX(gfn << PAGE_SHIFT, level); exact for gfns up to 2^53 (ToInt32 keeps the low bits).
 * @kernel arch/x86/kvm/mmu/spte.h#SPTE_INDEX
 */
export const spteIndex = (gfn: number, level: number): number => (gfn * INV_PAGES_PER_LEVEL[level]!) & 511;
/** @kernel arch/x86/kvm/mmu/mmu_internal.h#gfn_round_for_level */
export const roundGfnForLevel = (gfn: number, level: number): number =>
  Math.floor(gfn * INV_PAGES_PER_LEVEL[level]!) * PAGES_PER_LEVEL[level]!;

const EMPTY = new Int32Array(0);

/** struct tdp_iter */
export class TdpIter {
  /** The walk heads for the translation of this gfn. */
  nextLastLevelGfn = 0;
  /** next_last_level_gfn at the last yield: no second yield without forward progress. */
  yieldedGfn = 0;
  /** pt_path[level - 1]: the table walked through at each level. */
  readonly ptPath = new Int32Array(PT64_ROOT_MAX_LEVEL);
  /** sptep = (table, index); `arr`/`base` cache the table's chunk and word offset. */
  table = -1;
  index = 0;
  arr: Int32Array = EMPTY;
  base = 0;
  /** Lowest gfn mapped by the current SPTE. */
  gfn = 0;
  rootLevel = 0;
  minLevel = 1;
  level = 0;
  asId = 0;
  /** Snapshot of the SPTE at sptep. */
  oldLo = 0;
  oldHi = 0;
  valid = false;
  yielded = false;

  constructor(readonly pool: SpPool) {}
}

/** @kernel arch/x86/kvm/mmu/tdp_iter.c#tdp_iter_refresh_sptep */
function tdpIterRefreshSptep(iter: TdpIter): void {
  const t = iter.ptPath[iter.level - 1]!;
  if (t !== iter.table) {
    iter.table = t;
    iter.arr = iter.pool.chunks[t >>> CHUNK_SHIFT]!;
    iter.base = (t & CHUNK_MASK) * TABLE_WORDS;
  }
  iter.index = spteIndex(iter.gfn, iter.level);
  iter.oldLo = iter.arr[iter.base + iter.index]!;
  iter.oldHi = iter.arr[iter.base + HI_OFFSET + iter.index]!;
}

/** Re-read the SPTE at sptep. @kernel arch/x86/kvm/mmu/tdp_iter.h#kvm_tdp_mmu_read_spte */
export function tdpIterReadSpte(iter: TdpIter): void {
  iter.oldLo = iter.arr[iter.base + iter.index]!;
  iter.oldHi = iter.arr[iter.base + HI_OFFSET + iter.index]!;
}

/** Write the SPTE at sptep (no volatile bits to preserve). @kernel arch/x86/kvm/mmu/tdp_iter.h#kvm_tdp_mmu_write_spte */
export function tdpIterWriteSpte(iter: TdpIter, lo: number, hi: number): void {
  iter.arr[iter.base + iter.index] = lo;
  iter.arr[iter.base + HI_OFFSET + iter.index] = hi;
}

/** @kernel arch/x86/kvm/mmu/tdp_iter.c#tdp_iter_restart */
export function tdpIterRestart(iter: TdpIter): void {
  iter.yielded = false;
  iter.yieldedGfn = iter.nextLastLevelGfn;
  iter.level = iter.rootLevel;
  iter.gfn = roundGfnForLevel(iter.nextLastLevelGfn, iter.level);
  tdpIterRefreshSptep(iter);
  iter.valid = true;
}

/**
 * Start a walk of `root` (a pool table index) towards `nextLastLevelGfn`.
 * @kernel arch/x86/kvm/mmu/tdp_iter.c#tdp_iter_start
 */
export function tdpIterStart(iter: TdpIter, root: number, minLevel: number, nextLastLevelGfn: number): void {
  const pool = iter.pool;
  const role = pool.role[root]!;
  const rootLevel = role & 0xf;
  if (rootLevel < 1 || rootLevel > PT64_ROOT_MAX_LEVEL)
    throw new RangeError(`tdp_iter: root level ${rootLevel}`);
  iter.nextLastLevelGfn = nextLastLevelGfn;
  iter.rootLevel = rootLevel;
  iter.minLevel = minLevel;
  iter.ptPath[rootLevel - 1] = root;
  iter.asId = (role >>> 24) & 0xff ? 1 : 0;
  iter.table = -1;
  tdpIterRestart(iter);
}

/**
 * The child table a present non-leaf SPTE points to, or -1.
 * @kernel arch/x86/kvm/mmu/tdp_iter.c#spte_to_child_pt
 */
export function spteToChildPt(lo: number, hi: number, level: number): number {
  if (!isShadowPresentPte(lo) || isLastSpte(lo, level)) return -1;
  return childTableOf(lo, hi);
}

/** @kernel arch/x86/kvm/mmu/tdp_iter.c#try_step_down */
function tryStepDown(iter: TdpIter): boolean {
  if (iter.level === iter.minLevel) return false;
  // Re-read: the loop body may have replaced this SPTE (e.g. linked a new table, or zapped it).
  tdpIterReadSpte(iter);
  const child = spteToChildPt(iter.oldLo, iter.oldHi, iter.level);
  if (child < 0) return false;
  iter.level--;
  iter.ptPath[iter.level - 1] = child;
  iter.gfn = roundGfnForLevel(iter.nextLastLevelGfn, iter.level);
  tdpIterRefreshSptep(iter);
  return true;
}

/** @kernel arch/x86/kvm/mmu/tdp_iter.c#try_step_side */
function tryStepSide(iter: TdpIter): boolean {
  if (iter.index === 511) return false;
  iter.gfn += PAGES_PER_LEVEL[iter.level]!;
  iter.nextLastLevelGfn = iter.gfn;
  iter.index++;
  iter.oldLo = iter.arr[iter.base + iter.index]!;
  iter.oldHi = iter.arr[iter.base + HI_OFFSET + iter.index]!;
  return true;
}

/** @kernel arch/x86/kvm/mmu/tdp_iter.c#try_step_up */
function tryStepUp(iter: TdpIter): boolean {
  if (iter.level === iter.rootLevel) return false;
  iter.level++;
  iter.gfn = roundGfnForLevel(iter.gfn, iter.level);
  tdpIterRefreshSptep(iter);
  return true;
}

/**
 * Step to the next SPTE in pre-order: down if the current SPTE is a present non-leaf above min_level,
 * else sideways, else up (and sideways again, the parent was already visited).
 * @kernel arch/x86/kvm/mmu/tdp_iter.c#tdp_iter_next
 */
export function tdpIterNext(iter: TdpIter): void {
  if (iter.yielded) {
    tdpIterRestart(iter);
    return;
  }
  if (tryStepDown(iter)) return;
  do {
    if (tryStepSide(iter)) return;
  } while (tryStepUp(iter));
  iter.valid = false;
}

/**
 * Step sideways over the non-present SPTEs that follow in the current table, stopping before the end of
 * the table and before a gfn that reaches `end`: what tdpIterNext does one entry at a time there (a
 * non-present SPTE has no child to step down into), in one tight loop. Returns the entries stepped
 * over, which the caller counts as walked. Only for walks that never yield between entries.
 */
export function tdpIterSkipNonPresent(iter: TdpIter, end: number): number {
  const arr = iter.arr;
  const base = iter.base;
  const span = PAGES_PER_LEVEL[iter.level]!;
  let i = iter.index;
  let gfn = iter.gfn;
  while (i < 511 && !isShadowPresentPte(arr[base + i + 1]!) && gfn + span < end) {
    i++;
    gfn += span;
  }
  const n = i - iter.index;
  if (n > 0) {
    iter.index = i;
    iter.gfn = gfn;
    iter.nextLastLevelGfn = gfn;
    iter.oldLo = arr[base + i]!;
    iter.oldHi = arr[base + HI_OFFSET + i]!;
  }
  return n;
}

/**
 * for_each_tdp_pte_min_level as a callback loop, for code off the hot path (tests, audits). The body
 * sees the iterator; hot loops write the `for (tdpIterStart(...); iter.valid && iter.gfn < end;
 * tdpIterNext(iter))` form inline instead.
 * @kernel arch/x86/kvm/mmu/tdp_iter.h#for_each_tdp_pte_min_level
 */
export function forEachTdpPteMinLevel(
  iter: TdpIter,
  root: number,
  minLevel: number,
  start: number,
  end: number,
  body: (iter: TdpIter) => void,
): void {
  for (tdpIterStart(iter, root, minLevel, start); iter.valid && iter.gfn < end; tdpIterNext(iter)) body(iter);
}
