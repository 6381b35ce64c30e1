/**
 * The fast path of vcpu.access on the TDP MMU: one access that hits (the TLB, else a present leaf the
 * walk reaches) or that first-touches a 4K page of a 4K-backed slot through existing page tables, made
 * with the steps vcpu.access's full path takes (guest_access.ts → page_fault.ts → tdp_mmu.ts), in one
 * function: the walk is made once and its tables are kept, so the engine's iterator is left where
 * kvm_tdp_mmu_map would leave it without walking it again; the leaf SPTE is the slot's make_spte
 * template with the pfn ORed in (make_spte uses the pfn for nothing but the address bits), the template
 * recomputed only when its inputs (the memtype mask, host writability) change. Anything else (an exit,
 * a fault that links a table or maps a huge page, dirty logging, a write-protected or clean leaf on a
 * write, an MMIO SPTE, a KSM-shared or huge-backed host page, exec) returns false having changed
 * nothing, and the caller makes the access through the full path.
 *
 * It runs where nothing can change one access's answer (guest_access_bulk.ts#fastAllowed): no
 * invalidation in progress, no pending vCPU request, a valid root of the vCPU's address space, a VM
 * without private memory. Then VM entry does nothing but enter guest mode, and the fault's staleness
 * checks (the mmu_invalidate_seq snapshot and recheck, the root's validity) all pass. Every side effect
 * of the full path is made here too, down to its scratch: the memslot cache lookup (search_memslots),
 * the host mm's last-VMA and page-lookup scratch, the engine iterator, the TLB. Trace sinks and the
 * engine's recorder (the invariant checker installs both) get the tracepoints the full path fires for
 * the fault, with the same contents, in the same order, each at the point of the fault where the full
 * path fires it (kvm_page_fault after the exit is counted, kvm_mmu_spte_requested once the pfn is
 * known, kvm_tdp_mmu_spte_changed once the leaf is written); a hit fires none there either.
 * test/property/access_fast.property.test.ts checks the whole model state against the full path, and
 * access_fast_traced.property.test.ts the event streams and the checker's verdicts.
 *
 * Kernel counterpart: none as a whole; per access the steps are vcpu_enter_guest, the CPU's EPT walk,
 * handle_ept_violation → kvm_mmu_page_fault → kvm_tdp_page_fault (kvm_mmu_faultin_pfn,
 * is_page_fault_stale, kvm_tdp_mmu_map, make_spte, handle_changed_spte), and the retried access.
 */
import type { Vcpu } from '../../kvm/vcpu.ts';
import { IN_GUEST_MODE, OUTSIDE_GUEST_MODE } from '../../kvm/vcpu.ts';
import type { AccessHit } from '../../kvm/api_types.ts';
import {
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  KVM_MEMSLOT_GMEM_ONLY,
  KVM_MEMSLOT_INVALID,
} from '../../uapi/kvm.ts';
import { gup4kUsable } from '../../host/gup_4k.ts';
import { spteWritableInvariantsHold } from './tdp_mmu_spte.ts';
import { CHUNK_MASK, CHUNK_SHIFT, HI_OFFSET, TABLE_WORDS } from './sp_pool.ts';
import {
  newSptePair,
  PT_PAGE_SIZE_MASK,
  PT_WRITABLE_MASK,
  SHADOW_NONPRESENT_HI,
  SHADOW_NONPRESENT_LO,
  SPTE_BASE_ADDR_MASK_HI,
  SPTE_MMU_PRESENT_MASK,
  spteValue,
  VMX_EPT_ACCESS_BIT,
  VMX_EPT_DIRTY_BIT,
  VMX_EPT_MT_MASK,
  VMX_EPT_READABLE_MASK,
} from './spte.ts';
import { tdpFaultSpte } from './page_fault.ts';
import { kvmTdpMmuMap, TDP_MAP_FIXED } from './tdp_mmu.ts';
import { ModelCorruption } from '../../kvm/model_corruption.ts';
import { kvmMmuGetMtMask, vmxGetMtMaskVmWide } from '../mtrr.ts';
import { fastAllowed } from './guest_access_bulk.ts';
import { kvmMmuRoleAsId } from './mmu_internal.ts';
import type { X86Mmu } from './mmu.ts';
import type { FaultTraceNumbers } from './mmu_trace.ts';

