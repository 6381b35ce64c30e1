/**
 * Builds the MMU a new VM uses. Until a vCPU faults there is nothing to zap, and the MMU modules below
 * own all page-table state; this factory is the one place VmState reaches into x86/mmu.
 */
import type { KvmMmuOps } from '../mmu_ops.ts';
import type { VmState } from '../../kvm/vm_state.ts';
import type { KvmGfnRange, KvmMemorySlot } from '../../kvm/kvm_host.ts';

/** The MMU of a VM with no page tables yet built by any MMU module: every zap finds nothing. */
class NoPageTablesMmu implements KvmMmuOps {
  kvmMmuZapAllFast(): void {}
  kvmMmuZapMemslot(_slot: KvmMemorySlot): void {}
  kvmMmuZapMemslotLeafs(_slot: KvmMemorySlot): void {}
  kvmMmuSlotApplyFlags(): void {}
  kvmMmuInvalidateMmioSptes(_gen: number): void {}
  kvmArchMmuEnableLogDirtyPtMasked(): void {}
  kvmUnmapGfnRange(_range: KvmGfnRange): boolean {
    return false;
  }
  kvmArchFlushShadowAll(): void {}
  kvmArchFreeMemslot(_slot: KvmMemorySlot): void {}
}

export function createMmu(_vm: VmState): KvmMmuOps {
  return new NoPageTablesMmu();
}
