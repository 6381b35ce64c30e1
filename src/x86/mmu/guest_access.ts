/**
 * One guest memory access, as the CPU and KVM handle it: VM entry services the vCPU's requests (free
 * obsolete roots, TLB flush) and reloads a root; the CPU translates through its TLB, else walks the
 * EPT; a present leaf with enough permission completes the access (and fills the TLB), an MMIO SPTE is
 * an EPT misconfiguration (emulated as MMIO if its generation is current), anything else is an EPT
 * violation that enters the fault path, after which the instruction is retried.
 *
 * Kernel counterpart: arch/x86/kvm/x86.c#vcpu_enter_guest (request servicing, kvm_mmu_reload),
 * arch/x86/kvm/mmu/mmu.c (kvm_mmu_page_fault, handle_mmio_page_fault, check_mmio_spte,
 * fast_page_fault for the dirty-logging write-protect case), arch/x86/kvm/vmx/vmx.c
 * (handle_ept_violation, handle_ept_misconfig). The CPU side (TLB, walk, PML) is the model's own.
 * Simplification: the walk reads the live SPTEs (no paging-structure caches beyond the TLB).
 * The same steps stopped where the kernel lets other threads in (the stepping hooks) are in
 * guest_access_step.ts.
 */
import type { Vcpu } from '../../kvm/vcpu.ts';
import {
  IN_GUEST_MODE,
  KVM_REQ_MMU_FREE_OBSOLETE_ROOTS,
  KVM_REQ_TLB_FLUSH,
  OUTSIDE_GUEST_MODE,
} from '../../kvm/vcpu.ts';
import type { AccessKind, AccessResult } from '../../kvm/api_types.ts';
import {
  KVM_MEMORY_ATTRIBUTE_PRIVATE,
  KVM_MEMSLOT_INVALID,
  KVM_MEM_LOG_DIRTY_PAGES,
} from '../../uapi/kvm.ts';
import { markPageDirtyInSlot } from '../../kvm/dirty_log.ts';
import { kvmTdpMmuGetWalk, tdpMmuWriteWalkedSpteLo, type TdpWalkResult } from './tdp_mmu.ts';
import {
  isMmioSpte,
  getMmioSpteGeneration,
  spteToPfn,
  PT_WRITABLE_MASK,
  VMX_EPT_DIRTY_BIT,
  VMX_EPT_ACCESS_BIT,
  VMX_EPT_MT_MASK,
  EPT_SPTE_MMU_WRITABLE_HI,
  MMIO_SPTE_GEN_MASK,
  SPTE_MMU_PRESENT_MASK,
} from './spte.ts';
import {
  newPageFault,
  resetPageFault,
  kvmTdpMmuPageFault,
  RET_PF_FIXED,
  RET_PF_SPURIOUS,
  RET_PF_EMULATE,
  RET_PF_RETRY,
  RET_PF_MEMORY_FAULT,
  kvmMmuFaultinPfn,
  kvmTdpMmuPageFaultLocked,
  tdpMmuGetRootForFault,
  RET_PF_CONTINUE,
  type KvmPageFault,
} from './page_fault.ts';
import type { X86Mmu } from './mmu.ts';

export interface AccessOptions {
  private?: boolean;
}

/** How many times the guest re-executes a faulting instruction before the model reports 'retry'. */
const MAX_REFAULTS = 8;
const walk: TdpWalkResult = { lo: 0, hi: 0, level: 0, sptep: new Int32Array(0), word: 0 };
/** The fault object of vcpuAccess (not held past the call; beginFault allocates its own). */
const accessFault = newPageFault(0, 0, false, false, false);
const classified: Classified = { hwGfn: 0, gfn: 0, isPrivate: false };

/** VM entry: service requests, then make sure a root is loaded. @kernel arch/x86/kvm/x86.c#vcpu_enter_guest */
export function vcpuEnterGuest(mmu: X86Mmu, vcpu: Vcpu): void {
  if (vcpu.requests & KVM_REQ_MMU_FREE_OBSOLETE_ROOTS) {
    vcpu.requests &= ~KVM_REQ_MMU_FREE_OBSOLETE_ROOTS;
    mmu.kvmMmuFreeObsoleteRoots(vcpu);
  }
  if (vcpu.requests & KVM_REQ_TLB_FLUSH) {
    vcpu.requests &= ~KVM_REQ_TLB_FLUSH;
    vcpu.tlb.flushAll(); // kvm_vcpu_flush_tlb_all
    vcpu.stats.tlb_flush++;
  }
  mmu.kvmMmuReload(vcpu);
  // From here until the next VM exit a remote flush has to IPI this vCPU.
  vcpu.mode = IN_GUEST_MODE;
}

