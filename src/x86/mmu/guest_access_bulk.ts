/**
 * The bulk path of vcpu.accessRange on the TDP MMU: a run of accesses to consecutive 4K gfns handled
 * with the per-run work done once (the walk to the page table, the memslot and host mapping lookups, the
 * SPTE template), each access still taking the steps vcpu.access would, in the same order, with the same
 * effects: the TLB probe first (a cached translation, even a stale one, completes the access), else the
 * SPTE the walk reaches; a present leaf with enough permission is a hit (A/D set as the CPU does, TLB
 * filled); a 4K entry never used (SHADOW_NONPRESENT) is an EPT violation that faults the page in as
 * kvm_tdp_mmu_page_fault does for a 4K-backed slot (exits, pf_taken, pf_fixed, the refault mark, the
 * host page, the leaf installed through handle_changed_spte, then the retried access's TLB fill).
 * Anything else ends the run where it is, and the caller makes that access through vcpuAccessCore: an
 * exit, a fault that links a table or maps a huge page, dirty logging, a write-protected leaf, a
 * KSM-shared or huge-backed host page, an MMIO SPTE.
 *
 * It runs only where nothing can watch an access between two others or change the answer mid-run: no
 * trace sink, no numeric recorder, no per-access callback (the caller checks), no invalidation in
 * progress, no pending vCPU request, a valid root of the vCPU's address space (SMM or not), a VM without
 * private memory (DEFAULT): then the fault's staleness checks (mmu_invalidate_seq snapshot and recheck, root validity) all pass, as they
 * would for each access of the loop. The engine's iterator is left where kvm_tdp_mmu_map leaves it after
 * the run's last fault, so the model state after a run is the loop's (the property test hashes it).
 *
 * Kernel counterpart: none as a whole (a guest touching many pages between two looks from userspace);
 * the steps are arch/x86/kvm/mmu/mmu.c#kvm_tdp_page_fault and tdp_mmu.c#kvm_tdp_mmu_map per page.
 */
import type { Vcpu } from '../../kvm/vcpu.ts';
import { IN_GUEST_MODE, OUTSIDE_GUEST_MODE } from '../../kvm/vcpu.ts';
import type { AccessBatchOut } from '../../kvm/api_types.ts';
import {
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  KVM_MEMSLOT_GMEM_ONLY,
  KVM_MEMSLOT_INVALID,
} from '../../uapi/kvm.ts';
import type { Vma } from '../../host/vma.ts';
import { gup4k, gup4kUsable } from '../../host/gup_4k.ts';
import { kvmTdpMmuGetWalk, type TdpWalkResult } from './tdp_mmu.ts';
import { spteWritableInvariantsHold } from './tdp_mmu_spte.ts';
import { tdpIterNext, tdpIterStart } from './tdp_iter.ts';
import { HI_OFFSET } from './sp_pool.ts';
import { kvmMmuRoleAsId, ROLE_INVALID } from './mmu_internal.ts';
import {
  newSptePair,
  SPTE_BASE_ADDR_MASK_HI,
  PT_WRITABLE_MASK,
  SHADOW_NONPRESENT_HI,
  SHADOW_NONPRESENT_LO,
  SPTE_MMU_PRESENT_MASK,
  VMX_EPT_ACCESS_BIT,
  VMX_EPT_DIRTY_BIT,
  VMX_EPT_MT_MASK,
} from './spte.ts';
import { tdpFaultSpte } from './page_fault.ts';
import type { X86Mmu } from './mmu.ts';

// The constants the hot loop uses, as this module's own bindings (an imported binding is read through
// its module cell, with a hole check, at every use in optimized code).
const HI = HI_OFFSET;
const PRESENT = SPTE_MMU_PRESENT_MASK;
const W = PT_WRITABLE_MASK;
const A = VMX_EPT_ACCESS_BIT;
const D = VMX_EPT_DIRTY_BIT;
const WD = PT_WRITABLE_MASK | VMX_EPT_DIRTY_BIT;
const MT = VMX_EPT_MT_MASK;
const NP_LO = SHADOW_NONPRESENT_LO;
const NP_HI = SHADOW_NONPRESENT_HI;
const ADDR_HI = SPTE_BASE_ADDR_MASK_HI;

