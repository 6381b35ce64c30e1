/**
 * The EPT memory type KVM puts in a leaf SPTE, and the guest state it is computed from: CR0.CD, the
 * guest's MTRRs (default type, 8 variable ranges, 88 fixed ranges below 1 MiB) and PAT.
 *
 * Kernel counterpart: arch/x86/kvm/vmx/vmx.c#vmx_get_mt_mask in three shapes, chosen by the host config:
 *  - honorGuestMtrrs (the v5.x–6.10 code, as of v5.3-rc4): with non-coherent DMA, CR0.CD=1 → WB|IPAT
 *    when KVM_X86_QUIRK_CD_NW_CLEARED is enabled, else UC|IPAT; CR0.CD=0 → the guest MTRR type, no IPAT;
 *  - 6.11–6.14 (MTRR virtualization removed, 0a7b73559b39 / e1548088ff54): non-coherent DMA → WB
 *    honouring guest PAT, else WB|IPAT;
 *  - 6.15+: as 6.11, but ignoring guest PAT also needs KVM_X86_QUIRK_IGNORE_GUEST_PAT.
 * MMIO is UC in all of them. arch/x86/kvm/mtrr.c (kvm_mtrr_set_msr, update_mtrr,
 * kvm_mtrr_get_guest_memory_type, kvm_mtrr_check_gfn_range_consistency) as of v5.3.
 * Simplifications: the guest always has CPUID.MTRR (disabled MTRRs mean UC); guest MAXPHYADDR = the
 * host's. The variable-range lookup keeps the kernel's list order and precedence quirks (mtrr_lookup.ts).
 */
import type { Vcpu } from '../kvm/vcpu.ts';
import { kvmCheckHasQuirk } from './x86.ts';
import { KVM_X86_QUIRK_CD_NW_CLEARED, KVM_X86_QUIRK_IGNORE_GUEST_PAT } from '../uapi/kvm_x86.ts';
import { kvmZapGfnRange, GFN_ALL_END } from './mmu/zap_gfn_range.ts';
import {
  kvmMtrrCheckGfnRangeConsistency,
  kvmMtrrGetGuestMemoryType,
  setVarMtrrMsr,
  varMtrrRange,
} from './mtrr_lookup.ts';

export { kvmMtrrCheckGfnRangeConsistency, kvmMtrrGetGuestMemoryType } from './mtrr_lookup.ts';

export const MTRR_TYPE_UNCACHABLE = 0;
export const MTRR_TYPE_WRCOMB = 1;
export const MTRR_TYPE_WRTHROUGH = 4;
export const MTRR_TYPE_WRPROT = 5;
export const MTRR_TYPE_WRBACK = 6;
const VMX_EPT_MT_EPTE_SHIFT = 3;
const VMX_EPT_IPAT_BIT = 1 << 6;

export const MSR_MTRRcap = 0xfe;
export const MSR_MTRRphysBase0 = 0x200;
export const MSR_MTRRfix64K_00000 = 0x250;
export const MSR_MTRRfix16K_80000 = 0x258;
export const MSR_MTRRfix16K_A0000 = 0x259;
export const MSR_MTRRfix4K_C0000 = 0x268;
export const MSR_MTRRfix4K_F8000 = 0x26f;
export const MSR_IA32_CR_PAT = 0x277;
export const MSR_MTRRdefType = 0x2ff;
export const KVM_NR_VAR_MTRR = 8;
/** MTRRdefType: E (MTRRs enabled), FE (fixed ranges enabled), type in bits 7:0. */
export const MTRR_DEF_TYPE_E = 1 << 11;
export const MTRR_DEF_TYPE_FE = 1 << 10;
/** PhysMask valid bit. */
export const MTRR_PHYS_MASK_VALID = 1 << 11;
export const MSR_IA32_CR_PAT_DEFAULT = 0x0007040600070406n;
export const X86_CR0_NW = 1 << 29;
export const X86_CR0_CD = 1 << 30;
/** CR0 after RESET/INIT: CD | NW | ET. */
export const X86_CR0_RESET = 0x60000010;

/** struct kvm_mtrr + vcpu->arch.cr0 / pat: a vCPU's memory-type inputs. */
export interface VcpuMemtypeState {
  cr0: number;
  pat: bigint;
  deftype: number;
  /** var_ranges[i]: base (type in bits 7:0) and mask (valid bit 11), as written. */
  readonly varBase: number[];
  readonly varMask: number[];
  /** kvm_mtrr.head: the valid variable ranges in the kernel's list order (mtrr_lookup.ts). */
  readonly varList: number[];
  /** fixed_ranges: 8 × 64K, 16 × 16K, 64 × 4K types. */
  readonly fixed: Uint8Array;
}

