/**
 * The pinned uAPI table: every constant of shared/reference/memslot-abi.md §1.3–§1.7, §5.1 and §6.1, and
 * the Linux errno numbers, typed in from the reference (not copied from src/) and compared with what
 * src/uapi/{kvm,kvm_x86,errno}.ts export. A wrong constant in src fails here with its name.
 */
import { describe, expect, it } from 'vitest';
import * as K from '../../src/uapi/kvm.ts';
import * as X from '../../src/uapi/kvm_x86.ts';
import { ERRNO } from '../../src/uapi/errno.ts';
import { Kvm } from '../../src/index.ts';

/** Compare a { name: expected } table against an export record, one named row per constant. */
function pin(actual: Readonly<Record<string, unknown>>, table: Readonly<Record<string, number | bigint>>) {
  const rows = Object.entries(table).map(([name, want]) => [name, actual[name], want] as const);
  for (const [name, got, want] of rows) {
    expect.soft(got, `${name}`).toBe(want);
  }
}

describe('memslot-abi.md §1.3 memslot flags', () => {
  it('user-visible and internal flag bits', () => {
    pin(K, {
      KVM_MEM_LOG_DIRTY_PAGES: 1 << 0,
      KVM_MEM_READONLY: 1 << 1,
      KVM_MEM_GUEST_MEMFD: 1 << 2,
      KVM_MEMSLOT_INVALID: 1 << 16,
      KVM_MEMSLOT_GMEM_ONLY: 1 << 17,
      KVM_SET_USER_MEMORY_REGION_V1_FLAGS: 0x3, // LOG_DIRTY_PAGES | READONLY
    });
  });
});

describe('memslot-abi.md §1.4 ioctl numbers (KVMIO = 0xAE)', () => {
  // Exactly the hex column of the reference table.
  const IOCTLS = {
    KVM_CREATE_VM: 0xae01,
    KVM_CHECK_EXTENSION: 0xae03,
    KVM_GET_DIRTY_LOG: 0x4010ae42,
    KVM_SET_NR_MMU_PAGES: 0xae44,
    KVM_SET_USER_MEMORY_REGION: 0x4020ae46,
    KVM_SET_USER_MEMORY_REGION2: 0x40a0ae49,
    KVM_ENABLE_CAP: 0x4068aea3,
    KVM_CLEAR_DIRTY_LOG: 0xc018aec0,
    KVM_SET_MEMORY_ATTRIBUTES: 0x4020aed2,
    KVM_CREATE_GUEST_MEMFD: 0xc040aed4,
    KVM_PRE_FAULT_MEMORY: 0xc040aed5,
  } as const;

  it('KVMIO', () => {
    expect(K.KVMIO).toBe(0xae);
  });

  it('every listed ioctl has the reference number', () => {
    pin(K.KVM_IOCTL, IOCTLS);
  });

  it('ioctl numbers are unsigned 32-bit values (not sign-extended)', () => {
    for (const [name, v] of Object.entries(K.KVM_IOCTL)) {
      expect(v, name).toBeGreaterThanOrEqual(0);
      expect(v, name).toBeLessThanOrEqual(0xffffffff);
    }
  });

  it('the _IOC size field of each struct-carrying ioctl matches the struct sizes of §1.1, §1.2, §1.5', () => {
    // (dir<<30 | size<<16 | type<<8 | nr): the size field is bits 16–29.
    const size = (n: number) => (n >>> 16) & 0x3fff;
    const want: Record<string, number> = {
      KVM_GET_DIRTY_LOG: 16,
      KVM_SET_USER_MEMORY_REGION: 32,
      KVM_SET_USER_MEMORY_REGION2: 160,
      KVM_ENABLE_CAP: 104,
      KVM_CLEAR_DIRTY_LOG: 24,
      KVM_SET_MEMORY_ATTRIBUTES: 32,
      KVM_CREATE_GUEST_MEMFD: 64,
      KVM_PRE_FAULT_MEMORY: 64,
    };
    for (const [name, bytes] of Object.entries(want)) {
      expect(size(IOCTLS[name as keyof typeof IOCTLS]), name).toBe(bytes);
    }
  });
});

