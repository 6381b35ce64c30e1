/**
 * Issue #12 finding 6 (swap that cannot proceed): virt/kvm/kvm_main.c#kvm_set_memslot never leaves the
 * INVALID copy of a slot published: its second swap (kvm_swap_active_memslots) waits for in-flight
 * MMU-notifier invalidations, and the one failure after kvm_invalidate_memslot (PREPARE) puts the old
 * slot back with kvm_activate_memslot(invalid_slot, old) (linux-next 6.19-rc5, as 6.18). The model cannot
 * wait and answers EBUSY; it must then leave the slots as they were, not the INVALID copy active.
 */
import { describe, expect, it } from 'vitest';
import { Kvm, KvmError } from '../../src/index.ts';
import { KVM_MEMSLOT_INVALID } from '../../src/uapi/kvm.ts';

const MiB = 1 << 20;

function setup() {
  const kvm = new Kvm();
  const vm = kvm.createVm(0);
  const a = kvm.host.mmap(2 * MiB);
  const b = kvm.host.mmap(2 * MiB);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 2 * MiB, userspaceAddr: a });
  vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x1000_0000, memorySize: 2 * MiB, userspaceAddr: b });
  const v = vm.createVcpu(0);
  v.access(0x1000_0000, 'write');
  return { kvm, vm, v, a, b };
}

const errno = (f: () => void): string => {
  try {
    f();
  } catch (e) {
    if (e instanceof KvmError) return e.code;
    throw e;
  }
  return 'ok';
};

describe('kvm_set_memslot: an update that cannot swap leaves no INVALID slot behind', () => {
  it('an invalidation started in the INVALID window of a DELETE: EBUSY, the old slot is back', () => {
    const { kvm, vm, v, a } = setup();
    const gen = vm.memslotsGeneration(0);
    let finish: (() => void) | undefined;
    // A concurrent thread starts (and does not yet end) an invalidation of slot 0's memory.
    vm.onInvalidWindow = () => void (finish = kvm.host.migrate(a, 4096, { stepwise: true }));
    expect(errno(() => vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x1000_0000, memorySize: 0 }))).toBe(
      'EBUSY',
    );
    vm.onInvalidWindow = undefined;
    const slot1 = vm.memslots(0).find((s) => s.id === 1)!;
    expect(slot1.flags & KVM_MEMSLOT_INVALID).toBe(0);
    // Two swaps happened (INVALID published, old slot restored): +2 per address space, as after a
    // failed PREPARE.
    expect(vm.memslotsGeneration(0)).toBe(gen + 2 * 2);
    // The slot works (its SPTEs were zapped with the INVALID copy published: the access refaults).
    expect(v.access(0x1000_0000, 'read').exit).toBe('none');
    finish!();
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x1000_0000, memorySize: 0 });
    expect(vm.memslots(0).map((s) => s.id)).toEqual([0]);
  });

  it('an invalidation already in flight: EBUSY before anything changes', () => {
    const { kvm, vm, b } = setup();
    const gen = vm.memslotsGeneration(0);
    const pages = vm.getStats().pages_4k;
    const finish = kvm.host.migrate(b + 8192, 4096, { stepwise: true });
    expect(
      errno(() =>
        vm.setUserMemoryRegion({
          slot: 1,
          guestPhysAddr: 0x2000_0000,
          memorySize: 2 * MiB,
          userspaceAddr: b,
        }),
      ),
    ).toBe('EBUSY');
    expect([vm.memslotsGeneration(0), vm.getStats().pages_4k]).toEqual([gen, pages]);
    expect(vm.memslots(0).find((s) => s.id === 1)!.baseGfn).toBe(0x10000);
    finish();
    // Neither set may hold a half-made change: the next update publishes exactly what it was asked to.
    vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: 0x3000_0000, memorySize: 2 * MiB, userspaceAddr: b });
    expect(vm.memslots(0).map((s) => [s.id, s.baseGfn, s.flags])).toEqual([
      [0, 0, 0],
      [1, 0x10000, 0],
      [2, 0x30000, 0],
    ]);
  });
});