// The constants this file's hot code uses, as this module's own bindings: an imported binding is read
// through its module cell, with a hole check, at every use in optimized code; a local const is not.
const C_SHIFT = CHUNK_SHIFT;
const C_MASK = CHUNK_MASK;
const T_WORDS = TABLE_WORDS;
const HI = HI_OFFSET;
const PRESENT = SPTE_MMU_PRESENT_MASK;
const LARGE = PT_PAGE_SIZE_MASK;
const W = PT_WRITABLE_MASK;
const R = VMX_EPT_READABLE_MASK;
const A = VMX_EPT_ACCESS_BIT;
const D = VMX_EPT_DIRTY_BIT;
const WD = PT_WRITABLE_MASK | VMX_EPT_DIRTY_BIT;
const MT = VMX_EPT_MT_MASK;
const NP_LO = SHADOW_NONPRESENT_LO;
const NP_HI = SHADOW_NONPRESENT_HI;
const ADDR_HI = SPTE_BASE_ADDR_MASK_HI;
const SLOT_NOT_FAST = KVM_MEMSLOT_INVALID | KVM_MEM_LOG_DIRTY_PAGES | KVM_MEMSLOT_GMEM_ONLY;
const SLOT_RO = KVM_MEM_READONLY;
const GUEST = IN_GUEST_MODE;
const OUTSIDE = OUTSIDE_GUEST_MODE;

/** The tables the walk went through, pt_path-style: path[level - 1] (copied to the iterator on a fault). */
const path = new Int32Array(5);

/**
 * make_spte's answer for a 4K TDP leaf with pfn 0, for the last (memtype mask, host-writable) it was
 * asked about: every other input of tdpFaultSpte at level 1 is a constant of the TDP fault path.
 */
const tmpl = newSptePair();
let tmplMt = -1;
let tmplWritable = false;
/** The template's writable bits pass check_spte_writable_invariants (else the full path WARNs per fault). */
let tmplSane = false;
/** The template has W and D: a write completes on the retried access without logging the page. */
let tmplWriteDone = false;

/**
 * The 4K leaf template for a fault at gfn (pfn 0): tdpFaultSpte's answer, recomputed when it can change.
 * The memtype is vmx_get_mt_mask's: its VM-wide answer where it has one (6.11+), else per gfn and vCPU.
 */
function leafTemplate(vcpu: Vcpu, gfn: number, mapWritable: boolean): void {
  let mt = vmxGetMtMaskVmWide(vcpu.vm);
  if (mt < 0) mt = kvmMmuGetMtMask(vcpu, gfn, false);
  if (mt === tmplMt && mapWritable === tmplWritable) return;
  tdpFaultSpte(tmpl, vcpu, gfn, 1, 0, mapWritable);
  // tdpFaultSpte reads the memtype again; the key is what it read (the same call, the same answer).
  tmplMt = mt;
  tmplWritable = mapWritable;
  tmplSane = spteWritableInvariantsHold(tmpl.lo, tmpl.hi);
  tmplWriteDone = (tmpl.lo & WD) === WD;
}

/**
 * One access at gpa (read or write), made where the fast path can make it: true with what it reached
 * in `hit` (and the vCPU's mode set as vcpu.access leaves it), false with nothing changed. Guest frame
 * numbers from 2^31 on (gpa ≥ 8 TiB) take the full path: below that the index arithmetic is int32.
 */
export function vcpuAccessFast(
  mmu: X86Mmu,
  vcpu: Vcpu,
  gpa: number,
  write: boolean,
  hit: AccessHit,
): boolean {
  if (gpa >= 0x80000000000 || !fastAllowed(mmu, vcpu)) return false;
  const g = (gpa / 4096) | 0; // gpa is an integer below 2^43 (vcpu.access checked it)
  const tlb = vcpu.tlb;
  if (tlb.probe31(g) && (!write || tlb.hit.writable)) {
    const t = tlb.hit;
    hit.pfn = t.pfn;
    hit.level = t.level;
    hit.memtype = t.memtype;
    vcpu.mode = vcpu.running ? GUEST : OUTSIDE; // vcpu.accessEnded(true)
    return true;
  }
  // The CPU's EPT walk (kvmTdpMmuGetWalk), keeping the tables it passes.
  const pool = mmu.tdp.pool;
  const chunks = pool.chunks;
  const root = vcpu.mmu.root;
  const rootLevel = pool.role[root]! & 0xf;
  let t = root;
  let level = rootLevel;
  let arr: Int32Array;
  let w: number;
  let lo: number;
  let hi: number;
  for (;;) {
    arr = chunks[t >>> C_SHIFT]!;
    path[level - 1] = t;
    // SPTE_INDEX: g < 2^31, so the shift is exact, and a 5-level root's index is 0 (a shift count of
    // 36 would be taken mod 32)
    w = (t & C_MASK) * T_WORDS + (level < 5 ? (g >>> (9 * level - 9)) & 511 : 0);
    lo = arr[w]!;
    hi = arr[w + HI]!;
    if ((lo & PRESENT) === 0 || level === 1 || (lo & LARGE) !== 0) break;
    t = ((hi & 0x7ff) << 20) | (lo >>> 12); // childTableOf
    level--;
  }
  if ((lo & PRESENT) !== 0) {
    // translate(): a present leaf. A write needs W, and a write that sets D logs the page (not here).
    if (write && (lo & WD) !== WD) return false;
    const want = write ? A | D : A;
    if ((lo & want) !== want) lo = arr[w] = lo | want; // the CPU sets A
    const basePfn = (lo >>> 12) + (hi & ADDR_HI) * 0x100000; // spteToPfn
    const memtype = (lo & MT) >>> 3;
    tlb.fill(g, basePfn, level as 1 | 2 | 3, (lo & WD) === WD, memtype);
    hit.pfn = level === 1 ? basePfn : basePfn + (g & (level === 2 ? 511 : 262143));
    hit.level = level as 1 | 2 | 3;
    hit.memtype = memtype;
    vcpu.mode = vcpu.running ? GUEST : OUTSIDE;
    return true;
  }
  // a never-used entry: of the leaf's table (level 1), or above it (tables to link first)
  if (lo !== NP_LO || hi !== NP_HI) return false;
  return firstTouch4k(mmu, vcpu, gpa, write, arr, w, level, rootLevel, hit);
}

