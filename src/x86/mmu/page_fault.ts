/**
 * The TDP page fault, written as the kernel's phases so a scheduler can interleave them with other work:
 *   1. snapshot   mmu_invalidate_seq is read before anything that can sleep (kvm_mmu_faultin_pfn)
 *   2. get pfn    memslot lookup (INVALID → retry, none → MMIO or, if private, a memory-fault exit),
 *                 private/shared check, early retry if an invalidation covers the gfn or ran since the
 *                 snapshot, host pfn (GUP or guest_memfd), the same early check again
 *   3. lock       take mmu_lock (read) and recheck: root obsolete, or the invalidation seq moved / range
 *                 covers the gfn → retry (is_page_fault_stale)
 *   4. install    huge-page level, make the SPTE, kvm_tdp_mmu_map.
 * `kvmTdpMmuPageFault` runs them back to back; guest_access_step.ts can also stop between 2 and 3.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/mmu.c (kvm_tdp_mmu_page_fault, kvm_mmu_faultin_pfn,
 * __kvm_mmu_faultin_pfn, kvm_handle_noslot_fault, is_page_fault_stale, kvm_mmu_hugepage_adjust,
 * __kvm_mmu_max_mapping_level, kvm_handle_error_pfn), arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_map,
 * virt/kvm/kvm_main.c (mmu_invalidate_retry_gfn[_unsafe]).
 * Simplifications: no async #PF, no fast-path cmpxchg races (fast_page_fault handles only the dirty-
 * logging write-protect case), no NX huge pages (nx_huge_pages=N).
 */
import {
  KVM_MEMSLOT_INVALID,
  KVM_MEM_READONLY,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEMSLOT_GMEM_ONLY,
  KVM_MEMORY_ATTRIBUTE_PRIVATE,
} from '../../uapi/kvm.ts';
import type { KvmMemorySlot } from '../../kvm/kvm_host.ts';
import type { Vcpu } from '../../kvm/vcpu.ts';
import { markPageDirtyInSlot } from '../../kvm/dirty_log.ts';
import { kvmGmemGetPfn } from '../../kvm/guest_memfd.ts';
import { hasBug } from '../../kvm/host_profile.ts';
import { asPfn, pagesPerHpage, type PgLevel } from '../../types/addr.ts';
import type { HvaPfn } from '../../host/host_mm.ts';
import { gfnToIndex, kvmMmuMaxGfn } from '../x86.ts';
import {
  kvmTdpMmuMap,
  TDP_MAP_FLUSH,
  TDP_MAP_OUTCOME_MASK,
  TDP_MAP_FIXED,
  TDP_MAP_SPURIOUS,
} from './tdp_mmu.ts';
import {
  makeSpte,
  makeMmioSpte,
  newSptePair,
  MMIO_SPTE_GEN_MASK,
  type SptePair,
  PT_WRITABLE_MASK,
  VMX_EPT_EXECUTABLE_MASK,
  VMX_EPT_READABLE_MASK,
  type MakeSpteParams,
  tdpLeafParams,
} from './spte.ts';
import { ROLE_INVALID } from './mmu_internal.ts';
import type { X86Mmu } from './mmu.ts';
import { kvmMmuGetMtMask, kvmTdpMtrrMaxLevel } from '../mtrr.ts';

/** enum ret_pf (mmu_internal.h) */
export const RET_PF_CONTINUE = 0;
export const RET_PF_RETRY = 1;
export const RET_PF_EMULATE = 2;
export const RET_PF_INVALID = 4;
export const RET_PF_FIXED = 5;
export const RET_PF_SPURIOUS = 6;
/** Not a kernel value: the fault ends in a KVM_EXIT_MEMORY_FAULT (-EFAULT from KVM_RUN). */
export const RET_PF_MEMORY_FAULT = -14;

/** KVM_MAX_HUGEPAGE_LEVEL on x86-64 with TDP */
const KVM_MAX_HUGEPAGE_LEVEL = 3;

/** struct kvm_page_fault (the fields the model uses) */
export interface KvmPageFault {
  addr: number;
  /** gfn without the TDX shared bit (memslots are indexed by it) */
  gfn: number;
  write: boolean;
  exec: boolean;
  isPrivate: boolean;
  slot: KvmMemorySlot | null;
  mmuSeq: number;
  pfn: number;
  mapWritable: boolean;
  hostLevel: number;
  maxLevel: number;
  goalLevel: number;
  /** why the fault retried, for traces and the 'retry' exit */
  retryReason: string;
}

