/**
 * Builds the MMU a new VM uses: the TDP MMU on a TDP host, the shadow MMU (shadow_mmu.ts) otherwise. The one place VmState reaches into x86/mmu.
 */
import type { KvmMmuOps } from '../mmu_ops.ts';
import type { VmState } from '../../kvm/vm_state.ts';
import { X86Mmu } from './mmu.ts';
import { ShadowMmu } from './shadow_mmu.ts';

export function createMmu(vm: VmState): KvmMmuOps {
  // kvm.tdp_mmu=N with tdp_enabled off (the pvm host): the legacy shadow MMU with rmaps.
  if (!vm.cfg.tdpMmu) return new ShadowMmu(vm);
  return new X86Mmu(vm);
}
