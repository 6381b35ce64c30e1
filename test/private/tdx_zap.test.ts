/**
 * TDX private memory under every zap: a precise memslot zap removes exactly the deleted slot's private
 * pages, 4 SEAMCALLs each (TDH.MEM.RANGE.BLOCK, TDH.MEM.TRACK, TDH.MEM.PAGE.REMOVE,
 * TDH.PHYMEM.PAGE.WBINVD — tdx_sept_remove_private_spte on a runnable TD) and clears their content;
 * zap-all (called directly, or through the slot-flag design on a slot without the flag) never reaches
 * the mirror root, so it destroys nothing private; dropping the mirror root while the TD lives is a
 * KVM_BUG_ON; a shared↔private conversion zaps exactly the converted range.
 */
import { describe, expect, it } from 'vitest';
import { KVM_MEMORY_ATTRIBUTE_PRIVATE, KVM_MEM_GUEST_MEMFD } from '../../src/uapi/kvm.ts';
import type { X86Mmu } from '../../src/x86/mmu/mmu.ts';
import { KVM_MIRROR_ROOTS } from '../../src/x86/mmu/tdp_mmu_state.ts';
import { kvmTdpMmuInvalidateRoots, kvmTdpMmuZapInvalidatedRoots } from '../../src/x86/mmu/tdp_mmu_root.ts';
import { MiB, PAGE, TDX_SHARED, VM, accept, model, pfnsOf, privateGuest, tdx, versions } from './fixture.ts';

const SLOTS = [
  { slot: 0, gpa: 0, pages: 1024 },
  { slot: 1, gpa: 4 * MiB, pages: 1024 },
];

/** A TD with 300 accepted pages in slot 0 and 200 in slot 1. */
function td(opts: Parameters<typeof privateGuest>[2] = {}, slots = SLOTS) {
  const g = privateGuest(VM.TDX, slots, opts);
  const v = g.vcpus[0]!;
  const a = accept(v, 0, 300);
  const b = accept(v, 4 * MiB, 200);
  return { g, v, a, b };
}

const delta = (after: Record<string, number>, before: Record<string, number>) =>
  Object.fromEntries(
    Object.keys(after)
      .filter((k) => after[k] !== before[k])
      .map((k) => [k, after[k]! - (before[k] ?? 0)]),
  );

describe('TDX memslot deletion (precise zap, PRIVATE|SHARED)', () => {
  it('removes only the deleted slot’s 300 private pages: 1200 SEAMCALLs, the other slot untouched', () => {
    const { g, v, a, b } = td();
    const aVer = versions(g, a);
    const bVer = versions(g, b);
    const t0 = tdx(g);
    const m0 = model(g);
    g.vm.setUserMemoryRegion2({ slot: 0, memorySize: 0 });
    expect(delta(tdx(g), t0)).toEqual({
      'TDH.MEM.RANGE.BLOCK': 300,
      'TDH.MEM.TRACK': 300,
      'TDH.MEM.PAGE.REMOVE': 300,
      'TDH.PHYMEM.PAGE.WBINVD': 300,
      mapped_pages: -300,
    });
    const m = model(g);
    expect(m.seamcalls - m0.seamcalls).toBe(1200);
    expect(m.tdx_private_pages_removed - m0.tdx_private_pages_removed).toBe(300);
    expect(m.sptes_zapped_4k - m0.sptes_zapped_4k).toBe(300);
    expect([m.memslot_zap_precise, m.memslot_zap_all_fast]).toEqual([1, 0]);
    // Slot 0's pages stay in its guest_memfd, but their content was cleared.
    expect(versions(g, a).every((x, i) => x !== aVer[i])).toBe(true);
    // Slot 1: same pages, same content, no fault needed.
    const fixed = v.getStats()['pf_fixed'];
    expect(pfnsOf(v, 4 * MiB, 200)).toEqual(b);
    expect(versions(g, b)).toEqual(bVer);
    expect(v.getStats()['pf_fixed']).toBe(fixed);
    expect(tdx(g)['mapped_pages']).toBe(200);
  });

  it('a re-created slot maps the same guest_memfd pages again, but the guest must re-accept them', () => {
    const { g, v, a } = td();
    const fd = g.gmem.get(0)!;
    g.vm.setUserMemoryRegion2({ slot: 0, memorySize: 0 });
    g.vm.setUserMemoryRegion2({
      slot: 0,
      flags: KVM_MEM_GUEST_MEMFD,
      guestPhysAddr: 0,
      memorySize: 1024 * PAGE,
      userspaceAddr: g.kvm.host.mmap(1024 * PAGE),
      guestMemfd: fd,
    });
    const before = tdx(g)['TDH.MEM.PAGE.AUG']!;
    expect(accept(v, 0, 300)).toEqual(a); // same pfns, augmented again (pending), accepted again
    expect(tdx(g)['TDH.MEM.PAGE.AUG']! - before).toBe(300);
  });
});