/** Re-initialise a fault object for a new fault (the access path reuses one). */
export function resetPageFault(
  f: KvmPageFault,
  addr: number,
  gfn: number,
  write: boolean,
  exec: boolean,
  isPrivate: boolean,
): KvmPageFault {
  f.addr = addr;
  f.gfn = gfn;
  f.write = write;
  f.exec = exec;
  f.isPrivate = isPrivate;
  f.slot = null;
  f.mmuSeq = 0;
  f.pfn = 0;
  f.mapWritable = false;
  f.hostLevel = 1;
  f.maxLevel = KVM_MAX_HUGEPAGE_LEVEL;
  f.goalLevel = 1;
  f.retryReason = '';
  return f;
}

export function newPageFault(
  addr: number,
  gfn: number,
  write: boolean,
  exec: boolean,
  isPrivate: boolean,
): KvmPageFault {
  return resetPageFault({} as KvmPageFault, addr, gfn, write, exec, isPrivate);
}

/**
 * The root a fault (or the CPU's walk) uses: a TD's private gpas (no shared bit) go to the mirror root;
 * everything else, including private memory of SW_PROTECTED and SNP guests, to the direct root.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.h#tdp_mmu_get_root_for_fault
 */
export function tdpMmuGetRootForFault(mmu: X86Mmu, vcpu: Vcpu, isPrivate: boolean): number {
  return isPrivate && mmu.vm.arch.gfnDirectBits !== 0 ? vcpu.mmu.mirrorRoot : vcpu.mmu.root;
}

/**
 * An invalidation in progress covers the gfn, or one ran since the fault's snapshot. Read without
 * mmu_lock, so a stale range only costs a spurious retry; what matters is seeing the count move.
 * @kernel include/linux/kvm_host.h#mmu_invalidate_retry_gfn_unsafe
 */
function mmuInvalidateRetryGfnUnsafe(mmu: X86Mmu, mmuSeq: number, gfn: number): boolean {
  const vm = mmu.vm;
  if (vm.mmuInvalidateInProgress > 0 && gfn >= vm.mmuInvalidateRangeStart && gfn < vm.mmuInvalidateRangeEnd)
    return true;
  return vm.mmuInvalidateSeq !== mmuSeq;
}

/**
 * Phases 1–2: snapshot the invalidation sequence, find the slot, get the pfn.
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_faultin_pfn
 */
export function kvmMmuFaultinPfn(mmu: X86Mmu, vcpu: Vcpu, fault: KvmPageFault): number {
  const vm = mmu.vm;
  // The snapshot comes first: any invalidation that starts after it will move the sequence.
  fault.mmuSeq = vm.mmuInvalidateSeq;
  // kvm_tdp_page_fault: where guest MTRRs set the memtype, one mapping must not span two MTRR types.
  fault.maxLevel = kvmTdpMtrrMaxLevel(vcpu, fault.gfn, fault.maxLevel);
  const slot = vm.activeMemslots(vcpu.asId()).vcpuGfnToMemslot(vcpu, fault.gfn);
  fault.slot = slot;
  const attrPrivate =
    vm.info.hasPrivateMem && (vm.memAttrs.get(fault.gfn) & KVM_MEMORY_ATTRIBUTE_PRIVATE) !== 0;
  if (vm.info.hasPrivateMem && fault.isPrivate !== attrPrivate) {
    fault.retryReason = 'private/shared mismatch with the memory attributes';
    return RET_PF_MEMORY_FAULT;
  }
  if (slot === null) return kvmHandleNoslotFault(mmu, vcpu, fault);
  // The slot is being deleted or moved: wait until the update is done, then the fault sees the result.
  // BUG fault-ignores-invalid-slot: the fault goes on to map the gfn of a slot being deleted/moved.
  if (slot.flags & KVM_MEMSLOT_INVALID && !hasBug(vm.cfg, 'fault-ignores-invalid-slot')) {
    fault.retryReason = 'memslot is INVALID (being deleted or moved)';
    return RET_PF_RETRY;
  }
  // Checked before the pfn lookup (which may sleep, and would only make a running invalidation slower)…
  if (mmuInvalidateRetryGfnUnsafe(mmu, fault.mmuSeq, fault.gfn)) {
    fault.retryReason = 'an MMU-notifier invalidation covers the gfn';
    return RET_PF_RETRY;
  }
  const r = faultinPfnFromSlot(mmu, fault, slot);
  if (r !== RET_PF_CONTINUE) return r;
  // …and again after it, purely to avoid taking mmu_lock for a fault that must retry anyway (e.g. the
  // lookup broke COW, which ran a whole invalidation on this gfn).
  if (mmuInvalidateRetryGfnUnsafe(mmu, fault.mmuSeq, fault.gfn)) {
    fault.retryReason = 'an invalidation ran while the pfn was looked up (before mmu_lock)';
    return RET_PF_RETRY;
  }
  return RET_PF_CONTINUE;
}

