/**
 * max_mmu_rmap_size is the longest rmap chain pte_list_add found BEFORE adding: pte_list_add returns "the
 * number of pointers in the rmap chain, not counting the new one" (0 for an empty head, 1 when the
 * single entry becomes a pte_list_desc, tail_count + spte_count otherwise), and __rmap_add raises
 * kvm->stat.max_mmu_rmap_size to that count (arch/x86/kvm/mmu/mmu.c, linux-next 1c60d04a, the 6.19-rc5
 * snapshot). The model counted the chain with the new entry, one more than the kernel.
 * Shadow paging: gvas aliased in the guest's tables to one gpa give one SPTE each on that gfn's rmap.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import {
  IdentityMapBuilder,
  PT_PRESENT_MASK,
  PT_USER_MASK,
  PT_WRITABLE_MASK,
} from '../../src/x86/mmu/guest_paging.ts';

const MiB = 1 << 20;
const RWU = PT_PRESENT_MASK | PT_WRITABLE_MASK | PT_USER_MASK;
const DATA = 0x20_0000;

/** A shadow-paging VM whose guest maps gvas DATA, DATA+4K, … DATA+(n-1)*4K all to gpa DATA. */
function aliased(n: number) {
  const kvm = new Kvm({ tdp: false, tdpMmu: false });
  const vm = kvm.createVm(0);
  vm.setUserMemoryRegion({
    slot: 0,
    flags: 0,
    guestPhysAddr: 0,
    memorySize: 4 * MiB,
    userspaceAddr: kvm.host.mmap(4 * MiB, { backing: '4k' }),
  });
  const b = new IdentityMapBuilder(
    {
      read: (gfn: number, i: number) => vm.readGuestPte(gfn * 4096, i),
      write: (gfn: number, i: number, g: number) => vm.writeGuestPte(gfn * 4096, i, g),
    },
    3 * MiB,
    0x3e_0000,
  );
  for (let k = 0; k < n; k++) b.mapPage(DATA + k * 4096);
  // The 4K table holding those leaves: walk PML4 → PDPT → PD by the entries the builder wrote.
  let table = b.cr3;
  for (let level = 4; level > 1; level--) {
    const idx = Math.floor(DATA / 2 ** (12 + 9 * (level - 1))) % 512;
    table = Math.floor(vm.readGuestPte(table, idx) / 4096) * 4096;
  }
  for (let k = 1; k < n; k++) vm.writeGuestPte(table, (DATA / 4096 + k) % 512, DATA + RWU);
  const v = vm.createVcpu(0);
  v.setCr3(b.cr3);
  return { vm, v };
}

describe('__rmap_add / pte_list_add: max_mmu_rmap_size counts the chain before the new SPTE', () => {
  it.each([
    [1, 0],
    [2, 1],
    [3, 2],
  ])('%i SPTE(s) on one gfn: max_mmu_rmap_size %i', (n, max) => {
    const { vm, v } = aliased(n);
    const pfns = new Set<number>();
    for (let k = 0; k < n; k++) {
      const r = v.access(DATA + k * 4096, 'read');
      expect(r.exit).toBe('none');
      if (r.exit === 'none') pfns.add(r.pfn);
    }
    expect(pfns.size).toBe(1); // every gva reached the one host page behind gpa DATA
    expect(vm.getStats().max_mmu_rmap_size).toBe(max);
  });
});
