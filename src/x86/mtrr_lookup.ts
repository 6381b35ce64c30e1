/**
 * The guest-MTRR lookup of KVM's vMTRR code, which only the `honorGuestMtrrs` era (v5.3) consults: the
 * list of valid variable ranges as the kernel keeps it, the byte range one variable MTRR covers, and the
 * iterator both memory-type queries walk (fixed ranges below 1 MiB when enabled, then the variable list).
 *
 * Kernel counterpart: arch/x86/kvm/mtrr.c (set_var_mtrr_msr, var_mtrr_range, the mtrr_lookup_* iterator,
 * kvm_mtrr_get_guest_memory_type, kvm_mtrr_check_gfn_range_consistency) as of v5.3, read in the v4.1
 * (torvalds/linux 06be5eef) and v5.9 copies, which agree in everything here but the disabled-MTRR type
 * (v5.x: UC when the guest has CPUID.MTRR). Gone since 6.11 (guest MTRRs no longer reach EPT).
 * The kernel's answers are kept where they differ from the SDM: the list is ordered by PhysBase value,
 * highest first (`set_var_mtrr_msr` inserts before the first entry with a lower or equal base), and the
 * precedence loop returns WB as soon as a UC type is followed by a WB or WT one; the range of a variable
 * MTRR starts at its base as written (not aligned down to its size); the consistency check calls a range
 * partially covered whenever a matched range starts above the highest end seen so far in list order.
 */
import type { Vcpu } from '../kvm/vcpu.ts';

const MTRR_TYPE_UNCACHABLE = 0;
const MTRR_TYPE_WRTHROUGH = 4;
const MTRR_TYPE_WRBACK = 6;
const DEF_TYPE_E = 1 << 11;
const DEF_TYPE_FE = 1 << 10;
const PHYS_MASK_VALID = 1 << 11;
const FIXED_RANGES = 88;
const MiB = 0x100000;
const TWO32 = 2 ** 32;

/** The variable-range part of a vCPU's MTRR state (VcpuMemtypeState). */
interface VarMtrrState {
  readonly varBase: number[];
  readonly varMask: number[];
  /** kvm_mtrr.head: indices of the valid variable ranges, in the kernel's list order. */
  readonly varList: number[];
}

/** a | b for integers below 2^53 (JS bitwise operators stop at 32 bits). */
function or53(a: number, b: number): number {
  const hi = (Math.floor(a / TWO32) | Math.floor(b / TWO32)) >>> 0;
  return hi * TWO32 + (((a >>> 0) | (b >>> 0)) >>> 0);
}

const varValid = (s: VarMtrrState, i: number): boolean => (s.varMask[i]! & PHYS_MASK_VALID) !== 0;

/**
 * Store PhysBase or PhysMask i and keep the list of valid ranges: out of the list before the write if it
 * was valid, back in after it if it is, before the first entry whose base is lower or equal.
 * @kernel arch/x86/kvm/mtrr.c#set_var_mtrr_msr
 */
export function setVarMtrrMsr(s: VarMtrrState, i: number, isMask: boolean, data: number): void {
  if (varValid(s, i)) s.varList.splice(s.varList.indexOf(i), 1);
  if (isMask) s.varMask[i] = data;
  else s.varBase[i] = data;
  if (!varValid(s, i)) return;
  let at = s.varList.findIndex((k) => s.varBase[i]! >= s.varBase[k]!);
  if (at < 0) at = s.varList.length;
  s.varList.splice(at, 0, i);
}

/**
 * [start, end) bytes of variable range i: start = base & PAGE_MASK, end = (start | ~mask) + 1, the mask
 * extended with ones above MAXPHYADDR. A base not aligned to the range size keeps its low bits.
 * @kernel arch/x86/kvm/mtrr.c#var_mtrr_range
 */
export function varMtrrRange(s: VarMtrrState, maxPhyAddr: number, i: number): [number, number] {
  const start = Math.floor(s.varBase[i]! / 4096) * 4096;
  const mask = Math.floor(s.varMask[i]! / 4096) * 4096; // below 2^MAXPHYADDR: kvm_mtrr_valid checked it
  const notMask = 2 ** maxPhyAddr - 1 - mask;
  return [start, or53(start, notMask) + 1];
}

