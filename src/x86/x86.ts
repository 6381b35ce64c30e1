/**
 * The x86 side of memslot updates and VM capabilities: KVM_CHECK_EXTENSION answers, the quirk
 * enable-caps, kvm_arch_prepare/commit_memory_region with the per-slot lpage_info metadata, and the
 * DELETE/MOVE flush decision (kvm_arch_flush_shadow_memslot) under each ABI design.
 *
 * Kernel counterpart: arch/x86/kvm/x86.c, arch/x86/kvm/mmu/mmu.c#kvm_arch_flush_shadow_memslot.
 * See shared/reference/memslot-abi.md §1.6, §2.4, §3.5–3.6, §6 and mmu-zap.md §1.2.
 */
import { gfnRoundForLevel, pagesPerHpage, type Gfn, type PgLevel } from '../types/addr.ts';
import type { KvmMemorySlot } from '../kvm/kvm_host.ts';
import type { HostConfig } from '../kvm/host_profile.ts';
import type { ErrnoName } from '../uapi/errno.ts';
import { KVM_MEM_ZAP_LEAFS_ONLY, type KvmMrChange } from '../uapi/kvm.ts';
import {
  KVM_X86_DEFAULT_VM,
  KVM_X86_QUIRK_SLOT_ZAP_ALL,
  KVM_X86_QUIRK_CD_NW_CLEARED,
} from '../uapi/kvm_x86.ts';
import type { VmTypeInfo } from './vm_types.ts';
import type { KvmMmuOps } from './mmu_ops.ts';
import type { KvmTdx } from './tdx.ts';
import type { SevSnp } from './sev.ts';
import { kvmMmuInitMemslotMemoryAttributes, type AttrVm } from './mmu/mixed_attrs.ts';

/** How KVM chooses between zap-all and a precise zap on DELETE/MOVE (the three ABIs of May 2024). */
export type ZapDesign = 'quirk' | 'vm-type' | 'slot-flag';

/** KVM_MEMSLOT_PAGES_TO_MMU_PAGES_RATIO and KVM_MIN_ALLOC_MMU_PAGES (arch/x86/include/asm/kvm_host.h). */
const KVM_MEMSLOT_PAGES_TO_MMU_PAGES_RATIO = 50;
const KVM_MIN_ALLOC_MMU_PAGES = 64;

/** The x86 part of struct kvm (kvm->arch) that memslot code touches. */
export interface KvmArch {
  readonly info: VmTypeInfo;
  readonly cfg: HostConfig;
  readonly zapDesign: ZapDesign;
  disabledQuirks: number;
  /** kvm->arch.gfn_direct_bits: the TDX shared bit as a gfn mask, 0 elsewhere. */
  readonly gfnDirectBits: number;
  /** kvm->arch.n_requested_mmu_pages (KVM_SET_NR_MMU_PAGES) and n_max_mmu_pages. */
  nRequestedMmuPages: number;
  nMaxMmuPages: number;
  /** kvm->arch.noncoherent_dma_count (kvm-vfio devices with a non-coherent VFIO file; x86/memtype.ts) */
  noncoherentDmaCount: number;
  /** struct kvm_tdx (TDX VMs only; x86/tdx.ts), set by tdx_vm_init. */
  tdx?: KvmTdx | undefined;
  /** struct kvm_sev_info's SNP state and the RMP (SNP VMs only; x86/sev.ts), set by svm_vm_init. */
  snp?: SevSnp | undefined;
}

/** What the x86 hooks read of the generic VM. */
export interface X86Vm extends AttrVm {
  readonly arch: KvmArch;
  readonly nrMemslotPages: number;
  readonly mmu: KvmMmuOps;
  countModel(name: 'memslot_zap_all_fast' | 'memslot_zap_precise'): void;
}

/** Initial kvm->arch.disabled_quirks. @kernel arch/x86/kvm/x86.c#kvm_arch_init_vm */
export function initialDisabledQuirks(cfg: HostConfig, info: VmTypeInfo): number {
  // A VMX host declares CD_NW_CLEARED inapplicable (6.15+); TDX also forces IGNORE_GUEST_PAT off.
  let q = cfg.kernel >= '6.15' ? KVM_X86_QUIRK_CD_NW_CLEARED & cfg.supportedQuirks : 0;
  if (info.name === 'TDX') q |= (1 << 9) & cfg.supportedQuirks;
  return q;
}

/** @kernel arch/x86/kvm/x86.h#kvm_check_has_quirk */
export function kvmCheckHasQuirk(arch: KvmArch, quirk: number): boolean {
  return (arch.disabledQuirks & quirk) === 0;
}

/** @kernel arch/x86/kvm/mmu.h#kvm_mmu_max_gfn */
export function kvmMmuMaxGfn(cfg: HostConfig): number {
  const bits = cfg.tdp ? cfg.maxPhyAddr : 52;
  return 2 ** (bits - 12) - 1;
}

/** The TDX shared bit as a gfn mask: GPA bit 47 with a 4-level S-EPT, 51 with 5-level. */
export function tdxGfnDirectBits(cfg: HostConfig): number {
  return 2 ** ((cfg.maxPhyAddr > 48 ? 51 : 47) - 12);
}

/** @kernel arch/x86/kvm/mmu.h#kvm_is_gfn_alias */
export function kvmIsGfnAlias(arch: KvmArch, gfn: number): boolean {
  return arch.gfnDirectBits !== 0 && Math.floor(gfn / arch.gfnDirectBits) % 2 === 1;
}

/**
 * lpage_info for the 2M and 1G levels: disallow huge pages at unaligned slot edges and everywhere when
 * the gfn and the hva are not congruent modulo the huge-page size.
 * @kernel arch/x86/kvm/x86.c#kvm_alloc_memslot_metadata
 */
