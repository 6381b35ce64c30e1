/**
 * The EPT SPTE as KVM programs it on Intel hosts (kvm_mmu_set_ept_masks): bit layout, constructors and
 * predicates.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/spte.h, arch/x86/kvm/mmu/spte.c (shape of ~6.12+: non-present
 * SPTEs are SHADOW_NONPRESENT_VALUE = bit 63, FROZEN_SPTE = bit 63 | 0x5a0, shadow_present_mask has
 * suppress-#VE, shadow_accessed_mask is always the A bit).
 *
 * Representation: on the hot path an SPTE is two signed 32-bit halves, `lo` = bits 31:0 and `hi` =
 * bits 63:32, exactly as JavaScript's bitwise operators produce them (so `a | b` never needs `>>> 0`)
 * and as an Int32Array stores them. `spteValue(lo, hi)` gives the u64 as a bigint for tests and traces.
 * Measured (Node 20, 2-vCPU EPYC, scan+zap of 16 Mi entries): Int32Array lo/hi pair 336–389 M SPTEs/s,
 * BigUint64Array 15–23 M SPTEs/s (every read allocates a bigint) — hence the pair.
 *
 * Simplifies: the L1TF mitigation is off (shadow_nonpresent_or_rsvd_mask = 0: the host is taken as not
 * vulnerable), shadow_me_value = 0 (no SME/MKTME), no MBEC user-exec bit; the memtype bits come in ready
 * made from the caller (get_mt_mask lives with the memtype code, not here).
 */
import type { Pfn } from '../../types/addr.ts';

// ---- low word (bits 31:0) ----------------------------------------------------------------------
/** VMX_EPT_READABLE_MASK; also shadow_user_mask and (without exec-only) part of shadow_present_mask. */
export const VMX_EPT_READABLE_MASK = 0x1;
/** PT_WRITABLE_MASK */
export const PT_WRITABLE_MASK = 0x2;
/** VMX_EPT_EXECUTABLE_MASK = shadow_x_mask */
export const VMX_EPT_EXECUTABLE_MASK = 0x4;
export const VMX_EPT_RWX_MASK = 0x7;
export const VMX_EPT_MT_EPTE_SHIFT = 3;
export const VMX_EPT_MT_MASK = 0x38;
export const VMX_EPT_IPAT_BIT = 0x40;
/** PT_PAGE_SIZE_MASK: the entry is a leaf above 4K. */
export const PT_PAGE_SIZE_MASK = 0x80;
/** VMX_EPT_ACCESS_BIT = shadow_accessed_mask */
export const VMX_EPT_ACCESS_BIT = 0x100;
/** VMX_EPT_DIRTY_BIT = shadow_dirty_mask */
export const VMX_EPT_DIRTY_BIT = 0x200;
/** SPTE_MMU_PRESENT_MASK: KVM's software "shadow-present" bit 11 (MMIO SPTEs do not have it). */
export const SPTE_MMU_PRESENT_MASK = 0x800;
/** PFN bits 31:12 as they sit in the low word. */
export const SPTE_BASE_ADDR_MASK_LO = 0xfffff000 | 0;
/** VMX_EPT_MISCONFIG_WX_VALUE: W|X without R makes an EPT misconfiguration — the default MMIO value. */
export const VMX_EPT_MISCONFIG_WX_VALUE = 0x6;
/** MMIO generation bits 0–7 live in SPTE bits 10:3. */
export const MMIO_SPTE_GEN_LOW_MASK_LO = 0x7f8;

