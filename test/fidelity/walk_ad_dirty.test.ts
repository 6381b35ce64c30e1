/**
 * arch/x86/kvm/mmu/paging_tmpl.h#FNAME(update_accessed_dirty_bits) (gregkh/linux 29c0039e, a 5.17-era copy;
 * the 6.x function has the same body): when the guest walk sets an Accessed or Dirty bit in a gPTE, KVM
 * writes the table page through the user mapping and calls kvm_vcpu_mark_page_dirty(table_gfn) — with
 * dirty logging on, the table page shows up in the dirty bitmap — and it skips the update for a table
 * in a read-only slot (`pte_writable`). The model wrote every update and marked nothing.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY } from '../../src/uapi/kvm.ts';
import { IdentityMapBuilder, PT_ACCESSED_MASK } from '../../src/x86/mmu/guest_paging.ts';

const MiB = 1 << 20;
const DIMM = 0x4000_0000;

/** Shadow paging; RAM at 0, the guest's page tables in a DIMM at 1 GiB (identity map of gva 0x1000). */
function setup(dimmFlags: number) {
  const kvm = new Kvm({ tdp: false, tdpMmu: false });
  const vm = kvm.createVm(0);
  vm.setUserMemoryRegion({
    slot: 0,
    guestPhysAddr: 0,
    memorySize: 2 * MiB,
    userspaceAddr: kvm.host.mmap(2 * MiB),
  });
  const dimm = {
    slot: 1,
    flags: dimmFlags,
    guestPhysAddr: DIMM,
    memorySize: 2 * MiB,
    userspaceAddr: kvm.host.mmap(2 * MiB),
  };
  vm.setUserMemoryRegion(dimm);
  const b = new IdentityMapBuilder(
    { read: (g, i) => vm.readGuestPte(g * 4096, i), write: (g, i, x) => vm.writeGuestPte(g * 4096, i, x) },
    DIMM,
    DIMM + 2 * MiB,
  );
  b.mapPage(0x1000); // root, L3, L2, L1 at DIMM pages 0..3, all gPTEs with A clear
  const v = vm.createVcpu(0);
  v.setCr3(b.cr3);
  return { vm, v };
}

describe('FNAME(update_accessed_dirty_bits)', () => {
  it('dirty logging on the slot holding the tables: the four table pages the walk set A in are dirty', () => {
    const { vm, v } = setup(KVM_MEM_LOG_DIRTY_PAGES);
    expect(v.access(0x1000, 'read')).toMatchObject({ exit: 'none' });
    expect(vm.readGuestPte(DIMM, 0) & PT_ACCESSED_MASK).toBe(PT_ACCESSED_MASK);
    expect([...vm.getDirtyLog(1).slice(0, 2)]).toEqual([0x0f, 0]);
  });

  it('tables in a read-only slot: the walk succeeds, the A bits stay clear', () => {
    const { vm, v } = setup(KVM_MEM_READONLY);
    expect(v.access(0x1000, 'read')).toMatchObject({ exit: 'none' });
    expect(vm.readGuestPte(DIMM, 0) & PT_ACCESSED_MASK).toBe(0);
    expect(vm.readGuestPte(DIMM + 0x3000, 1) & PT_ACCESSED_MASK).toBe(0);
  });
});