describe('memslot-abi.md §1.1, §1.2, §1.5 structures and their constants', () => {
  it('struct sizes (x86-64)', () => {
    pin(K.STRUCT_SIZE, {
      kvm_userspace_memory_region: 32,
      kvm_userspace_memory_region2: 160,
      kvm_dirty_log: 16,
      kvm_clear_dirty_log: 24,
      kvm_memory_attributes: 32,
      kvm_create_guest_memfd: 64,
      kvm_enable_cap: 104,
    });
  });

  it('attribute, guest_memfd and manual-protect constants', () => {
    pin(K, {
      KVM_MEMORY_ATTRIBUTE_PRIVATE: 1 << 3,
      GUEST_MEMFD_FLAG_MMAP: 1 << 0,
      GUEST_MEMFD_FLAG_INIT_SHARED: 1 << 1,
      KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE: 1 << 0,
      KVM_DIRTY_LOG_INITIALLY_SET: 1 << 1,
      // §1.6: KVM_DIRTY_LOG_MANUAL_CAPS = 3 on x86 (ENABLE | INITIALLY_SET)
      KVM_DIRTY_LOG_MANUAL_CAPS: 3,
    });
  });
});

describe('memslot-abi.md §1.6 capability numbers', () => {
  it('every listed cap has the reference number', () => {
    pin(K.KVM_CAP, {
      KVM_CAP_USER_MEMORY: 3,
      KVM_CAP_NR_MEMSLOTS: 10,
      KVM_CAP_DESTROY_MEMORY_REGION_WORKS: 21,
      KVM_CAP_JOIN_MEMORY_REGIONS_WORKS: 30,
      KVM_CAP_READONLY_MEM: 81,
      KVM_CAP_DISABLE_QUIRKS: 116,
      KVM_CAP_X86_SMM: 117,
      KVM_CAP_MULTI_ADDRESS_SPACE: 118,
      KVM_CAP_MANUAL_DIRTY_LOG_PROTECT: 166,
      KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: 168,
      KVM_CAP_DIRTY_LOG_RING: 192,
      KVM_CAP_DIRTY_LOG_RING_ACQ_REL: 223,
      KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP: 225,
      KVM_CAP_DISABLE_QUIRKS2: 213,
      KVM_CAP_USER_MEMORY2: 231,
      KVM_CAP_MEMORY_FAULT_INFO: 232,
      KVM_CAP_MEMORY_ATTRIBUTES: 233,
      KVM_CAP_GUEST_MEMFD: 234,
      KVM_CAP_VM_TYPES: 235,
      KVM_CAP_PRE_FAULT_MEMORY: 236,
      KVM_CAP_GUEST_MEMFD_FLAGS: 244,
    });
  });

  it('cap numbers are distinct', () => {
    const nums = Object.values(K.KVM_CAP);
    expect(new Set(nums).size).toBe(nums.length);
  });
});

describe('memslot-abi.md §1.7 slot-count and size constants', () => {
  it('slot ids, page limits, generation bit, page size', () => {
    pin(K, {
      KVM_MEM_SLOTS_NUM: 32767, // SHRT_MAX
      KVM_INTERNAL_MEM_SLOTS: 3,
      KVM_USER_MEM_SLOTS: 32764,
      KVM_MEM_MAX_NR_PAGES: 2 ** 31 - 1,
      KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS: 1n << 63n,
      PAGE_SIZE: 4096,
      PAGE_SHIFT: 12,
    });
  });

  it('KVM_API_VERSION is 12 (DESIGN.md public API)', () => {
    expect(K.KVM_API_VERSION).toBe(12);
  });

  it('KVM_MAX_NR_ADDRESS_SPACES = 2 and KVM_USER_MEM_SLOTS as /dev/kvm reports them (§1.6, §1.7)', () => {
    // Not exported as constants; observable through KVM_CHECK_EXTENSION on the default (SMM) profile.
    const kvm = new Kvm();
    expect(kvm.checkExtension(118)).toBe(2); // KVM_CAP_MULTI_ADDRESS_SPACE
    expect(kvm.checkExtension(10)).toBe(32764); // KVM_CAP_NR_MEMSLOTS
    expect(kvm.checkExtension(168)).toBe(3); // KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2
  });
});