export interface Classified {
  /** gfn the CPU translates (with the TDX shared bit for shared accesses) */
  hwGfn: number;
  /** gfn memslots are indexed by */
  gfn: number;
  isPrivate: boolean;
}

export function classify(mmu: X86Mmu, gpa: number, opts: AccessOptions | undefined): Classified {
  const vm = mmu.vm;
  const hwGfn = Math.floor(gpa / 4096);
  const bits = vm.arch.gfnDirectBits;
  const out = opts === undefined ? { hwGfn, gfn: hwGfn, isPrivate: false } : classified;
  out.hwGfn = hwGfn;
  if (bits !== 0) {
    // TDX: the shared bit selects the shared EPT; everything else is private (S-EPT, the mirror root).
    const shared = Math.floor(hwGfn / bits) % 2 === 1;
    out.gfn = shared ? hwGfn - bits : hwGfn;
    out.isPrivate = !shared;
    return out;
  }
  out.gfn = hwGfn;
  // A VM without private memory never sees a private fault, whatever the guest claims: the kernel sets
  // PFERR_PRIVATE_ACCESS only for SNP (the C-bit, npf_interception), TDX (the shared bit) and
  // SW_PROTECTED (the attribute, kvm_mmu_page_fault). So `private` is ignored there, on both MMUs.
  if (!vm.info.hasPrivateMem) {
    out.isPrivate = false;
    return out;
  }
  out.isPrivate = opts?.private ?? (vm.memAttrs.get(hwGfn) & KVM_MEMORY_ATTRIBUTE_PRIVATE) !== 0;
  return out;
}

/**
 * Where a completed access leaves what it reached (read right after the call that filled it): the hot
 * path allocates nothing, and vcpu.access builds its result object from it.
 */
export const accessHit = { pfn: 0, level: 1 as 1 | 2 | 3, memtype: 0 };

/** vcpu.access(): one guest access, start to finish. */
export function vcpuAccess(
  mmu: X86Mmu,
  vcpu: Vcpu,
  gpa: number,
  kind: AccessKind,
  opts?: AccessOptions,
): AccessResult {
  if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa >= 2 ** 52)
    throw new RangeError(`gpa ${String(gpa)} is not a guest physical address`);
  checkAccessKind(kind);
  const r = vcpuAccessCore(mmu, vcpu, gpa, kind, opts);
  return r !== null
    ? r
    : { exit: 'none', pfn: accessHit.pfn, level: accessHit.level, memtype: accessHit.memtype };
}

export function checkAccessKind(kind: unknown): asserts kind is AccessKind {
  if (kind !== 'read' && kind !== 'write' && kind !== 'exec')
    throw new TypeError(`access kind must be read, write or exec (got ${String(kind)})`);
}

/**
 * One validated access: null when it completed (what it reached is in `accessHit`), else the exit. The one
 * copy of the access path: vcpu.access and the batched calls (access_batch.ts) both run it.
 */
export function vcpuAccessCore(
  mmu: X86Mmu,
  vcpu: Vcpu,
  gpa: number,
  kind: AccessKind,
  opts: AccessOptions | undefined,
): AccessResult | null {
  const vm = mmu.vm;
  if (vm.dead) return { exit: 'vm_dead', gpa, reason: 'the VM is dead (KVM_BUG_ON or a fatal TDX error)' };
  const c = classify(mmu, gpa, opts);
  const write = kind === 'write';
  // KVM_RUN on a TD needs KVM_TDX_FINALIZE_VM first; the model's first run finalizes it instead.
  const tdx = vm.arch.tdx;
  if (tdx !== undefined && tdx.state !== 'runnable') tdx.finalize('KVM_RUN');
  for (let tries = 0; tries < MAX_REFAULTS; tries++) {
    vcpuEnterGuest(mmu, vcpu);
    const hit = translate(mmu, vcpu, c, write);
    if (hit !== MISS) return hit;
    // Anything but a completed access is a VM exit: KVM handles it outside guest mode.
    vcpu.mode = OUTSIDE_GUEST_MODE;
    const mmio = handleEptMisconfig(mmu, vcpu, c, gpa, write);
    if (mmio !== null) return mmio;
    // EPT violation
    noteEptViolation(mmu, vcpu, gpa, write, kind);
    const fault = resetPageFault(accessFault, gpa, c.gfn, write, kind === 'exec', c.isPrivate);
    const r = fastPageFault(mmu, vcpu, c, fault) ?? kvmTdpMmuPageFault(mmu, vcpu, fault);
    const done = finishFault(mmu, vcpu, fault, r, gpa, c);
    if (done !== null) return done;
  }
  return { exit: 'retry', gpa, reason: `still faulting after ${MAX_REFAULTS} tries` };
}

