/**
 * arch/x86/kvm/mmu/mmu.c#kvm_mmu_prefetch_sptes and #direct_pte_prefetch (linux-next 1c60d04a), with
 * virt/kvm/kvm_main.c#kvm_prefetch_pages (6.12 copy; linux-next the same): prefetch takes only pages the
 * host already maps writable — get_user_pages_fast_only(FOLL_WRITE) never faults a page in — asks
 * gfn_to_hva_many for a writable hva (a read-only slot is never prefetched), and __direct_pte_prefetch
 * goes by runs of non-present entries: a run ends the prefetch only if it maps nothing. The model
 * faulted every neighbour in (allocating host pages the kernel never would), prefetched read-only slots,
 * and stopped at the first page it could not map.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { KVM_MEM_READONLY } from '../../src/uapi/kvm.ts';

const PAGE = 4096;
const MiB = 1 << 20;

function ept(flags = 0) {
  const kvm = new Kvm({ tdpMmu: false }); // EPT built by the shadow MMU's direct pages
  const vm = kvm.createVm(0);
  const hva = kvm.host.mmap(2 * MiB);
  vm.setUserMemoryRegion({ slot: 0, flags, guestPhysAddr: 0, memorySize: 2 * MiB, userspaceAddr: hva });
  const v = vm.createVcpu(0);
  // The VMM writes a page (e.g. loading an image): its host PTE is now present and writable.
  const hostWrite = (page: number) => kvm.host.hvaToPfn(hva + page * PAGE, true);
  return { kvm, vm, v, hva, hostWrite };
}

describe('kvm_prefetch_pages: GUP-fast, FOLL_WRITE, no fault-in', () => {
  it('neighbours the host never touched are not prefetched (and not allocated)', () => {
    const { kvm, vm, v, hva } = ept();
    expect(v.access(3 * PAGE, 'read')).toMatchObject({ exit: 'none', level: 1 });
    expect(vm.getStats().pages_4k).toBe(1);
    for (let p = 0; p < 8; p++) expect(kvm.host.pfnAt(hva + p * PAGE) !== 0, `page ${p}`).toBe(p === 3);
  });

  it('pages the host has written are prefetched, the whole aligned group of 8', () => {
    const { vm, v, hostWrite } = ept();
    for (let p = 8; p < 16; p++) hostWrite(p);
    v.access(11 * PAGE, 'read');
    expect(vm.getStats().pages_4k).toBe(8);
  });

  it('a read-only slot is never prefetched (gfn_to_hva_many wants a writable hva)', () => {
    const { vm, v, hostWrite } = ept(KVM_MEM_READONLY);
    for (let p = 0; p < 8; p++) hostWrite(p);
    v.access(5 * PAGE, 'read');
    expect(vm.getStats().pages_4k).toBe(1);
  });
});

describe('__direct_pte_prefetch: runs of non-present entries', () => {
  it('a partial run maps what it got and the next run is still tried', () => {
    const { vm, v, hostWrite } = ept();
    for (const p of [16, 17, 20, 22, 23]) hostWrite(p);
    // The fault at 21 splits the group into the runs [16, 21) and [22, 24): GUP-fast gets 16 and 17 and
    // stops at 18; the second run gets both.
    v.access(21 * PAGE, 'read');
    expect(vm.getStats().pages_4k).toBe(1 + 2 + 2);
  });

  it('a run that maps nothing ends the prefetch', () => {
    const { vm, v, hostWrite } = ept();
    for (const p of [28, 29, 30, 31]) hostWrite(p);
    // Runs [24, 27) (nothing there) and [28, 32) (all written): the first maps nothing and ends the
    // prefetch, so 28–31 stay unmapped.
    v.access(27 * PAGE, 'read');
    expect(vm.getStats().pages_4k).toBe(1);
  });
});
