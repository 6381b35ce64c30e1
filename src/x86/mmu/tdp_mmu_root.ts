/**
 * TDP MMU roots: allocation per role, refcounting, the root iterators, invalidation, and the entry points
 * that zap across roots (fast zap's second half, unmap of a gfn range, VM teardown).
 *
 * Kernel counterpart: arch/x86/kvm/mmu/tdp_mmu.c (kvm_tdp_mmu_alloc_root, kvm_tdp_mmu_get_root,
 * kvm_tdp_mmu_put_root, tdp_mmu_next_root, tdp_mmu_root_match, kvm_tdp_mmu_invalidate_roots,
 * kvm_tdp_mmu_zap_invalidated_roots, kvm_tdp_mmu_zap_leafs, kvm_tdp_mmu_unmap_gfn_range,
 * kvm_tdp_mmu_zap_all, kvm_mmu_uninit_tdp_mmu).
 *
 * Simplifies: the RCU list is an array (newest first); a root is a pool table index, its "hpa" is
 * pfnToHpa(spToPfn(root)). Roots are looked up by role word with the pages lock implicit.
 * Invariant owned here: a root's refcount reaches 0 only when it is invalid (else KVM_BUG_ON).
 */
import { kvmMmuRoleAsId, ROLE_INVALID, ROLE_IS_MIRROR } from './mmu_internal.ts';
import { SP_SCHEDULED_ROOT_TO_ZAP } from './sp_pool.ts';
import { tdpMmuZapLeafs, tdpMmuZapRoot } from './tdp_mmu_zap.ts';
import { tdpMmuAllocSp } from './tdp_mmu_spte.ts';
import {
  KVM_ALL_ROOTS,
  KVM_DIRECT_ROOTS,
  KVM_INVALID_ROOTS,
  KVM_MIRROR_ROOTS,
  KVM_VALID_ROOTS,
  kvmBugOn,
  warnOnce,
  type TdpMmu,
} from './tdp_mmu_state.ts';

const isInvalid = (mmu: TdpMmu, root: number): boolean => (mmu.pool.role[root]! & ROLE_INVALID) !== 0;

/**
 * Find a valid root with this role word (taking a reference for the caller, the vCPU) or create one with
 * refcount 2: one for the vCPU, one the TDP MMU holds until the root is invalidated and zapped.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_alloc_root
 */
export function kvmTdpMmuAllocRoot(mmu: TdpMmu, role: number): number {
  mmu.pool.rcuReclaim();
  role >>>= 0;
  for (const root of mmu.roots) {
    if (mmu.pool.role[root] === role && kvmTdpMmuGetRoot(mmu, root)) return root;
  }
  const root = tdpMmuAllocSp(mmu, -1, 0, 0, role);
  mmu.pool.rootCount[root] = 2;
  mmu.roots.unshift(root);
  mmu.rootsAllocated++;
  return root;
}

/** refcount_inc_not_zero. @kernel arch/x86/kvm/mmu/tdp_mmu.h#kvm_tdp_mmu_get_root */
export function kvmTdpMmuGetRoot(mmu: TdpMmu, root: number): boolean {
  const rc = mmu.pool.rootCount;
  if (rc[root]! === 0) return false;
  rc[root]!++;
  return true;
}

/**
 * Drop a reference; at zero the root leaves the list and is freed through RCU. The TDP MMU's own
 * reference is put only after invalidation, so a valid root reaching zero is a KVM bug.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_put_root
 */
export function kvmTdpMmuPutRoot(mmu: TdpMmu, root: number): void {
  const rc = mmu.pool.rootCount;
  // refcount_t saturates and warns on underflow rather than going negative.
  if (warnOnce(mmu, rc[root]! <= 0, `kvm_tdp_mmu_put_root: refcount underflow on root ${root}`)) return;
  if (--rc[root]! > 0) return;
  kvmBugOn(mmu, !isInvalid(mmu, root), `kvm_tdp_mmu_put_root: last reference put on valid root ${root}`);
  const i = mmu.roots.indexOf(root);
  if (i >= 0) mmu.roots.splice(i, 1);
  mmu.pool.freeRcu(root);
  mmu.spFreed++;
}

/** @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_root_match */
export function tdpMmuRootMatch(mmu: TdpMmu, root: number, types: number): boolean {
  if (warnOnce(mmu, (types & KVM_VALID_ROOTS) === 0, 'tdp_mmu_root_match without a valid root type'))
    return false;
  const role = mmu.pool.role[root]!;
  if (role & ROLE_INVALID && (types & KVM_INVALID_ROOTS) === 0) return false;
  return (types & (role & ROLE_IS_MIRROR ? KVM_MIRROR_ROOTS : KVM_DIRECT_ROOTS)) !== 0;
}

/**
 * The next matching root after `prev` (-1: the first), with a reference taken on it and the reference on
 * `prev` dropped — which may free `prev`. Returns -1 at the end of the list.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_next_root
 */
export function tdpMmuNextRoot(mmu: TdpMmu, prev: number, types: number): number {
  const roots = mmu.roots;
  let next = -1;
  for (let i = prev < 0 ? 0 : roots.indexOf(prev) + 1; i < roots.length; i++) {
    const r = roots[i]!;
    if (tdpMmuRootMatch(mmu, r, types) && kvmTdpMmuGetRoot(mmu, r)) {
      next = r;
      break;
    }
  }
  if (prev >= 0) kvmTdpMmuPutRoot(mmu, prev);
  return next;
}