/**
 * An EPT violation exit as KVM counts and traces it before handling the fault (the exit and pf_taken
 * stats, the kvm_page_fault tracepoint): the one-shot access and the stepwise one in guest_access_step.ts.
 */
export function noteEptViolation(
  mmu: X86Mmu,
  vcpu: Vcpu,
  gpa: number,
  write: boolean,
  kind: AccessKind,
): void {
  vcpu.stats.exits++;
  vcpu.stats.pf_taken++;
  if (mmu.trace)
    mmu.trace({
      name: 'kvm_page_fault',
      vcpuId: vcpu.vcpuId,
      gpa,
      errorCode: write ? 2 : kind === 'exec' ? 4 : 1,
    });
}

/**
 * Account a fault's result as kvm_mmu_do_page_fault does, and turn it into an exit, or null if the guest
 * simply re-executes the instruction.
 */
export function finishFault(
  mmu: X86Mmu,
  vcpu: Vcpu,
  fault: KvmPageFault,
  r: number,
  gpa: number,
  c: Classified,
): AccessResult | null {
  const vm = mmu.vm;
  switch (r) {
    case RET_PF_FIXED:
      vcpu.stats.pf_fixed++;
      if (mmu.noteMapped(c.hwGfn)) vm.countModel('refaults');
      return null;
    case RET_PF_SPURIOUS:
      vcpu.stats.pf_spurious++;
      return null;
    case RET_PF_EMULATE:
      vcpu.stats.pf_emulate++;
      vcpu.stats.mmio_exits++;
      return { exit: 'mmio', gpa, write: fault.write };
    case RET_PF_MEMORY_FAULT:
      // kvm_mmu_prepare_memory_fault_exit reports fault->gfn: the gpa without the TDX shared bit.
      return { exit: 'memory_fault', gpa: fault.gfn * 4096, size: 4096, private: fault.isPrivate };
    case RET_PF_RETRY: {
      if (mmu.trace)
        mmu.trace({ name: 'kvm_fault_retry', vcpuId: vcpu.vcpuId, gpa, reason: fault.retryReason });
      vm.countModel('fault_retries');
      // An INVALID slot stays INVALID until the memslot update finishes; the vCPU would spin until then.
      const slot = vm.activeMemslots(vcpu.asId()).vcpuGfnToMemslot(vcpu, c.gfn);
      if (slot !== null && slot.flags & KVM_MEMSLOT_INVALID)
        return { exit: 'retry', gpa, reason: fault.retryReason };
      return null;
    }
  }
  throw new Error(`unexpected fault result ${r}`);
}

/** translate(): the access must exit to KVM (EPT violation or misconfiguration). */
export const MISS = 0;

/**
 * The CPU's translation: TLB, then the EPT walk. null when the access completed (what it reached is in
 * accessHit), MISS if it must exit to KVM, or the exit itself.
 */
