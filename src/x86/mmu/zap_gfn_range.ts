/**
 * kvm_zap_gfn_range: zap every leaf SPTE mapping a gfn in [gfnStart, gfnEnd) in every valid root of every
 * address space, inside an MMU-invalidation window, and flush if anything was zapped. Used when something
 * that SPTEs were built from changes under them without a memslot change: the memory-type inputs
 * (non-coherent DMA appearing or going, a guest CR0.CD toggle or MTRR write on kernels that virtualized
 * MTRRs), APICv inhibits, SEV's memory-encryption changes.
 *
 * Kernel counterpart: arch/x86/kvm/mmu/mmu.c#kvm_zap_gfn_range (rmap half: kvm_rmap_zap_gfn_range, for
 * the shadow MMU; TDP MMU half: kvm_tdp_mmu_zap_leafs).
 * Simplifications: kvm_flush_remote_tlbs_range is a full remote flush.
 */
import type { VmState } from '../../kvm/vm_state.ts';
import type { X86Mmu } from './mmu.ts';
import { kvmTdpMmuZapLeafs } from './tdp_mmu_root.ts';

/** gpa_to_gfn(~0ULL): the end the kernel passes to zap "everything". */
export const GFN_ALL_END = 2 ** 52 - 1;

/** @kernel arch/x86/kvm/mmu/mmu.c#kvm_zap_gfn_range */
export function kvmZapGfnRange(vm: VmState, gfnStart: number, gfnEnd: number): void {
  if (
    vm.warnOnce(
      gfnEnd <= gfnStart,
      'INV-ZAP-GFN-RANGE',
      `kvm_zap_gfn_range: empty range ${gfnStart}..${gfnEnd}`,
    )
  )
    return;
  // Duck-typed so this module needs no value import of the MMUs.
  const mmu = vm.mmu as Partial<X86Mmu> & { kvmRmapZapGfnRange?: (start: number, end: number) => boolean };
  if (mmu.tdp === undefined && mmu.kvmRmapZapGfnRange === undefined) return;
  // The invalidation window makes a fault that already has a pfn for a gfn in the range retry, instead
  // of installing an SPTE computed from the old inputs after the zap has passed it.
  vm.mmuInvalidateBegin();
  vm.mmuInvalidateRangeAdd(gfnStart, gfnEnd);
  const flush =
    mmu.tdp !== undefined
      ? kvmTdpMmuZapLeafs(mmu.tdp, gfnStart, gfnEnd, false)
      : mmu.kvmRmapZapGfnRange!(gfnStart, gfnEnd);
  // Zapped leafs of valid roots may still be cached in TLBs: flush before the window closes.
  if (flush) vm.flushRemoteTlbs();
  vm.mmuInvalidateEnd();
  mmu.syncCounters?.();
}