/**
 * The EPT violation on a 4K gfn whose walk ended on a never-used entry (at `level`: 1 in the leaf's own
 * table, above it where page tables are missing), as kvm_tdp_page_fault handles it for a 4K-backed
 * slot, then the retried access. false (nothing changed) when the fault is not one this path makes.
 */
function firstTouch4k(
  mmu: X86Mmu,
  vcpu: Vcpu,
  gpa: number,
  write: boolean,
  arr: Int32Array,
  w: number,
  level: number,
  rootLevel: number,
  hit: AccessHit,
): boolean {
  const vm = mmu.vm;
  const g = (gpa / 4096) | 0;
  const slots = vm.activeMemslots(vcpu.asId());
  // Decided on a peek: kvm_vcpu_gfn_to_memslot (its cache, its lookup count) runs only for a fault made
  // here, and not at all when the vCPU's cache holds the slot (the call would change nothing then).
  const cached = slots.vcpuCachedMemslot(vcpu, g);
  const slot = cached ?? slots.peekMemslot(g);
  if (slot === null) return false;
  const flags = slot.flags;
  if ((flags & SLOT_NOT_FAST) !== 0 || (write && (flags & SLOT_RO) !== 0)) return false;
  const host = vm.kvm.host;
  const hva = slot.userspaceAddr + (g - slot.baseGfn) * 4096;
  // hva_to_pfn's lookup: the full path makes it too, with the same answer, if this one bails out.
  const v = host.findVma(hva);
  if (v === null || !gup4kUsable(v, write)) return false;
  const mapWritable = v.writable && (flags & SLOT_RO) === 0;
  leafTemplate(vcpu, g, mapWritable);
  // A write must complete on the retry, and a leaf that would WARN is counted by the full path.
  if (!tmplSane || (write && !tmplWriteDone)) return false;
  // From here the fault is made. The EPT violation: the exit is counted, then kvm_page_fault fires.
  const stats = vcpu.stats;
  stats.exits++;
  stats.pf_taken++;
  const t = mmu.trace;
  // a sink that takes the two tracepoints as numbers (mmu_trace.ts#FaultTraceNumbers) gets no objects
  const num = t === undefined ? undefined : (t as { faultNumbers?: FaultTraceNumbers }).faultNumbers;
  if (t !== undefined) {
    vcpu.mode = OUTSIDE; // what a sink sees: the vCPU out of guest mode, as after the full path's exit
    if (num !== undefined) num.pageFault(vcpu.vcpuId, gpa, write ? 2 : 1);
    else t({ name: 'kvm_page_fault', vcpuId: vcpu.vcpuId, gpa, errorCode: write ? 2 : 1 });
  }
  // kvm_mmu_faultin_pfn: the slot lookup, then GUP (the page faulted in on first touch).
  if (cached === null) slots.vcpuGfnToMemslot(vcpu, g);
  const pfn = host.gup4kInto(v, hva);
  if (t !== undefined) {
    if (num !== undefined) num.spteRequested(g, pfn, 1);
    else t({ name: 'kvm_mmu_spte_requested', gfn: g, pfn, level: 1 });
  }
  // pfnLo/pfnHi without their `%` and division (bit operations are exact below 2^52)
  const newLo = tmpl.lo | ((pfn & 0xfffff) << 12);
  const newHi = tmpl.hi | (Math.floor(pfn / 0x100000) & ADDR_HI);
  if (level === 1) map4k(mmu, g, newLo, newHi, arr, w, rootLevel);
  else {
    // Page tables to link: the engine's own kvm_tdp_mmu_map makes them and the leaf (their
    // tracepoints, stats and the iterator as the full path leaves them); the walk found none of the
    // entries it will write frozen or present, so it cannot retry.
    const r = kvmTdpMmuMap(mmu.tdp, vcpu.mmu.root, g, 1, newLo, newHi, write ? W : R);
    if (r !== TDP_MAP_FIXED) throw new ModelCorruption(`fast path: kvm_tdp_mmu_map of gfn ${g} gave ${r}`);
    const iter = mmu.tdp.iter;
    arr = iter.arr;
    w = iter.base + iter.index;
  }
  mmu.syncCounters();
  stats.pf_fixed++;
  if (mmu.noteMapped(g)) vm.countModel('refaults');
  // The retried access: the walk finds the new leaf; the CPU sets A (and D on a write: the template has
  // it then, so the leaf is stored with A and D).
  const leaf = (arr[w] = newLo | (write ? A | D : A));
  const memtype = (leaf & MT) >>> 3;
  vcpu.tlb.fill4k(g, pfn, (leaf & WD) === WD, memtype);
  hit.pfn = pfn;
  hit.level = 1;
  hit.memtype = memtype;
  vcpu.mode = vcpu.running ? GUEST : OUTSIDE;
  return true;
}