describe('memslot-abi.md §5.1 VM types', () => {
  it('KVM_X86_*_VM numbers', () => {
    pin(X, {
      KVM_X86_DEFAULT_VM: 0,
      KVM_X86_SW_PROTECTED_VM: 1,
      KVM_X86_SEV_VM: 2,
      KVM_X86_SEV_ES_VM: 3,
      KVM_X86_SNP_VM: 4,
      KVM_X86_TDX_VM: 5,
    });
  });
});

describe('memslot-abi.md §6.1 quirk bits and masks', () => {
  const QUIRKS = {
    KVM_X86_QUIRK_LINT0_REENABLED: 0x1,
    KVM_X86_QUIRK_CD_NW_CLEARED: 0x2,
    KVM_X86_QUIRK_LAPIC_MMIO_HOLE: 0x4,
    KVM_X86_QUIRK_OUT_7E_INC_RIP: 0x8,
    KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT: 0x10,
    KVM_X86_QUIRK_FIX_HYPERCALL_INSN: 0x20,
    KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS: 0x40,
    KVM_X86_QUIRK_SLOT_ZAP_ALL: 0x80,
    KVM_X86_QUIRK_STUFF_FEATURE_MSRS: 0x100,
    KVM_X86_QUIRK_IGNORE_GUEST_PAT: 0x200,
  } as const;

  it('bits 0–9 (6.17/6.18)', () => {
    pin(X.KVM_X86_QUIRK, QUIRKS);
  });

  it('post-6.18 bits, where the model defines them, sit at their reference bit', () => {
    // Bit 10 (name varied between patch versions), bit 11 NESTED_SVM_SHARED_PAT: optional in a 6.18 model.
    const q = X.KVM_X86_QUIRK as Readonly<Record<string, number>>;
    if ('KVM_X86_QUIRK_VMCS12_ALLOW_FREEZE_IN_SMM' in q)
      expect(q['KVM_X86_QUIRK_VMCS12_ALLOW_FREEZE_IN_SMM']).toBe(1 << 10);
    if ('KVM_X86_QUIRK_NESTED_SVM_SHARED_PAT' in q)
      expect(q['KVM_X86_QUIRK_NESTED_SVM_SHARED_PAT']).toBe(1 << 11);
  });

  it('the standalone exports agree with the table', () => {
    pin(X, {
      KVM_X86_QUIRK_SLOT_ZAP_ALL: 0x80,
      KVM_X86_QUIRK_CD_NW_CLEARED: 0x2,
      KVM_X86_QUIRK_IGNORE_GUEST_PAT: 0x200,
      KVM_X86_VALID_QUIRKS: 0x3ff, // bits 0–9 (6.17)
      KVM_X86_CONDITIONAL_QUIRKS: 0x202, // CD_NW_CLEARED | IGNORE_GUEST_PAT
    });
  });
});

describe('errno numbers (x86-64 Linux)', () => {
  it('every errno the memslot ABI returns', () => {
    pin(ERRNO, {
      EPERM: 1,
      ENOENT: 2,
      EIO: 5,
      ENXIO: 6,
      E2BIG: 7,
      EBADF: 9,
      EBADFD: 77,
      EAGAIN: 11,
      ENOMEM: 12,
      EFAULT: 14,
      EBUSY: 16,
      EEXIST: 17,
      EINVAL: 22,
      ENOTTY: 25,
    });
  });

  it('errno numbers are distinct', () => {
    const nums = Object.values(ERRNO);
    expect(new Set(nums).size).toBe(nums.length);
  });
});