// ---- high word (bits 63:32), bit n of the SPTE is bit n-32 here ---------------------------------
/** PFN bits 51:32. */
export const SPTE_BASE_ADDR_MASK_HI = 0x000fffff;
/** SPTE_TDP_AD_MASK (bits 53:52) and its three values. */
export const SPTE_TDP_AD_MASK_HI = 0x00300000;
export const SPTE_TDP_AD_ENABLED_HI = 0;
export const SPTE_TDP_AD_DISABLED_HI = 0x00100000;
export const SPTE_TDP_AD_WRPROT_ONLY_HI = 0x00200000;
/** SHADOW_ACC_TRACK_SAVED_BITS_SHIFT = 54: saved R (bit 54) and X (bit 56) of an access-tracked SPTE. */
export const SHADOW_ACC_TRACK_SAVED_SHIFT_HI = 22;
export const SHADOW_ACC_TRACK_SAVED_MASK_HI = 0x01400000;
/** EPT_SPTE_HOST_WRITABLE (bit 57) = shadow_host_writable_mask */
export const EPT_SPTE_HOST_WRITABLE_HI = 0x02000000;
/** EPT_SPTE_MMU_WRITABLE (bit 58) = shadow_mmu_writable_mask */
export const EPT_SPTE_MMU_WRITABLE_HI = 0x04000000;
/** MMIO generation bits 8–18 live in SPTE bits 62:52. */
export const MMIO_SPTE_GEN_HIGH_MASK_HI = 0x7ff00000;
/** VMX_EPT_SUPPRESS_VE_BIT (bit 63): SHADOW_NONPRESENT_VALUE, and part of shadow_present_mask. */
export const VMX_EPT_SUPPRESS_VE_HI = 0x80000000 | 0;

// ---- whole values -------------------------------------------------------------------------------
/** SHADOW_NONPRESENT_VALUE = BIT(63): non-present SPTEs are not 0. */
export const SHADOW_NONPRESENT_LO = 0;
export const SHADOW_NONPRESENT_HI = VMX_EPT_SUPPRESS_VE_HI;
/** FROZEN_SPTE = SHADOW_NONPRESENT_VALUE | 0x5a0: a lock value, never MMU-present. */
export const FROZEN_SPTE_LO = 0x5a0;
export const FROZEN_SPTE_HI = VMX_EPT_SUPPRESS_VE_HI;
/** MMIO_SPTE_GEN_MASK: 19 bits of memslot generation. */
export const MMIO_SPTE_GEN_MASK = 0x7ffff;

/** The u64 masks as bigints, for inspection and the layout test (spte.h's static_asserts). */
export const SPTE_MASKS = {
  SPTE_MMU_PRESENT_MASK: 1n << 11n,
  SPTE_TDP_AD_MASK: 3n << 52n,
  SHADOW_ACC_TRACK_SAVED_MASK: 5n << 54n,
  EPT_SPTE_HOST_WRITABLE: 1n << 57n,
  EPT_SPTE_MMU_WRITABLE: 1n << 58n,
  MMIO_SPTE_GEN_LOW_MASK: 0xffn << 3n,
  MMIO_SPTE_GEN_HIGH_MASK: 0x7ffn << 52n,
  SPTE_BASE_ADDR_MASK: ((1n << 52n) - 1n) & ~0xfffn,
  SHADOW_NONPRESENT_VALUE: 1n << 63n,
  FROZEN_SPTE: (1n << 63n) | 0x5a0n,
  VMX_EPT_RWX_MASK: 7n,
} as const;

/** ACC_* access bits (spte.h): exec, write, user (= readable for EPT). */
export const ACC_EXEC_MASK = 1;
export const ACC_WRITE_MASK = 2;
export const ACC_USER_MASK = 4;
export const ACC_ALL = 7;

/** Memory types for the EPT memtype field (MTRR_TYPE_*). */
export const MTRR_TYPE_UNCACHABLE = 0;
export const MTRR_TYPE_WRBACK = 6;
/** get_mt_mask results the fault path commonly uses: WB+IPAT for RAM, UC for host MMIO. */
export const MT_MASK_WB_IPAT = (MTRR_TYPE_WRBACK << VMX_EPT_MT_EPTE_SHIFT) | VMX_EPT_IPAT_BIT;
export const MT_MASK_UC = MTRR_TYPE_UNCACHABLE << VMX_EPT_MT_EPTE_SHIFT;

/** An SPTE held as two int32 halves; constructors write into one (no allocation). */
export interface SptePair {
  lo: number;
  hi: number;
}
export const newSptePair = (): SptePair => ({ lo: SHADOW_NONPRESENT_LO, hi: SHADOW_NONPRESENT_HI });

const TWO_20 = 1048576;

