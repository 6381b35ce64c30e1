/**
 * The reference semantics of a guest access: what the page or exit *should* be, computed only from the
 * state KVM's answer is defined by — the active memslots of the vCPU's address space, the memory
 * attributes, the host mm (which page is mapped at the slot's hva now) and guest_memfd's page cache. It
 * never reads SPTEs, TLBs or the fault path's intermediate state, so a stale translation anywhere below
 * shows up as a disagreement.
 *
 * Kernel counterpart: the contract of arch/x86/kvm/mmu/mmu.c#kvm_mmu_faultin_pfn / __kvm_mmu_faultin_pfn
 * (private/shared mismatch → KVM_EXIT_MEMORY_FAULT; no slot → kvm_handle_noslot_fault (MMIO); INVALID
 * slot → RET_PF_RETRY; write to a KVM_MEM_READONLY slot → emulated MMIO write; hva_to_pfn failure →
 * kvm_handle_error_pfn (-EFAULT); private → kvm_gmem_get_pfn) and of vmx_get_mt_mask for the memtype.
 * Under shadow paging (no TDP) the access names a guest virtual address: it is first translated through
 * the guest's page tables the way KVM's walker reads them (paging_tmpl.h FNAME(walk_addr_generic)); a
 * walk that fails means the guest gets #PF and the access reaches nothing.
 * Simplifications: the expected pfn is the one mapped *after* the access (the access may have faulted
 * the page in, broken KSM sharing, or allocated a guest_memfd page); it is a pure read of that state.
 */
import type { VmState } from '../kvm/vm_state.ts';
import type { Vcpu } from '../kvm/vcpu.ts';
import type { AccessKind } from '../kvm/api_types.ts';
import type { KvmMemorySlot } from '../kvm/kvm_host.ts';
import type { KvmGmemFile } from '../kvm/guest_memfd.ts';
import {
  KVM_MEMORY_ATTRIBUTE_PRIVATE,
  KVM_MEMSLOT_GMEM_ONLY,
  KVM_MEMSLOT_INVALID,
  KVM_MEM_READONLY,
} from '../uapi/kvm.ts';
import { kvmMmuGetMtMask } from '../x86/mtrr.ts';
import { shadowMmuOf } from '../x86/mmu/shadow_mmu.ts';
import { newGuestWalker, walkAddrGeneric, type WalkEnv } from '../x86/mmu/guest_paging.ts';

const PAGE = 4096;

/** What an access should produce. */
export type Expected =
  | { kind: 'page'; pfn: number; isPrivate: boolean; slot: KvmMemorySlot }
  | { kind: 'mmio'; write: boolean }
  | { kind: 'memory_fault'; isPrivate: boolean; why: string }
  | { kind: 'retry'; why: string; walk?: 'failed' | 'invalid-table' }
  | { kind: 'vm_dead' };

/** gfn as memslots index it, and whether the access is private (TDX shared bit, SNP C-bit, attributes). */
export function classifyGpa(
  vm: VmState,
  gpa: number,
  opts?: { private?: boolean },
): { hwGfn: number; gfn: number; isPrivate: boolean } {
  const hwGfn = Math.floor(gpa / PAGE);
  const bits = vm.arch.gfnDirectBits;
  if (bits !== 0) {
    const shared = Math.floor(hwGfn / bits) % 2 === 1;
    return { hwGfn, gfn: shared ? hwGfn - bits : hwGfn, isPrivate: !shared };
  }
  return { hwGfn, gfn: hwGfn, isPrivate: opts?.private ?? isPrivateGfn(vm, hwGfn) };
}

/** kvm_mem_is_private(): the gfn's attributes say private (only VMs with private memory have any). */
export function isPrivateGfn(vm: VmState, gfn: number): boolean {
  return vm.info.hasPrivateMem && (vm.memAttrs.get(gfn) & KVM_MEMORY_ATTRIBUTE_PRIVATE) !== 0;
}

/** The guest_memfd page currently backing gfn of slot, without allocating (0 = none). */
export function gmemPfn(slot: KvmMemorySlot, gfn: number): number {
  const b = slot.gmem;
  if (b === null) return 0;
  return (b.file as KvmGmemFile).pages.get(b.pgoff + (gfn - slot.baseGfn)) ?? 0;
}

/** Does this slot's gfn go to guest_memfd (private access, or a gmem-only slot)? */
export function usesGmem(slot: KvmMemorySlot, isPrivate: boolean): boolean {
  return isPrivate || (slot.flags & KVM_MEMSLOT_GMEM_ONLY) !== 0;
}

/**
 * The host page a present mapping of (slot, gfn) must point at now: the guest_memfd page, or the page the
 * host mm maps at the slot's hva. 0 when there is none (nothing may map it).
 */
export function expectedPfn(vm: VmState, slot: KvmMemorySlot, gfn: number, isPrivate: boolean): number {
  if (usesGmem(slot, isPrivate)) return gmemPfn(slot, gfn);
  return vm.kvm.host.pfnAt(slot.userspaceAddr + (gfn - slot.baseGfn) * PAGE);
}

/** What KVM would do with this access given the state now. */
export function referenceAccess(
  vm: VmState,
  vcpu: Vcpu,
  gpa: number,
  kind: AccessKind,
  opts?: { private?: boolean },
): Expected {
  const e = referenceAccessInto(vm, vcpu, gpa, kind, opts);
  return e === pageScratch ? { kind: 'page', pfn: e.pfn, isPrivate: e.isPrivate, slot: e.slot } : e;
}