export function newVcpuMemtypeState(): VcpuMemtypeState {
  return {
    cr0: X86_CR0_RESET,
    pat: MSR_IA32_CR_PAT_DEFAULT,
    deftype: 0,
    varBase: new Array<number>(KVM_NR_VAR_MTRR).fill(0),
    varMask: new Array<number>(KVM_NR_VAR_MTRR).fill(0),
    varList: [],
    fixed: new Uint8Array(88),
  };
}

/** kvm->arch.noncoherent_dma_count != 0. @kernel arch/x86/kvm/x86.c#kvm_arch_has_noncoherent_dma */
export function kvmArchHasNoncoherentDma(vm: Vcpu['vm']): boolean {
  return vm.arch.noncoherentDmaCount > 0;
}

const validMtrrType = (t: number): boolean => t < 8 && ((1 << t) & 0x73) !== 0;
const isFixedMsr = (msr: number): boolean =>
  msr === MSR_MTRRfix64K_00000 ||
  msr === MSR_MTRRfix16K_80000 ||
  msr === MSR_MTRRfix16K_A0000 ||
  (msr >= MSR_MTRRfix4K_C0000 && msr <= MSR_MTRRfix4K_F8000);
const isVarMsr = (msr: number): boolean => msr >= 0x200 && msr < 0x200 + 2 * KVM_NR_VAR_MTRR;

/** First fixed_ranges index and [start, end) bytes of a fixed-range MSR. @kernel arch/x86/kvm/mtrr.c#fixed_msr_to_range */
function fixedMsrRange(msr: number): [number, number, number] {
  if (msr === MSR_MTRRfix64K_00000) return [0, 0, 0x80000];
  if (msr === MSR_MTRRfix16K_80000) return [8, 0x80000, 0xa0000];
  if (msr === MSR_MTRRfix16K_A0000) return [16, 0xa0000, 0xc0000];
  const k = msr - MSR_MTRRfix4K_C0000;
  return [24 + 8 * k, 0xc0000 + k * 0x8000, 0xc8000 + k * 0x8000];
}

/** A set PAT entry must be UC, WC, WT, WP, WB or UC-. @kernel arch/x86/kvm/x86.h#kvm_pat_valid */
function patValid(v: bigint): boolean {
  for (let i = 0n; i < 64n; i += 8n) if (![0n, 1n, 4n, 5n, 6n, 7n].includes((v >> i) & 0xffn)) return false;
  return true;
}

/** @kernel arch/x86/kvm/mtrr.c#kvm_mtrr_valid */
function kvmMtrrValid(vcpu: Vcpu, msr: number, d: bigint): boolean {
  if (msr === MSR_IA32_CR_PAT) return patValid(d);
  if (msr === MSR_MTRRdefType) return (d & ~0xcffn) === 0n && validMtrrType(Number(d & 0xffn));
  if (isFixedMsr(msr)) {
    for (let i = 0n; i < 64n; i += 8n) if (!validMtrrType(Number((d >> i) & 0xffn))) return false;
    return true;
  }
  const rsvd = ~((1n << BigInt(vcpu.vm.cfg.maxPhyAddr)) - 1n) & 0xffffffffffffffffn;
  if ((msr & 1) === 0) return validMtrrType(Number(d & 0xffn)) && (d & (rsvd | 0xf00n)) === 0n;
  return (d & (rsvd | 0x7ffn)) === 0n;
}

/**
 * WRMSR / KVM_SET_MSRS of an MTRR or PAT MSR. Returns 0, or 1 when the write #GPs (invalid type,
 * reserved bits). Unknown MSRs are a TypeError: the model keeps only these.
 * @kernel arch/x86/kvm/mtrr.c#kvm_mtrr_set_msr
 */
export function kvmMtrrSetMsr(vcpu: Vcpu, msr: number, data: number | bigint): number {
  const fn = 'setMsr';
  const d = BigInt(data);
  if (d < 0n || d >= 1n << 64n) throw new RangeError(`setMsr: MSR value ${String(data)} is not a u64`);
  if (msr !== MSR_IA32_CR_PAT && msr !== MSR_MTRRdefType && !isFixedMsr(msr) && !isVarMsr(msr))
    throw new TypeError(`${fn}: MSR 0x${msr.toString(16)} is not modelled (MTRRs and PAT only)`);
  if (!kvmMtrrValid(vcpu, msr, d)) return 1;
  const s = vcpu.memtype;
  if (msr === MSR_IA32_CR_PAT) s.pat = d;
  else if (msr === MSR_MTRRdefType) s.deftype = Number(d);
  else if (isFixedMsr(msr)) {
    const [i0] = fixedMsrRange(msr);
    for (let i = 0; i < 8; i++) s.fixed[i0 + i] = Number((d >> BigInt(8 * i)) & 0xffn);
  } else setVarMtrrMsr(s, (msr - MSR_MTRRphysBase0) >> 1, (msr & 1) === 1, Number(d));
  updateMtrr(vcpu, msr);
  return 0;
}

