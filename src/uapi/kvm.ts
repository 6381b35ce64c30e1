/**
 * Arch-neutral KVM uAPI constants and struct layouts.
 * Kernel counterpart: include/uapi/linux/kvm.h (Linux 6.18). Data only; values are pinned by
 * uapi/uapi.test.ts against shared/reference/memslot-abi.md §1.
 */

export const KVM_API_VERSION = 12;
export const KVMIO = 0xae;
export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 4096;

// _IOC encoding: dir<<30 | size<<16 | type<<8 | nr (dir: 0 none, 1 write, 2 read, 3 both).
const ioc = (dir: number, nr: number, size: number): number =>
  ((dir << 30) | (size << 16) | (KVMIO << 8) | nr) >>> 0;
const IO = (nr: number) => ioc(0, nr, 0);
const IOW = (nr: number, size: number) => ioc(1, nr, size);
const IOR = (nr: number, size: number) => ioc(2, nr, size);
const IOWR = (nr: number, size: number) => ioc(3, nr, size);

/** ioctl request numbers. Sizes are the C struct sizes on x86-64. */
export const KVM_IOCTL = {
  KVM_GET_API_VERSION: IO(0x00),
  KVM_CREATE_VM: IO(0x01),
  KVM_CHECK_EXTENSION: IO(0x03),
  KVM_GET_VCPU_MMAP_SIZE: IO(0x04),
  KVM_CREATE_VCPU: IO(0x41),
  KVM_GET_DIRTY_LOG: IOW(0x42, 16),
  KVM_SET_NR_MMU_PAGES: IO(0x44),
  KVM_SET_USER_MEMORY_REGION: IOW(0x46, 32),
  KVM_SET_TSS_ADDR: IO(0x47),
  KVM_SET_USER_MEMORY_REGION2: IOW(0x49, 160),
  KVM_RUN: IO(0x80),
  KVM_GET_REGS: IOR(0x81, 144),
  KVM_SET_REGS: IOW(0x82, 144),
  KVM_GET_SREGS: IOR(0x83, 312),
  KVM_SET_SREGS: IOW(0x84, 312),
  KVM_ENABLE_CAP: IOW(0xa3, 104),
  KVM_CLEAR_DIRTY_LOG: IOWR(0xc0, 24),
  KVM_GET_STATS_FD: IO(0xce),
  KVM_SET_MEMORY_ATTRIBUTES: IOW(0xd2, 32),
  KVM_CREATE_GUEST_MEMFD: IOWR(0xd4, 64),
  KVM_PRE_FAULT_MEMORY: IOWR(0xd5, 64),
} as const;

/** Userspace-visible memslot flags (bits 0–15 are uAPI, 16–31 are KVM-internal). */
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
export const KVM_MEM_READONLY = 1 << 1;
export const KVM_MEM_GUEST_MEMFD = 1 << 2;
/** The May 2024 RFC's flag (never merged): zap only the slot's leaf SPTEs on DELETE/MOVE. */
export const KVM_MEM_ZAP_LEAFS_ONLY = 1 << 3;
/** The only flags KVM_SET_USER_MEMORY_REGION (v1) accepts. */
export const KVM_SET_USER_MEMORY_REGION_V1_FLAGS = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY;

