/**
 * arch/x86/kvm/mmu/mmu.c#kvm_mmu_invalidate_mmio_sptes (linux-next 1c60d04a): the generation is masked to
 * the 19 MMIO bits and then stripped of the address-space modifier (`gen &= ~(nr_as_ids - 1)`) before the
 * wrap check, because generations advance in steps of the number of address spaces (as 1's are odd).
 * A wrap seen from address space 1 (gen & MMIO_SPTE_GEN_MASK == 1) zaps everything, on either MMU.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import type { KvmMmuOps } from '../../src/x86/mmu_ops.ts';

const GEN_WRAP = 2 ** 19;

describe('kvm_mmu_invalidate_mmio_sptes: the address-space modifier is not part of the wrap check', () => {
  it.each([
    ['TDP MMU', true],
    ['shadow MMU', false],
  ])('%s, two address spaces: a wrap to 1 (address space 1) zaps all', (_n, tdpMmu) => {
    const vm = new Kvm({ tdpMmu }).createVm(0);
    expect(vm.nrAs).toBe(2);
    const mmu = vm.mmu as KvmMmuOps & { mmuValidGen: number };
    mmu.kvmMmuInvalidateMmioSptes(GEN_WRAP + 2); // no wrap
    expect(mmu.mmuValidGen).toBe(0);
    mmu.kvmMmuInvalidateMmioSptes(GEN_WRAP + 1); // as 1 wrapped
    expect(mmu.mmuValidGen).toBe(1);
    mmu.kvmMmuInvalidateMmioSptes(2 * GEN_WRAP); // as 0 wrapped
    expect(mmu.mmuValidGen).toBe(0);
  });
});