/** referenceAccessInto's answer when it is a page: one object, rewritten by the next call. */
const pageScratch: Extract<Expected, { kind: 'page' }> = {
  kind: 'page',
  pfn: 0,
  isPrivate: false,
  slot: null as unknown as KvmMemorySlot,
};

function page(pfn: number, isPrivate: boolean, slot: KvmMemorySlot): Expected {
  pageScratch.pfn = pfn;
  pageScratch.isPrivate = isPrivate;
  pageScratch.slot = slot;
  return pageScratch;
}

/**
 * referenceAccess without an object per page (the checker's per-access check): a page is answered in
 * one scratch object, valid until the next call; anything else in a new object.
 */
export function referenceAccessInto(
  vm: VmState,
  vcpu: Vcpu,
  gpa: number,
  kind: AccessKind,
  opts?: { private?: boolean },
): Expected {
  if (vm.dead) return { kind: 'vm_dead' };
  const write = kind === 'write';
  if (!vm.cfg.tdp) {
    // Shadow paging: the access names a guest virtual address, which KVM's walker translates first.
    const t = guestTranslate(vm, vcpu, gpa, write);
    if (typeof t !== 'number') return { kind: 'retry', why: `guest #PF: ${t.why}`, walk: t.walk };
    gpa = t;
  }
  // classifyGpa, without its object where there is no shared bit
  const c = vm.arch.gfnDirectBits === 0 ? null : classifyGpa(vm, gpa, opts);
  const gfn = c === null ? Math.floor(gpa / PAGE) : c.gfn;
  const isPrivate = c === null ? (opts?.private ?? isPrivateGfn(vm, gfn)) : c.isPrivate;
  // The attributes decide first: a private access to a shared gfn (or the reverse) exits to userspace.
  if (vm.info.hasPrivateMem && isPrivate !== isPrivateGfn(vm, gfn))
    return { kind: 'memory_fault', isPrivate, why: 'private/shared mismatch' };
  const slot = vm.activeMemslots(vcpu.asId()).peekMemslot(gfn);
  if (slot === null) return { kind: 'mmio', write };
  // A slot being deleted or moved: the fault must wait for the update (it retries).
  if (slot.flags & KVM_MEMSLOT_INVALID) return { kind: 'retry', why: `memslot ${slot.id} is INVALID` };
  if (usesGmem(slot, isPrivate)) {
    if (slot.gmem === null)
      return { kind: 'memory_fault', isPrivate, why: 'private access without guest_memfd' };
    const pfn = gmemPfn(slot, gfn);
    if (pfn === 0) return { kind: 'memory_fault', isPrivate, why: 'guest_memfd hole' };
    return page(pfn, isPrivate, slot);
  }
  if (write && slot.flags & KVM_MEM_READONLY) return { kind: 'mmio', write: true };
  const hva = slot.userspaceAddr + (gfn - slot.baseGfn) * PAGE;
  const host = vm.kvm.host;
  const vma = host.findVma(hva);
  if (vma === null)
    return { kind: 'memory_fault', isPrivate: false, why: `no host mapping at 0x${hva.toString(16)}` };
  if (write && !vma.writable)
    return { kind: 'memory_fault', isPrivate: false, why: `read-only host mapping at 0x${hva.toString(16)}` };
  const pfn = host.pfnAt(hva);
  if (pfn === 0) return { kind: 'memory_fault', isPrivate: false, why: 'no host page after the access' };
  return page(pfn, false, slot);
}

const walker = newGuestWalker();

/**
 * gva → gpa through the guest's page tables as KVM's walker reads them now (tables only from visible
 * memslots; A/D bits untouched: a pure read), or why the walk fails (the guest gets #PF). All accesses
 * are user-mode, as in the model's shadow fault path.
 */
function guestTranslate(
  vm: VmState,
  vcpu: Vcpu,
  gva: number,
  write: boolean,
): number | { why: string; walk: 'failed' | 'invalid-table' } {
  const mmu = shadowMmuOf(vm);
  if (mmu === null) return gva;
  let hidden = -1;
  const env: WalkEnv = {
    walkVisible: (g) => mmu.peekIsVisibleGfn(g, vcpu.asId()) || ((hidden = g), false),
    walkAdWrite: () => false, // a pure read: A/D updates are off anyway
  };
  if (walkAddrGeneric(mmu.gpt, walker, vcpu.cr3, gva, write, true, false, env))
    return walker.gfn * PAGE + (gva % PAGE);
  // A table in a DELETE/MOVE's INVALID slot: until that ioctl's flush zaps the pages shadowing it, the
  // CPU may still translate through them (the access linearizes before the ioctl), or fault.
  const slot = hidden < 0 ? null : mmu.peekSlotForGfn(hidden, vcpu.asId());
  const invalid = slot !== null && (slot.flags & KVM_MEMSLOT_INVALID) !== 0;
  return { why: walker.fault, walk: invalid ? 'invalid-table' : 'failed' };
}

/** The EPT memory type (bits 5:3) KVM computes now for a shared leaf starting at leafGfn. */
export function expectedMemtype(vcpu: Vcpu, leafGfn: number): number {
  return (kvmMmuGetMtMask(vcpu, leafGfn, false) >>> 3) & 7;
}

/** A 'retry' result is legitimate only while a slot is INVALID or an MMU-notifier invalidation runs. */
export function retryAcceptable(vm: VmState, vcpu: Vcpu, gfn: number): boolean {
  if (vm.mmuInvalidateInProgress > 0) return true;
  const slot = vm.activeMemslots(vcpu.asId()).peekMemslot(gfn);
  return slot !== null && (slot.flags & KVM_MEMSLOT_INVALID) !== 0;
}