/** Capability numbers (KVM_CHECK_EXTENSION / KVM_ENABLE_CAP). */
export const KVM_CAP = {
  KVM_CAP_USER_MEMORY: 3,
  KVM_CAP_NR_VCPUS: 9,
  KVM_CAP_NR_MEMSLOTS: 10,
  KVM_CAP_SYNC_MMU: 16,
  KVM_CAP_DESTROY_MEMORY_REGION_WORKS: 21,
  KVM_CAP_JOIN_MEMORY_REGIONS_WORKS: 30,
  KVM_CAP_HYPERV: 44,
  KVM_CAP_MAX_VCPUS: 66,
  KVM_CAP_READONLY_MEM: 81,
  KVM_CAP_DISABLE_QUIRKS: 116,
  KVM_CAP_X86_SMM: 117,
  KVM_CAP_MULTI_ADDRESS_SPACE: 118,
  KVM_CAP_MAX_VCPU_ID: 128,
  KVM_CAP_X86_DISABLE_EXITS: 143,
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT: 166,
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: 168,
  KVM_CAP_DIRTY_LOG_RING: 192,
  KVM_CAP_BINARY_STATS_FD: 203,
  KVM_CAP_DISABLE_QUIRKS2: 213,
  KVM_CAP_DIRTY_LOG_RING_ACQ_REL: 223,
  KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP: 225,
  KVM_CAP_USER_MEMORY2: 231,
  KVM_CAP_MEMORY_FAULT_INFO: 232,
  KVM_CAP_MEMORY_ATTRIBUTES: 233,
  KVM_CAP_GUEST_MEMFD: 234,
  KVM_CAP_VM_TYPES: 235,
  KVM_CAP_PRE_FAULT_MEMORY: 236,
  KVM_CAP_GUEST_MEMFD_FLAGS: 244,
} as const;
export type KvmCapName = keyof typeof KVM_CAP;

/** KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 arguments. */
export const KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE = 1 << 0;
export const KVM_DIRTY_LOG_INITIALLY_SET = 1 << 1;
export const KVM_DIRTY_LOG_MANUAL_CAPS = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET;

/** guest_memfd creation flags (6.18+). */
export const GUEST_MEMFD_FLAG_MMAP = 1 << 0;
export const GUEST_MEMFD_FLAG_INIT_SHARED = 1 << 1;

/** KVM_SET_MEMORY_ATTRIBUTES. */
export const KVM_MEMORY_ATTRIBUTE_PRIVATE = 1 << 3;

/** KVM_EXIT_MEMORY_FAULT flag: the faulting access was private. */
export const KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3;

/** Exit reasons (struct kvm_run.exit_reason). */
export const KVM_EXIT = {
  KVM_EXIT_UNKNOWN: 0,
  KVM_EXIT_IO: 2,
  KVM_EXIT_HLT: 5,
  KVM_EXIT_MMIO: 6,
  KVM_EXIT_SHUTDOWN: 8,
  KVM_EXIT_FAIL_ENTRY: 9,
  KVM_EXIT_INTR: 10,
  KVM_EXIT_INTERNAL_ERROR: 17,
  KVM_EXIT_SYSTEM_EVENT: 24,
  KVM_EXIT_MEMORY_FAULT: 39,
} as const;

/** Memslot id space (include/linux/kvm_host.h; x86 KVM_INTERNAL_MEM_SLOTS = 3). */
export const KVM_MEM_SLOTS_NUM = 32767; // SHRT_MAX
export const KVM_INTERNAL_MEM_SLOTS = 3;
export const KVM_USER_MEM_SLOTS = KVM_MEM_SLOTS_NUM - KVM_INTERNAL_MEM_SLOTS; // 32764
/** A user slot holds at most 2^31 - 1 pages (8 TiB - 4 KiB). */
export const KVM_MEM_MAX_NR_PAGES = 2 ** 31 - 1;

/** Internal memslot flags (include/linux/kvm_host.h); never accepted from userspace. */
export const KVM_MEMSLOT_INVALID = 1 << 16;
export const KVM_MEMSLOT_GMEM_ONLY = 1 << 17;
/** Bit 63 of a memslot-set generation: an update is in progress. */
export const KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS = 1n << 63n;

/** enum kvm_mr_change. */
export const KVM_MR = { KVM_MR_CREATE: 0, KVM_MR_DELETE: 1, KVM_MR_MOVE: 2, KVM_MR_FLAGS_ONLY: 3 } as const;
export type KvmMrChange = 'CREATE' | 'DELETE' | 'MOVE' | 'FLAGS_ONLY';

/** Struct sizes in bytes (x86-64). */
export const STRUCT_SIZE = {
  kvm_userspace_memory_region: 32,
  kvm_userspace_memory_region2: 160,
  kvm_dirty_log: 16,
  kvm_clear_dirty_log: 24,
  kvm_memory_attributes: 32,
  kvm_create_guest_memfd: 64,
  kvm_enable_cap: 104,
} as const;
