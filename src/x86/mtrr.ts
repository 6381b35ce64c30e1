/**
 * The EPT memory type KVM puts in a leaf SPTE.
 *
 * Kernel counterpart: arch/x86/kvm/vmx/vmx.c#vmx_get_mt_mask (6.12+ shape): MMIO is UC; without
 * non-coherent DMA, WB with IPAT (guest PAT/MTRRs ignored).
 * The non-coherent-DMA branch (guest CR0.CD, MTRRs, the CD_NW_CLEARED quirk) is modelled by the
 * memory-type work; until a VM has non-coherent DMA this is the whole rule.
 */
import type { Vcpu } from '../kvm/vcpu.ts';

export const MTRR_TYPE_UNCACHABLE = 0;
export const MTRR_TYPE_WRBACK = 6;
const VMX_EPT_MT_EPTE_SHIFT = 3;
const VMX_EPT_IPAT_BIT = 1 << 6;

/** @kernel arch/x86/kvm/vmx/vmx.c#vmx_get_mt_mask */
export function kvmMmuGetMtMask(_vcpu: Vcpu, _gfn: number, isMmio: boolean): number {
  if (isMmio) return MTRR_TYPE_UNCACHABLE << VMX_EPT_MT_EPTE_SHIFT;
  return (MTRR_TYPE_WRBACK << VMX_EPT_MT_EPTE_SHIFT) | VMX_EPT_IPAT_BIT;
}
