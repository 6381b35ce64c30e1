/**
 * zaplab's public entry: explicit named exports only.
 */
export { Kvm, Vm } from './kvm/kvm_main.ts';
export { Vcpu } from './kvm/vcpu.ts';
export { KvmError } from './kvm/kvm_error.ts';
export type { KvmOptions, HostConfig, KernelVersion } from './kvm/host_profile.ts';
export type { VmOptions, KvmWarning } from './kvm/vm_state.ts';
export type { ZapDesign } from './x86/x86.ts';
export type {
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
export * as uapi from './uapi/kvm.ts';
export * as uapiX86 from './uapi/kvm_x86.ts';
export { ERRNO } from './uapi/errno.ts';
