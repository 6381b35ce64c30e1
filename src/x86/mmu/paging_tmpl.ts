/**
 * The shadow-paging fault path and guest access: the CPU walks the shadow tables for a guest virtual
 * address; a missing or too-weak SPTE is a #PF that KVM intercepts, walks the guest's tables
 * (guest_paging.ts), and either reflects to the guest (pf_guest) or fixes by building shadow pages down to
 * a leaf SPTE (mmu_set_spte.ts), then prefetches neighbours (pte_prefetch.ts). Also the emulated guest
 * write to a shadowed table (kvm_mmu_track_write) and KVM's own gva→gpa walk.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/paging_tmpl.h (FNAME(page_fault), FNAME(fetch),
 * FNAME(gva_to_gpa), FNAME(update_accessed_dirty_bits)'s pte_writable and dirty marking),
 * arch/x86/kvm/mmu/mmu.c (kvm_mmu_page_fault, kvm_handle_noslot_fault, link_shadow_page,
 * kvm_mmu_track_write), arch/x86/kvm/x86.c#vcpu_enter_guest (request servicing).
 * Simplifications: all accesses are CPL3 (user) accesses, as on the real harness; no TLB or
 * paging-structure caches beyond the shadow tables themselves (a zap is visible at once); no MMIO SPTEs
 * (the development host runs with MMIO caching disabled, so a no-slot fault is emulated at once);
 * a guest write to a shadowed guest table is emulated without its data (mmu_pte_write counts it; use
 * vcpu.guestWritePte to write a value); a guest #PF is reported as { exit: 'retry', reason: 'guest #PF…' }.
 */
import type { Vcpu } from '../../kvm/vcpu.ts';
import { KVM_REQ_MMU_FREE_OBSOLETE_ROOTS, OUTSIDE_GUEST_MODE } from '../../kvm/vcpu.ts';
import type { KvmMemorySlot } from '../../kvm/kvm_host.ts';
import type { AccessKind, AccessResult } from '../../kvm/api_types.ts';
import { KVM_MEM_READONLY, KVM_MEMSLOT_INVALID } from '../../uapi/kvm.ts';
import { markPageDirtyInSlot } from '../../kvm/dirty_log.ts';
import { kvmMmuChildRole, SPTE_USER, SPTE_WRITABLE, type ShadowPage } from './shadow_rmap.ts';
import {
  gvaIndex,
  newGuestWalker,
  PT_DIRTY_MASK,
  walkAddrGeneric,
  type GuestWalker,
  type WalkEnv,
} from './guest_paging.ts';
import { kvmGfnIsWriteTracked } from './page_track.ts';
import {
  gfnIsShadowedTable,
  mmuSetSpte,
  RET_PF_EMULATE,
  RET_PF_FIXED,
  RET_PF_MEMORY_FAULT,
  RET_PF_RETRY,
  RET_PF_SPURIOUS,
  RET_PF_WRITE_PROTECTED,
} from './mmu_set_spte.ts';
import { ptePrefetch } from './pte_prefetch.ts';
import { shadowEnterGuest } from './shadow_roots.ts';
import type { ShadowMmu } from './shadow_mmu.ts';
import type { HvaPfn } from '../../host/host_mm.ts';
import { asPfn } from '../../types/addr.ts';

const RET_PF_GUEST = 100; // model: the walk failed, the #PF goes to the guest
const MAX_REFAULTS = 8;
const PAGE = 4096;

const walker = newGuestWalker();

const index = gvaIndex;
/** hvaToPfnInto's answer (no object per fault). */
const hostPfn: HvaPfn = { pfn: asPfn(0), level: 1, writable: false };

