/**
 * The shadow MMU's roots: what a vCPU loads at VM entry (the page shadowing its CR3, the shared direct
 * root on an EPT host, or the dummy root when CR3 is in no visible memslot), and when it lets go of
 * one — an obsolete root after zap-all, a CR3 change, an SMM transition.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/mmu.c (mmu_alloc_shadow_roots, mmu_alloc_direct_roots,
 * kvm_mmu_free_roots, kvm_mmu_free_obsolete_roots, kvm_mmu_new_pgd), arch/x86/kvm/smm.c#kvm_smm_changed,
 * arch/x86/kvm/x86.c#vcpu_enter_guest (the request servicing before entry).
 * Simplifications: no prev_roots cache (a CR3 change always drops the root), no PAE roots (4-level
 * guests only); the root is found through ShadowMmu.roots rather than vcpu->arch.mmu->root.hpa.
 */
import type { Vcpu } from '../../kvm/vcpu.ts';
import { IN_GUEST_MODE, KVM_REQ_MMU_FREE_OBSOLETE_ROOTS, KVM_REQ_TLB_FLUSH } from '../../kvm/vcpu.ts';
import { makeRole, kvmMmuPageAsId, ROLE_SMM, type ShadowPage } from './shadow_rmap.ts';
import { ACC_ALL } from './guest_paging.ts';
import type { ShadowMmu } from './shadow_mmu.ts';
import { shadowFaultPaths } from './shadow_fault_paths.ts';

/**
 * VM entry: free obsolete roots, flush if asked, make sure a root is loaded; null = the dummy root. The
 * root is looked up once when nothing changes it (the fault path enters twice per fault).
 * @kernel arch/x86/kvm/x86.c#vcpu_enter_guest
 */
export function shadowEnterGuest(mmu: ShadowMmu, vcpu: Vcpu): ShadowPage | null {
  // The common entry, in few bytecodes (the fault path inlines this twice per fault within V8's budget):
  // no request to service, the root cached (so loaded), the vCPU in the address space it maps. Then
  // the steps below would change nothing but the mode.
  const root = mmu[ROOT_CACHE_VCPU] === vcpu ? mmu[ROOT_CACHE_ROOT]! : null;
  if (
    root !== null &&
    (vcpu.requests & ENTRY_REQUESTS) === 0 &&
    (root.role & ROLE_SMM ? 1 : 0) === vcpu.asId()
  ) {
    vcpu.mode = IN_GUEST_MODE;
    return root;
  }
  return shadowEnterGuestSlow(mmu, vcpu);
}

const ENTRY_REQUESTS = KVM_REQ_MMU_FREE_OBSOLETE_ROOTS | KVM_REQ_TLB_FLUSH;

/** shadowEnterGuest, every step. */
function shadowEnterGuestSlow(mmu: ShadowMmu, vcpu: Vcpu): ShadowPage | null {
  if (vcpu.requests & (KVM_REQ_MMU_FREE_OBSOLETE_ROOTS | KVM_REQ_TLB_FLUSH)) shadowServiceRequests(mmu, vcpu);
  let root = rootOf(mmu, vcpu);
  if (kvmSmmChanged(mmu, vcpu, root)) root = rootOf(mmu, vcpu);
  if (root === undefined && !mmu.dummyRoots.has(vcpu)) {
    kvmMmuLoad(mmu, vcpu); // kvm_mmu_reload
    root = rootOf(mmu, vcpu);
  }
  vcpu.mode = IN_GUEST_MODE; // until the next VM exit, remote flushes IPI this vCPU
  return root ?? null;
}

/**
 * Keys of ShadowMmu's one-entry cache of `roots` (a model-side index, not in the kernel, whose vCPU reads
 * its root from vcpu->arch.mmu->root.hpa): the vCPU last found and its root. A Map lookup keyed by the
 * vCPU cost more than the rest of a VM entry, and the fault path enters twice per fault. The cache holds
 * a vCPU only while `roots` maps it to the cached root: filled by rootOf, dropped by kvmMmuFreeRoots
 * (the one place a vCPU's root leaves `roots`; kvmMmuLoad adds one only where there was none). Symbols,
 * so a snapshot saves and restores the cache with `roots` and the state hash leaves it out.
 */
export const ROOT_CACHE_VCPU: unique symbol = Symbol('zaplab.shadow.rootCacheVcpu');
export const ROOT_CACHE_ROOT: unique symbol = Symbol('zaplab.shadow.rootCacheRoot');

/** mmu.roots.get(vcpu), through the one-entry cache (filled only with shadowFaultPaths.rootCache on). */
export function rootOf(mmu: ShadowMmu, vcpu: Vcpu): ShadowPage | undefined {
  if (mmu[ROOT_CACHE_VCPU] === vcpu) return mmu[ROOT_CACHE_ROOT]!;
  const root = mmu.roots.get(vcpu);
  if (root !== undefined && shadowFaultPaths.rootCache) {
    mmu[ROOT_CACHE_VCPU] = vcpu;
    mmu[ROOT_CACHE_ROOT] = root;
  }
  return root;
}

