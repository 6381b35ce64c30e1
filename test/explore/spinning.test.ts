/**
 * The explorer's "would the vCPU only spin?" check (actors.ts `spinning`) is a tool-side look at the VM:
 * it must answer without moving the VM-wide last-used-slot cache, which is part of the hashed state (a
 * look that moved it would make a distinct state of what the kernel did not change).
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { spinning } from '../../src/explore/actors.ts';
import { stateHash } from '../../src/kvm/state_hash.ts';

const MiB = 1 << 20;

describe('spinning(): answers without moving the last-used-slot cache', () => {
  it('a valid slot, then an invalidation over part of another: same answers as the kernel, same state', () => {
    const kvm = new Kvm();
    const vm = kvm.createVm(0);
    const a = kvm.host.mmap(2 * MiB);
    const b = kvm.host.mmap(2 * MiB);
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 2 * MiB, userspaceAddr: a });
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 1 << 30, memorySize: 2 * MiB, userspaceAddr: b });
    const set = vm.activeMemslots(0);
    const gfnB = (1 << 30) / 4096 + 7;
    set.searchMemslots(3); // the kernel's last lookup was in slot 0
    const slot0 = set.lastUsedSlot;
    expect(slot0?.id).toBe(0);
    const h = stateHash([kvm]);

    expect(spinning(vm, 0, gfnB)).toBe(false);
    expect(spinning(vm, 0, 0x7fffff)).toBe(false); // no slot: an MMIO exit, not a spin
    expect(set.lastUsedSlot).toBe(slot0);
    expect(stateHash([kvm])).toBe(h);

    // munmap's invalidate_range_start has run (stepwise): slot 1's first page is being invalidated
    const end = kvm.host.munmap(b, 4096, { stepwise: true });
    expect(spinning(vm, 0, gfnB - 7)).toBe(true);
    expect(spinning(vm, 0, gfnB)).toBe(false);
    expect(set.lastUsedSlot).toBe(slot0);
    end();
    expect(spinning(vm, 0, gfnB - 7)).toBe(false);
    expect(set.lastUsedSlot).toBe(slot0);
  });
});