/** The guest's access at CPL3 to gva. */
export function shadowVcpuAccess(mmu: ShadowMmu, vcpu: Vcpu, gva: number, kind: AccessKind): AccessResult {
  if (!Number.isSafeInteger(gva) || gva < 0 || gva >= 2 ** 48)
    throw new RangeError(
      `access: gva ${String(gva)} is not a 48-bit guest virtual address (shadow paging: the guest runs on its own page tables)`,
    );
  if (kind !== 'read' && kind !== 'write' && kind !== 'exec')
    throw new TypeError(`access kind must be read, write or exec (got ${String(kind)})`);
  const vm = mmu.vm;
  if (vm.dead) return { exit: 'vm_dead', gpa: gva, reason: 'the VM is dead' };
  const write = kind === 'write';
  const i4 = index(gva, 4);
  const i3 = index(gva, 3);
  const i2 = index(gva, 2);
  const i = index(gva, 1);
  for (let tries = 0; tries < MAX_REFAULTS; tries++) {
    const root = shadowEnterGuest(mmu, vcpu);
    // The CPU walks the shadow tables.
    let sp: ShadowPage | null = root;
    if (sp !== null) sp = sp.child![i4] ?? null;
    if (sp !== null) sp = sp.child![i3] ?? null;
    if (sp !== null) sp = sp.child![i2] ?? null;
    if (sp !== null) {
      const b = sp.bits![i]!;
      if (sp.pfn![i]! >= 0 && b & SPTE_USER && (!write || b & SPTE_WRITABLE))
        return { exit: 'none', pfn: sp.pfn![i]!, level: 1, memtype: 6 };
    }
    // PFERR_PRESENT_MASK: the leaf SPTE is there, the access broke its protection.
    const present = sp !== null && sp.pfn![i]! >= 0;
    vcpu.mode = OUTSIDE_GUEST_MODE; // the #PF VM exit
    vcpu.stats.exits++; // vcpu_enter_guest counts every exit, as guest_access.ts does for EPT violations
    const r = shadowPageFault(mmu, vcpu, gva, write, present);
    if (r === RET_PF_FIXED || r === RET_PF_SPURIOUS || r === RET_PF_RETRY) continue;
    if (r === RET_PF_GUEST) return { exit: 'retry', gpa: gva, reason: `guest #PF: ${walker.fault}` };
    if (r === RET_PF_MEMORY_FAULT)
      return { exit: 'memory_fault', gpa: walker.gfn * PAGE, size: PAGE, private: false };
    if (r === RET_PF_WRITE_PROTECTED) {
      // The write hit a shadowed guest table: the emulator performs it and tells page tracking.
      kvmMmuTrackWrite(mmu, walker.gfn);
      return { exit: 'none', pfn: -1, level: 1, memtype: 6 };
    }
    return { exit: 'mmio', gpa: walker.gfn * PAGE + (gva % PAGE), write }; // RET_PF_EMULATE
  }
  return { exit: 'retry', gpa: gva, reason: 'the fault kept retrying' };
}

/** @kernel arch/x86/kvm/mmu/paging_tmpl.h#FNAME(page_fault) */
export function shadowPageFault(
  mmu: ShadowMmu,
  vcpu: Vcpu,
  gva: number,
  write: boolean,
  present = false,
): number {
  vcpu.stats.pf_taken++;
  const w = walker;
  const env = faultWalkEnv;
  env.mmu = mmu;
  env.asId = vcpu.asId();
  if (!walkAddrGeneric(mmu.gpt, w, vcpu.cr3, gva, write, true, true, env)) {
    vcpu.stats.pf_guest++; // kvm_inject_emulated_page_fault → kvm_inject_page_fault
    return RET_PF_GUEST;
  }
  const slot = mmu.slotForGfn(w.gfn, vcpu.asId()); // kvm_vcpu_gfn_to_memslot: SMRAM in SMM
  // page_fault_handle_page_track: a write through a present SPTE to a write-tracked gfn (a shadowed guest
  // table) is emulated at once, before the pfn is looked up: no SPTE changes and nothing is prefetched.
  if (present && write && slot !== null && kvmGfnIsWriteTracked(slot, w.gfn))
    return emulateWriteProtected(vcpu);
  // kvm_handle_noslot_fault: MMIO caching is off on the modelled host, so emulate without an SPTE.
  if (slot === null) return emulate(vcpu);
  if (slot.flags & KVM_MEMSLOT_INVALID) return RET_PF_RETRY;
  if (write && slot.flags & KVM_MEM_READONLY) return emulate(vcpu);
  const p = hostPfn;
  if (!mmu.vm.kvm.host.hvaToPfnInto(slot.userspaceAddr + (w.gfn - slot.baseGfn) * PAGE, write, p))
    return RET_PF_MEMORY_FAULT;
  const writable = p.writable && !(slot.flags & KVM_MEM_READONLY);
  const r = fetch(mmu, vcpu, w, gva, slot, p.pfn, writable, write);
  if (r === RET_PF_FIXED) {
    vcpu.stats.pf_fixed++;
    mmu.noteFixed(w.gfn);
  } else if (r === RET_PF_SPURIOUS) vcpu.stats.pf_spurious++;
  else if (r === RET_PF_WRITE_PROTECTED) vcpu.stats.pf_emulate++;
  return r;
}

