/**
 * The shadow MMU's counts for the real harness's guest (CPL3, 4-level identity map, A/D clear), step by
 * step, against what the kvm_pvm host showed; and the 2019 precise-zap switch in an Alex-Williamson-shaped
 * layout (guest 2 MiB pages over a small unaligned BAR slot).
 */
import { describe, expect, it } from 'vitest';
import { KVM_CAP } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';
import { pvmVm } from './harness.ts';

const PAGE = 4096;
const five = (vm: { getStats(): Record<string, number> }, vcpu: { getStats(): Record<string, number> }) => {
  const a = vm.getStats();
  const b = vcpu.getStats();
  return {
    pages_4k: a.pages_4k!,
    zapped: a.mmu_shadow_zapped!,
    miss: a.mmu_cache_miss!,
    pf_fixed: b.pf_fixed!,
    flushes: a.remote_tlb_flush_requests!,
  };
};
const delta = (x: ReturnType<typeof five>, y: ReturnType<typeof five>) =>
  Object.fromEntries(Object.entries(y).map(([k, v]) => [k, v - x[k as keyof typeof x]]));

describe('shadow MMU counts on the pvm-6.18 profile', () => {
  it('the empty program costs 4 shadow pages and the code page', () => {
    const { vm, vcpu, h } = pvmVm();
    const s0 = five(vm, vcpu);
    h.runAccesses([]);
    expect(delta(s0, five(vm, vcpu))).toEqual({ pages_4k: 1, zapped: 0, miss: 4, pf_fixed: 1, flushes: 0 });
  });

  for (const n of [1, 256, 257, 600, 1024]) {
    it(`touching ${n} fresh pages: pages_4k = pf_fixed = N + ceil(N/256), misses 1 + ceil(N/512); again: nothing`, () => {
      const { kvm, vm, vcpu, h } = pvmVm();
      vm.setUserMemoryRegion({
        slot: 1,
        flags: 0,
        guestPhysAddr: 0x8000_0000,
        memorySize: 2048 * PAGE,
        userspaceAddr: kvm.host.mmap(2048 * PAGE),
      });
      h.runAccesses([]);
      const list = Array.from({ length: n }, (_, i) => ({
        gpa: 0x8000_0000 + i * PAGE,
        kind: 'write' as const,
      }));
      const s0 = five(vm, vcpu);
      h.runAccesses(list);
      const lp = Math.ceil(n / 256);
      expect(delta(s0, five(vm, vcpu))).toEqual({
        pages_4k: n + lp,
        zapped: 0,
        miss: 1 + Math.ceil(n / 512),
        pf_fixed: n + lp,
        flushes: 0,
      });
      const s1 = five(vm, vcpu);
      h.runAccesses(list);
      expect(delta(s1, five(vm, vcpu))).toEqual({ pages_4k: 0, zapped: 0, miss: 0, pf_fixed: 0, flushes: 0 });
    });
  }

  for (const quirk of [true, false]) {
    it(`delete another slot V, quirk ${quirk ? 'on' : 'off'}, then re-touch A`, () => {
      const { kvm, vm, vcpu, h } = pvmVm();
      if (!quirk) vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
      const A = {
        slot: 1,
        flags: 0,
        guestPhysAddr: 0x8000_0000,
        memorySize: 256 * PAGE,
        userspaceAddr: kvm.host.mmap(256 * PAGE),
      };
      const V = {
        slot: 2,
        flags: 0,
        guestPhysAddr: 0x4000_0000,
        memorySize: 64 * PAGE,
        userspaceAddr: kvm.host.mmap(64 * PAGE),
      };
      vm.setUserMemoryRegion(A);
      vm.setUserMemoryRegion(V);
      h.runAccesses([]);
      const touch = (base: number, n: number) =>
        h.runAccesses(
          Array.from({ length: n }, (_, i) => ({ gpa: base + i * PAGE, kind: 'write' as const })),
        );
      touch(A.guestPhysAddr, 256);
      touch(V.guestPhysAddr, 64);
      expect(h.mmu.shadowPages().length).toBe(8);
      let s = five(vm, vcpu);
      vm.setUserMemoryRegion({ ...V, memorySize: 0 });
      expect(delta(s, five(vm, vcpu))).toEqual(
        quirk
          ? { pages_4k: -322, zapped: 8, miss: 0, pf_fixed: 0, flushes: 1 }
          : { pages_4k: -64, zapped: 0, miss: 0, pf_fixed: 0, flushes: 1 },
      );
      s = five(vm, vcpu);
      touch(A.guestPhysAddr, 256);
      // Quirk on: the old root is zapped (and counted) again when the vCPU frees it; A's gPTEs now have A
      // set, so each fault maps its whole group of 8 (PTE_PREFETCH_NUM): 1 code fault + 256/8.
      expect(delta(s, five(vm, vcpu))).toEqual(
        quirk
          ? { pages_4k: 258, zapped: 1, miss: 6, pf_fixed: 33, flushes: 1 }
          : { pages_4k: 0, zapped: 0, miss: 0, pf_fixed: 0, flushes: 0 },
      );
    });
  }
});

