/**
 * Dirty logging through the MMU: enabling logging re-arms the slot (PML: clear D at 4K; without PML:
 * write-protect), writes mark exactly the written pages, KVM_GET_DIRTY_LOG hands them out and re-arms
 * them, and logging forces 4K mappings.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_MEM_LOG_DIRTY_PAGES as LOG } from '../../src/uapi/kvm.ts';

const MiB = 1 << 20;

function setup(pml: boolean) {
  const kvm = new Kvm({ pml });
  const vm = kvm.createVm(0);
  const hva = kvm.host.mmap(2 * MiB);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 2 * MiB, userspaceAddr: hva });
  const v = vm.createVcpu(0);
  for (let i = 0; i < 16; i++) v.access(i * 4096, 'read');
  vm.setUserMemoryRegion({ slot: 0, flags: LOG, guestPhysAddr: 0, memorySize: 2 * MiB, userspaceAddr: hva });
  return { kvm, vm, v, hva };
}

const bits = (bm: Uint8Array) =>
  [...bm].flatMap((b, i) => [0, 1, 2, 3, 4, 5, 6, 7].filter((k) => b & (1 << k)).map((k) => i * 8 + k));

describe('dirty logging', () => {
  for (const pml of [true, false]) {
    it(`marks and re-protects exactly the written pages (${pml ? 'PML: clear D' : 'no PML: write-protect'})`, () => {
      const { vm, v } = setup(pml);
      // Enabling logging re-armed the 16 mapped pages and flushed once.
      expect(vm.getStats().remote_tlb_flush_requests).toBe(1);
      for (const p of [3, 5, 9]) expect(v.access(p * 4096, 'write').exit).toBe('none');
      v.access(4 * 4096, 'read');
      // Without PML the write hits a write-protected SPTE: an EPT violation fixed by fast_page_fault.
      expect(v.getStats()).toMatchObject(pml ? { pf_fast: 0, pf_fixed: 16 } : { pf_fast: 3, pf_fixed: 19 });
      expect(bits(vm.getDirtyLog(0))).toEqual([3, 5, 9]);
      expect(vm.getStats().remote_tlb_flush_requests).toBe(2); // GET re-armed 3 pages and flushed
      expect(bits(vm.getDirtyLog(0))).toEqual([]);
      v.access(5 * 4096, 'write');
      v.access(3 * 4096, 'read');
      expect(bits(vm.getDirtyLog(0))).toEqual([5]);
    });
  }

  it('a fresh fault in a logged slot maps 4K and marks the page (make_spte maps writable)', () => {
    const kvm = new Kvm();
    const vm = kvm.createVm(0);
    const hva = kvm.host.mmap(4 * MiB, { backing: 'thp' });
    vm.setUserMemoryRegion({
      slot: 0,
      flags: LOG,
      guestPhysAddr: 0,
      memorySize: 4 * MiB,
      userspaceAddr: hva,
    });
    const v = vm.createVcpu(0);
    expect(v.access(0, 'read')).toMatchObject({ level: 1 });
    expect(v.access(3 * MiB, 'write')).toMatchObject({ level: 1 });
    expect(bits(vm.getDirtyLog(0))).toEqual([0, 768]);
    // Without logging the same memory maps 2M.
    vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0, memorySize: 4 * MiB, userspaceAddr: hva });
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 0 });
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 4 * MiB, userspaceAddr: hva });
    expect(v.access(0, 'read')).toMatchObject({ level: 2 });
  });
});
