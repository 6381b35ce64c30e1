/**
 * Write tracking of upper-level guest tables (shadow paging). A shadow page for a guest table above 4K
 * write-tracks the table's gfn through __kvm_write_track_add_gfn (arch/x86/kvm/mmu/page_track.c,
 * called from account_shadowed in mmu.c), which also
 *   - disallows huge pages over the gfn (kvm_mmu_gfn_disallow_lpage), and
 *   - write-protects the gfn's existing SPTEs from 4K up (kvm_mmu_slot_gfn_write_protect, pt_protect),
 *     then flushes (kvm_flush_remote_tlbs) if one was MMU-writable;
 * __kvm_write_track_remove_gfn (from unaccount_shadowed) re-allows huge pages (kvm_mmu_gfn_allow_lpage).
 * Read in page_track.c as stored for gregkh/linux (429b6f43) and torvalds/linux (03c11eb3), identical in
 * both for these two functions; account_shadowed in linux-next mmu.c (1c60d04a, the 6.19-rc5 snapshot).
 * Before the fix the model only counted: a page the guest had written stayed writable after it became a
 * page directory, so the guest rewrote its own shadowed table without KVM seeing it.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import {
  IdentityMapBuilder,
  PT_PRESENT_MASK,
  PT_USER_MASK,
  PT_WRITABLE_MASK,
} from '../../src/x86/mmu/guest_paging.ts';
import { shadowMmuOf } from '../../src/x86/mmu/shadow_mmu.ts';
import { kvmGfnIsWriteTracked } from '../../src/x86/mmu/page_track.ts';
import { KVM_MEM_LOG_DIRTY_PAGES } from '../../src/uapi/kvm.ts';
import { Checker } from '../../src/check/checker.ts';

const MiB = 1 << 20;
const GiB = 1 << 30;
const RWU = PT_PRESENT_MASK | PT_WRITABLE_MASK | PT_USER_MASK;
/** The data page the guest writes, then turns into a page directory (gva == gpa). */
const P = 0x10_0000;
/** A 4K page table for the new page directory, and the data page it maps at gva 1 GiB. */
const PT = 0x3f_0000;
const DATA = 0x20_0000;

/** RAM [0, 4 MiB) in slot 0 (host backing as given), identity-mapped tables in its last 1 MiB. */
function setup(backing: '4k' | '2m' = '4k', hugeLow = false) {
  const kvm = new Kvm({ tdp: false, tdpMmu: false });
  const vm = kvm.createVm(0);
  const region = {
    slot: 0,
    flags: 0,
    guestPhysAddr: 0,
    memorySize: 4 * MiB,
    userspaceAddr: kvm.host.mmap(4 * MiB, { backing }),
  };
  vm.setUserMemoryRegion(region);
  const tables = {
    read: (gfn: number, i: number) => vm.readGuestPte(gfn * 4096, i),
    write: (gfn: number, i: number, g: number) => vm.writeGuestPte(gfn * 4096, i, g),
  };
  const b = new IdentityMapBuilder(tables, 3 * MiB, 0x3e_0000);
  // [0, 2 MiB) is one guest 2M page (a direct shadow page maps it at 4K) or 4K pages.
  if (hugeLow) b.mapHuge2m(0);
  else b.mapPage(P);
  const v = vm.createVcpu(0);
  v.setCr3(b.cr3);
  const mmu = shadowMmuOf(vm)!;
  const slot = vm.activeMemslots(0).searchMemslots(0)!;
  /** The guest makes P the page directory of gva [1 GiB, 2 GiB): PDPT[1] → P, P[0] → PT, PT[0] → DATA. */
  const makePageDirectory = (): void => {
    const pdpt = Math.floor(vm.readGuestPte(b.cr3, 0) / 4096) * 4096;
    vm.writeGuestPte(P, 0, PT + RWU);
    vm.writeGuestPte(PT, 0, DATA + RWU);
    vm.writeGuestPte(pdpt, 1, P + RWU);
  };
  return { kvm, vm, v, mmu, slot, region, makePageDirectory };
}

/** lpage_info disallow_lpage at 2M for gfn (the slot is 2M-aligned, so no edge count). */
const disallow2m = (slot: { arch: { lpageInfo: [Int32Array, Int32Array] | null } }, gfn: number): number =>
  slot.arch.lpageInfo![0]![Math.floor(gfn / 512)]!;