/** RET_PF_WRITE_PROTECTED, counted as fetch's is (pf_emulate). */
function emulateWriteProtected(vcpu: Vcpu): number {
  vcpu.stats.pf_emulate++;
  return RET_PF_WRITE_PROTECTED;
}

function emulate(vcpu: Vcpu): number {
  vcpu.stats.pf_emulate++;
  return RET_PF_EMULATE;
}

/** Link child under parent[i]. @kernel arch/x86/kvm/mmu/mmu.c#link_shadow_page */
function linkShadowPage(parent: ShadowPage, i: number, child: ShadowPage): void {
  parent.child![i] = child;
  child.parents.push({ sp: parent, i });
}

/**
 * Build the shadow path for gva: indirect pages for each guest table above the leaf, a direct page under
 * a guest 2M gPTE, then the leaf SPTE and its prefetch group.
 * @kernel arch/x86/kvm/mmu/paging_tmpl.h#FNAME(fetch)
 */
function fetch(
  mmu: ShadowMmu,
  vcpu: Vcpu,
  w: GuestWalker,
  gva: number,
  slot: KvmMemorySlot,
  pfn: number,
  hostWritable: boolean,
  write: boolean,
): number {
  const root = mmu.roots.get(vcpu);
  // The walk succeeded on a dummy root: a memslot made CR3 visible since; load a real root and retry.
  if (root === undefined) {
    vcpu.makeRequest(KVM_REQ_MMU_FREE_OBSOLETE_ROOTS);
    return RET_PF_RETRY;
  }
  let sp = root;
  for (let level = 4; level > 1; level--) {
    const i = index(gva, level);
    let child = sp.child![i] ?? null;
    const direct = level === 2 && w.level === 2;
    const access = direct ? w.pteAccess : w.ptAccess[level - 2]!;
    // validate_direct_spte: a direct page made for other access (the huge gPTE was read while clean and
    // is now written, or its permissions changed) is unlinked, and what it mapped flushed.
    if (direct && child !== null && ((child.role >> 5) & 7) !== access) {
      sp.child![i] = null;
      const k = child.parents.findIndex((p) => p.sp === sp && p.i === i);
      if (k >= 0) child.parents.splice(k, 1); // drop_parent_pte
      mmu.vm.flushRemoteTlbs(); // kvm_flush_remote_tlbs_sptep
      child = null;
    }
    if (child === null) {
      // kvm_mmu_get_child_sp: indirect while the guest has a table here, direct under a huge gPTE.
      const gfn = direct ? w.gfn - (w.gfn % 512) : w.tableGfn[level - 2]!;
      child = mmu.getShadowPage(gfn, kvmMmuChildRole(sp, direct, access));
      linkShadowPage(sp, i, child);
    }
    sp = child;
  }
  const i = index(gva, 1);
  // The walk already applied protect_clean_gpte (to reads only): pass the access on as it is.
  const r = mmuSetSpte(
    mmu,
    sp,
    i,
    w.pteAccess,
    PT_DIRTY_MASK,
    w.gfn,
    slot,
    pfn,
    hostWritable,
    write,
    false,
    0,
  );
  if (r === RET_PF_SPURIOUS) return r;
  ptePrefetch(mmu, vcpu, sp, i);
  return r;
}