export function kvmAllocLpageInfo(slot: KvmMemorySlot): [Int32Array, Int32Array] {
  const mk = (level: PgLevel): Int32Array => {
    const n = pagesPerHpage(level);
    const base = slot.baseGfn;
    const lpages = kvmMmuSlotLpages(slot, level);
    const linfo = new Int32Array(lpages);
    if (base % n !== 0) linfo[0] = 1;
    if ((base + slot.npages) % n !== 0) linfo[lpages - 1] = 1;
    const ugfn = Math.floor(slot.userspaceAddr / 4096);
    // (base_gfn ^ ugfn) & (n - 1): n is a power of two below 2^31, so compare the low bits.
    if (base % n !== ugfn % n) linfo.fill(1);
    return linfo;
  };
  return [mk(2), mk(3)];
}

/** Number of level-sized frames the slot touches. @kernel arch/x86/kvm/mmu.h#__kvm_mmu_slot_lpages */
export function kvmMmuSlotLpages(slot: { baseGfn: Gfn; npages: number }, level: PgLevel): number {
  const n = pagesPerHpage(level);
  const last = slot.baseGfn + slot.npages - 1;
  return Math.floor(last / n) - Math.floor(slot.baseGfn / n) + 1;
}

/** Index of gfn's lpage_info entry at level. @kernel arch/x86/kvm/mmu.h#gfn_to_index */
export function gfnToIndex(gfn: number, baseGfn: number, level: PgLevel): number {
  return (
    (gfnRoundForLevel(gfn as Gfn, level) - gfnRoundForLevel(baseGfn as Gfn, level)) / pagesPerHpage(level)
  );
}

/** @kernel arch/x86/kvm/x86.c#kvm_arch_prepare_memory_region */
export function kvmArchPrepareMemoryRegion(
  vm: X86Vm,
  old: KvmMemorySlot | null,
  nu: KvmMemorySlot | null,
  change: KvmMrChange,
): ErrnoName | null {
  if (change === 'CREATE' || change === 'MOVE') {
    const s = nu!;
    const last = s.baseGfn + s.npages - 1;
    if (last > kvmMmuMaxGfn(vm.arch.cfg)) return 'EINVAL';
    if (kvmIsGfnAlias(vm.arch, last)) return 'EINVAL';
    s.arch = { lpageInfo: kvmAllocLpageInfo(s), rmap: null, gfnWriteTrack: null };
    // kvm_alloc_memslot_metadata: attributes may already be mixed in the new slot's huge ranges.
    kvmMmuInitMemslotMemoryAttributes(vm, s);
    return null;
  }
  if (change === 'FLAGS_ONLY') nu!.arch = old!.arch;
  return null;
}

/** @kernel arch/x86/kvm/x86.c#kvm_arch_commit_memory_region */
export function kvmArchCommitMemoryRegion(
  vm: X86Vm,
  old: KvmMemorySlot | null,
  nu: KvmMemorySlot | null,
  change: KvmMrChange,
): void {
  const arch = vm.arch;
  // The MMU page budget tracks guest size unless userspace fixed it with KVM_SET_NR_MMU_PAGES.
  if (arch.nRequestedMmuPages === 0 && (change === 'CREATE' || change === 'DELETE')) {
    arch.nMaxMmuPages = Math.max(
      Math.floor(vm.nrMemslotPages / KVM_MEMSLOT_PAGES_TO_MMU_PAGES_RATIO),
      KVM_MIN_ALLOC_MMU_PAGES,
    );
  }
  vm.mmu.kvmMmuSlotApplyFlags(old, nu, change);
  if (change === 'MOVE') vm.mmu.kvmArchFreeMemslot(old!);
}

/**
 * Which zap a DELETE/MOVE of `slot` gets under the VM's ABI design.
 * 'quirk' is upstream 6.12+ (kvm_memslot_flush_zap_all); 'vm-type' keys on the VM type alone (Sean's
 * May 2024 suggestion); 'slot-flag' is the May 2024 RFC (per-slot KVM_MEM_ZAP_LEAFS_ONLY, else zap all).
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_memslot_flush_zap_all
 */
export function memslotFlushScope(arch: KvmArch, slot: KvmMemorySlot): 'ALL' | 'SLOT_RANGE' | 'SLOT_LEAFS' {
  const isDefault = arch.info.type === KVM_X86_DEFAULT_VM;
  switch (arch.zapDesign) {
    case 'quirk':
      return isDefault && kvmCheckHasQuirk(arch, KVM_X86_QUIRK_SLOT_ZAP_ALL) ? 'ALL' : 'SLOT_RANGE';
    case 'vm-type':
      return isDefault ? 'ALL' : 'SLOT_RANGE';
    case 'slot-flag':
      return slot.flags & KVM_MEM_ZAP_LEAFS_ONLY ? 'SLOT_LEAFS' : 'ALL';
  }
}

/** @kernel arch/x86/kvm/mmu/mmu.c#kvm_arch_flush_shadow_memslot */
export function kvmArchFlushShadowMemslot(vm: X86Vm, slot: KvmMemorySlot): void {
  const scope = memslotFlushScope(vm.arch, slot);
  if (scope === 'ALL') {
    vm.countModel('memslot_zap_all_fast');
    vm.mmu.kvmMmuZapAllFast();
  } else {
    vm.countModel('memslot_zap_precise');
    if (scope === 'SLOT_LEAFS') vm.mmu.kvmMmuZapMemslotLeafs(slot);
    else vm.mmu.kvmMmuZapMemslot(slot);
  }
}
