/**
 * Builds the MMU a new VM uses: the TDP MMU on a TDP host. The one place VmState reaches into x86/mmu.
 */
import type { KvmMmuOps } from '../mmu_ops.ts';
import type { VmState } from '../../kvm/vm_state.ts';
import { X86Mmu } from './mmu.ts';

export function createMmu(vm: VmState): KvmMmuOps {
  return new X86Mmu(vm);
}
