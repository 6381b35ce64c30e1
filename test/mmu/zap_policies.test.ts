/**
 * Memslot DELETE/MOVE under nuke-and-pave (zap-all-fast) and the precise zap, with exact counts.
 * The guest: 64 MiB RAM (slot 0, 16384 pages, 32 page tables) and a 2 MiB "BAR" (slot 1, 1 table) in
 * the first GiB, so a 4-level root has 1 root + 1 PDPT + 1 PD + 33 PTs = 36 tables.
 */
import { describe, expect, it } from 'vitest';
import { guest, touch, stat, BAR_GPA, RAM_GPA, BAR_SIZE, MiB } from './fixture.ts';
import { KVM_MEM_ZAP_LEAFS_ONLY } from '../../src/uapi/kvm.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';

const model = (g: ReturnType<typeof guest>) => g.vm.getModelStats();

describe('DELETE of a populated slot', () => {
  it('zap-all (DEFAULT VM, quirk on): every root dies, everything is refaulted', () => {
    const g = guest({ quirk: true });
    const [v0, v1] = g.vcpus as [NonNullable<(typeof g.vcpus)[0]>, NonNullable<(typeof g.vcpus)[0]>];
    touch(v0, RAM_GPA, 16384);
    touch(v0, BAR_GPA, 100);
    touch(v1, RAM_GPA, 1000); // same root as v0: all hits
    expect(g.vm.getStats().pages_4k).toBe(16484);
    expect([stat(v0, 'pf_fixed'), stat(v1, 'pf_fixed')]).toEqual([16484, 0]);
    expect(model(g).pt_pages_allocated).toBe(36);

    g.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR_GPA, memorySize: 0 });
    expect(g.vm.getStats().pages_4k).toBe(0);
    expect(model(g)).toMatchObject({
      memslot_zap_all_fast: 1,
      sptes_zapped_4k: 16484,
      sptes_zapped_nonleaf: 35, // PML4→PDPT, PDPT→PD, 33 PD→PT links
      pt_pages_freed: 35, // the root itself waits for the vCPUs to drop it
    });
    // Zapping invalidated roots needs no remote flush: vCPUs flush when they load a new root.
    expect(g.vm.getStats().remote_tlb_flush_requests).toBe(0);

    expect(touch(v0, RAM_GPA, 16384)).toBe(16384);
    expect(touch(v1, RAM_GPA, 1000)).toBe(1000);
    expect([stat(v0, 'pf_fixed'), stat(v1, 'pf_fixed')]).toEqual([16484 + 16384, 0]);
    expect(model(g)).toMatchObject({
      refaults: 16384,
      roots_allocated: 2,
      pt_pages_allocated: 36 + 35,
      pt_pages_freed: 36,
    });
    expect(v0.access(BAR_GPA, 'read')).toEqual({ exit: 'mmio', gpa: BAR_GPA, write: false });
  });

  it("precise zap (quirk off): only the slot's 100 leafs go, tables stay, one flush, no refault", () => {
    const g = guest({ quirk: false });
    const v0 = g.vcpus[0]!;
    touch(v0, RAM_GPA, 16384);
    touch(v0, BAR_GPA, 100);
    g.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR_GPA, memorySize: 0 });
    expect(g.vm.getStats()).toMatchObject({ pages_4k: 16384, remote_tlb_flush_requests: 1 });
    expect(model(g)).toMatchObject({
      memslot_zap_precise: 1,
      sptes_zapped_4k: 100,
      sptes_zapped_nonleaf: 0,
      pt_pages_freed: 0,
    });
    expect(touch(v0, RAM_GPA, 16384)).toBe(16384);
    expect(stat(v0, 'pf_fixed')).toBe(16484);
    expect(model(g).refaults).toBe(0);
    expect(v0.access(BAR_GPA + 4096, 'write')).toEqual({ exit: 'mmio', gpa: BAR_GPA + 4096, write: true });
  });

  it('every non-DEFAULT VM type takes the precise path even with the quirk enabled', () => {
    for (const type of [1, 2, 3, 4]) {
      const g = guest({ quirk: true, type });
      touch(g.vcpus[0]!, RAM_GPA, 512);
      touch(g.vcpus[0]!, BAR_GPA, 10);
      g.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR_GPA, memorySize: 0 });
      expect([g.vm.getStats().pages_4k, model(g).memslot_zap_precise, model(g).memslot_zap_all_fast]).toEqual(
        [512, 1, 0],
      );
    }
  });
});