/** Where faultinPfnFromSlot's GUP leaves the host page (read at once; no object per fault). */
const hostPage: HvaPfn = { pfn: asPfn(0), level: 1, writable: false };

function faultinPfnFromSlot(mmu: X86Mmu, fault: KvmPageFault, slot: KvmMemorySlot): number {
  const vm = mmu.vm;
  const toGmem = fault.isPrivate || (slot.flags & KVM_MEMSLOT_GMEM_ONLY) !== 0;
  if (toGmem) {
    if (slot.gmem === null) {
      fault.retryReason = 'private access to a memslot without guest_memfd';
      return RET_PF_MEMORY_FAULT;
    }
    const r = kvmGmemGetPfn(vm.kvm.host.pfns, slot, fault.gfn);
    if (r === null) {
      fault.retryReason = 'guest_memfd has no page there (hole)';
      return RET_PF_MEMORY_FAULT;
    }
    fault.pfn = r;
    fault.mapWritable = true;
    fault.hostLevel = 1;
    // kvm_max_private_mapping_level: this model's guest_memfd (and TDX) map private memory at 4K.
    fault.maxLevel = 1;
    return RET_PF_CONTINUE;
  }
  // A write to a read-only slot is emulated: userspace sees an MMIO write.
  if (fault.write && slot.flags & KVM_MEM_READONLY) return RET_PF_EMULATE;
  const hva = slot.userspaceAddr + (fault.gfn - slot.baseGfn) * 4096;
  const p = hostPage;
  if (!vm.kvm.host.hvaToPfnInto(hva, fault.write, p)) {
    fault.retryReason = `no usable host page at hva 0x${hva.toString(16)}`;
    return RET_PF_MEMORY_FAULT; // kvm_handle_error_pfn → -EFAULT with memory-fault info
  }
  fault.pfn = p.pfn;
  fault.hostLevel = p.level;
  fault.mapWritable = p.writable && !(slot.flags & KVM_MEM_READONLY);
  return RET_PF_CONTINUE;
}

/**
 * No memslot. A private fault cannot be MMIO: it exits to userspace as KVM_EXIT_MEMORY_FAULT (6.10+,
 * before any MMIO bookkeeping). Otherwise cache an MMIO SPTE carrying the memslot generation (unless
 * the gfn is beyond kvm_mmu_max_gfn) and let the access be emulated, i.e. exit to userspace as MMIO.
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_handle_noslot_fault
 */
function kvmHandleNoslotFault(mmu: X86Mmu, vcpu: Vcpu, fault: KvmPageFault): number {
  if (fault.isPrivate) {
    fault.retryReason = 'private access with no memslot';
    return RET_PF_MEMORY_FAULT; // kvm_mmu_prepare_memory_fault_exit, -EFAULT
  }
  if (fault.gfn > kvmMmuMaxGfn(mmu.vm.cfg)) return RET_PF_EMULATE;
  fault.pfn = -1; // KVM_PFN_NOSLOT: kvm_tdp_mmu_map installs an MMIO SPTE
  fault.maxLevel = 1;
  void vcpu;
  return RET_PF_CONTINUE;
}

/**
 * Phase 3: with mmu_lock held, is what phase 2 learned still true?
 * @kernel arch/x86/kvm/mmu/mmu.c#is_page_fault_stale
 */