/** The u64 value (inspection, tests, trace only — never on the hot path). */
export function spteValue(lo: number, hi: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}
/** Split a u64 into halves (tests, scenario input). */
export function spteFromValue(v: bigint, out: SptePair): SptePair {
  out.lo = Number(v & 0xffffffffn) | 0;
  out.hi = Number((v >> 32n) & 0xffffffffn) | 0;
  return out;
}

/** Low/high words of `pfn << PAGE_SHIFT`. */
export const pfnLo = (pfn: number): number => ((pfn % TWO_20) << 12) | 0;
export const pfnHi = (pfn: number): number => Math.floor(pfn / TWO_20) & SPTE_BASE_ADDR_MASK_HI;

/** @kernel arch/x86/kvm/mmu/spte.h#is_shadow_present_pte */
export const isShadowPresentPte = (lo: number): boolean => (lo & SPTE_MMU_PRESENT_MASK) !== 0;
/** @kernel arch/x86/kvm/mmu/spte.h#is_large_pte */
export const isLargePte = (lo: number): boolean => (lo & PT_PAGE_SIZE_MASK) !== 0;
/** @kernel arch/x86/kvm/mmu/spte.h#is_last_spte */
export const isLastSpte = (lo: number, level: number): boolean =>
  level === 1 || (lo & PT_PAGE_SIZE_MASK) !== 0;
/** @kernel arch/x86/kvm/mmu/spte.h#is_writable_pte */
export const isWritablePte = (lo: number): boolean => (lo & PT_WRITABLE_MASK) !== 0;
/** @kernel arch/x86/kvm/mmu/spte.h#is_mmu_writable_spte */
export const isMmuWritableSpte = (hi: number): boolean => (hi & EPT_SPTE_MMU_WRITABLE_HI) !== 0;
/** @kernel arch/x86/kvm/mmu/spte.h#is_frozen_spte */
export const isFrozenSpte = (lo: number, hi: number): boolean =>
  lo === FROZEN_SPTE_LO && hi === FROZEN_SPTE_HI;
/** @kernel arch/x86/kvm/mmu/spte.h#spte_to_pfn */
export const spteToPfn = (lo: number, hi: number): Pfn =>
  ((lo >>> 12) + (hi & SPTE_BASE_ADDR_MASK_HI) * TWO_20) as Pfn;
/** @kernel arch/x86/kvm/mmu/spte.h#spte_ad_enabled */
export const spteAdEnabled = (hi: number): boolean => (hi & SPTE_TDP_AD_MASK_HI) !== SPTE_TDP_AD_DISABLED_HI;
/** @kernel arch/x86/kvm/mmu/spte.h#is_access_track_spte */
export const isAccessTrackSpte = (lo: number, hi: number): boolean =>
  !spteAdEnabled(hi) && (lo & VMX_EPT_RWX_MASK) === 0;
/** @kernel arch/x86/kvm/mmu/spte.h#is_executable_pte */
export const isExecutablePte = (lo: number): boolean => (lo & VMX_EPT_EXECUTABLE_MASK) !== 0;

/**
 * `(spte & shadow_mmio_mask) == kvm->arch.shadow_mmio_value`, mask = RWX | suppress-#VE. `mmioValue` is the
 * per-VM value: VMX_EPT_MISCONFIG_WX_VALUE normally, 0 for TDX (both have bit 63 clear, which is what
 * keeps SHADOW_NONPRESENT_VALUE and FROZEN_SPTE from ever matching).
 * @kernel arch/x86/kvm/mmu/spte.h#is_mmio_spte
 */
export function isMmioSpte(lo: number, hi: number, mmioValue: number = VMX_EPT_MISCONFIG_WX_VALUE): boolean {
  return (lo & VMX_EPT_RWX_MASK) === mmioValue && (hi & VMX_EPT_SUPPRESS_VE_HI) === 0;
}

/** @kernel arch/x86/kvm/mmu/spte.h#get_mmio_spte_generation */
export function getMmioSpteGeneration(lo: number, hi: number): number {
  return ((lo & MMIO_SPTE_GEN_LOW_MASK_LO) >>> 3) | (((hi & MMIO_SPTE_GEN_HIGH_MASK_HI) >>> 20) << 8);
}