/**
 * kvm_tdp_mmu_map through existing tables to the never-used 4K entry at word w of arr: the leaf
 * installed (tdp_mmu_set_spte_atomic + handle_changed_spte for a never-used entry becoming a 4K leaf
 * whose writable bits hold: the tracepoint, then the page stat moves, nothing else), the iterator left
 * where the engine leaves it. The low word is stored by the caller's retried access.
 */
function map4k(
  mmu: X86Mmu,
  g: number,
  newLo: number,
  newHi: number,
  arr: Int32Array,
  w: number,
  rootLevel: number,
): void {
  const tdp = mmu.tdp;
  tdp.pool.rcuReclaim(); // kvm_tdp_mmu_map's first step
  arr[w + HI] = newHi;
  if (tdp.recorder !== undefined || tdp.trace !== undefined)
    spteChangedTrace(mmu, rootLevel, g, newLo, newHi, arr, w);
  tdp.pages[0]!++;
  iterAfterMap4k(mmu, g, rootLevel, arr, w);
}

/**
 * handle_changed_spte's tracepoint for the new leaf (never-used → newLo/newHi at level 1, gfn g), to the
 * engine's recorder then its object sink, as the full path fires it; the leaf is stored as the engine
 * stored it then (without the A bit the retried access sets).
 */
function spteChangedTrace(
  mmu: X86Mmu,
  rootLevel: number,
  g: number,
  newLo: number,
  newHi: number,
  arr: Int32Array,
  w: number,
): void {
  arr[w] = newLo;
  const tdp = mmu.tdp;
  const asId = kvmMmuRoleAsId(tdp.pool.role[path[rootLevel - 1]!]!); // the iterator's as_id
  tdp.recorder?.spteChanged(asId, g, 1, NP_LO, NP_HI, newLo, newHi);
  tdp.trace?.({
    name: 'kvm_tdp_mmu_spte_changed',
    asId,
    gfn: g,
    level: 1,
    oldSpte: spteValue(NP_LO, NP_HI),
    newSpte: spteValue(newLo, newHi),
  });
}

/**
 * Leave the engine's iterator where kvm_tdp_mmu_map leaves it after installing a 4K leaf for gfn
 * through existing tables (tdp_iter_start at the root, stepped down to level 1, the new leaf written
 * through the iterator): its path the tables this walk went through, its snapshot the never-used value
 * it replaced.
 */
function iterAfterMap4k(mmu: X86Mmu, gfn: number, rootLevel: number, arr: Int32Array, w: number): void {
  const iter = mmu.tdp.iter;
  const pp = iter.ptPath;
  for (let l = 0; l < rootLevel; l++) pp[l] = path[l]!;
  const t = path[0]!;
  iter.nextLastLevelGfn = gfn;
  iter.yieldedGfn = gfn;
  iter.table = t;
  iter.index = gfn & 511;
  // the leaf table's chunk, and w the leaf's word in it (stored only when it changes: a pointer store
  // pays the GC write barrier, and runs of faults stay in one chunk)
  if (iter.arr !== arr) iter.arr = arr;
  iter.base = w - (gfn & 511);
  iter.gfn = gfn;
  iter.rootLevel = rootLevel;
  iter.minLevel = 1;
  iter.level = 1;
  iter.asId = (mmu.tdp.pool.role[path[rootLevel - 1]!]! >>> 24) & 0xff ? 1 : 0;
  iter.oldLo = NP_LO;
  iter.oldHi = NP_HI;
  iter.valid = true;
  iter.yielded = false;
}