export function translate(
  mmu: X86Mmu,
  vcpu: Vcpu,
  c: Classified,
  write: boolean,
): AccessResult | null | typeof MISS {
  const tlb = vcpu.tlb;
  if (tlb.probe(c.hwGfn) && (!write || tlb.hit.writable)) {
    const t = tlb.hit;
    accessHit.pfn = t.pfn;
    accessHit.level = t.level;
    accessHit.memtype = t.memtype;
    return null;
  }
  const root = tdpMmuGetRootForFault(mmu, vcpu, c.isPrivate);
  walk.level = 0;
  if (root < 0 || !kvmTdpMmuGetWalk(mmu.tdp, root, c.hwGfn, walk)) return MISS;
  // TDX: an S-EPT leaf the guest has not accepted is a pending EPT violation, which kills the TD.
  if (c.isPrivate && mmu.vm.arch.tdx !== undefined && !mmu.vm.arch.tdx.isAccepted(c.gfn))
    return mmu.vm.arch.tdx.pendingEptViolation(c.hwGfn * 4096);
  let lo = walk.lo;
  if (write && (lo & PT_WRITABLE_MASK) === 0) return MISS; // write-protected: EPT violation
  const level = walk.level as 1 | 2 | 3;
  // The CPU sets A (and D on a write) itself; with PML the D transition also logs the gfn.
  const want = VMX_EPT_ACCESS_BIT | (write ? VMX_EPT_DIRTY_BIT : 0);
  if ((lo & want) !== want) {
    if (write && (lo & VMX_EPT_DIRTY_BIT) === 0) {
      const slot = mmu.vm.activeMemslots(vcpu.asId()).vcpuGfnToMemslot(vcpu, c.gfn);
      if (slot !== null) markPageDirtyInSlot(slot, c.gfn);
    }
    lo = tdpMmuWriteWalkedSpteLo(walk, lo | want);
  }
  const span = level === 1 ? 1 : level === 2 ? 512 : 262144;
  const basePfn = spteToPfn(lo, walk.hi);
  // (no `%`: on gfns held as doubles it is a call to fmod; span is a power of two, so this is exact)
  const pfn = level === 1 ? basePfn : basePfn + (c.hwGfn - Math.floor(c.hwGfn / span) * span);
  const memtype = (lo & VMX_EPT_MT_MASK) >>> 3;
  // A clean writable entry is cached read-only so a later write walks again and sets D.
  vcpu.tlb.fill(
    c.hwGfn,
    basePfn,
    level,
    (lo & PT_WRITABLE_MASK) !== 0 && (lo & VMX_EPT_DIRTY_BIT) !== 0,
    memtype,
  );
  accessHit.pfn = pfn;
  accessHit.level = level;
  accessHit.memtype = memtype;
  return null;
}

/**
 * An MMIO SPTE under the gfn is an EPT misconfiguration: if its generation is current the access is
 * emulated MMIO (no page fault is counted), else the fault path replaces it.
 * @kernel arch/x86/kvm/mmu/mmu.c#handle_mmio_page_fault
 */
export function handleEptMisconfig(
  mmu: X86Mmu,
  vcpu: Vcpu,
  c: Classified,
  gpa: number,
  write: boolean,
): AccessResult | null {
  if (walk.level === 0 || !isMmioSpte(walk.lo, walk.hi, mmu.tdp.mmioValue)) return null;
  const slots = mmu.vm.activeMemslots(vcpu.asId());
  // check_mmio_spte: a memslot update in progress, or any generation change, makes the SPTE stale.
  const current =
    !slots.updateInProgress &&
    getMmioSpteGeneration(walk.lo, walk.hi) === slots.generation % (MMIO_SPTE_GEN_MASK + 1);
  walk.level = 0;
  if (!current) return null;
  vcpu.stats.exits++;
  vcpu.stats.mmio_exits++;
  void c;
  return { exit: 'mmio', gpa, write };
}

/**
 * A write to a present leaf that dirty logging write-protected but KVM still considers MMU-writable is
 * fixed without mmu_lock: make it writable and log the gfn. (A/D bits are always on here, so the
 * access-tracking half of page_fault_can_be_fast does not apply.)
 * @kernel arch/x86/kvm/mmu/mmu.c#fast_page_fault
 */
export function fastPageFault(mmu: X86Mmu, vcpu: Vcpu, c: Classified, fault: KvmPageFault): number | null {
  if (!fault.write || c.isPrivate) return null;
  const root = vcpu.mmu.root;
  // translate() just walked this gfn and left the last SPTE in `walk`: no second walk needed.
  if (root < 0 || walk.level === 0 || (walk.lo & SPTE_MMU_PRESENT_MASK) === 0) return null;
  if ((walk.lo & PT_WRITABLE_MASK) !== 0 || (walk.hi & EPT_SPTE_MMU_WRITABLE_HI) === 0) return null;
  const slot = mmu.vm.activeMemslots(vcpu.asId()).vcpuGfnToMemslot(vcpu, c.gfn);
  // A huge leaf of a logged slot goes down the slow path to be split: only fault->gfn would be logged.
  // (A huge leaf left write-protected after logging stopped is fixed here, as any other.)
  if (walk.level !== 1 && (slot === null || (slot.flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0)) return null;
  // translate()'s walk ended on this leaf: fix it where it stands. (The kernel sets only W and lets the
  // CPU set D on the retried write; the model sets both, the same SPTE the retried write leaves.)
  tdpMmuWriteWalkedSpteLo(walk, walk.lo | PT_WRITABLE_MASK | VMX_EPT_DIRTY_BIT);
  if (slot !== null) markPageDirtyInSlot(slot, c.gfn);
  vcpu.stats.pf_fast++;
  return RET_PF_FIXED;
}
