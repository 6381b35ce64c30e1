/**
 * The in-kernel structures other layers read: struct kvm_memory_slot, the per-VM fields the MMU uses,
 * and the arch hooks kvm_main calls. This is the contract between kvm/ (memslots, ioctls) and
 * x86/mmu/ (faults, zaps).
 *
 * Kernel counterpart: include/linux/kvm_host.h (struct kvm_memory_slot, struct kvm, struct kvm_gfn_range),
 * arch/x86/include/asm/kvm_host.h (struct kvm_arch_memory_slot, struct kvm_lpage_info).
 */
import type { Gfn, Hva } from '../types/addr.ts';
import type { KvmMrChange } from '../uapi/kvm.ts';
import type { ErrnoName } from '../uapi/errno.ts';

/** struct kvm_arch_memory_slot (x86): lpage_info[level-2].disallow_lpage for 2M (index 0) and 1G (1). */
export interface KvmArchMemorySlot {
  /** disallow_lpage counters per huge level; bit 31 (KVM_LPAGE_MIXED_FLAG) marks mixed attributes. */
  lpageInfo: [Int32Array, Int32Array] | null;
  /** rmap heads per level (shadow MMU only; allocated by the shadow MMU when it needs them). */
  rmap: unknown;
  /** gfn write-track counters (shadow MMU page tracking), allocated lazily. */
  gfnWriteTrack: Uint16Array | null;
}

/** The guest_memfd binding of a slot (slot->gmem). */
export interface KvmGmemBinding {
  /** The guest_memfd file object (kvm/guest_memfd.ts#KvmGmemFile). */
  file: { readonly id: number };
  /** Page offset of the slot's first gfn in the file. */
  pgoff: number;
}

/** struct kvm_memory_slot */
export interface KvmMemorySlot {
  readonly id: number;
  readonly asId: number;
  readonly baseGfn: Gfn;
  readonly npages: number;
  readonly userspaceAddr: Hva;
  /** KVM_MEM_* plus the internal KVM_MEMSLOT_INVALID / KVM_MEMSLOT_GMEM_ONLY bits. */
  flags: number;
  /** Live dirty bitmap (ALIGN(npages, 64) / 8 bytes, kernel bit order), or null when logging is off. */
  dirtyBitmap: Uint8Array | null;
  arch: KvmArchMemorySlot;
  gmem: KvmGmemBinding | null;
}

/** struct kvm_gfn_range, as passed to kvm_unmap_gfn_range and friends. */
export interface KvmGfnRange {
  slot: KvmMemorySlot;
  start: Gfn;
  /** exclusive */
  end: Gfn;
  /** KVM_FILTER_PRIVATE | KVM_FILTER_SHARED */
  attrFilter: number;
  mayBlock: boolean;
}
export const KVM_FILTER_SHARED = 1 << 0;
export const KVM_FILTER_PRIVATE = 1 << 1;

/**
 * The arch hooks virt/kvm/kvm_main.c calls during a memslot update, in the kernel's order:
 * INVALIDATE (DELETE/MOVE: publish the INVALID copy, then flushShadowMemslot), PREPARE, swap(s), COMMIT.
 * Every swap ends with memslotsUpdated.
 */
export interface KvmArchMemslotHooks {
  /** @kernel arch/x86/kvm/x86.c#kvm_arch_prepare_memory_region */
  kvmArchPrepareMemoryRegion(
    old: KvmMemorySlot | null,
    nu: KvmMemorySlot | null,
    change: KvmMrChange,
  ): ErrnoName | null;
  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_arch_flush_shadow_memslot */
  kvmArchFlushShadowMemslot(old: KvmMemorySlot): void;
  /** @kernel arch/x86/kvm/x86.c#kvm_arch_commit_memory_region */
  kvmArchCommitMemoryRegion(old: KvmMemorySlot | null, nu: KvmMemorySlot | null, change: KvmMrChange): void;
  /** @kernel arch/x86/kvm/x86.c#kvm_arch_memslots_updated */
  kvmArchMemslotsUpdated(asId: number, gen: number): void;
  /** @kernel arch/x86/kvm/x86.c#kvm_arch_guest_memory_reclaimed */
  kvmArchGuestMemoryReclaimed(): void;
}