/**
 * An emulated guest write to gfn: if any page shadows a guest table there, count it and zap the shadow
 * pages' SPTEs for it (the model has no written offset, so all of them).
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_track_write
 */
export function kvmMmuTrackWrite(mmu: ShadowMmu, gfn: number, index?: number): void {
  if (mmu.indirectShadowPages === 0) return;
  mmu.vm.stats.mmu_pte_write++;
  let flush = false;
  for (const sp of mmu.hash.validForGfn(gfn)) {
    if (!sp.hasGptes) continue;
    for (let i = index ?? 0; i < (index === undefined ? 512 : index + 1); i++) {
      if (sp.isLeaf(i) || (sp.child?.[i] ?? null) !== null) {
        if (sp.level > 1) mmu.vm.stats.mmu_pde_zapped++;
        mmu.mmuPageZapPte(sp, i);
        flush = true;
      }
    }
  }
  if (flush) mmu.vm.flushRemoteTlbs();
}

/**
 * The guest stores gpte at index of the guest table at tableGpa. If the table is shadowed, the store
 * traps and is emulated (kvm_mmu_track_write, mmu_pte_write); otherwise KVM does not see it. The store
 * is a non-SMM vCPU's: the write-tracking state is read in address space 0.
 */
export function guestWritePte(mmu: ShadowMmu, tableGpa: number, index: number, gpte: number): void {
  const gfn = Math.floor(tableGpa / PAGE);
  const slot = mmu.slotForGfn(gfn, 0);
  if (slot !== null && gfnIsShadowedTable(mmu, slot, gfn)) kvmMmuTrackWrite(mmu, gfn, index);
  mmu.gpt.write(gfn, index, gpte);
}

/** KVM's own software walk (the emulator reading guest memory by gva): sets A/D, creates no SPTE. @kernel arch/x86/kvm/mmu/paging_tmpl.h#FNAME(gva_to_gpa) */
export function kvmMmuGvaToGpa(mmu: ShadowMmu, vcpu: Vcpu, gva: number, write: boolean): number | null {
  const w = newGuestWalker();
  const env = new ShadowWalkEnv();
  env.mmu = mmu;
  env.asId = vcpu.asId();
  return walkAddrGeneric(mmu.gpt, w, vcpu.cr3, gva, write, false, true, env)
    ? w.gfn * PAGE + (gva % PAGE)
    : null;
}

/** What KVM's guest walk asks of the shadow MMU, for a vCPU in address space asId. */
class ShadowWalkEnv implements WalkEnv {
  mmu: ShadowMmu | null = null;
  asId = 0;

  /** kvm_vcpu_is_visible_gfn (ShadowMmu.kvmIsVisibleGfn) in the walking vCPU's address space. */
  walkVisible(gfn: number): boolean {
    return this.mmu!.kvmIsVisibleGfn(gfn, this.asId);
  }

  /**
   * FNAME(update_accessed_dirty_bits) for one table page: skipped in a read-only slot (`pte_writable`),
   * else the page is marked dirty (`kvm_vcpu_mark_page_dirty`) like any guest write KVM makes.
   */
  walkAdWrite(tableGfn: number): boolean {
    const slot = this.mmu!.slotForGfn(tableGfn, this.asId);
    if (slot === null || slot.flags & KVM_MEM_READONLY) return false;
    if (slot.dirtyBitmap !== null) markPageDirtyInSlot(slot, tableGfn);
    return true;
  }
}

/** The fault path's walk environment, pointed at the faulting vCPU's MMU and address space (no object per fault). */
const faultWalkEnv = new ShadowWalkEnv();
