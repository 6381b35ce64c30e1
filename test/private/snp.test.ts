/**
 * SNP private memory keeps its RMP state through every zap: a precise memslot zap or a conversion unmaps
 * NPT leafs only, so the refault maps the same guest_memfd pfn with the same content, still assigned and
 * validated (mmu-zap.md §5.6, [U]) — where the same sequence on a TD clears the page and wants an accept.
 * Only freeing the page (punch hole) returns it to the hypervisor.
 */
import { describe, expect, it } from 'vitest';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE } from '../../src/uapi/falloc.ts';
import { KVM_MEM_GUEST_MEMFD, KVM_MEMORY_ATTRIBUTE_PRIVATE } from '../../src/uapi/kvm.ts';
import { PAGE, VM, accept, model, pfnsOf, privateGuest, versions, type PrivateGuest } from './fixture.ts';

function snp() {
  const g = privateGuest(VM.SNP, [{ slot: 0, gpa: 0, pages: 256 }]);
  const v = g.vcpus[0]!;
  const pfns = Array.from({ length: 16 }, (_, i) => {
    const r = v.snpPvalidate(i * PAGE);
    if (r.exit !== 'none' || r.status !== 'success') throw new Error(JSON.stringify(r));
    return r.pfn;
  });
  return { g, v, pfns };
}

const rmp = (g: PrivateGuest, pfns: number[]) => pfns.map((p) => g.vm.snpRmpEntry(p));

function recreate(g: PrivateGuest): void {
  g.vm.setUserMemoryRegion2({ slot: 0, memorySize: 0 });
  g.vm.setUserMemoryRegion2({
    slot: 0,
    flags: KVM_MEM_GUEST_MEMFD,
    guestPhysAddr: 0,
    memorySize: 256 * PAGE,
    userspaceAddr: g.kvm.host.mmap(256 * PAGE),
    guestMemfd: g.gmem.get(0)!,
  });
}

describe('SNP: RMP per private page', () => {
  it('a private fault assigns the page (unvalidated); PVALIDATE validates it; twice is noupdate', () => {
    const g = privateGuest(VM.SNP, [{ slot: 0, gpa: 0, pages: 16 }]);
    const v = g.vcpus[0]!;
    const r = v.access(0, 'read');
    if (r.exit !== 'none') throw new Error(r.exit);
    expect(g.vm.snpRmpEntry(r.pfn)).toEqual({ assigned: true, validated: false, gpa: 0, asid: g.vm.id });
    expect(v.snpPvalidate(0)).toEqual({ exit: 'none', status: 'success', pfn: r.pfn });
    expect(v.snpPvalidate(0)).toEqual({ exit: 'none', status: 'noupdate', pfn: r.pfn });
    expect(g.vm.snpRmpEntry(r.pfn).validated).toBe(true);
  });

  it('deleting and re-creating the slot: same pfns, same content, RMP unchanged, 0 SEAMCALLs', () => {
    const { g, v, pfns } = snp();
    const ver = versions(g, pfns);
    const before = rmp(g, pfns);
    const z0 = model(g).sptes_zapped_4k;
    recreate(g);
    expect(model(g).sptes_zapped_4k - z0).toBe(16);
    expect(model(g).memslot_zap_precise).toBe(1);
    expect(pfnsOf(v, 0, 16)).toEqual(pfns);
    expect(versions(g, pfns)).toEqual(ver);
    expect(rmp(g, pfns)).toEqual(before);
    expect(before.every((e) => e.assigned && e.validated)).toBe(true);
    expect(model(g).refaults).toBe(16);
    expect(model(g).seamcalls).toBe(0);
  });

  it('private → shared → private without a punch: the same page comes back intact', () => {
    const { g, v, pfns } = snp();
    const ver = versions(g, pfns);
    g.vm.setMemoryAttributes({ address: 0, size: 16 * PAGE, attributes: 0 });
    expect(pfnsOf(v, 0, 16).every((p, i) => p !== pfns[i])).toBe(true); // shared: host memory
    g.vm.setMemoryAttributes({ address: 0, size: 16 * PAGE, attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE });
    expect(pfnsOf(v, 0, 16)).toEqual(pfns);
    expect(versions(g, pfns)).toEqual(ver);
    expect(rmp(g, pfns).every((e) => e.assigned && e.validated)).toBe(true);
  });

  it('punch hole: the page leaves the RMP; the new page is assigned but must be validated again', () => {
    const { g, v, pfns } = snp();
    g.kvm.fallocate(g.gmem.get(0)!, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PAGE);
    expect(g.vm.snpRmpEntry(pfns[0]!).assigned).toBe(false);
    const r = v.access(0, 'read');
    if (r.exit !== 'none') throw new Error(r.exit);
    expect(g.vm.snpRmpEntry(r.pfn)).toMatchObject({ assigned: true, validated: false });
  });

  it('the same sequence on a TD destroys the content and needs an accept', () => {
    const g = privateGuest(VM.TDX, [{ slot: 0, gpa: 0, pages: 256 }]);
    const v = g.vcpus[0]!;
    const pfns = accept(v, 0, 16);
    const ver = versions(g, pfns);
    recreate(g);
    expect(model(g).seamcalls).toBe(1 + 3 + 16 + 16 * 4);
    expect(versions(g, pfns).every((x, i) => x !== ver[i])).toBe(true);
    expect(accept(v, 0, 16)).toEqual(pfns);
  });
});