const walk: TdpWalkResult = { lo: 0, hi: 0, level: 0, sptep: new Int32Array(0), word: 0 };
const template = newSptePair();

/** Nothing can watch or change an access mid-run (see the header). */
export function bulkAllowed(mmu: X86Mmu, vcpu: Vcpu): boolean {
  const tdp = mmu.tdp;
  return (
    mmu.trace === undefined && tdp.trace === undefined && tdp.recorder === undefined && fastAllowed(mmu, vcpu)
  );
}

/**
 * Nothing can change the answer of one access made by the fast path (guest_access_fast.ts): the bulk
 * path's condition without its "no trace sink, no recorder" (the fast path fires the tracepoints of
 * the faults it makes, in the full path's order).
 */
export function fastAllowed(mmu: X86Mmu, vcpu: Vcpu): boolean {
  const vm = mmu.vm;
  const tdp = mmu.tdp;
  const root = vcpu.mmu.root;
  return (
    !vm.dead &&
    !vm.info.hasPrivateMem &&
    vm.arch.gfnDirectBits === 0 &&
    vm.arch.tdx === undefined &&
    vcpu.requests === 0 &&
    root >= 0 &&
    (tdp.pool.role[root]! & ROLE_INVALID) === 0 &&
    kvmMmuRoleAsId(tdp.pool.role[root]!) === vcpu.asId() && // no SMM switch for VM entry to notice
    vm.mmuInvalidateInProgress === 0
  );
}

/** Where the run's faults get their pages: one memslot and one 4K host mapping, looked up once. */
interface FaultCtx {
  /** the slot's gfns that also lie in the mapping: [start, end) */
  start: number;
  end: number;
  vma: Vma | null;
  /** hva of gfn 0 in the slot's numbering (hva = base + gfn × 4096) */
  hvaBase: number;
  mapWritable: boolean;
  /** the leaf SPTE with pfn 0 (make_spte for this slot; memtype per gfn when guest MTRRs count) */
  lo: number;
  hi: number;
  perGfnMemtype: boolean;
}
const ctx: FaultCtx = {
  start: 0,
  end: 0,
  vma: null,
  hvaBase: 0,
  mapWritable: false,
  lo: 0,
  hi: 0,
  perGfnMemtype: false,
};

/**
 * Set ctx up for faults at gfn, as kvm_mmu_faultin_pfn would find things: false when this fault is not
 * one the bulk path makes (no slot, INVALID, read-only write, dirty logging, guest_memfd, no usable 4K
 * host page), so the per-access path handles it.
 */
function faultCtxAt(mmu: X86Mmu, vcpu: Vcpu, gfn: number, write: boolean): boolean {
  const vm = mmu.vm;
  const slots = vm.activeMemslots(vcpu.asId());
  // Decided on a peek: the lookups that count (the vCPU's last-used slot, the lookup count) are made only
  // for a fault this path makes; any other is left to the per-access path, which makes them itself.
  const slot = slots.peekMemslot(gfn);
  ctx.end = 0; // unusable unless set up below
  if (slot === null) return false;
  const flags = slot.flags;
  if (flags & (KVM_MEMSLOT_INVALID | KVM_MEM_LOG_DIRTY_PAGES | KVM_MEMSLOT_GMEM_ONLY)) return false;
  if (write && flags & KVM_MEM_READONLY) return false;
  const host = vm.kvm.host;
  const hvaBase = slot.userspaceAddr - slot.baseGfn * 4096;
  const v = host.findVma(hvaBase + gfn * 4096);
  if (v === null || !gup4kUsable(v, write)) return false;
  slots.vcpuGfnToMemslot(vcpu, gfn); // kvm_mmu_faultin_pfn's lookup
  ctx.vma = v;
  ctx.hvaBase = hvaBase;
  ctx.start = Math.max(slot.baseGfn, (v.start - hvaBase) / 4096);
  ctx.end = Math.min(slot.baseGfn + slot.npages, (v.start + v.length - hvaBase) / 4096);
  ctx.mapWritable = v.writable && !(flags & KVM_MEM_READONLY);
  ctx.perGfnMemtype = vm.cfg.honorGuestMtrrs;
  tdpFaultSpte(template, vcpu, gfn, 1, 0, ctx.mapWritable);
  // A write must complete on the retry: a leaf without W (or D) would fault again or log the page.
  const wd = PT_WRITABLE_MASK | VMX_EPT_DIRTY_BIT;
  if (write && (template.lo & wd) !== wd) return false;
  // A leaf that would WARN is left to the per-access path (the warning is counted per fault there).
  if (!spteWritableInvariantsHold(template.lo, template.hi)) return false;
  ctx.lo = template.lo;
  ctx.hi = template.hi;
  return true;
}

