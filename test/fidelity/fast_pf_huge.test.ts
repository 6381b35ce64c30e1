/**
 * arch/x86/kvm/mmu/mmu.c#fast_page_fault (linux-next 1c60d04a): a write to a present, MMU-writable leaf
 * whose W bit was cleared is fixed without mmu_lock at any level; only a huge leaf of a slot that is
 * being dirty-logged (kvm_slot_dirty_track_enabled) goes to the slow path to be split, since
 * fast_pf_fix_direct_spte would log only fault->gfn. A 2M leaf write-protected by enabling logging and
 * left so when logging stops (recover_huge_pages_range keeps leafs) is such a leaf: pf_fast counts it.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_MEM_LOG_DIRTY_PAGES } from '../../src/uapi/kvm.ts';

const MiB = 1 << 20;

function hugeGuest() {
  const kvm = new Kvm({ kernel: '6.18' });
  const vm = kvm.createVm(0);
  const hva = kvm.host.mmap(4 * MiB, { backing: 'thp' });
  const region = { slot: 0, guestPhysAddr: 0, memorySize: 4 * MiB, userspaceAddr: hva };
  vm.setUserMemoryRegion({ ...region, flags: 0 });
  const v = vm.createVcpu(0);
  const logging = (on: boolean) =>
    vm.setUserMemoryRegion({ ...region, flags: on ? KVM_MEM_LOG_DIRTY_PAGES : 0 });
  return { vm, v, logging };
}

describe('fast_page_fault: a write-protected huge leaf outside dirty logging is fixed in place', () => {
  it('logging on then off leaves the 2M leaf read-only; the next write is a fast fault at 2M', () => {
    const { vm, v, logging } = hugeGuest();
    expect(v.access(0x1000, 'read')).toMatchObject({ exit: 'none', level: 2 });
    logging(true); // write-protects the 2M leaf (huge leafs are split on the next write)
    logging(false); // recovery replaces tables only: the leaf stays, still read-only
    const before = v.getStats();
    expect(v.access(0x3000, 'write')).toMatchObject({ exit: 'none', level: 2 });
    const after = v.getStats();
    expect(after.pf_fast! - before.pf_fast!).toBe(1);
    expect(after.pf_fixed! - before.pf_fixed!).toBe(1);
    expect(after.pf_taken! - before.pf_taken!).toBe(1);
    expect(vm.getStats().pages_2m).toBe(1);
  });

  it('while the slot is logged the same write takes the slow path and maps 4K', () => {
    const { vm, v, logging } = hugeGuest();
    v.access(0x1000, 'read');
    logging(true);
    const before = v.getStats();
    expect(v.access(0x3000, 'write')).toMatchObject({ exit: 'none', level: 1 });
    const after = v.getStats();
    expect(after.pf_fast! - before.pf_fast!).toBe(0);
    expect(after.pf_fixed! - before.pf_fixed!).toBe(1);
    expect(vm.getStats().pages_4k).toBe(512);
  });
});
