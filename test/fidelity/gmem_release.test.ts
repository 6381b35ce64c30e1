/**
 * guest_memfd.c#kvm_gmem_release (compared at linux-next v6.19-rc5): closing the last reference to a
 * guest_memfd zaps what it backs (private mappings; the file's invalidate filter) inside an invalidation,
 * sets slot->gmem.file = NULL (a later private fault gets -EFAULT from kvm_gmem_get_pfn, i.e.
 * KVM_EXIT_MEMORY_FAULT), and the inode's eviction frees its pages (kvm_gmem_free_folio →
 * sev_gmem_invalidate on SNP). Before issue #12 the model kept serving the closed file's pages.
 */
import { describe, expect, it } from 'vitest';
import { VM, PAGE, TDX_SHARED, privateGuest, accept } from '../private/fixture.ts';

describe('close(guest_memfd) → kvm_gmem_release', () => {
  it('SW_PROTECTED: private mappings zapped and flushed; the next private access is a memory-fault exit', () => {
    const g = privateGuest(VM.SW_PROTECTED, [{ slot: 0, gpa: 0, pages: 16 }], { vcpus: 1 });
    const v = g.vcpus[0]!;
    for (let i = 0; i < 4; i++) expect(v.access(i * PAGE, 'write')).toMatchObject({ exit: 'none', level: 1 });
    expect(g.vm.getStats().pages_4k).toBe(4);
    const flushes = g.vm.getStats().remote_tlb_flush_requests!;
    const seq = g.vm.mmuInvalidateSeq;
    g.kvm.close(g.gmem.get(0)!);
    expect(g.vm.getStats().pages_4k).toBe(0);
    expect(g.vm.getStats().remote_tlb_flush_requests! - flushes).toBe(1);
    expect(g.vm.mmuInvalidateSeq - seq).toBe(1); // one begin/end pair
    expect(v.access(0, 'read')).toEqual({ exit: 'memory_fault', gpa: 0, size: PAGE, private: true });
    expect(g.vm.memslots()[0]!.id).toBe(0); // the slot itself stays
    expect(() => g.kvm.close(g.gmem.get(0)!)).toThrow(/EBADF|not open/);
  });

  it('SNP: the pages leave the guest (RMP entries made shared) as the inode is evicted', () => {
    const g = privateGuest(VM.SNP, [{ slot: 0, gpa: 0, pages: 16 }], { vcpus: 1 });
    const v = g.vcpus[0]!;
    for (let i = 0; i < 3; i++) expect(v.snpPvalidate(i * PAGE).exit).toBe('none');
    const snp = g.vm.arch.snp!;
    expect(snp.assignedPages).toBe(3);
    g.kvm.close(g.gmem.get(0)!);
    expect(snp.assignedPages).toBe(0);
    expect(snp.reclaims).toBe(3);
  });

  it('TDX: every private page is removed from the S-EPT (BLOCK, TRACK, REMOVE, WBINVD each)', () => {
    const g = privateGuest(VM.TDX, [{ slot: 0, gpa: 0, pages: 16 }], { vcpus: 1 });
    accept(g.vcpus[0]!, 0, 2);
    const before = g.vm.tdxStats();
    g.kvm.close(g.gmem.get(0)!);
    const after = g.vm.tdxStats();
    for (const k of ['TDH.MEM.RANGE.BLOCK', 'TDH.MEM.TRACK', 'TDH.MEM.PAGE.REMOVE', 'TDH.PHYMEM.PAGE.WBINVD'])
      expect(after[k]! - before[k]!, k).toBe(2);
    expect(g.vm.getModelStats().tdx_private_pages_removed).toBe(2);
    expect(g.vcpus[0]!.access(0, 'read')).toEqual({
      exit: 'memory_fault',
      gpa: 0,
      size: PAGE,
      private: true,
    });
    expect(g.vcpus[0]!.access(TDX_SHARED + 0, 'read').exit).toBe('memory_fault'); // still PRIVATE
    expect(g.vm.dead).toBe(false);
  });
});

describe('kvm_gmem_populate (guest_memfd.c, 6.19-rc5): the folio is taken before the checks', () => {
  it('INIT_MEM_REGION on a gfn that is not PRIVATE: EINVAL, and the page stays in the file, unprepared', () => {
    const g = privateGuest(VM.TDX, [{ slot: 0, gpa: 0, pages: 16 }], { vcpus: 1 });
    const fd = g.gmem.get(0)!;
    const file = g.kvm.lookupFd(fd) as { pages: Map<number, number>; unprepared: Set<number> };
    g.vm.setMemoryAttributes({ address: 3 * PAGE, size: PAGE, attributes: 0 });
    expect(() => g.vm.tdxInitMemRegion(3 * PAGE, 1)).toThrow(/EINVAL|PRIVATE/);
    expect([...file.pages.keys()]).toEqual([3]);
    expect([...file.unprepared]).toEqual([3]);
    // A populate of a PRIVATE gfn uses (and prepares) the page it allocates.
    g.vm.tdxInitMemRegion(4 * PAGE, 1);
    expect(file.pages.size).toBe(2);
    expect([...file.unprepared]).toEqual([3]);
    expect(() => g.vm.tdxInitMemRegion(4 * PAGE, 1)).toThrow(/EEXIST|already/);
  });
});
