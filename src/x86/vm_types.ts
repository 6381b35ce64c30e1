/**
 * One descriptor per x86 VM type: the properties KVM derives from the type at KVM_CREATE_VM.
 *
 * Kernel counterpart: arch/x86/kvm/x86.c#kvm_arch_init_vm (has_private_mem for SW_PROTECTED),
 * arch/x86/kvm/svm/svm.c#svm_vm_init (SEV_ES/SNP protected state, SNP private memory),
 * arch/x86/kvm/vmx/tdx.c#tdx_vm_init (TDX: both, plus IGNORE_GUEST_PAT forced off and a mirror root).
 * See shared/reference/memslot-abi.md §5.1.
 */
import { VM_TYPE_NAMES, type VmType, type VmTypeName } from '../uapi/kvm_x86.ts';

export interface VmTypeInfo {
  readonly type: VmType;
  readonly name: VmTypeName;
  /** kvm->arch.has_private_mem */
  readonly hasPrivateMem: boolean;
  /** kvm->arch.has_protected_state (no READONLY slots: kvm_arch_has_readonly_mem is its negation) */
  readonly hasProtectedState: boolean;
  /** TDX: the private half of the GPA space lives in a mirror root (S-EPT) — kvm_has_mirrored_tdp */
  readonly hasMirroredTdp: boolean;
  /** SEV/SNP/TDX need hardware; SW_PROTECTED needs the TDP MMU (CONFIG_KVM_SW_PROTECTED_VM). */
  readonly needsTdpMmu: boolean;
}

const mk = (type: VmType, priv: boolean, prot: boolean, mirror = false, tdp = false): VmTypeInfo => ({
  type,
  name: VM_TYPE_NAMES[type],
  hasPrivateMem: priv,
  hasProtectedState: prot,
  hasMirroredTdp: mirror,
  needsTdpMmu: tdp,
});

export const VM_TYPES: readonly VmTypeInfo[] = [
  mk(0, false, false),
  mk(1, true, false, false, true),
  mk(2, false, false),
  mk(3, false, true),
  mk(4, true, true, false, true),
  mk(5, true, true, true, true),
];

export function vmTypeInfo(type: VmType): VmTypeInfo {
  return VM_TYPES[type]!;
}