export function isPageFaultStale(mmu: X86Mmu, vcpu: Vcpu, fault: KvmPageFault): boolean {
  // vcpu->arch.mmu->root: the direct root, even for a TD's private fault that maps in the mirror root
  // (is_obsolete_sp; TDP MMU pages carry no mmu_valid_gen, so only role.invalid counts).
  const root = vcpu.mmu.root;
  if (root < 0 || (mmu.tdp.pool.role[root]! & ROLE_INVALID) !== 0) {
    fault.retryReason = 'the root was invalidated (zap-all) during the fault';
    return true;
  }
  const vm = mmu.vm;
  if (fault.slot === null) return false;
  // mmu_invalidate_retry_gfn: an invalidation in progress over the gfn, or one that completed since the snapshot.
  // BUG fault-no-seq-recheck: the recheck is skipped, so a pfn from before an invalidation gets mapped.
  if (hasBug(vm.cfg, 'fault-no-seq-recheck')) return false;
  if (mmuInvalidateRetryGfnUnsafe(mmu, fault.mmuSeq, fault.gfn)) {
    fault.retryReason = 'mmu_invalidate_seq moved since the snapshot (the pfn may be stale)';
    return true;
  }
  return false;
}

/**
 * Pick the mapping level: the largest level ≤ maxLevel whose lpage_info allows it, capped by the host
 * mapping; dirty logging forces 4K.
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_hugepage_adjust
 */
export function kvmMmuHugepageAdjust(fault: KvmPageFault): void {
  fault.goalLevel = 1;
  const slot = fault.slot;
  if (fault.maxLevel === 1 || fault.pfn < 0 || slot === null) return;
  if (slot.flags & KVM_MEM_LOG_DIRTY_PAGES) return;
  // The host maps 4K: no lpage_info can raise that (min(host level, lpage level) is 1 either way).
  if (fault.hostLevel === 1) return;
  let level = Math.min(fault.maxLevel, KVM_MAX_HUGEPAGE_LEVEL);
  const linfo = slot.arch.lpageInfo;
  for (; level > 1; level--) {
    const arr = linfo?.[level - 2];
    if (arr !== undefined && arr[gfnToIndex(fault.gfn, slot.baseGfn, level as PgLevel)] === 0) break;
  }
  fault.goalLevel = Math.min(level, fault.hostLevel);
}

/**
 * The largest level gfn could be mapped at with no fault in hand (huge-page recovery): lpage_info, then
 * the host's own mapping level for shared memory; private memory maps at 4K in this model.
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_max_mapping_level
 */
export function kvmMmuMaxMappingLevel(vm: X86Mmu['vm'], slot: KvmMemorySlot, gfn: number): number {
  let level = KVM_MAX_HUGEPAGE_LEVEL;
  const linfo = slot.arch.lpageInfo;
  for (; level > 1; level--) {
    const arr = linfo?.[level - 2];
    if (arr !== undefined && arr[gfnToIndex(gfn, slot.baseGfn, level as PgLevel)] === 0) break;
  }
  if (level === 1) return 1;
  if (vm.info.hasPrivateMem && (vm.memAttrs.get(gfn) & KVM_MEMORY_ATTRIBUTE_PRIVATE) !== 0) return 1;
  // host_pfn_mapping_level: how the primary MMU maps the slot's hva now (no fault).
  return Math.min(level, vm.kvm.host.mappingLevelAt(slot.userspaceAddr + (gfn - slot.baseGfn) * 4096));
}

const scratch = newSptePair();
/** make_spte's arguments for a TDP fault; only the per-fault fields change. */
const spteParams: MakeSpteParams = tdpLeafParams(1, asPfn(0), 0, false);

/**
 * The leaf SPTE a TDP fault installs for the leaf at baseGfn: make_spte with the fault's level, pfn and
 * host writability, the memtype for the leaf's gfn (iter->gfn). Shared with the bulk access path
 * (guest_access_bulk.ts), which builds one SPTE with pfn 0 and ORs each page's pfn in: make_spte uses
 * the pfn for nothing but the address bits.
 * @kernel arch/x86/kvm/mmu/spte.c#make_spte
 */
export function tdpFaultSpte(
  out: SptePair,
  vcpu: Vcpu,
  baseGfn: number,
  level: number,
  basePfn: number,
  mapWritable: boolean,
): SptePair {
  const p = spteParams;
  p.level = level;
  p.pfn = asPfn(basePfn);
  p.mtMask = kvmMmuGetMtMask(vcpu, baseGfn, false);
  p.hostWritable = mapWritable;
  makeSpte(out, p);
  return out;
}

/**
 * Phase 4: build the SPTE and map it.
 * @kernel arch/x86/kvm/mmu/tdp_mmu.c#kvm_tdp_mmu_map
 */