describe('DELETE of an untouched slot', () => {
  it('zap-all still costs a refault of everything mapped; precise costs nothing', () => {
    const on = guest({ quirk: true });
    touch(on.vcpus[0]!, RAM_GPA, 4096);
    on.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR_GPA, memorySize: 0 });
    touch(on.vcpus[0]!, RAM_GPA, 4096);
    expect([model(on).sptes_zapped_4k, model(on).refaults, stat(on.vcpus[0]!, 'pf_fixed')]).toEqual([
      4096, 4096, 8192,
    ]);

    const off = guest({ quirk: false });
    touch(off.vcpus[0]!, RAM_GPA, 4096);
    off.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR_GPA, memorySize: 0 });
    touch(off.vcpus[0]!, RAM_GPA, 4096);
    expect([model(off).sptes_zapped_4k, model(off).refaults, stat(off.vcpus[0]!, 'pf_fixed')]).toEqual([
      0, 0, 4096,
    ]);
    // Nothing mapped in the slot, nothing zapped: no flush either.
    expect(off.vm.getStats().remote_tlb_flush_requests).toBe(0);
  });
});

describe('MOVE', () => {
  it("precise: the moved slot's leafs are zapped; its pages reappear at the new gpa; the old gpa is MMIO", () => {
    const g = guest({ quirk: false });
    const v = g.vcpus[0]!;
    const before = v.access(BAR_GPA + 5 * 4096, 'read');
    touch(v, BAR_GPA, 100);
    g.vm.setUserMemoryRegion({
      slot: 1,
      guestPhysAddr: 0x20000000,
      memorySize: BAR_SIZE,
      userspaceAddr: g.vm.memslots()[1]!.userspaceAddr,
    });
    expect(model(g).sptes_zapped_4k).toBe(100);
    expect(v.access(0x20000000 + 5 * 4096, 'read')).toEqual(before);
    expect(v.access(BAR_GPA + 5 * 4096, 'read').exit).toBe('mmio');
    expect(g.vm.memslotsGeneration(0)).toBe(2 + 2 + 4);
  });
});

describe('huge pages next to a slot', () => {
  it('THP-backed RAM maps 2M leafs; deleting the small slot beside it keeps them under precise zap', () => {
    for (const quirk of [true, false]) {
      const g = guest({ quirk, backing: 'thp' });
      const v = g.vcpus[0]!;
      expect(v.access(RAM_GPA, 'read')).toMatchObject({ exit: 'none', level: 2 });
      touch(v, RAM_GPA, 16384);
      touch(v, BAR_GPA, 1);
      expect(g.vm.getStats()).toMatchObject({ pages_2m: 32, pages_4k: 1 });
      expect(stat(v, 'pf_fixed')).toBe(33);
      g.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR_GPA, memorySize: 0 });
      expect(g.vm.getStats().pages_2m).toBe(quirk ? 0 : 32);
      touch(v, RAM_GPA, 16384);
      expect(stat(v, 'pf_fixed')).toBe(quirk ? 33 + 32 : 33);
    }
  });

  it('no huge leaf spans a slot edge: lpage_info forces 4K at unaligned edges and for gpa/hva skew', () => {
    const g = guest({ quirk: false });
    const v = g.vcpus[0]!;
    const hva = g.kvm.host.mmap(8 * MiB, { backing: 'thp' });
    // 3 MiB at a 2M-aligned gpa: the first 2M frame may be huge, the last 1M (an unaligned tail) may not.
    g.vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: 0x40000000, memorySize: 3 * MiB, userspaceAddr: hva });
    expect(v.access(0x40000000, 'read')).toMatchObject({ level: 2 });
    expect(v.access(0x40000000 + 2 * MiB, 'read')).toMatchObject({ level: 1 });
    // gpa ≡ 1 MiB (mod 2 MiB) but hva ≡ 0: every 2M frame is disallowed.
    g.vm.setUserMemoryRegion({
      slot: 3,
      guestPhysAddr: 0x50100000,
      memorySize: 4 * MiB,
      userspaceAddr: hva + 4 * MiB,
    });
    for (let off = 0; off < 4 * MiB; off += MiB / 2)
      expect(v.access(0x50100000 + off, 'read')).toMatchObject({ level: 1 });
  });
});

