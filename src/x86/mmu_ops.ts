/**
 * What the x86 memslot hooks (x86/x86.ts) need from the MMU: the entry points of arch/x86/kvm/mmu/mmu.c
 * that memslot updates, dirty logging and memory-attribute changes call. The MMU (TDP or shadow)
 * implements this; a VM without any MMU state (no vCPU has faulted) still goes through the same calls.
 */
import type { KvmGfnRange, KvmMemorySlot } from '../kvm/kvm_host.ts';
import type { KvmMrChange } from '../uapi/kvm.ts';
import type { Vcpu } from '../kvm/vcpu.ts';
import type { AccessBatchOut, AccessHit, AccessKind, AccessResult } from '../kvm/api_types.ts';

export interface KvmMmuOps {
  /** A guest access by vcpu (the CPU's translation, then EPT violations/misconfigs into the fault path). */
  vcpuAccess(
    vcpu: Vcpu,
    gpa: number,
    kind: AccessKind,
    opts: { private?: boolean } | undefined,
  ): AccessResult;
  /**
   * The same access for the batched calls, with validated arguments and nothing allocated when it
   * completes: null, with what it reached written to `hit`; else the exit. Absent: the batch loops over
   * vcpuAccess.
   */
  vcpuAccessInto?(
    vcpu: Vcpu,
    gpa: number,
    kind: AccessKind,
    opts: { private?: boolean } | undefined,
    hit: AccessHit,
  ): AccessResult | null;
  /**
   * Up to n accesses at gpa, gpa + 4096, … made in bulk where nothing can observe one between two
   * others (no per-access callback: the caller's to check); returns how many were made, each as
   * vcpuAccessInto would make it, the completed ones written to `out` from index `off`. 0: make the
   * next access through vcpuAccessInto. Absent: the batch always does.
   */
  vcpuAccessBulk?(
    vcpu: Vcpu,
    gpa: number,
    n: number,
    write: boolean,
    out: AccessBatchOut | undefined,
    off: number,
  ): number;
  /**
   * vcpu.access's fast path for a validated read or write with no options: true when it made the access
   * (it completed; what it reached is in `hit`, the vCPU's mode is set as after vcpu.access), false when
   * it changed nothing and the access must go through vcpuAccess. Absent: always vcpuAccess.
   */
  vcpuAccessFast?(vcpu: Vcpu, gpa: number, write: boolean, hit: AccessHit): boolean;
  /** A fault stopped after it got its pfn, before mmu_lock (for races); absent where not modelled. */
  vcpuBeginAccess?(vcpu: Vcpu, gpa: number, kind: AccessKind): { finish(): AccessResult };
  /** An access stopped where the kernel lets others in (explore/); absent where not modelled. */
  vcpuAccessStep?(
    vcpu: Vcpu,
    gpa: number,
    kind: AccessKind,
  ): { result: AccessResult | null; finish(): AccessResult | null };
  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_zap_all_fast */
  kvmMmuZapAllFast(): void;
  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_zap_memslot */
  kvmMmuZapMemslot(slot: KvmMemorySlot): void;
  /** The May 2024 RFC's KVM_MEM_ZAP_LEAFS_ONLY path: kvm_tdp_mmu_unmap_gfn_range over the slot, then a flush. */
  kvmMmuZapMemslotLeafs(slot: KvmMemorySlot): void;
  /** @kernel arch/x86/kvm/x86.c#kvm_mmu_slot_apply_flags */
  kvmMmuSlotApplyFlags(old: KvmMemorySlot | null, nu: KvmMemorySlot | null, change: KvmMrChange): void;
  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_invalidate_mmio_sptes */
  kvmMmuInvalidateMmioSptes(gen: number): void;
  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_arch_mmu_enable_log_dirty_pt_masked */
  kvmArchMmuEnableLogDirtyPtMasked(slot: KvmMemorySlot, gfnOffset: number, mask: number): void;
  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_unmap_gfn_range ; returns whether a TLB flush is needed */
  kvmUnmapGfnRange(range: KvmGfnRange): boolean;
  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_arch_flush_shadow_all */
  kvmArchFlushShadowAll(): void;
  /** Free the slot's MMU metadata on DELETE / on the old slot of a MOVE. @kernel arch/x86/kvm/x86.c#kvm_arch_free_memslot */
  kvmArchFreeMemslot(slot: KvmMemorySlot): void;
}