/** The requests vcpu_enter_guest services for the shadow MMU, in its order: free obsolete roots, then flush. */
function shadowServiceRequests(mmu: ShadowMmu, vcpu: Vcpu): void {
  if (vcpu.requests & KVM_REQ_MMU_FREE_OBSOLETE_ROOTS) {
    vcpu.requests &= ~KVM_REQ_MMU_FREE_OBSOLETE_ROOTS;
    kvmMmuFreeObsoleteRoots(mmu, vcpu);
  }
  if (vcpu.requests & KVM_REQ_TLB_FLUSH) {
    vcpu.requests &= ~KVM_REQ_TLB_FLUSH;
    vcpu.tlb.flushAll();
    vcpu.stats.tlb_flush++;
  }
}

/**
 * The vCPU's root: the page shadowing its CR3, or on an EPT host the direct root for gfn 0 (every vCPU
 * finds the same one in the hash).
 * @kernel arch/x86/kvm/mmu/mmu.c#mmu_alloc_shadow_roots (mmu_alloc_direct_roots with TDP)
 */
export function kvmMmuLoad(mmu: ShadowMmu, vcpu: Vcpu): void {
  const rootGfn = Math.floor(vcpu.cr3 / 4096);
  const asId = vcpu.asId();
  // A CR3 outside visible memory gets the dummy root (6.6+, mmu_alloc_shadow_roots): every access
  // faults, and the walk then injects #PF — no shadow page for a table KVM cannot account.
  if (!mmu.tdpEnabled && !mmu.kvmVcpuIsVisibleGfn(vcpu, rootGfn)) {
    mmu.dummyRoots.set(vcpu, asId);
    vcpu.tlb.flushAll();
    return;
  }
  // root_role.smm = cpu_role.base.smm (kvm_init_shadow_mmu, kvm_calc_tdp_mmu_root_page_role): an SMM
  // vCPU finds or builds a root of its own, even for the same CR3 (or gfn 0 under EPT).
  const root = mmu.tdpEnabled
    ? mmu.getShadowPage(0, makeRole(4, true, ACC_ALL, asId))
    : mmu.getShadowPage(rootGfn, makeRole(4, false, ACC_ALL, asId));
  root.rootCount++;
  mmu.roots.set(vcpu, root);
  vcpu.tlb.flushAll(); // kvm_mmu_flush_tlb_current
}

/** Drop the vCPU's root; the last user of a zapped root zaps (and counts) it again, then frees it. @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_free_roots */
export function kvmMmuFreeRoots(mmu: ShadowMmu, vcpu: Vcpu): void {
  if (mmu.dummyRoots.delete(vcpu)) return; // nothing to clean up for dummy roots
  const root = mmu.roots.get(vcpu);
  if (root === undefined) return;
  mmu.roots.delete(vcpu);
  if (mmu[ROOT_CACHE_VCPU] === vcpu) {
    mmu[ROOT_CACHE_VCPU] = null;
    mmu[ROOT_CACHE_ROOT] = null;
  }
  const list: ShadowPage[] = [];
  if (--root.rootCount === 0 && root.invalid) mmu.prepareZapPage(root, list);
  mmu.commitZapPage(list);
}

/**
 * Entering or leaving SMM resets the MMU context (kvm_mmu_reset_context → kvm_mmu_unload frees the
 * roots), so the next entry loads the root of the other address space; the old root stays in the hash.
 * `vcpu.smm` is a plain field here, so the change is noticed at the next VM entry. `root` is the vCPU's
 * root now (mmu.roots); true if it was freed.
 * @kernel arch/x86/kvm/smm.c#kvm_smm_changed
 */
export function kvmSmmChanged(mmu: ShadowMmu, vcpu: Vcpu, root: ShadowPage | undefined): boolean {
  const loadedAs = root !== undefined ? kvmMmuPageAsId(root) : mmu.dummyRoots.get(vcpu);
  if (loadedAs === undefined || loadedAs === vcpu.asId()) return false;
  kvmMmuFreeRoots(mmu, vcpu);
  return true;
}

/** @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_free_obsolete_roots */
export function kvmMmuFreeObsoleteRoots(mmu: ShadowMmu, vcpu: Vcpu): void {
  const root = mmu.roots.get(vcpu);
  // is_obsolete_root: a root without a shadow page (the dummy root) counts as obsolete.
  if (mmu.dummyRoots.has(vcpu) || (root !== undefined && mmu.isObsoleteSp(root))) kvmMmuFreeRoots(mmu, vcpu);
}

/** CR3 changed: drop the current root (no prev_roots cache). @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_new_pgd */
export function kvmMmuNewPgd(mmu: ShadowMmu, vcpu: Vcpu): void {
  if (mmu.tdpEnabled) return; // the guest's CR3 is not KVM's business under EPT
  if (mmu.dummyRoots.has(vcpu)) return kvmMmuFreeRoots(mmu, vcpu); // fast_pgd_switch: no sp, free it
  const root = mmu.roots.get(vcpu);
  if (root !== undefined && root.gfn !== Math.floor(vcpu.cr3 / 4096)) kvmMmuFreeRoots(mmu, vcpu);
}