describe('zap-all on a TD never reaches the mirror root', () => {
  it('kvm_mmu_zap_all_fast called directly: 0 SEAMCALLs, every private page kept, shared pages refault', () => {
    const slots = [...SLOTS, { slot: 2, gpa: 16 * MiB, pages: 64 }];
    const { g, v, a, b } = td({}, slots);
    g.vm.setMemoryAttributes({ address: 16 * MiB, size: 64 * PAGE, attributes: 0 });
    expect(pfnsOf(v, TDX_SHARED + 16 * MiB, 64).every((p) => p > 0)).toBe(true);
    const ver = versions(g, [...a, ...b]);
    const m0 = model(g);
    const fixed0 = v.getStats()['pf_fixed']!;
    g.vm.mmu.kvmMmuZapAllFast();
    expect(model(g).seamcalls).toBe(m0.seamcalls);
    expect(model(g).tdx_private_pages_removed).toBe(0);
    expect(pfnsOf(v, 0, 300)).toEqual(a);
    expect(pfnsOf(v, 4 * MiB, 200)).toEqual(b);
    expect(versions(g, [...a, ...b])).toEqual(ver);
    expect(v.getStats()['pf_fixed']! - fixed0).toBe(0); // no private refault
    pfnsOf(v, TDX_SHARED + 16 * MiB, 64);
    expect(v.getStats()['pf_fixed']! - fixed0).toBe(64); // the shared half refaults
  });

  it('slot-flag design: deleting a shared slot without KVM_MEM_ZAP_LEAFS_ONLY zaps all, nothing private', () => {
    const slots = [
      { slot: 0, gpa: 0, pages: 1024, leafsOnly: true },
      { slot: 1, gpa: 4 * MiB, pages: 1024, leafsOnly: true },
    ];
    const { g, v, a, b } = td({ zapDesign: 'slot-flag' }, slots);
    const hva = g.kvm.host.mmap(2 * MiB);
    g.vm.setUserMemoryRegion({ slot: 5, guestPhysAddr: 64 * MiB, memorySize: 2 * MiB, userspaceAddr: hva });
    expect(v.access(TDX_SHARED + 64 * MiB, 'write').exit).toBe('none');
    const ver = versions(g, [...a, ...b]);
    const s0 = model(g).seamcalls;
    g.vm.setUserMemoryRegion({ slot: 5, memorySize: 0 });
    const m = model(g);
    expect([m.memslot_zap_all_fast, m.memslot_zap_precise, m.seamcalls - s0]).toEqual([1, 0, 0]);
    expect(m.tdx_private_pages_removed).toBe(0);
    expect(pfnsOf(v, 0, 300)).toEqual(a);
    expect(versions(g, [...a, ...b])).toEqual(ver);
    // The flagged guest_memfd slot takes the leafs-only path: exactly its 200 pages go.
    g.vm.setUserMemoryRegion2({ slot: 1, memorySize: 0 });
    expect(model(g).tdx_private_pages_removed).toBe(200);
    expect(tdx(g)['mapped_pages']).toBe(300);
  });
});

