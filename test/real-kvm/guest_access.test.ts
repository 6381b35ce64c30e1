/**
 * Guest accesses on the real /dev/kvm through the CPL3 harness, and the shadow-MMU stat deltas they
 * cause: first-touch faults, exits for unbacked / read-only / unfetchable memory, MOVE and DELETE, dirty
 * logging, and KVM_X86_QUIRK_SLOT_ZAP_ALL on vs off (real-kvm-host.md §4, §6; mmu-zap.md).
 *
 * Geometry used for exact counts: the harness sits at 63 GiB (its code page, then 16 B per access in
 * list pages of 256 entries, all in one 8-page prefetch group); test slots sit at 1 GiB and 2 GiB, so
 * each needs its own shadow PD and one shadow PT per 512 pages, and shares the root and PDPT.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RealKvm } from '../../src/backends/kvm/real_kvm.ts';
import type { RealVm } from '../../src/backends/kvm/real_vm.ts';
import type { GuestAccess } from '../../src/backends/kvm/real_vcpu.ts';
import { KVM_CAP, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';
import { HOST, NO_GMEM_WHY, PVM_HOST, announceSkip, nonzero, skipUnless, statDelta } from './env.ts';

announceSkip('guest_access', true);

const P = 4096;
const A = 0x8000_0000; // 2 GiB: the slot the guest touches
const V = 0x4000_0000; // 1 GiB: the "other" slot that gets deleted
const pages = (base: number, n: number, kind: GuestAccess['kind'] = 'read'): GuestAccess[] =>
  Array.from({ length: n }, (_, i) => ({ gpa: base + i * P, kind }));

// The host can add MMU-notifier work of its own to a run (on a loaded machine: an extra
// remote_tlb_flush_requests in a delta where quiet runs give none; mmu_recording.test.ts sees the same).
// Each case is exact; one that disagrees is run again, up to twice, and vitest reports the retry.
describe.skipIf(!PVM_HOST)('real /dev/kvm: CPL3 guest accesses', { retry: 2 }, () => {
  let kvm: RealKvm;
  beforeAll(() => {
    kvm = new RealKvm();
  });
  afterAll(() => kvm.close());

  function vmWithSlot(npages: number, flags = 0): { vm: RealVm; hva: number } {
    const vm = kvm.createVm(0);
    const hva = kvm.host.mmap(npages * P);
    vm.setUserMemoryRegion({ slot: 1, flags, guestPhysAddr: A, memorySize: npages * P, userspaceAddr: hva });
    return { vm, hva };
  }

  it('the empty program faults in only the harness code page (4 shadow pages: root, PDPT, PD, PT)', () => {
    using vm = kvm.createVm(0);
    const vcpu = vm.createVcpu(0);
    const r = vcpu.runAccesses([]);
    expect(r.runs).toBe(1);
    expect(nonzero(r.vmStats)).toEqual({ mmu_cache_miss: 4, pages_4k: 1 });
    // the one emulated instruction is the final OUT (kvm_pvm drops IOPL; the TSS bitmap allows the port)
    expect(r.vcpuStats).toMatchObject({ pf_fixed: 1, pf_taken: 1, exits: 2, insn_emulation: 1, io_exits: 0 });
  });

  // N pages of a fresh slot, each touched once: one fault and one 4K SPTE per page (guest PTEs have A
  // clear, so nothing is prefetched), plus one per list page the program reads (N/256, rounded up), plus
  // one shadow PD and one shadow PT per 512 pages.
  it.each([1, 64, 256, 512, 1024, 2048])(
    'touching %d pages moves pages_4k and pf_fixed by N + list pages',
    (n) => {
      const { vm } = vmWithSlot(n);
      using _vm = vm;
      const vcpu = vm.createVcpu(0);
      vcpu.runAccesses([]);
      const r = vcpu.runAccesses(pages(A, n));
      const listPages = Math.ceil(n / 256);
      expect(r.results.every((x) => x.exit === 'none')).toBe(true);
      expect(nonzero(r.vmStats)).toEqual({ mmu_cache_miss: 1 + Math.ceil(n / 512), pages_4k: n + listPages });
      expect(r.vcpuStats.pf_fixed).toBe(n + listPages);
      expect(r.vcpuStats.pf_taken).toBe(n + listPages);
      // exits also counts host interrupts/preemption on a busy host (real-kvm-host.md §8.4): a lower bound
      expect(r.vcpuStats.exits).toBeGreaterThanOrEqual(n + listPages + 1);
      // The same accesses again: everything is mapped, nothing faults.
      const again = vcpu.runAccesses(pages(A, n));
      expect(nonzero(again.vmStats)).toEqual({});
      expect(again.vcpuStats.pf_fixed).toBe(0);
    },
  );

  it('writes land in the slot\'s host memory; "none" results carry the host pfn from pagemap', () => {
    const { vm, hva } = vmWithSlot(8);
    using _vm = vm;
    const vcpu = vm.createVcpu(0);
    const r = vcpu.runAccesses(pages(A, 8, 'write').map((a, i) => ({ ...a, value: 0xa0 + i })));
    for (let i = 0; i < 8; i++) expect(kvm.host.read(hva + i * P, 1)[0]).toBe(0xa0 + i);
    for (let i = 0; i < 8; i++) {
      const x = r.results[i]!;
      expect(x.exit).toBe('none');
      if (x.exit === 'none') {
        expect(x.pfn).toBe(kvm.host.pagemapPfn(hva + i * P));
        expect(x.pfn).toBeGreaterThan(0);
        expect(x.level).toBe(1);
      }
    }
  });

  it('exits: no slot → MMIO (read and write), read-only slot → MMIO on write only, exec from MMIO → emulation failure', () => {
    const { vm } = vmWithSlot(16, KVM_MEM_READONLY);
    using _vm = vm;
    const vcpu = vm.createVcpu(0);
    const hole = 0x2_0000_0000;
    const r = vcpu.runAccesses([
      { gpa: hole, kind: 'read' },
      { gpa: hole + 8, kind: 'write', value: 1 },
      { gpa: A, kind: 'read' },
      { gpa: A + P, kind: 'write', value: 1 },
      { gpa: hole + P, kind: 'exec' },
      { gpa: A + 2 * P, kind: 'read' }, // the program resumes after the failed fetch
    ]);
    expect(r.results.map((x) => x.exit)).toEqual(['mmio', 'mmio', 'none', 'mmio', 'internal_error', 'none']);
    expect(r.results[0]).toEqual({ exit: 'mmio', gpa: hole, write: false });
    expect(r.results[1]).toEqual({ exit: 'mmio', gpa: hole + 8, write: true });
    expect(r.results[3]).toEqual({ exit: 'mmio', gpa: A + P, write: true });
    expect(r.results[4]).toMatchObject({ gpa: hole + P, reason: 'KVM_EXIT_INTERNAL_ERROR suberror 1' });
    expect(r.vcpuStats).toMatchObject({ mmio_exits: 3, insn_emulation_fail: 1 });
  });

  it('exec of a slot page runs the stub the host placed there and creates one SPTE', () => {
    const { vm, hva } = vmWithSlot(4);
    using _vm = vm;
    const vcpu = vm.createVcpu(0);
    vcpu.runAccesses([]);
    const r = vcpu.runAccesses([{ gpa: A + 3 * P + 16, kind: 'exec' }]);
    expect(r.results[0]!.exit).toBe('none');
    expect([...kvm.host.read(hva + 3 * P + 16, 3)]).toEqual([0x41, 0xff, 0xe3]);
    expect(nonzero(r.vmStats)).toEqual({ mmu_cache_miss: 2, pages_4k: 2 });
  });

  it('MOVE: the old gpa becomes MMIO and the new gpa reaches the same host page', () => {
    const { vm, hva } = vmWithSlot(4);
    using _vm = vm;
    const vcpu = vm.createVcpu(0);
    const before = vcpu.access(A + P, 'read');
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: A + 0x20_0000, memorySize: 4 * P, userspaceAddr: hva });
    expect(vcpu.access(A + P, 'read')).toEqual({ exit: 'mmio', gpa: A + P, write: false });
    const after = vcpu.access(A + 0x20_0000 + P, 'read');
    expect(after.exit).toBe('none');
    expect(before.exit === 'none' && after.exit === 'none' && after.pfn === before.pfn).toBe(true);
  });

  it('guest MAXPHYADDR: 36 without CPUID (an access at 1 TiB triple-faults), 48 with the cpuid option', () => {
    const T = 0x100_0000_0000; // 1 TiB
    for (const cpuid of [false, true]) {
      using vm = kvm.createVm(0, { cpuid });
      const hva = kvm.host.mmap(P);
      vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: T, memorySize: P, userspaceAddr: hva });
      const vcpu = vm.createVcpu(0);
      const r = vcpu.runAccesses([{ gpa: T, kind: 'write', value: 7 }]);
      if (cpuid) {
        expect(vcpu.guestMaxPhyAddr).toBe(48);
        expect(r.results[0]!.exit).toBe('none');
        expect(kvm.host.read(hva, 1)[0]).toBe(7);
      } else {
        expect(vcpu.guestMaxPhyAddr).toBe(36);
        // the harness PTE for 1 TiB has bits above MAXPHYADDR set: #PF(RSVD), no IDT → shutdown
        expect(r.results[0]).toEqual({
          exit: 'internal_error',
          gpa: T,
          reason: 'KVM_EXIT_SHUTDOWN (triple fault)',
        });
      }
    }
  });

  it('a read of never-written host memory reaches the shared zero page; a write gets a private page', () => {
    const { vm } = vmWithSlot(2);
    using _vm = vm;
    const vcpu = vm.createVcpu(0);
    const [r0, r1] = vcpu.runAccesses([
      { gpa: A, kind: 'read' },
      { gpa: A + P, kind: 'read' },
    ]).results;
    expect(r0!.exit === 'none' && r1!.exit === 'none' && r0!.pfn === r1!.pfn).toBe(true); // both the zero page
    const w = vcpu.access(A + P, 'write');
    expect(w.exit === 'none' && r1!.exit === 'none' && w.pfn !== r1!.pfn).toBe(true); // COW broke it
  });

  it.skipIf(skipUnless(HOST?.guestMemfd === true, 'guest_access', NO_GMEM_WHY))(
    'guest_memfd slots (§7.5): MMAP|INIT_SHARED data flows both ways; a non-MMAP one with hva 0 faults',
    () => {
      using vm = kvm.createVm(0);
      const g = vm.createGuestMemfd({ size: 16 * P, flags: 3 });
      vm.setUserMemoryRegion2({ slot: 1, flags: 4, guestPhysAddr: A, memorySize: 16 * P, guestMemfd: g });
      const g2 = vm.createGuestMemfd({ size: 16 * P, flags: 0 });
      vm.setUserMemoryRegion2({
        slot: 2,
        flags: 4,
        guestPhysAddr: V,
        memorySize: 16 * P,
        guestMemfd: g2,
        userspaceAddr: 0,
      });
      const view = kvm.host.mmapFd(g, 16 * P);
      kvm.host.write(view + 2 * P, Uint8Array.of(0xaa));
      const vcpu = vm.createVcpu(0);
      vcpu.runAccesses([]);
      const r = vcpu.runAccesses([
        { gpa: A + 5 * P, kind: 'write', value: 0xff },
        { gpa: A + 2 * P, kind: 'read' },
        { gpa: V, kind: 'read' },
      ]);
      expect(kvm.host.read(view + 5 * P, 1)[0]).toBe(0xff); // guest → host through the guest_memfd mapping
      expect(r.results[0]).toEqual({ exit: 'none', pfn: -1, level: 1, memtype: 6 }); // pfn not observable
      expect(r.results[1]!.exit).toBe('none');
      // Not GMEM_ONLY, so a shared fault uses userspace_addr 0, which is not mapped: KVM_RUN → EFAULT
      expect(r.results[2]).toMatchObject({ exit: 'internal_error', reason: expect.stringMatching(/EFAULT/) });
      // list page + the two guest_memfd pages; one PD + PT for slot 1. Slot 2's fault fails in
      // kvm_faultin_pfn, before any shadow page is allocated for it.
      expect(nonzero(r.vmStats)).toEqual({ mmu_cache_miss: 2, pages_4k: 3 });
      expect(() => vcpu.access(A, 'exec')).toThrow(/guest_memfd/);
    },
  );

  it('a slot whose hva is not mapped: every access ends KVM_RUN with EFAULT, reported per access', () => {
    using vm = kvm.createVm(0);
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: A, memorySize: 16 * P, userspaceAddr: 0x1000_0000 });
    const vcpu = vm.createVcpu(0);
    const r = vcpu.runAccesses([
      { gpa: A, kind: 'read' },
      { gpa: A + P, kind: 'write' },
    ]);
    expect(r.results.map((x) => x.exit)).toEqual(['internal_error', 'internal_error']);
  });

  it('a test slot where the harness goes is EEXIST with a hint; harness.gpa moves the harness', () => {
    const H = 0xf_c000_0000;
    using vm = kvm.createVm(0);
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: H, memorySize: P, userspaceAddr: 0 });
    expect(() => vm.createVcpu(0).access(A, 'read')).toThrow(/EEXIST.*harness\.gpa/);
    using vm2 = kvm.createVm(0, { harness: { gpa: 0xe_0000_0000, slot: 100 } });
    vm2.setUserMemoryRegion({ slot: 1, guestPhysAddr: H, memorySize: P, userspaceAddr: 0 });
    expect(vm2.createVcpu(0).access(A, 'read')).toEqual({ exit: 'mmio', gpa: A, write: false });
    expect(vm2.slots().get(100)).toMatchObject({ guestPhysAddr: 0xe_0000_0000, memorySize: 4 << 20 });
  });

  it('dirty logging sees exactly the pages the guest wrote', () => {
    const { vm } = vmWithSlot(128, KVM_MEM_LOG_DIRTY_PAGES);
    using _vm = vm;
    const vcpu = vm.createVcpu(0);
    const written = [0, 5, 9, 64, 127];
    vcpu.runAccesses([
      ...pages(A, 128, 'read'),
      ...written.map((i) => ({ gpa: A + i * P, kind: 'write' as const })),
    ]);
    const bm = vm.getDirtyLog(1);
    const set = [...Array(128).keys()].filter((i) => (bm[i >> 3]! >> (i & 7)) & 1);
    expect(set).toEqual(written);
    expect(vm.getDirtyLog(1).every((b) => b === 0)).toBe(true); // GET without manual protect clears
  });
});

describe.skipIf(!PVM_HOST)(
  'real /dev/kvm: deleting another slot, KVM_X86_QUIRK_SLOT_ZAP_ALL on vs off',
  () => {
    let kvm: RealKvm;
    beforeAll(() => {
      kvm = new RealKvm();
    });
    afterAll(() => kvm.close());

    /** 256 pages of slot A and 64 of slot V touched, then V deleted, then A touched again. */
    function scenario(quirkDisabled: boolean) {
      const vm = kvm.createVm(0);
      try {
        if (quirkDisabled)
          vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
        const a = kvm.host.mmap(256 * P);
        const v = kvm.host.mmap(64 * P);
        vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: A, memorySize: 256 * P, userspaceAddr: a });
        vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: V, memorySize: 64 * P, userspaceAddr: v });
        const vcpu = vm.createVcpu(0);
        const touch = vcpu.runAccesses([...pages(A, 256, 'write'), ...pages(V, 64, 'write')]);
        const s0 = vm.getStats();
        vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: V, memorySize: 0, userspaceAddr: v });
        const del = statDelta(s0, vm.getStats());
        const retouch = vcpu.runAccesses(pages(A, 256, 'write'));
        const gone = vcpu.access(V, 'read');
        return {
          touch: nonzero(touch.vmStats),
          del,
          retouch: nonzero(retouch.vmStats),
          refaults: retouch.vcpuStats.pf_fixed,
          gone,
        };
      } finally {
        vm.close();
      }
    }

    // touch: 256 + 64 targets + code page + 2 list pages (320 entries) = 323 SPTEs; 8 shadow pages
    // (root, PDPT, and a PD + PT each for the harness, slot A and slot V).
    const TOUCH = { mmu_cache_miss: 8, pages_4k: 323 };

    it('quirk enabled (default): kvm_mmu_zap_all_fast drops every SPTE and shadow page; slot A re-faults', () => {
      const r = scenario(false);
      expect(r.touch).toEqual(TOUCH);
      // all 8 shadow pages (the in-use root included, marked obsolete) and all 323 leaf SPTEs
      expect(r.del).toEqual({ remote_tlb_flush_requests: 1, mmu_shadow_zapped: 8, pages_4k: -323 });
      // Re-touching A rebuilds 6 shadow pages (root, PDPT, harness PD+PT, A's PD+PT) and frees the
      // obsolete root for good (counted a second time). The guest PTEs now have A set, so each fault
      // prefetches its 8-page group: 32 faults for 256 pages + 1 for the code page, which also
      // prefetches both list pages: 256 + 3 SPTEs.
      expect(r.retouch).toEqual({
        remote_tlb_flush_requests: 1,
        mmu_shadow_zapped: 1,
        mmu_cache_miss: 6,
        pages_4k: 259,
      });
      expect(r.refaults).toBe(33);
      expect(r.gone).toEqual({ exit: 'mmio', gpa: V, write: false });
    });

    it("quirk disabled: kvm_mmu_zap_memslot drops only the deleted slot's 64 SPTEs; slot A keeps its mappings", () => {
      const r = scenario(true);
      expect(r.touch).toEqual(TOUCH);
      expect(r.del).toEqual({ remote_tlb_flush_requests: 1, pages_4k: -64 });
      expect(r.retouch).toEqual({});
      expect(r.refaults).toBe(0);
      expect(r.gone).toEqual({ exit: 'mmio', gpa: V, write: false });
    });

    it('disabling the quirk late (after the vCPU ran) takes effect at the next delete', () => {
      const vm = kvm.createVm(0);
      using _vm = vm;
      const a = kvm.host.mmap(256 * P);
      const v = kvm.host.mmap(64 * P);
      vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: A, memorySize: 256 * P, userspaceAddr: a });
      vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: V, memorySize: 64 * P, userspaceAddr: v });
      const vcpu = vm.createVcpu(0);
      vcpu.runAccesses([...pages(A, 256, 'write'), ...pages(V, 64, 'write')]);
      vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
      const s0 = vm.getStats();
      vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: V, memorySize: 0, userspaceAddr: v });
      expect(statDelta(s0, vm.getStats())).toEqual({ remote_tlb_flush_requests: 1, pages_4k: -64 });
    });
  },
);