/** Inputs of make_spte that the kernel reads from the vCPU, the shadow page and module state. */
export interface MakeSpteParams {
  /** sp->role.level of the table the SPTE goes in. */
  level: number;
  /** ACC_* bits. */
  pteAccess: number;
  pfn: Pfn;
  /** get_mt_mask(): memtype << 3 | IPAT (MT_MASK_WB_IPAT, MT_MASK_UC, …). */
  mtMask: number;
  prefetch: boolean;
  synchronizing: boolean;
  hostWritable: boolean;
  /** sp->role.ad_disabled (KVM without EPT A/D). */
  adDisabled: boolean;
  /** kvm_mmu_page_ad_need_write_protect (PML for L2): A/D type WRPROT_ONLY. */
  adWrprotOnly: boolean;
  /** is_nx_huge_page_enabled(): huge leafs lose X. */
  nxHugePages: boolean;
  /** mmu_try_to_unsync_pages() said the gfn must stay write-protected (shadow-paging only). */
  wrprotForShadowing: boolean;
  /** has_exec_only: shadow_present_mask drops R. */
  hasExecOnly: boolean;
}

/**
 * make_spte's arguments for a TDP leaf as the TDP fault path passes them: full access, no prefetch,
 * A/D enabled, no shadow-paging write protection, no NX huge-page mitigation.
 */
export function tdpLeafParams(level: number, pfn: Pfn, mtMask: number, hostWritable = true): MakeSpteParams {
  return {
    level,
    pteAccess: ACC_ALL,
    pfn,
    mtMask,
    prefetch: false,
    synchronizing: false,
    hostWritable,
    adDisabled: false,
    adWrprotOnly: false,
    nxHugePages: false,
    wrprotForShadowing: false,
    hasExecOnly: false,
  };
}

/**
 * Build a leaf SPTE into `out`; returns `wrprot` as the kernel does.
 * @kernel arch/x86/kvm/mmu/spte.c#make_spte
 */
export function makeSpte(out: SptePair, p: MakeSpteParams): boolean {
  let lo = SPTE_MMU_PRESENT_MASK | (p.hasExecOnly ? 0 : VMX_EPT_READABLE_MASK);
  let hi = VMX_EPT_SUPPRESS_VE_HI;
  let access = p.pteAccess;
  let wrprot = false;
  if (p.adDisabled) hi |= SPTE_TDP_AD_DISABLED_HI;
  else if (p.adWrprotOnly) hi |= SPTE_TDP_AD_WRPROT_ONLY_HI;
  if (!p.prefetch || p.synchronizing) lo |= VMX_EPT_ACCESS_BIT;
  // NX huge page mitigation (iTLB multihit): executable huge pages are never created.
  if (p.level > 1 && (access & ACC_EXEC_MASK) !== 0 && p.nxHugePages) access &= ~ACC_EXEC_MASK;
  if (access & ACC_EXEC_MASK) lo |= VMX_EPT_EXECUTABLE_MASK;
  if (access & ACC_USER_MASK) lo |= VMX_EPT_READABLE_MASK;
  if (p.level > 1) lo |= PT_PAGE_SIZE_MASK;
  lo |= p.mtMask & (VMX_EPT_MT_MASK | VMX_EPT_IPAT_BIT);
  if (p.hostWritable) hi |= EPT_SPTE_HOST_WRITABLE_HI;
  else access &= ~ACC_WRITE_MASK;
  lo |= pfnLo(p.pfn);
  hi |= pfnHi(p.pfn);
  if (access & ACC_WRITE_MASK) {
    if (p.wrprotForShadowing) wrprot = true;
    else {
      lo |= PT_WRITABLE_MASK | VMX_EPT_DIRTY_BIT;
      hi |= EPT_SPTE_MMU_WRITABLE_HI;
    }
  }
  out.lo = lo;
  out.hi = hi;
  if (p.prefetch && !p.synchronizing) markSpteForAccessTrack(out);
  return wrprot;
}