/** RDMSR of an MTRR or PAT MSR (MTRRcap: 8 variable ranges, fixed ranges, WC). @kernel arch/x86/kvm/mtrr.c#kvm_mtrr_get_msr */
export function kvmMtrrGetMsr(vcpu: Vcpu, msr: number): bigint {
  const fn = 'getMsr';
  const s = vcpu.memtype;
  if (msr === MSR_MTRRcap) return BigInt(0x500 | KVM_NR_VAR_MTRR);
  if (msr === MSR_IA32_CR_PAT) return s.pat;
  if (msr === MSR_MTRRdefType) return BigInt(s.deftype);
  if (isFixedMsr(msr)) {
    const [i0] = fixedMsrRange(msr);
    let v = 0n;
    for (let i = 7; i >= 0; i--) v = (v << 8n) | BigInt(s.fixed[i0 + i]!);
    return v;
  }
  if (isVarMsr(msr)) {
    const i = (msr - MSR_MTRRphysBase0) >> 1;
    return BigInt(msr & 1 ? s.varMask[i]! : s.varBase[i]!);
  }
  throw new TypeError(`${fn}: MSR 0x${msr.toString(16)} is not modelled (MTRRs and PAT only)`);
}

/** MTRRdefType for a default type, with MTRRs enabled (E) and optionally the fixed ranges (FE). */
export function mtrrDefTypeValue(type: number, opts: { enabled?: boolean; fixed?: boolean } = {}): number {
  return (type & 0xff) | (opts.enabled === false ? 0 : MTRR_DEF_TYPE_E) | (opts.fixed ? MTRR_DEF_TYPE_FE : 0);
}

/**
 * PhysBase/PhysMask values for [base, base + size) of `type` (size a power of two ≥ 4 KiB, base aligned
 * to it), or a disabled range (null).
 */
export function mtrrVarValues(
  vcpu: Vcpu,
  r: { base: number; size: number; type: number } | null,
): [number, number] {
  if (r === null) return [0, 0];
  const { base, size, type } = r;
  const phys = vcpu.vm.cfg.maxPhyAddr;
  if (
    !Number.isSafeInteger(size) ||
    size < 4096 ||
    2 ** Math.round(Math.log2(size)) !== size ||
    size > 2 ** phys
  )
    throw new RangeError(`setMtrrVar: size 0x${size.toString(16)} must be a power of two from 4 KiB`);
  if (!Number.isSafeInteger(base) || base < 0 || base % size !== 0 || base >= 2 ** phys)
    throw new RangeError(`setMtrrVar: base 0x${base.toString(16)} must be aligned to its size`);
  return [base + (type & 0xff), 2 ** phys - size + MTRR_PHYS_MASK_VALID];
}

/**
 * Apply KVM's "update_mtrr": with guest MTRRs honoured (non-coherent DMA, MTRR virtualization present),
 * zap the gfns whose memory type the write may have changed — the new range for a variable MTRR (the
 * old one is not zapped, as in the kernel), the fixed range, or everything for MTRRdefType.
 * @kernel arch/x86/kvm/mtrr.c#update_mtrr
 */
function updateMtrr(vcpu: Vcpu, msr: number): void {
  const vm = vcpu.vm;
  if (msr === MSR_IA32_CR_PAT || !vm.cfg.honorGuestMtrrs || !vm.cfg.tdp || !kvmArchHasNoncoherentDma(vm))
    return;
  const s = vcpu.memtype;
  if (!(s.deftype & MTRR_DEF_TYPE_E) && msr !== MSR_MTRRdefType) return;
  let start: number;
  let end: number;
  if (isFixedMsr(msr)) {
    if (!(s.deftype & MTRR_DEF_TYPE_FE)) return;
    [, start, end] = fixedMsrRange(msr);
  } else if (msr === MSR_MTRRdefType) {
    start = 0;
    end = GFN_ALL_END * 4096;
  } else [start, end] = varMtrrRange(s, vm.cfg.maxPhyAddr, (msr - MSR_MTRRphysBase0) >> 1);
  kvmZapGfnRange(vm, Math.floor(start / 4096), Math.floor(end / 4096));
}