/** End address of fixed_ranges[idx]. @kernel arch/x86/kvm/mtrr.c#fixed_mtrr_range_end_addr */
function fixedRangeEnd(idx: number): number {
  if (idx < 8) return (idx + 1) << 16;
  if (idx < 24) return 0x80000 + ((idx - 7) << 14);
  return 0xc0000 + ((idx - 23) << 12);
}

/** Index into fixed_ranges for an address below 1 MiB. */
export function fixedIndex(a: number): number {
  if (a < 0x80000) return a >>> 16;
  if (a < 0xc0000) return 8 + ((a - 0x80000) >>> 14);
  return 24 + ((a - 0xc0000) >>> 12);
}

/** What the iterator leaves behind: MTRRs disabled, or [start, end) not fully covered by what it visited. */
interface MtrrIter {
  disabled: boolean;
  partial: boolean;
}

/**
 * mtrr_for_each_mem_type: the types covering [start, end), in the kernel's order; `visit` returns false
 * to leave the loop early (the callers' `return` inside it).
 * @kernel arch/x86/kvm/mtrr.c#mtrr_lookup_start
 */
function mtrrForEachMemType(
  vcpu: Vcpu,
  start: number,
  end: number,
  visit: (type: number) => boolean,
): MtrrIter {
  const s = vcpu.memtype;
  const it: MtrrIter = { disabled: false, partial: false };
  if (!(s.deftype & DEF_TYPE_E)) {
    it.disabled = true;
    return it;
  }
  // mtrr_lookup_fixed_start / mtrr_lookup_fixed_next: stop at the entry reaching `end`; after the last
  // fixed entry the walk goes on into the variable list from the original start.
  if (s.deftype & DEF_TYPE_FE && start < MiB) {
    for (let idx = fixedIndex(start); idx < FIXED_RANGES; idx++) {
      if (!visit(s.fixed[idx]!)) return it;
      if (fixedRangeEnd(idx) >= end) return it;
    }
  }
  // mtrr_lookup_var_start / match_var_range: list order, coverage tracked as the highest end seen.
  let startMax = start;
  for (const i of s.varList) {
    const [st, en] = varMtrrRange(s, vcpu.vm.cfg.maxPhyAddr, i);
    if (st >= end || en <= start) continue;
    if (startMax < st) it.partial = true;
    startMax = Math.max(startMax, en);
    if (!visit(s.varBase[i]! & 0xff)) return it;
  }
  if (startMax < end) it.partial = true;
  return it;
}

const wtOrWb = (t: number): boolean => t === MTRR_TYPE_WRTHROUGH || t === MTRR_TYPE_WRBACK;

/** The guest MTRR type of one page. @kernel arch/x86/kvm/mtrr.c#kvm_mtrr_get_guest_memory_type */
export function kvmMtrrGetGuestMemoryType(vcpu: Vcpu, gfn: number): number {
  const start = gfn * 4096;
  let type = -1;
  let early = -1;
  const it = mtrrForEachMemType(vcpu, start, start + 4096, (cur) => {
    if (type === -1 || type === cur) type = cur;
    else if (cur === MTRR_TYPE_UNCACHABLE) early = MTRR_TYPE_UNCACHABLE;
    else if (wtOrWb(type) && wtOrWb(cur)) type = MTRR_TYPE_WRTHROUGH;
    else early = MTRR_TYPE_WRBACK; // "We use WB for this undefined behavior" — also UC followed by WB/WT
    return early === -1;
  });
  if (early !== -1) return early;
  if (it.disabled) return MTRR_TYPE_UNCACHABLE; // mtrr_disabled_type: the guest has CPUID.MTRR
  return type === -1 ? vcpu.memtype.deftype & 0xff : type;
}

/**
 * Is the MTRR type uniform over [gfn, gfn + pageNum)? A huge SPTE carries one memory type, so the fault
 * path maps smaller where it is not.
 * @kernel arch/x86/kvm/mtrr.c#kvm_mtrr_check_gfn_range_consistency
 */
export function kvmMtrrCheckGfnRangeConsistency(vcpu: Vcpu, gfn: number, pageNum: number): boolean {
  let type = -1;
  let mixed = false;
  const it = mtrrForEachMemType(vcpu, gfn * 4096, (gfn + pageNum) * 4096, (cur) => {
    if (type === -1) type = cur;
    else if (type !== cur) mixed = true;
    return !mixed;
  });
  if (mixed) return false;
  if (it.disabled || !it.partial || type === -1) return true;
  return type === (vcpu.memtype.deftype & 0xff);
}