describe('__kvm_write_track_add_gfn / __kvm_write_track_remove_gfn (page_track.c)', () => {
  it('write-protects the SPTE of a page that becomes a page directory and flushes; the next guest write to it traps', () => {
    const { vm, v, mmu, slot, makePageDirectory } = setup();
    const wrote = v.access(P, 'write');
    expect(wrote).toMatchObject({ exit: 'none', level: 1 });
    expect(wrote.exit === 'none' && wrote.pfn).toBeGreaterThanOrEqual(0);
    makePageDirectory();
    const flushes = vm.getStats().remote_tlb_flush_requests!;
    expect(v.access(GiB, 'read')).toMatchObject({ exit: 'none', level: 1 });
    // The level-2 shadow page for P write-tracks P; kvm_mmu_slot_gfn_write_protect found P's writable
    // SPTE (mapped by the earlier write) and __kvm_write_track_add_gfn flushed: one request.
    expect(kvmGfnIsWriteTracked(slot, P / 4096)).toBe(true);
    expect(vm.getStats().remote_tlb_flush_requests! - flushes).toBe(1);
    // The guest writes its page directory: the SPTE is read-only now, the write faults and is emulated
    // as a write to a shadowed table (RET_PF_WRITE_PROTECTED → kvm_mmu_track_write), zapping P's entry.
    const emulate = v.getStats().pf_emulate!;
    const pteWrites = vm.getStats().mmu_pte_write!;
    expect(v.access(P, 'write')).toEqual({ exit: 'none', pfn: -1, level: 1, memtype: 6 });
    expect(v.getStats().pf_emulate! - emulate).toBe(1);
    expect(vm.getStats().mmu_pte_write! - pteWrites).toBe(1);
    // kvm_mmu_track_write zapped the page directory's shadow entry (mmu_page_zap_pte → drop_parent_pte).
    const pd = mmu.shadowPages().find((sp) => sp.gfn === P / 4096 && !sp.direct)!;
    expect(pd.level).toBe(2);
    expect(pd.child![0]).toBeNull();
  });

  it('disallows huge pages over the tracked gfn (kvm_mmu_gfn_disallow_lpage) and re-allows them on remove (kvm_mmu_gfn_allow_lpage)', () => {
    const { kvm, vm, v, mmu, slot, makePageDirectory } = setup();
    makePageDirectory();
    expect(disallow2m(slot, P / 4096)).toBe(0);
    v.access(GiB, 'read');
    const pd = mmu.shadowPages().filter((sp) => sp.gfn === P / 4096 && !sp.direct);
    expect(pd.map((sp) => sp.level)).toEqual([2]);
    expect(disallow2m(slot, P / 4096)).toBe(1);
    // Zap-all (a DEFAULT VM's DELETE with the quirk on) zaps every page: unaccount_shadowed →
    // __kvm_write_track_remove_gfn, the count and the disallow both back to 0.
    const other = {
      slot: 1,
      flags: 0,
      guestPhysAddr: 8 * MiB,
      memorySize: 2 * MiB,
      userspaceAddr: kvm.host.mmap(2 * MiB),
    };
    vm.setUserMemoryRegion(other);
    vm.setUserMemoryRegion({ ...other, memorySize: 0 });
    expect(mmu.shadowPages().filter((sp) => sp.gfn === P / 4096)).toEqual([]);
    expect(kvmGfnIsWriteTracked(slot, P / 4096)).toBe(false);
    expect(disallow2m(slot, P / 4096)).toBe(0);
  });

  it('a guest 2M page holding a page directory stays at 4K when dirty logging stops (kvm_rmap_zap_collapsible_sptes reads disallow_lpage)', () => {
    const { kvm, vm, v, mmu, region, makePageDirectory } = setup('2m', true);
    const ch = new Checker(kvm, { audit: 'points' });
    ch.watch(vm);
    // The guest touches its 2M page at P (a direct shadow page maps it at 4K), then P becomes a PD.
    expect(v.access(P, 'read')).toMatchObject({ exit: 'none', level: 1 });
    makePageDirectory();
    v.access(GiB, 'read');
    const direct = mmu.shadowPages().filter((sp) => sp.direct && sp.gfn === 0);
    expect(direct.length).toBe(1);
    vm.setUserMemoryRegion({ ...region, flags: KVM_MEM_LOG_DIRTY_PAGES });
    const zapped = vm.getModelStats().sptes_zapped_4k ?? 0;
    vm.setUserMemoryRegion({ ...region, flags: 0 });
    // The PD at P disallows 2M over [0, 2 MiB): kvm_mmu_max_mapping_level is 4K there, so the direct
    // page's leafs are not collapsible and stay (the old model dropped the leaf at P).
    expect((vm.getModelStats().sptes_zapped_4k ?? 0) - zapped).toBe(0);
    expect(direct[0]!.isLeaf((P / 4096) % 512)).toBe(true);
    ch.auditPoint('end');
    expect(ch.violations.map((x) => x.id)).toEqual([]);
  });
});