describe("2019 precise zap (sp->gfn filter) in Alex Williamson's layout", () => {
  // Guest 2 MiB pages over 0xc1000000..0xc13fffff; a 16 KiB BAR slot at 0xc1080000 (unaligned: the direct
  // shadow page covering it has base gfn 0xc1000, outside it) and a 2 MiB slot at 0xc1200000 (aligned).
  function setup(bug: boolean) {
    const { kvm, vm, vcpu, h } = pvmVm();
    vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
    h.mmu.bug2019PreciseZap = bug;
    const bar = {
      slot: 5,
      flags: 0,
      guestPhysAddr: 0xc108_0000,
      memorySize: 4 * PAGE,
      userspaceAddr: kvm.host.mmap(4 * PAGE),
    };
    const big = {
      slot: 6,
      flags: 0,
      guestPhysAddr: 0xc120_0000,
      memorySize: 512 * PAGE,
      userspaceAddr: kvm.host.mmap(512 * PAGE),
    };
    vm.setUserMemoryRegion(bar);
    vm.setUserMemoryRegion(big);
    h.map.mapHuge2m(0xc100_0000);
    h.map.mapHuge2m(0xc120_0000);
    h.runAccesses([
      { gpa: 0xc108_0000, kind: 'write' },
      { gpa: 0xc120_0000, kind: 'write' },
    ]);
    return { vm, vcpu, h, bar, big };
  }
  const directCovering = (h: ReturnType<typeof setup>['h'], lo: number, hi: number) =>
    h.mmu.shadowPages().filter((sp) => sp.direct && sp.gfn < hi && sp.gfn + 512 > lo);
  const leafsIn = (h: ReturnType<typeof setup>['h'], lo: number, hi: number) => {
    let n = 0;
    for (const sp of h.mmu.shadowPages())
      if (sp.pfn)
        for (let i = 0; i < 512; i++) if (sp.pfn[i]! >= 0 && sp.gfns![i]! >= lo && sp.gfns![i]! < hi) n++;
    return n;
  };

  for (const bug of [false, true]) {
    it(`${bug ? '2019 filter' : '6.18'}: deleting the slots leaves no leaf on their gfns; which direct pages stay`, () => {
      const { vm, h, bar, big } = setup(bug);
      expect(directCovering(h, 0xc1080, 0xc1084).map((sp) => sp.gfn)).toEqual([0xc1000]);
      vm.setUserMemoryRegion({ ...bar, memorySize: 0 });
      vm.setUserMemoryRegion({ ...big, memorySize: 0 });
      // The rmap leaf zap (both versions) makes the deleted gfns unreachable.
      expect(leafsIn(h, 0xc1080, 0xc1084)).toBe(0);
      expect(leafsIn(h, 0xc1200, 0xc1400)).toBe(0);
      // The direct page whose base gfn is outside the BAR slot survives either way (empty of its gfns).
      expect(directCovering(h, 0xc1080, 0xc1084).map((sp) => sp.gfn)).toEqual([0xc1000]);
      // The 2019 filter also zapped the direct page whose base gfn lies in the aligned slot; 6.18 keeps it.
      expect(directCovering(h, 0xc1200, 0xc1400).length).toBe(bug ? 0 : 1);
    });
  }
});