/**
 * Run `body` on each matching root of `asId` (-1: all), holding a reference across the call as
 * __for_each_tdp_mmu_root_yield_safe does.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#__for_each_tdp_mmu_root_yield_safe
 */
export function forEachTdpMmuRootYieldSafe(
  mmu: TdpMmu,
  asId: number,
  types: number,
  body: (root: number) => void,
): void {
  for (let r = tdpMmuNextRoot(mmu, -1, types); r >= 0; r = tdpMmuNextRoot(mmu, r, types)) {
    if (asId >= 0 && kvmMmuRoleAsId(mmu.pool.role[r]!) !== asId) continue;
    body(r);
  }
}

/**
 * Mark matching valid roots invalid and scheduled for zapping; the zap itself is separate (it can run
 * with mmu_lock held for read). Must run in the same write-locked section as the vCPU reload request.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_invalidate_roots
 */
export function kvmTdpMmuInvalidateRoots(mmu: TdpMmu, types: number): void {
  if (warnOnce(mmu, (types & KVM_INVALID_ROOTS) !== 0, 'invalidating invalid roots'))
    types &= ~KVM_INVALID_ROOTS;
  const pool = mmu.pool;
  for (const root of mmu.roots) {
    if (!tdpMmuRootMatch(mmu, root, types)) continue;
    // Invalid roots can outlive a memslot update (a vCPU may still hold one); they are not rescheduled.
    if (!isInvalid(mmu, root)) {
      pool.flags[root]! |= SP_SCHEDULED_ROOT_TO_ZAP;
      pool.role[root] = (pool.role[root]! | ROLE_INVALID) >>> 0;
    }
  }
}

/**
 * Zap every root scheduled by kvmTdpMmuInvalidateRoots and put the TDP MMU's reference to it — after the
 * zap, because mmu_notifiers must still reach the root's SPTEs while it is being zapped. No TLB flush:
 * vCPUs flush when they load a new root.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_zap_invalidated_roots
 */
export function kvmTdpMmuZapInvalidatedRoots(mmu: TdpMmu, shared: boolean): void {
  mmu.pool.rcuReclaim();
  const pool = mmu.pool;
  forEachTdpMmuRootYieldSafe(mmu, -1, KVM_ALL_ROOTS, (root) => {
    if ((pool.flags[root]! & SP_SCHEDULED_ROOT_TO_ZAP) === 0) return;
    pool.flags[root]! &= ~SP_SCHEDULED_ROOT_TO_ZAP;
    kvmBugOn(mmu, !isInvalid(mmu, root), 'scheduled root to zap is not invalid');
    tdpMmuZapRoot(mmu, root, shared);
    kvmTdpMmuPutRoot(mmu, root);
  });
}

/**
 * Zap leafs in [start, end) in every valid root of every address space; returns whether a flush is owed.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_zap_leafs
 */
export function kvmTdpMmuZapLeafs(mmu: TdpMmu, start: number, end: number, flush: boolean): boolean {
  mmu.pool.rcuReclaim();
  forEachTdpMmuRootYieldSafe(mmu, -1, KVM_VALID_ROOTS, (root) => {
    flush = tdpMmuZapLeafs(mmu, root, start, end, true, flush);
  });
  return flush;
}

/**
 * The TDP half of kvm_unmap_gfn_range (MMU notifier, precise memslot zap): zap leafs in [start, end) in
 * the roots of `rootTypes` (from kvm_gfn_range_filter_to_root_types) *and* all invalid roots of address
 * space `asId` — invalid roots still hold SPTEs until zapped, and the notifier must reach them.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_unmap_gfn_range
 */
export function kvmTdpMmuUnmapGfnRange(
  mmu: TdpMmu,
  asId: number,
  start: number,
  end: number,
  rootTypes: number,
  mayBlock: boolean,
  flush: boolean,
): boolean {
  mmu.pool.rcuReclaim();
  forEachTdpMmuRootYieldSafe(mmu, asId, rootTypes | KVM_INVALID_ROOTS, (root) => {
    flush = tdpMmuZapLeafs(mmu, root, start, end, mayBlock, flush);
  });
  return flush;
}

/**
 * Zap every direct root, valid or not (mm release / VM teardown). Mirror roots are left to TDX teardown.
 * No flush: KVM_RUN can no longer be reached.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_zap_all
 */
export function kvmTdpMmuZapAll(mmu: TdpMmu): void {
  mmu.pool.rcuReclaim();
  forEachTdpMmuRootYieldSafe(mmu, -1, KVM_DIRECT_ROOTS | KVM_INVALID_ROOTS, (root) =>
    tdpMmuZapRoot(mmu, root, false),
  );
}

/**
 * VM teardown: invalidate all roots (mirror included) and zap them with mmu_lock for write, which puts
 * the TDP MMU's references; with the vCPUs' references already gone every root is freed.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_mmu_uninit_tdp_mmu
 */
export function kvmMmuUninitTdpMmu(mmu: TdpMmu): void {
  kvmTdpMmuInvalidateRoots(mmu, KVM_VALID_ROOTS);
  kvmTdpMmuZapInvalidatedRoots(mmu, false);
  warnOnce(mmu, mmu.tdpMmuPages !== 0, `kvm_mmu_uninit_tdp_mmu: ${mmu.tdpMmuPages} tdp_mmu_pages left`);
  warnOnce(mmu, mmu.roots.length !== 0, `kvm_mmu_uninit_tdp_mmu: ${mmu.roots.length} roots left`);
  mmu.pool.rcuReclaim(); // rcu_barrier()
}
