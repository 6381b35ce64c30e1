/**
 * zaplab's public entry: explicit named exports only.
 */
export { Kvm, Vm } from './kvm/kvm_main.ts';
export { Vcpu } from './kvm/vcpu.ts';
export { KvmError } from './kvm/kvm_error.ts';
export type { KvmOptions, HostConfig, KernelVersion, BugName } from './kvm/host_profile.ts';
export { BUG_NAMES } from './kvm/host_profile.ts';
export type { VmOptions, KvmWarning } from './kvm/vm_state.ts';
export type { ZapDesign } from './x86/x86.ts';
export type {
  AccessBatchOptions,
  AccessBatchOut,
  AccessBatchResult,
  AccessKind,
  AccessResult,
  KvmClearDirtyLog,
  KvmCreateGuestMemfd,
  KvmEnableCap,
  KvmMemoryAttributes,
  KvmUserspaceMemoryRegion,
  KvmUserspaceMemoryRegion2,
} from './kvm/api_types.ts';
export type { KvmMemorySlot } from './kvm/kvm_host.ts';
export { ACCESS_EXITS } from './kvm/api_types.ts';
export * as uapi from './uapi/kvm.ts';
export * as uapiX86 from './uapi/kvm_x86.ts';
export { ERRNO } from './uapi/errno.ts';
// VFIO, the IOMMU and memory types (README "VFIO, IOMMU and memory types")
export { Vfio, VfioContainer, VfioGroup, VfioDevice } from './iommu/vfio.ts';
export type { DmaKind, DmaResult, IommuUnit, SnoopScope } from './iommu/iommu.ts';
export type { VfioDmaMap, VfioDmaUnmap } from './iommu/vfio_iommu_type1.ts';
export { KvmVfioDevice, type KvmCreateDevice, type KvmDeviceAttr } from './kvm/kvm_vfio.ts';
export * as uapiVfio from './uapi/vfio.ts';
export { auditSpteMemtypes, decodeMtMask } from './x86/mmu/memtype_audit.ts';
export type { MemtypeAudit, StaleMemtypeSpte } from './x86/mmu/memtype_audit.ts';
export { effectiveMemtype, guestPatType, type Cr0Arg } from './x86/memtype.ts';
export {
  MTRR_TYPE_UNCACHABLE,
  MTRR_TYPE_WRCOMB,
  MTRR_TYPE_WRTHROUGH,
  MTRR_TYPE_WRPROT,
  MTRR_TYPE_WRBACK,
  MSR_IA32_CR_PAT,
  MSR_MTRRdefType,
  MSR_MTRRphysBase0,
  MSR_MTRRfix64K_00000,
} from './x86/mtrr.ts';
// Private memory: guest_memfd fallocate, TDX and SEV-SNP (README "Private memory")
export * as uapiFalloc from './uapi/falloc.ts';
export type { TdxAcceptResult } from './x86/tdx_mem.ts';
export type { PvalidateResult, RmpEntry } from './x86/sev.ts';
