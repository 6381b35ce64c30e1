/**
 * FNAME(walk_addr_generic) and FNAME(fetch) (arch/x86/kvm/mmu/paging_tmpl.h), read in the 6.18 line
 * (qualcomm-linux/kernel-topics 81d78755: kvm_mmu_prefetch_sptes, kvm_mmu_finish_page_fault,
 * kvm_nested_call; linux-next's own copy could not be fetched) with validate_direct_spte from linux-next
 * mmu.c 1c60d04a:
 *   - the walk applies protect_clean_gpte to walker->pte_access only for a read ("if (!write_fault)
 *     FNAME(protect_clean_gpte)(mmu, &walker->pte_access, pte)"); a write keeps W and folds D into the
 *     A/D update, which FNAME(update_accessed_dirty_bits) skips for a table in a read-only slot
 *     (pte_writable), so the gPTE stays clean and the SPTE is still made writable;
 *   - fetch hands gw->pte_access to the direct page under a huge gPTE (kvm_mmu_get_child_sp(..., true,
 *     direct_access)) and to mmu_set_spte; before that, validate_direct_spte drops the link to a direct
 *     page whose role.access differs ("if the guest pte's dirty bit changed from clean to dirty, it will
 *     corrupt the sp's access") and flushes (kvm_flush_remote_tlbs_sptep), so a new page is made.
 * The old model applied protect_clean in mmu_set_spte from the gPTE as written back (a write through a
 * clean gPTE in a ROM page table never became writable: the access ended in {exit: 'retry'}), made the
 * direct page with the unprotected access, and reused it whatever its access.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_MEM_READONLY } from '../../src/uapi/kvm.ts';
import { shadowMmuOf } from '../../src/x86/mmu/shadow_mmu.ts';
import {
  ACC_ALL,
  ACC_EXEC_MASK,
  ACC_USER_MASK,
  IdentityMapBuilder,
  PT_ACCESSED_MASK,
  PT_DIRTY_MASK,
  gvaIndex,
} from '../../src/x86/mmu/guest_paging.ts';
import type { Vcpu } from '../../src/kvm/vcpu.ts';

const MiB = 1 << 20;
const HUGE = 4 * MiB; // a 2 MiB guest page at gva == gpa 4 MiB

function shadowGuest(romTables: boolean) {
  const kvm = new Kvm({ tdp: false });
  const vm = kvm.createVm(0);
  const ram = kvm.host.mmap(8 * MiB);
  if (romTables) {
    // The guest's page tables live in [1 MiB, 2 MiB), a read-only slot (ROM): KVM cannot write A/D there.
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 1 * MiB, userspaceAddr: ram });
    vm.setUserMemoryRegion({
      slot: 1,
      flags: KVM_MEM_READONLY,
      guestPhysAddr: 1 * MiB,
      memorySize: 1 * MiB,
      userspaceAddr: ram + 1 * MiB,
    });
    vm.setUserMemoryRegion({
      slot: 2,
      guestPhysAddr: 2 * MiB,
      memorySize: 6 * MiB,
      userspaceAddr: ram + 2 * MiB,
    });
  } else vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 8 * MiB, userspaceAddr: ram });
  const mmu = shadowMmuOf(vm)!;
  const map = new IdentityMapBuilder(mmu.gpt, 1 * MiB, 2 * MiB);
  const vcpu = vm.createVcpu(0);
  vcpu.setCr3(map.cr3);
  /** The shadow page the root's walk for gva reaches at level 1 (below the level-2 entry). */
  const levelOnePage = (v: Vcpu, gva: number) => {
    let sp = mmu.roots.get(v)!;
    for (const level of [4, 3, 2]) sp = sp.child![gvaIndex(gva, level)]!;
    return sp;
  };
  return { vm, mmu, map, vcpu, levelOnePage };
}

