/**
 * Issue #12 finding 2: enabling dirty logging flushes unconditionally.
 * arch/x86/kvm/x86.c#kvm_mmu_slot_apply_flags (6.18; same in linux-next 6.19-rc5): after removing write
 * access (or clearing D-bits with PML) it calls kvm_flush_remote_tlbs_memslot whatever the helpers found,
 * "a flush is almost always going to be necessary". So LOG_DIRTY on a slot nobody touched costs one remote
 * flush request on every MMU; the shadow-MMU recording (test/recorded/mmu-pvm-6.18.json, "flags
 * untouched") shows the same +1 on the real kernel.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_MEM_LOG_DIRTY_PAGES as LOG, KVM_DIRTY_LOG_INITIALLY_SET } from '../../src/uapi/kvm.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';

const MiB = 1 << 20;

function untouchedSlot(opts: ConstructorParameters<typeof Kvm>[0]) {
  const kvm = new Kvm(opts);
  const vm = kvm.createVm(0);
  const hva = kvm.host.mmap(2 * MiB);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 2 * MiB, userspaceAddr: hva });
  const v = vm.createVcpu(0);
  const region = (flags: number) =>
    vm.setUserMemoryRegion({ slot: 0, flags, guestPhysAddr: 0, memorySize: 2 * MiB, userspaceAddr: hva });
  return { vm, v, region };
}

describe('kvm_mmu_slot_apply_flags: enabling dirty logging flushes unconditionally', () => {
  for (const [name, opts] of [
    ['TDP MMU, PML', { pml: true }],
    ['TDP MMU, no PML', { pml: false }],
    ['shadow MMU (EPT)', { tdpMmu: false }],
    ['shadow paging (pvm-6.18)', { profile: 'pvm-6.18' as const }],
  ] as const) {
    it(`${name}: LOG_DIRTY on an untouched slot = one remote flush request`, () => {
      const { vm, region } = untouchedSlot(opts);
      expect(vm.getStats().remote_tlb_flush_requests).toBe(0);
      region(LOG);
      expect(vm.getStats().remote_tlb_flush_requests).toBe(1);
      // Turning it off flushes nothing on an untouched slot (nothing to recover or zap).
      region(0);
      expect(vm.getStats().remote_tlb_flush_requests).toBe(1);
    });
  }

  it('manual protect with INITIALLY_SET protects nothing and does not flush (it returns before)', () => {
    const { vm, region } = untouchedSlot({});
    vm.enableCap({ cap: KVM_CAP.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, args: [1 | KVM_DIRTY_LOG_INITIALLY_SET] });
    region(LOG);
    expect(vm.getStats().remote_tlb_flush_requests).toBe(0);
  });
});
