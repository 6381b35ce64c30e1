/**
 * x86 KVM uAPI constants: VM types and quirks.
 * Kernel counterpart: arch/x86/include/uapi/asm/kvm.h (Linux 6.18). Data only.
 */

export const KVM_X86_DEFAULT_VM = 0;
export const KVM_X86_SW_PROTECTED_VM = 1;
export const KVM_X86_SEV_VM = 2;
export const KVM_X86_SEV_ES_VM = 3;
export const KVM_X86_SNP_VM = 4;
export const KVM_X86_TDX_VM = 5;
export type VmType = 0 | 1 | 2 | 3 | 4 | 5;
export const VM_TYPE_NAMES = ['DEFAULT', 'SW_PROTECTED', 'SEV', 'SEV_ES', 'SNP', 'TDX'] as const;
export type VmTypeName = (typeof VM_TYPE_NAMES)[number];

export const KVM_X86_QUIRK = {
  KVM_X86_QUIRK_LINT0_REENABLED: 1 << 0,
  KVM_X86_QUIRK_CD_NW_CLEARED: 1 << 1,
  KVM_X86_QUIRK_LAPIC_MMIO_HOLE: 1 << 2,
  KVM_X86_QUIRK_OUT_7E_INC_RIP: 1 << 3,
  KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT: 1 << 4,
  KVM_X86_QUIRK_FIX_HYPERCALL_INSN: 1 << 5,
  KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS: 1 << 6,
  KVM_X86_QUIRK_SLOT_ZAP_ALL: 1 << 7,
  KVM_X86_QUIRK_STUFF_FEATURE_MSRS: 1 << 8,
  KVM_X86_QUIRK_IGNORE_GUEST_PAT: 1 << 9,
  /** Post-6.18 upstream; present as a backport on the development machines' kernel. */
  KVM_X86_QUIRK_VMCS12_ALLOW_FREEZE_IN_SMM: 1 << 10,
} as const;
export const KVM_X86_QUIRK_SLOT_ZAP_ALL = KVM_X86_QUIRK.KVM_X86_QUIRK_SLOT_ZAP_ALL;
export const KVM_X86_QUIRK_CD_NW_CLEARED = KVM_X86_QUIRK.KVM_X86_QUIRK_CD_NW_CLEARED;
export const KVM_X86_QUIRK_IGNORE_GUEST_PAT = KVM_X86_QUIRK.KVM_X86_QUIRK_IGNORE_GUEST_PAT;

/** KVM_X86_VALID_QUIRKS of 6.15–6.18: bits 0–9. */
export const KVM_X86_VALID_QUIRKS = 0x3ff;
/** Quirks that a vendor module may declare inapplicable (6.15+). */
export const KVM_X86_CONDITIONAL_QUIRKS = KVM_X86_QUIRK_CD_NW_CLEARED | KVM_X86_QUIRK_IGNORE_GUEST_PAT;