export function kvmTdpMmuMapFault(mmu: X86Mmu, vcpu: Vcpu, fault: KvmPageFault): number {
  const vm = mmu.vm;
  const root = tdpMmuGetRootForFault(mmu, vcpu, fault.isPrivate);
  const gfnBits = vm.arch.gfnDirectBits !== 0 && !fault.isPrivate ? vm.arch.gfnDirectBits : 0;
  kvmMmuHugepageAdjust(fault);
  const level = fault.goalLevel;
  const span = pagesPerHpage(level as PgLevel);
  const baseGfn = level === 1 ? fault.gfn : Math.floor(fault.gfn / span) * span;
  // is_access_allowed(fault, old_spte): the SPTE bit this fault needs.
  const needed = fault.exec
    ? VMX_EPT_EXECUTABLE_MASK
    : fault.write
      ? PT_WRITABLE_MASK
      : VMX_EPT_READABLE_MASK;
  if (fault.pfn < 0) {
    const gen = vm.activeMemslots(vcpu.asId()).generation % (MMIO_SPTE_GEN_MASK + 1);
    makeMmioSpte(scratch, baseGfn + gfnBits, gen, mmu.tdp.mmioValue);
    // A slot-less fault is never stale (is_page_fault_stale checks the sequence only with a slot): if a
    // slot appeared and the gfn got mapped meanwhile, the present leaf makes the fault spurious.
    const outcome =
      kvmTdpMmuMap(mmu.tdp, root, baseGfn + gfnBits, 1, scratch.lo, scratch.hi, needed) &
      TDP_MAP_OUTCOME_MASK;
    mmu.syncCounters();
    if (outcome === TDP_MAP_SPURIOUS) return RET_PF_SPURIOUS;
    if (outcome !== TDP_MAP_FIXED) return RET_PF_RETRY;
    vcpu.stats.pf_mmio_spte_created++;
    if (mmu.trace) mmu.trace({ name: 'mark_mmio_spte', gfn: baseGfn, gen });
    return RET_PF_EMULATE;
  }
  const basePfn = fault.pfn - (fault.gfn - baseGfn);
  if (mmu.trace) mmu.trace({ name: 'kvm_mmu_spte_requested', gfn: fault.gfn, pfn: fault.pfn, level });
  const logging = fault.slot !== null && (fault.slot.flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0;
  tdpFaultSpte(scratch, vcpu, baseGfn, level, basePfn, fault.mapWritable);
  const r = kvmTdpMmuMap(mmu.tdp, root, baseGfn + gfnBits, level, scratch.lo, scratch.hi, needed);
  if (r & TDP_MAP_FLUSH) vm.flushRemoteTlbs(); // kvm_flush_remote_tlbs_gfn: a table became a huge leaf
  const outcome = r & TDP_MAP_OUTCOME_MASK;
  // make_spte: a writable SPTE in a dirty-logged slot is dirty from the start, even for a read fault
  // (GUP maps writable opportunistically), since no later write would be seen.
  if (outcome === TDP_MAP_FIXED && logging && scratch.lo & PT_WRITABLE_MASK)
    markPageDirtyInSlot(fault.slot!, fault.gfn);
  mmu.syncCounters();
  return outcome === TDP_MAP_FIXED
    ? RET_PF_FIXED
    : outcome === TDP_MAP_SPURIOUS
      ? RET_PF_SPURIOUS
      : RET_PF_RETRY;
}

/** Phases 3–4 after a successful phase 2. */
export function kvmTdpMmuPageFaultLocked(mmu: X86Mmu, vcpu: Vcpu, fault: KvmPageFault): number {
  if (isPageFaultStale(mmu, vcpu, fault)) return RET_PF_RETRY;
  return kvmTdpMmuMapFault(mmu, vcpu, fault);
}

/** All four phases back to back. @kernel arch/x86/kvm/mmu/mmu.c#kvm_tdp_mmu_page_fault */
export function kvmTdpMmuPageFault(mmu: X86Mmu, vcpu: Vcpu, fault: KvmPageFault): number {
  const r = kvmMmuFaultinPfn(mmu, vcpu, fault);
  if (r !== RET_PF_CONTINUE) return r;
  return kvmTdpMmuPageFaultLocked(mmu, vcpu, fault);
}

export { KVM_MAX_HUGEPAGE_LEVEL };
