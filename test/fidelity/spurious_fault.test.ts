/**
 * arch/x86/kvm/mmu/tdp_mmu.c#tdp_mmu_map_handle_target_level (linux-next 1c60d04a): a fault that finds a
 * present leaf already allowing the access (`is_access_allowed(fault, iter->old_spte)`, e.g. another vCPU
 * mapped the gfn while this fault looked up its pfn) returns RET_PF_SPURIOUS before make_spte: the leaf
 * is not rewritten, and make_spte's mark_page_dirty_in_slot does not run. kvm_mmu_page_fault then counts
 * pf_spurious, not pf_fixed.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_MEM_LOG_DIRTY_PAGES } from '../../src/uapi/kvm.ts';

const MiB = 1 << 20;
const G = 0x5000;

function loggedTwoVcpus() {
  const kvm = new Kvm(); // upstream-6.18: EPT with PML
  const vm = kvm.createVm(0);
  const ram = kvm.host.mmap(4 * MiB);
  vm.setUserMemoryRegion({
    slot: 0,
    flags: KVM_MEM_LOG_DIRTY_PAGES,
    guestPhysAddr: 0,
    memorySize: 4 * MiB,
    userspaceAddr: ram,
  });
  return { vm, v0: vm.createVcpu(0), v1: vm.createVcpu(1) };
}

const dirty = (bm: Uint8Array, gfn: number) => (bm[gfn >> 3]! >> (gfn & 7)) & 1;

describe('tdp_mmu_map_handle_target_level: a leaf that already allows the access is left alone', () => {
  it('a read fault racing a write by another vCPU is spurious: no pf_fixed, the gfn is not logged again', () => {
    const { vm, v0, v1 } = loggedTwoVcpus();
    // v0 read-faults on G and has its pfn; mmu_lock not yet taken.
    const f = v0.beginAccess(G, 'read');
    // Meanwhile v1 writes G: a writable, dirty 4K leaf, and G is logged.
    expect(v1.access(G, 'write')).toMatchObject({ exit: 'none', level: 1 });
    // Userspace harvests the log: G is reported, and (PML) the leaf's Dirty bit is cleared.
    expect(dirty(vm.getDirtyLog(0), G >> 12)).toBe(1);
    // v0's fault now takes mmu_lock: the present leaf is readable, so the fault is spurious.
    expect(f.finish()).toMatchObject({ exit: 'none', level: 1 });
    const s = v0.getStats();
    expect([s.pf_taken, s.pf_fixed, s.pf_spurious]).toEqual([1, 0, 1]);
    // Nothing wrote to G since the harvest: the next harvest reports it clean.
    expect(dirty(vm.getDirtyLog(0), G >> 12)).toBe(0);
  });

  it("a write fault that finds the leaf another vCPU's read fault mapped writable is spurious too", () => {
    const { vm, v0, v1 } = loggedTwoVcpus();
    const f = v0.beginAccess(G, 'write');
    expect(v1.access(G, 'read')).toMatchObject({ exit: 'none' });
    // v1's read fault mapped G writable (the host page is writable), so make_spte logged it; PML clears D.
    expect(dirty(vm.getDirtyLog(0), G >> 12)).toBe(1);
    expect(f.finish()).toMatchObject({ exit: 'none' });
    const s = v0.getStats();
    expect([s.pf_fixed, s.pf_spurious]).toEqual([0, 1]);
    // The write itself goes through the leaf: the CPU sets D, and PML logs the gfn.
    expect(dirty(vm.getDirtyLog(0), G >> 12)).toBe(1);
  });
});

describe('tdp_mmu_map_handle_target_level: an MMIO fault never replaces a present leaf', () => {
  it('a fault that found no memslot, finishing after a slot appeared and another vCPU mapped the gfn, is spurious', () => {
    const kvm = new Kvm();
    const vm = kvm.createVm(0);
    const ram = kvm.host.mmap(4 * MiB);
    const v0 = vm.createVcpu(0);
    const v1 = vm.createVcpu(1);
    // v0 faults on G with no memslot there: kvm_handle_noslot_fault, fault->slot = NULL (MMIO).
    const f = v0.beginAccess(G, 'read');
    // A CREATE does not zap, and is_page_fault_stale skips the sequence check for a slot-less fault.
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 4 * MiB, userspaceAddr: ram });
    const hit = v1.access(G, 'read');
    expect(hit).toMatchObject({ exit: 'none', level: 1 });
    // The present leaf allows the read: RET_PF_SPURIOUS, no MMIO SPTE over it; the guest retries into RAM.
    expect(f.finish()).toEqual(hit);
    expect(v0.getStats().pf_mmio_spte_created).toBe(0);
    expect(v0.getStats().pf_spurious).toBe(1);
    expect(vm.getStats().pages_4k).toBe(1);
  });
});