describe('MMIO SPTEs', () => {
  it('are created once, served without a page fault, and die by generation when a slot appears', () => {
    const g = guest({});
    const v = g.vcpus[0]!;
    const gpa = 0x30000000;
    expect(v.access(gpa, 'read')).toEqual({ exit: 'mmio', gpa, write: false });
    expect(v.access(gpa, 'write')).toEqual({ exit: 'mmio', gpa, write: true });
    expect(v.getStats()).toMatchObject({
      pf_taken: 1,
      pf_emulate: 1,
      pf_mmio_spte_created: 1,
      mmio_exits: 2,
    });
    const hva = g.kvm.host.mmap(MiB);
    g.vm.setUserMemoryRegion({ slot: 4, guestPhysAddr: gpa, memorySize: MiB, userspaceAddr: hva });
    // The MMIO SPTE's generation is stale: the misconfig falls through to a page fault that maps RAM.
    expect(v.access(gpa, 'read')).toMatchObject({ exit: 'none', level: 1 });
    expect(v.getStats()).toMatchObject({ pf_taken: 2, pf_fixed: 1, pf_mmio_spte_created: 1 });
  });
});

describe('races', () => {
  it('an access during the INVALID window retries (both designs)', () => {
    for (const quirk of [true, false]) {
      const g = guest({ quirk });
      const v = g.vcpus[0]!;
      touch(v, BAR_GPA, 1);
      let seen: unknown = null;
      g.vm.onInvalidWindow = () => (seen = v.access(BAR_GPA, 'read'));
      g.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR_GPA, memorySize: 0 });
      expect(seen).toMatchObject({
        exit: 'retry',
        gpa: BAR_GPA,
        reason: 'memslot is INVALID (being deleted or moved)',
      });
      expect(v.access(BAR_GPA, 'read').exit).toBe('mmio');
    }
  });

  it('a fault whose mmu_invalidate_seq went stale (migration in between) retries and maps the new page', async () => {
    const { beginFault } = await import('../../src/x86/mmu/guest_access_step.ts');
    const g = guest({});
    const v = g.vcpus[0]!;
    const slot = g.vm.memslots()[0]!;
    const f = beginFault(g.vm.mmu as never, v, RAM_GPA + 7 * 4096, 'read');
    const oldPfn = f.fault.pfn;
    g.kvm.host.migrate(slot.userspaceAddr + 7 * 4096, 4096);
    const r = f.finish();
    expect(r).toMatchObject({ exit: 'none', pfn: g.kvm.host.pfnAt(slot.userspaceAddr + 7 * 4096) });
    expect((r as { pfn: number }).pfn).not.toBe(oldPfn);
    expect(v.getStats()).toMatchObject({ pf_taken: 2, pf_fixed: 1 });
    expect(model(g).fault_retries).toBe(1);
  });
});

describe('ABI designs', () => {
  it("'vm-type' ignores the quirk; 'slot-flag' zaps precisely only slots with KVM_MEM_ZAP_LEAFS_ONLY", () => {
    const vt = guest({ quirk: false, zapDesign: 'vm-type' });
    vt.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR_GPA, memorySize: 0 });
    expect(model(vt)).toMatchObject({ memslot_zap_all_fast: 1, memslot_zap_precise: 0 });

    const sf = guest({ zapDesign: 'slot-flag' });
    const hva = sf.kvm.host.mmap(MiB);
    sf.vm.setUserMemoryRegion2({
      slot: 5,
      flags: KVM_MEM_ZAP_LEAFS_ONLY,
      guestPhysAddr: 0x60000000,
      memorySize: MiB,
      userspaceAddr: hva,
    });
    sf.vm.setUserMemoryRegion2({
      slot: 5,
      flags: KVM_MEM_ZAP_LEAFS_ONLY,
      guestPhysAddr: 0x60000000,
      memorySize: 0,
    });
    sf.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BAR_GPA, memorySize: 0 });
    expect(model(sf)).toMatchObject({ memslot_zap_all_fast: 1, memslot_zap_precise: 1 });
    // The flag does not exist outside the slot-flag design (and never through the V1 ioctl).
    const q = guest({});
    expect(() =>
      q.vm.setUserMemoryRegion2({
        slot: 5,
        flags: KVM_MEM_ZAP_LEAFS_ONLY,
        guestPhysAddr: 0x60000000,
        memorySize: MiB,
        userspaceAddr: hva,
      }),
    ).toThrow(/EINVAL/);
    void KVM_CAP;
  });
});