/**
 * A non-leaf SPTE pointing at the page table at host pfn `childPfn`.
 * @kernel arch/x86/kvm/mmu/spte.c#make_nonleaf_spte
 */
export function makeNonleafSpte(out: SptePair, childPfn: number, adDisabled: boolean): SptePair {
  out.lo =
    SPTE_MMU_PRESENT_MASK |
    VMX_EPT_READABLE_MASK |
    PT_WRITABLE_MASK |
    VMX_EPT_EXECUTABLE_MASK |
    (adDisabled ? 0 : VMX_EPT_ACCESS_BIT) |
    pfnLo(childPfn);
  out.hi = VMX_EPT_SUPPRESS_VE_HI | (adDisabled ? SPTE_TDP_AD_DISABLED_HI : 0) | pfnHi(childPfn);
  return out;
}

/**
 * An MMIO SPTE: generation | per-VM MMIO value | gpa. `access` is masked by shadow_mmio_access_mask,
 * which is 0 for EPT, so it never shows.
 * @kernel arch/x86/kvm/mmu/spte.c#make_mmio_spte
 */
export function makeMmioSpte(
  out: SptePair,
  gfn: number,
  generation: number,
  mmioValue: number = VMX_EPT_MISCONFIG_WX_VALUE,
): SptePair {
  const gen = generation & MMIO_SPTE_GEN_MASK;
  out.lo = ((gen & 0xff) << 3) | mmioValue | pfnLo(gfn);
  out.hi = ((gen >>> 8) << 20) | pfnHi(gfn);
  return out;
}

/** @kernel arch/x86/kvm/mmu/spte.c#mark_spte_for_access_track */
export function markSpteForAccessTrack(s: SptePair): SptePair {
  if (spteAdEnabled(s.hi)) {
    s.lo &= ~VMX_EPT_ACCESS_BIT;
    return s;
  }
  if (isAccessTrackSpte(s.lo, s.hi)) return s;
  // Save R and X in bits 54/56 so fast_page_fault can restore them; W comes back via dirty tracking.
  s.hi |= (s.lo & (VMX_EPT_READABLE_MASK | VMX_EPT_EXECUTABLE_MASK)) << SHADOW_ACC_TRACK_SAVED_SHIFT_HI;
  s.lo &= ~(VMX_EPT_RWX_MASK | VMX_EPT_ACCESS_BIT);
  return s;
}

/** @kernel arch/x86/kvm/mmu/spte.h#restore_acc_track_spte */
export function restoreAccTrackSpte(s: SptePair): SptePair {
  s.lo |= (s.hi & SHADOW_ACC_TRACK_SAVED_MASK_HI) >>> SHADOW_ACC_TRACK_SAVED_SHIFT_HI;
  s.hi &= ~SHADOW_ACC_TRACK_SAVED_MASK_HI;
  return s;
}

/**
 * The SPTE for sub-page `index` of a huge SPTE being split into a table of level `childLevel`.
 * `makeExecutable`: role.access has exec and the NX huge page mitigation is on, so the 4K children
 * regain X (make_spte_executable).
 * @kernel arch/x86/kvm/mmu/spte.c#make_small_spte
 */
export function makeSmallSpte(
  out: SptePair,
  hugeLo: number,
  hugeHi: number,
  childLevel: number,
  index: number,
  makeExecutable: boolean,
): SptePair {
  const pfn = spteToPfn(hugeLo, hugeHi) + index * 2 ** ((childLevel - 1) * 9);
  out.lo = (hugeLo & ~SPTE_BASE_ADDR_MASK_LO) | pfnLo(pfn);
  out.hi = (hugeHi & ~SPTE_BASE_ADDR_MASK_HI) | pfnHi(pfn);
  if (childLevel === 1) {
    out.lo &= ~PT_PAGE_SIZE_MASK;
    if (makeExecutable) {
      const tracked = isAccessTrackSpte(out.lo, out.hi);
      if (tracked) restoreAccTrackSpte(out);
      out.lo |= VMX_EPT_EXECUTABLE_MASK;
      if (tracked) markSpteForAccessTrack(out);
    }
  }
  return out;
}
