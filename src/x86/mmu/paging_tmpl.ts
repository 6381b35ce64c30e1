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
import { KVM_MEM_READONLY, KVM_MEMSLOT_INVALID, KVM_USER_MEM_SLOTS } from '../../uapi/kvm.ts';
import type { KvmMemslots, VcpuLastUsedSlot } from '../../kvm/memslots.ts';
import { gup4kUsable } from '../../host/gup_4k.ts';
import { markPageDirtyInSlot } from '../../kvm/dirty_log.ts';
import { kvmMmuChildRole, SPTE_USER, SPTE_WRITABLE, type ShadowPage } from './shadow_rmap.ts';
import {
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
import { walkAddrFault } from './shadow_fault_walk.ts';
import { shadowFaultPaths } from './shadow_fault_paths.ts';
import { shadowEnterGuest } from './shadow_roots.ts';
import type { ShadowMmu } from './shadow_mmu.ts';
import type { HvaPfn } from '../../host/host_mm.ts';
import { asPfn } from '../../types/addr.ts';

const RET_PF_GUEST = 100; // model: the walk failed, the #PF goes to the guest
const MAX_REFAULTS = 8;
const PAGE = 4096;

const walker = newGuestWalker();

/** The fault path's specialised steps (shadow_fault_paths.ts); re-exported for the tests that turn them off. */
export { shadowFaultPaths };

/** hvaToPfnInto's answer (no object per fault). */
const hostPfn: HvaPfn = { pfn: asPfn(0), level: 1, writable: false };

/** The guest's access at CPL3 to gva. */
export function shadowVcpuAccess(mmu: ShadowMmu, vcpu: Vcpu, gva: number, kind: AccessKind): AccessResult {
  if (!(gva >= 0 && gva < 2 ** 48 && Number.isInteger(gva)) || !validKind(kind)) badAccess(gva, kind);
  if (mmu.vm.dead) return vmDead(gva);
  const write = kind === 'write';
  // gva's index at each level, from its 32-bit halves (int32 arithmetic only: no double per level).
  const lo = gva >>> 0;
  const hi = (gva - lo) / 4294967296;
  const i4 = (hi >>> 7) & 511;
  const i3 = ((lo >>> 30) | (hi << 2)) & 511;
  const i2 = (lo >>> 21) & 511;
  const i = (lo >>> 12) & 511;
  for (let tries = 0; tries < MAX_REFAULTS; tries++) {
    const root = shadowEnterGuest(mmu, vcpu);
    // The CPU walks the shadow tables.
    let sp: ShadowPage | null = root;
    if (sp !== null) sp = sp.child![i4] ?? null;
    if (sp !== null) sp = sp.child![i3] ?? null;
    if (sp !== null) sp = sp.child![i2] ?? null;
    let present = false;
    if (sp !== null) {
      const pfn = sp.pfn![i]!;
      const b = sp.bits![i]!;
      if (pfn >= 0 && b & SPTE_USER && (!write || b & SPTE_WRITABLE))
        return { exit: 'none', pfn, level: 1, memtype: 6 };
      // PFERR_PRESENT_MASK: the leaf SPTE is there, the access broke its protection.
      present = pfn >= 0;
    }
    vcpu.mode = OUTSIDE_GUEST_MODE; // the #PF VM exit
    vcpu.stats.exits++; // vcpu_enter_guest counts every exit, as guest_access.ts does for EPT violations
    const r = shadowPageFault(mmu, vcpu, root, gva, write, present);
    if (r !== RET_PF_FIXED && r !== RET_PF_SPURIOUS && r !== RET_PF_RETRY)
      return faultExit(mmu, r, gva, write);
  }
  return { exit: 'retry', gpa: gva, reason: 'the fault kept retrying' };
}

function validKind(kind: AccessKind): boolean {
  return kind === 'read' || kind === 'write' || kind === 'exec';
}

function badAccess(gva: number, kind: AccessKind): never {
  if (!Number.isSafeInteger(gva) || gva < 0 || gva >= 2 ** 48)
    throw new RangeError(
      `access: gva ${String(gva)} is not a 48-bit guest virtual address (shadow paging: the guest runs on its own page tables)`,
    );
  throw new TypeError(`access kind must be read, write or exec (got ${String(kind)})`);
}

function vmDead(gva: number): AccessResult {
  return { exit: 'vm_dead', gpa: gva, reason: 'the VM is dead' };
}

/** What the access returns after a fault that did not fix it (r: RET_PF_GUEST, _MEMORY_FAULT, _WRITE_PROTECTED or _EMULATE). */
function faultExit(mmu: ShadowMmu, r: number, gva: number, write: boolean): AccessResult {
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

/**
 * The memslot lookups of one fault go to the vCPU's address space's active set, fetched once: nothing
 * in a fault changes which set is active (only a memslot commit does). `root` is the root this entry
 * loaded (vcpu->arch.mmu->root.hpa; null: the dummy root): nothing in a fault loads or frees one.
 * @kernel arch/x86/kvm/mmu/paging_tmpl.h#FNAME(page_fault)
 */
export function shadowPageFault(
  mmu: ShadowMmu,
  vcpu: Vcpu,
  root: ShadowPage | null,
  gva: number,
  write: boolean,
  present = false,
): number {
  vcpu.stats.pf_taken++;
  const w = walker;
  const slots = mmu.vm.activeMemslots(vcpu.asId());
  // The fault's guest walk: walkAddrFault, or (tests comparing the two) the general one, faultWalkGeneric.
  const walked = shadowFaultPaths.walk
    ? walkAddrFault(mmu.gpt, w, vcpu.cr3, gva, write, slots, vcpu)
    : faultWalkGeneric(mmu, w, vcpu, gva, write, slots);
  if (!walked) {
    vcpu.stats.pf_guest++; // kvm_inject_emulated_page_fault → kvm_inject_page_fault
    return RET_PF_GUEST;
  }
  const slot = slots.vcpuGfnToMemslot(vcpu, w.gfn); // SMRAM in SMM
  if (slot === null || present || slot.flags & (KVM_MEMSLOT_INVALID | KVM_MEM_READONLY)) {
    const r = faultSlotChecks(vcpu, slot, w.gfn, write, present);
    if (r !== 0) return r;
  }
  const pfn = faultinPfn(mmu, slot!, w.gfn, write);
  if (pfn < 0) return RET_PF_MEMORY_FAULT;
  const writable = hostPfn.writable && !(slot!.flags & KVM_MEM_READONLY);
  const r = fetch(mmu, vcpu, root, w, gva, slot!, pfn, writable, write);
  if (r === RET_PF_FIXED) {
    vcpu.stats.pf_fixed++;
    mmu.noteFixed(w.gfn);
  } else if (r === RET_PF_SPURIOUS) vcpu.stats.pf_spurious++;
  else if (r === RET_PF_WRITE_PROTECTED) vcpu.stats.pf_emulate++;
  return r;
}

/**
 * The fault's guest walk as the general walk makes it (`shadowFaultPaths.walk` off: tests comparing it
 * with walkAddrFault): walkAddrGeneric with the fault path's env.
 */
function faultWalkGeneric(
  mmu: ShadowMmu,
  w: GuestWalker,
  vcpu: Vcpu,
  gva: number,
  write: boolean,
  slots: KvmMemslots,
): boolean {
  faultWalkEnv.slots = slots;
  faultWalkEnv.vcpu = vcpu;
  return walkAddrGeneric(mmu.gpt, w, vcpu.cr3, gva, write, true, true, faultWalkEnv);
}

/**
 * FNAME(page_fault)'s answers before the pfn lookup, in its order; 0 when the fault goes on. Only a
 * fault with no slot, through a present SPTE, or on an INVALID or read-only slot can get one.
 */
function faultSlotChecks(
  vcpu: Vcpu,
  slot: KvmMemorySlot | null,
  gfn: number,
  write: boolean,
  present: boolean,
): number {
  // page_fault_handle_page_track: a write through a present SPTE to a write-tracked gfn (a shadowed guest
  // table) is emulated at once, before the pfn is looked up: no SPTE changes and nothing is prefetched.
  if (present && write && slot !== null && kvmGfnIsWriteTracked(slot, gfn))
    return emulateWriteProtected(vcpu);
  // kvm_handle_noslot_fault: MMIO caching is off on the modelled host, so emulate without an SPTE.
  if (slot === null) return emulate(vcpu);
  if (slot.flags & KVM_MEMSLOT_INVALID) return RET_PF_RETRY;
  if (write && slot.flags & KVM_MEM_READONLY) return emulate(vcpu);
  return 0;
}

/**
 * The host page behind gfn of slot, faulted in on first touch: its pfn, or -1 if the host has none
 * (-EFAULT); hostPfn.writable says if it may be mapped writable. A 4K-backed mapping without KSM pages
 * goes straight to gup4k, the 4K case of hvaToPfnInto, with the same effects. (The host side of
 * kvm_mmu_faultin_pfn → hva_to_pfn, which the host model answers.)
 */
function faultinPfn(mmu: ShadowMmu, slot: KvmMemorySlot, gfn: number, write: boolean): number {
  const host = mmu.vm.kvm.host;
  const hva = slot.userspaceAddr + (gfn - slot.baseGfn) * PAGE;
  const v = host.findVma(hva);
  if (v !== null && gup4kUsable(v, write)) {
    hostPfn.writable = v.writable;
    return host.gup4kInto(v, hva);
  }
  return host.hvaToPfnInto(hva, write, hostPfn) ? hostPfn.pfn : -1;
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
  root: ShadowPage | null,
  w: GuestWalker,
  gva: number,
  slot: KvmMemorySlot,
  pfn: number,
  hostWritable: boolean,
  write: boolean,
): number {
  // The walk succeeded on a dummy root: a memslot made CR3 visible since; load a real root and retry.
  if (root === null) {
    vcpu.makeRequest(KVM_REQ_MMU_FREE_OBSOLETE_ROOTS);
    return RET_PF_RETRY;
  }
  const lo = gva >>> 0;
  const hi = (gva - lo) / 4294967296;
  let sp = root;
  for (let level = 4; level > 1; level--) {
    const i =
      level === 4 ? (hi >>> 7) & 511 : level === 3 ? ((lo >>> 30) | (hi << 2)) & 511 : (lo >>> 21) & 511;
    const child = sp.child![i] ?? null;
    // A direct page (under a guest 2M gPTE) is checked against the walk's access first.
    sp = child === null || (level === 2 && w.level === 2) ? fetchChild(mmu, w, sp, i, level, child) : child;
  }
  const i = (lo >>> 12) & 511;
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
 * FNAME(fetch) at one level where the link is missing or leads to a direct page: drop a direct page made
 * for other access, then link the page the walk needs (found in the hash or made).
 */
function fetchChild(
  mmu: ShadowMmu,
  w: GuestWalker,
  sp: ShadowPage,
  i: number,
  level: number,
  found: ShadowPage | null,
): ShadowPage {
  let child = found;
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
  return child;
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
  env.slots = mmu.vm.activeMemslots(vcpu.asId());
  env.vcpu = vcpu;
  return walkAddrGeneric(mmu.gpt, w, vcpu.cr3, gva, write, false, true, env)
    ? w.gfn * PAGE + (gva % PAGE)
    : null;
}

/** What KVM's guest walk asks of the shadow MMU, for a vCPU whose address space's memslots are `slots`. */
class ShadowWalkEnv implements WalkEnv {
  slots: KvmMemslots | null = null;
  vcpu: VcpuLastUsedSlot | null = null;

  /** kvm_vcpu_is_visible_gfn (ShadowMmu.kvmIsVisibleGfn) in the walking vCPU's address space. */
  walkVisible(gfn: number): boolean {
    const slot = this.slots!.vcpuGfnToMemslot(this.vcpu!, gfn);
    return slot !== null && (slot.flags & KVM_MEMSLOT_INVALID) === 0 && slot.id < KVM_USER_MEM_SLOTS;
  }

  /**
   * FNAME(update_accessed_dirty_bits) for one table page: skipped in a read-only slot (`pte_writable`),
   * else the page is marked dirty (`kvm_vcpu_mark_page_dirty`) like any guest write KVM makes.
   */
  walkAdWrite(tableGfn: number): boolean {
    const slot = this.slots!.vcpuGfnToMemslot(this.vcpu!, tableGfn); // kvm_vcpu_mark_page_dirty
    if (slot === null || slot.flags & KVM_MEM_READONLY) return false;
    if (slot.dirtyBitmap !== null) markPageDirtyInSlot(slot, tableGfn);
    return true;
  }
}

/** The fault path's walk environment, pointed at the faulting vCPU's memslots (no object per fault). */
const faultWalkEnv = new ShadowWalkEnv();