describe('the mirror root cannot be dropped while the TD lives', () => {
  it('invalidating and zapping it (mmu_lock for write, as teardown does) is a KVM_BUG_ON; EIO after', () => {
    const { g, v } = td();
    const tdp = (g.vm.mmu as X86Mmu).tdp;
    kvmTdpMmuInvalidateRoots(tdp, KVM_MIRROR_ROOTS);
    kvmTdpMmuZapInvalidatedRoots(tdp, false);
    // The leafs go first (remove_external_spte is legal on a live TD), then freeing the first S-EPT
    // table trips tdx_sept_free_private_spt's KVM_BUG_ON: the HKID is still assigned.
    expect(model(g).tdx_private_pages_removed).toBe(500);
    expect(g.vm.bugged).toBe(true);
    expect(g.vm.warnings.filter((w) => w.id === 'INV-TDX-FREE-SPT').length).toBeGreaterThan(0);
    expect(tdx(g)['TDH.PHYMEM.PAGE.RECLAIM']).toBe(0);
    expect(() => g.vm.setMemoryAttributes({ address: 0, size: PAGE, attributes: 0 })).toThrow(/EIO/);
    expect(v.access(0, 'read').exit).toBe('vm_dead');
  });

  it('with mmu_lock for read (the fast-zap path) the first atomic zap of a mirror SPTE bugs: nothing removed', () => {
    const { g } = td();
    const tdp = (g.vm.mmu as X86Mmu).tdp;
    kvmTdpMmuInvalidateRoots(tdp, KVM_MIRROR_ROOTS);
    kvmTdpMmuZapInvalidatedRoots(tdp, true);
    expect(g.vm.bugged).toBe(true);
    expect(model(g).tdx_private_pages_removed).toBe(0);
    expect(tdx(g)['TDH.MEM.PAGE.REMOVE']).toBe(0);
  });
});

describe('shared↔private conversion zaps exactly the converted range', () => {
  it('TDX: 64 pages to shared = 64 private leafs (256 SEAMCALLs); back to private = 64 shared leafs', () => {
    const { g, v, a } = td();
    const ver = versions(g, a);
    const m0 = model(g);
    g.vm.setMemoryAttributes({ address: 128 * PAGE, size: 64 * PAGE, attributes: 0 });
    let m = model(g);
    expect(m.sptes_zapped_4k - m0.sptes_zapped_4k).toBe(64);
    expect(m.seamcalls - m0.seamcalls).toBe(256);
    expect(m.tdx_private_pages_removed).toBe(64);
    const kept = (i: number) => i < 128 || i >= 192;
    expect(versions(g, a).filter((_, i) => kept(i))).toEqual(ver.filter((_, i) => kept(i)));
    expect(pfnsOf(v, 0, 300).filter((_, i) => kept(i))).toEqual(a.filter((_, i) => kept(i)));
    // The guest now uses the shared alias: 64 direct-root (shared-bit) mappings of host memory.
    const shared = pfnsOf(v, TDX_SHARED + 128 * PAGE, 64);
    expect(shared.every((p) => p > 0 && !a.includes(p))).toBe(true);
    const m1 = model(g);
    g.vm.setMemoryAttributes({
      address: 128 * PAGE,
      size: 64 * PAGE,
      attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE,
    });
    m = model(g);
    expect(m.sptes_zapped_4k - m1.sptes_zapped_4k).toBe(64);
    expect(m.seamcalls - m1.seamcalls).toBe(0);
    expect(tdx(g)['mapped_pages']).toBe(500 - 64);
    // Private again, but the old content is gone and the page is not accepted: touching it kills the TD.
    expect(v.access(130 * PAGE, 'read').exit).toBe('vm_dead');
    expect(model(g).tdx_unaccepted_accesses).toBe(1);
  });

  it('SW_PROTECTED: converting 64 of 300 private pages zaps 64 SPTEs and keeps the rest', () => {
    const g = privateGuest(VM.SW_PROTECTED, [{ slot: 0, gpa: 0, pages: 1024 }]);
    const v = g.vcpus[0]!;
    const p = pfnsOf(v, 0, 300);
    const m0 = model(g);
    g.vm.setMemoryAttributes({ address: 128 * PAGE, size: 64 * PAGE, attributes: 0 });
    expect(model(g).sptes_zapped_4k - m0.sptes_zapped_4k).toBe(64);
    expect(model(g).seamcalls).toBe(0);
    const fixed0 = v.getStats()['pf_fixed']!;
    expect(pfnsOf(v, 0, 128)).toEqual(p.slice(0, 128));
    expect(v.getStats()['pf_fixed']).toBe(fixed0);
  });
});