/**
 * Cap a TDP fault's mapping level so the whole mapping has one guest MTRR type. Only in the
 * honorGuestMtrrs era, and there on every TDP fault: v5.3's tdp_page_fault checked
 * (check_hugepage_cache_consistency) whether or not the VM had non-coherent DMA; 6.11+ has no such check.
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_tdp_page_fault
 */
export function kvmTdpMtrrMaxLevel(vcpu: Vcpu, gfn: number, maxLevel: number): number {
  if (!vcpu.vm.cfg.honorGuestMtrrs) return maxLevel;
  for (; maxLevel > 1; maxLevel--) {
    const n = 512 ** (maxLevel - 1);
    if (kvmMtrrCheckGfnRangeConsistency(vcpu, gfn - (gfn % n), n)) break;
  }
  return maxLevel;
}

/** The kernel version string last compared, and whether it is before 6.15 (one compare per version). */
let eraKernel = '';
let eraBefore615 = false;

/** @kernel arch/x86/kvm/vmx/vmx.c#vmx_ignore_guest_pat */
function vmxIgnoreGuestPat(vm: Vcpu['vm']): boolean {
  if (kvmArchHasNoncoherentDma(vm)) return false;
  if (kvmCheckHasQuirk(vm.arch, KVM_X86_QUIRK_IGNORE_GUEST_PAT)) return true;
  // Before 6.15 guest PAT is ignored without the quirk. The string compare runs once per version:
  // a fault compares the version with the last one by identity (the same string, mostly the same object).
  const k = vm.cfg.kernel;
  if (k !== eraKernel) {
    eraKernel = k;
    eraBefore615 = k < '6.15';
  }
  return eraBefore615;
}

/**
 * vmx_get_mt_mask for guest RAM (not MMIO) where its answer is the same for every gfn and vCPU: since
 * 6.11 (no honorGuestMtrrs) it reads only VM-wide state (non-coherent DMA, the quirk, the kernel
 * version), not CR0.CD, MTRRs or PAT. -1 in the honorGuestMtrrs era, where it depends on those.
 */
export function vmxGetMtMaskVmWide(vm: Vcpu['vm']): number {
  if (vm.cfg.honorGuestMtrrs) return -1;
  if (vmxIgnoreGuestPat(vm)) return (MTRR_TYPE_WRBACK << VMX_EPT_MT_EPTE_SHIFT) | VMX_EPT_IPAT_BIT;
  return MTRR_TYPE_WRBACK << VMX_EPT_MT_EPTE_SHIFT;
}

/** @kernel arch/x86/kvm/vmx/vmx.c#vmx_get_mt_mask */
export function vmxGetMtMask(vcpu: Vcpu, gfn: number, isMmio: boolean): number {
  // UC for host MMIO: cacheable accesses to device memory can cause machine checks.
  if (isMmio) return MTRR_TYPE_UNCACHABLE << VMX_EPT_MT_EPTE_SHIFT;
  const vm = vcpu.vm;
  if (vm.cfg.honorGuestMtrrs) {
    // v5.3: without non-coherent DMA, caches are coherent anyway; force WB and ignore guest PAT.
    if (!kvmArchHasNoncoherentDma(vm)) return (MTRR_TYPE_WRBACK << VMX_EPT_MT_EPTE_SHIFT) | VMX_EPT_IPAT_BIT;
    if (vcpu.memtype.cr0 & X86_CR0_CD) {
      const t = kvmCheckHasQuirk(vm.arch, KVM_X86_QUIRK_CD_NW_CLEARED)
        ? MTRR_TYPE_WRBACK
        : MTRR_TYPE_UNCACHABLE;
      return (t << VMX_EPT_MT_EPTE_SHIFT) | VMX_EPT_IPAT_BIT;
    }
    return kvmMtrrGetGuestMemoryType(vcpu, gfn) << VMX_EPT_MT_EPTE_SHIFT;
  }
  return vmxGetMtMaskVmWide(vm);
}

/** kvm_x86_call(get_mt_mask) as make_spte calls it (a VMX/EPT host). @kernel arch/x86/kvm/mmu/spte.c#make_spte */
export function kvmMmuGetMtMask(vcpu: Vcpu, gfn: number, isMmio: boolean): number {
  return vmxGetMtMask(vcpu, gfn, isMmio);
}