/**
 * Up to n accesses at gpa, gpa + 4096, …: how many were made (0 when the first is not one this path
 * makes). Each completed access lands in `out` at index off + k, as the batch loop would write it.
 * A run stops short of gfn 2^31 (gpa 8 TiB): below it the gfn arithmetic is int32, and the caller makes
 * any access past it one at a time.
 */
export function vcpuAccessBulk(
  mmu: X86Mmu,
  vcpu: Vcpu,
  gpa: number,
  n: number,
  write: boolean,
  out: AccessBatchOut | undefined,
  off: number,
): number {
  const first = Math.floor(gpa / 4096);
  if (first + n > 0x80000000) n = 0x80000000 - first;
  if (n <= 0 || !bulkAllowed(mmu, vcpu)) return 0;
  const gfn0 = first | 0;
  const tdp = mmu.tdp;
  const vm = mmu.vm;
  const tlb = vcpu.tlb;
  const hit = tlb.hit;
  const root = vcpu.mmu.root;
  const stats = vcpu.stats;
  const host = vm.kvm.host;
  const oPfn = out?.pfn;
  const oExit = out?.exit;
  const oLevel = out?.level;
  const oMt = out?.memtype;
  const want = write ? A | D : A;
  // the window the last walk reached: a page table (level 1, entries from winStart) or a huge leaf
  let arr = walk.sptep!;
  let word0 = 0;
  let winStart = 0;
  let winEnd = 0;
  let winLevel = 0;
  ctx.end = 0;
  let lastFault = -1;
  let lastHva = 0;
  let faults = 0;
  let k = 0;
  for (; k < n; k++) {
    const g = (gfn0 + k) | 0;
    let pfn: number;
    let level: number;
    let memtype: number;
    if (tlb.probe31(g) && (!write || hit.writable)) {
      pfn = hit.pfn;
      level = hit.level;
      memtype = hit.memtype;
    } else {
      if (g >= winEnd) {
        const present = kvmTdpMmuGetWalk(tdp, root, g, walk);
        winLevel = walk.level;
        arr = walk.sptep!;
        if (winLevel === 1) {
          winStart = g & ~511;
          winEnd = winStart + 512;
          word0 = walk.word! - (g - winStart);
        } else if (present) {
          winStart = g & (winLevel === 2 ? ~511 : ~262143);
          winEnd = winStart + (winLevel === 2 ? 512 : 262144);
          word0 = walk.word!;
        } else break; // no page table here: the per-access fault links one
      }
      const w = winLevel === 1 ? word0 + (g - winStart) : word0;
      let lo = arr[w]!;
      const hi = arr[w + HI]!;
      if ((lo & PRESENT) !== 0) {
        // translate(): a present leaf; a write needs W, and a missing D on a write logs the page (not here)
        if (write && (lo & W) === 0) break;
        if ((lo & want) !== want) {
          if (write && (lo & D) === 0) break;
          lo = arr[w] = lo | want;
        }
        const basePfn = (lo >>> 12) + (hi & ADDR_HI) * 0x100000; // spteToPfn
        level = winLevel;
        memtype = (lo & MT) >>> 3;
        if (level === 1) {
          pfn = basePfn;
          tlb.fill4k(g, basePfn, (lo & WD) === WD, memtype);
        } else {
          pfn = basePfn + (g - winStart);
          tlb.fill(g, basePfn, level as 2 | 3, (lo & WD) === WD, memtype);
        }
      } else {
        if (winLevel !== 1 || lo !== NP_LO || hi !== NP_HI) break;
        if ((g < ctx.start || g >= ctx.end) && !faultCtxAt(mmu, vcpu, g, write)) break;
        if (lastFault < 0) tdp.pool.rcuReclaim(); // kvm_tdp_mmu_map's first step
        lastHva = ctx.hvaBase + g * 4096;
        pfn = gup4k(ctx.vma!, lastHva, host.pfns, host.faults);
        let newLo = ctx.lo;
        let newHi = ctx.hi;
        if (ctx.perGfnMemtype) {
          tdpFaultSpte(template, vcpu, g, 1, 0, ctx.mapWritable);
          newLo = template.lo;
          newHi = template.hi;
        }
        // pfnLo/pfnHi without their `%` and division (bit operations are exact below 2^52); the
        // retried access sets A (and D on a write: faultCtxAt checked the template has W and D)
        newLo = newLo | ((pfn & 0xfffff) << 12) | want;
        newHi = newHi | (Math.floor(pfn / 0x100000) & ADDR_HI);
        // The EPT violation: exit, fault, the leaf installed. handle_changed_spte for a never-used entry
        // becoming a 4K leaf whose writable bits passed check_spte_writable_invariants (faultCtxAt)
        // only moves pages_4k; that and the exit/fault counters are added once, after the run. Then
        // the retried access: the walk finds the new leaf, the CPU sets A (and D on a write).
        arr[w] = newLo;
        arr[w + HI] = newHi;
        faults++;
        if (mmu.noteMapped(g)) vm.countModel('refaults');
        lastFault = g;
        level = 1;
        memtype = (newLo & MT) >>> 3;
        tlb.fill4k(g, pfn, (newLo & WD) === WD, memtype);
      }
    }
    if (oExit !== undefined) oExit[off + k] = 0;
    if (oPfn !== undefined) oPfn[off + k] = pfn;
    if (oLevel !== undefined) oLevel[off + k] = level;
    if (oMt !== undefined) oMt[off + k] = memtype;
  }
  if (faults > 0) {
    stats.exits += faults;
    stats.pf_taken += faults;
    stats.pf_fixed += faults;
    tdp.pages[0]! += faults; // kvm_update_page_stats
    mmu.syncCounters();
    iterAfterMap(mmu, root, lastFault);
    // The host's GUP answer for the last fault, where hvaToPfnInto leaves it (a read, no fault-in):
    // the model state after the run is the loop's down to that.
    host.pfnAt(lastHva);
  }
  if (k > 0) vcpu.mode = vcpu.running ? IN_GUEST_MODE : OUTSIDE_GUEST_MODE; // vcpu.accessEnded(true)
  return k;
}

/**
 * Leave the engine's iterator where kvm_tdp_mmu_map leaves it after installing a 4K leaf for gfn
 * through existing tables: started at the root, stepped down to level 1, its snapshot the value it
 * replaced (a never-used entry).
 */
function iterAfterMap(mmu: X86Mmu, root: number, gfn: number): void {
  const iter = mmu.tdp.iter;
  for (tdpIterStart(iter, root, 1, gfn); iter.valid && iter.level !== 1; tdpIterNext(iter));
  iter.oldLo = SHADOW_NONPRESENT_LO;
  iter.oldHi = SHADOW_NONPRESENT_HI;
}