describe('FNAME(fetch): the direct page under a huge gPTE carries the walk access (validate_direct_spte)', () => {
  it('a read through a clean 2M gPTE makes a read-only direct page; the first write replaces it (one flush, one new page)', () => {
    const { vm, map, vcpu, levelOnePage } = shadowGuest(false);
    map.mapHuge2m(HUGE);
    expect(vcpu.access(HUGE + 0x3000, 'read').exit).toBe('none');
    const first = levelOnePage(vcpu, HUGE);
    expect([first.direct, (first.role >> 5) & 7]).toEqual([true, ACC_EXEC_MASK | ACC_USER_MASK]);
    const s0 = vm.getStats();
    expect(vcpu.access(HUGE + 0x3000, 'write').exit).toBe('none');
    const s1 = vm.getStats();
    const second = levelOnePage(vcpu, HUGE);
    expect([second === first, second.direct, (second.role >> 5) & 7]).toEqual([false, true, ACC_ALL]);
    // validate_direct_spte's flush; the write maps into the fresh page (no SPTE replaced there).
    expect([
      s1.mmu_cache_miss! - s0.mmu_cache_miss!,
      s1.remote_tlb_flush_requests! - s0.remote_tlb_flush_requests!,
    ]).toEqual([1, 1]);
    // The old page is no longer reachable from the root.
    expect(first.parents).toEqual([]);
    // Reading again through the now dirty gPTE keeps the writable page.
    expect(vcpu.access(HUGE + 0x5000, 'read').exit).toBe('none');
    expect(levelOnePage(vcpu, HUGE)).toBe(second);
  });

  it('a write through a clean gPTE whose table is in a read-only slot: the SPTE is writable, the gPTE stays clean', () => {
    const { mmu, map, vcpu } = shadowGuest(true);
    map.mapPage(3 * MiB);
    const leafTable = () => {
      // the level-1 guest table of 3 MiB: follow the gPTEs from CR3
      let table = vcpu.cr3 / 4096;
      for (const level of [4, 3, 2]) table = Math.floor(mmu.gpt.read(table, gvaIndex(3 * MiB, level)) / 4096);
      return mmu.gpt.read(table, gvaIndex(3 * MiB, 1));
    };
    const r = vcpu.access(3 * MiB, 'write');
    expect(r.exit).toBe('none');
    // No A or D could be written to ROM (update_accessed_dirty_bits skips it).
    expect(leafTable() & (PT_ACCESSED_MASK | PT_DIRTY_MASK)).toBe(0);
    expect(vcpu.getStats().pf_fixed).toBe(1);
  });

  it('a read through the same clean ROM gPTE maps read-only; a later write upgrades it', () => {
    const { map, vcpu, vm } = shadowGuest(true);
    map.mapPage(3 * MiB);
    expect(vcpu.access(3 * MiB, 'read').exit).toBe('none');
    expect(vcpu.access(3 * MiB, 'write').exit).toBe('none');
    expect(vcpu.getStats().pf_fixed).toBe(2);
    expect(vm.getStats().pages_4k).toBe(1);
  });
});

describe('FNAME(page_fault): page_fault_handle_page_track runs before the pfn lookup and fetch', () => {
  it('a write through a present read-only SPTE of a shadowed guest table is emulated with no prefetch', () => {
    const kvm = new Kvm({ tdp: false });
    const vm = kvm.createVm(0);
    const ram = kvm.host.mmap(8 * MiB);
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 8 * MiB, userspaceAddr: ram });
    const mmu = shadowMmuOf(vm)!;
    const map = new IdentityMapBuilder(mmu.gpt, 1 * MiB, 2 * MiB);
    const vcpu = vm.createVcpu(0);
    vcpu.setCr3(map.cr3);
    const A = PT_ACCESSED_MASK;
    // Tables from the pool: 0x100000 (CR3), 0x101000, 0x102000 (level 2), then 0x103000 = the level-1
    // table of [2 MiB, 4 MiB). The guest maps its table pages themselves (gva == gpa), Accessed. Only the
    // upper-level ones are write-tracked (account_shadowed: level-1 tables are write-protected through
    // the unsync logic instead), so the guest writes its level-2 table, 0x102000.
    map.mapPage(3 * MiB, 7 | A);
    for (let p = 0x100000; p < 0x108000; p += 0x1000) map.mapPage(p, 7 | A);
    vcpu.access(3 * MiB, 'read'); // shadows the four tables: 0x100-0x102 are write-tracked now
    // A read of the table page maps it read-only; its neighbours are not in host memory yet, so no prefetch.
    expect(vcpu.access(0x102000, 'read').exit).toBe('none');
    const before = vm.getStats().pages_4k;
    // The VMM touches the neighbours: from now on GUP-fast would get them.
    for (let p = 0x100000; p < 0x108000; p += 0x1000) if (p !== 0x103000) kvm.host.hvaToPfn(ram + p, true);
    const fixed = vcpu.getStats().pf_fixed;
    // The guest writes its own page table: the SPTE is present, the gfn write-tracked → emulated.
    expect(vcpu.access(0x102000, 'write')).toMatchObject({ exit: 'none', pfn: -1 });
    expect([vm.getStats().pages_4k, vcpu.getStats().pf_fixed]).toEqual([before, fixed]);
    expect(vm.getStats().mmu_pte_write).toBe(1);
  });
});

describe('shadow paging: every #PF intercept is a VM exit (vcpu_enter_guest ++exits)', () => {
  it('exits rises with pf_taken: a first touch, a guest #PF, an MMIO read', () => {
    const { vm, map, vcpu } = shadowGuest(false);
    map.mapPage(3 * MiB);
    map.mapPage(9 * MiB); // no memslot there: MMIO
    const counts = () => {
      const s = vcpu.getStats();
      return [s.exits, s.pf_taken];
    };
    const c0 = counts();
    expect(vcpu.access(3 * MiB, 'read').exit).toBe('none'); // one #PF, fixed, re-executed
    expect(vcpu.access(3 * MiB, 'read').exit).toBe('none'); // mapped: no exit
    expect(vcpu.access(5 * MiB, 'read').exit).toBe('retry'); // not mapped by the guest: #PF to the guest
    expect(vcpu.access(9 * MiB, 'read').exit).toBe('mmio');
    const c1 = counts();
    expect([c1[0]! - c0[0]!, c1[1]! - c0[1]!]).toEqual([3, 3]);
    expect(vm.getStats().pages_4k).toBe(1);
  });
});
