/**
 * Guest page tables and memslots under shadow paging: the walk reads each table only from a visible
 * memslot (paging_tmpl.h FNAME(walk_addr_generic): kvm_is_visible_memslot, else the guest gets #PF), a
 * CR3 outside visible memory gets the dummy root (6.6+, mmu_alloc_shadow_roots), and a page shadowing a
 * table dies with the table's slot (INV-SHADOW-001) — or, with 'shadow-leafs-only-zap', outlives it.
 * The VMM writes the tables through vm.writeGuestPte; the `guestPaging` scenario step builds them.
 */
import { describe, expect, it } from 'vitest';
import { Kvm } from '../../src/index.ts';
import { Checker } from '../../src/check/checker.ts';
import { IdentityMapBuilder } from '../../src/x86/mmu/guest_paging.ts';
import { shadowMmuOf } from '../../src/x86/mmu/shadow_mmu.ts';
import { KVM_CAP } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';
import { parseScenario } from '../../src/scenario/parse.ts';
import { runScenario } from '../../src/scenario/runner.ts';
import { designById } from '../../src/scenario/designs.ts';
import type { BugName } from '../../src/kvm/host_profile.ts';

const MiB = 1 << 20;
const DIMM = 0x4000_0000;

/** RAM at 0, a DIMM at 1 GiB holding the guest's page tables (identity map of both), quirk off. */
function setup(bugs: BugName[] = []) {
  const kvm = new Kvm({ tdp: false, tdpMmu: false, bugs });
  const vm = kvm.createVm(0);
  vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
  const ram = {
    slot: 0,
    flags: 0,
    guestPhysAddr: 0,
    memorySize: 2 * MiB,
    userspaceAddr: kvm.host.mmap(2 * MiB),
  };
  const dimm = {
    slot: 1,
    flags: 0,
    guestPhysAddr: DIMM,
    memorySize: 2 * MiB,
    userspaceAddr: kvm.host.mmap(2 * MiB),
  };
  vm.setUserMemoryRegion(ram);
  vm.setUserMemoryRegion(dimm);
  const tables = {
    read: (gfn: number, i: number) => vm.readGuestPte(gfn * 4096, i),
    write: (gfn: number, i: number, g: number) => vm.writeGuestPte(gfn * 4096, i, g),
  };
  const b = new IdentityMapBuilder(tables, DIMM, DIMM + 2 * MiB);
  b.mapPage(0x1000);
  b.mapPage(DIMM + 0x10000);
  const v = vm.createVcpu(0);
  v.setCr3(b.cr3);
  return { kvm, vm, v, dimm, mmu: shadowMmuOf(vm)!, cr3: b.cr3 };
}

describe('guest page tables in a memslot that goes away (shadow paging)', () => {
  it('the VMM writes gPTEs through vm.writeGuestPte; the tables are in the DIMM: root at its first page', () => {
    const { vm, v, mmu, cr3 } = setup();
    expect(cr3).toBe(DIMM);
    // root → L3 → L2 for gva 0 → L1 for gva 0: four table pages, then the DIMM's own L2 and L1
    expect(vm.readGuestPte(DIMM, 0)).toBe(DIMM + 0x1000 + 7);
    expect(v.access(0x1000, 'read')).toMatchObject({ exit: 'none', level: 1 });
    expect(v.access(DIMM + 0x10000, 'write')).toMatchObject({ exit: 'none', level: 1 });
    const indirect = mmu
      .shadowPages()
      .filter((sp) => !sp.direct)
      .map((sp) => (sp.gfn - DIMM / 4096).toString(16));
    expect(indirect).toEqual(['0', '1', '2', '3', '4', '5']);
  });

  it('DELETE of the DIMM: every page shadowing its tables goes; the next access walks no visible table → guest #PF on the dummy root', () => {
    const { kvm, vm, v, dimm, mmu } = setup();
    const ch = new Checker(kvm, { audit: 'points' });
    ch.watch(vm);
    v.access(0x1000, 'read');
    v.access(DIMM + 0x10000, 'write');
    vm.setUserMemoryRegion({ ...dimm, memorySize: 0 });
    ch.auditPoint('after delete');
    expect(ch.violations).toEqual([]);
    expect(mmu.shadowPages().filter((sp) => !sp.direct)).toEqual([]);
    const guestPf0 = v.getStats().pf_guest!;
    const r = v.access(0x1000, 'read');
    expect(r).toEqual({
      exit: 'retry',
      gpa: 0x1000,
      reason: `guest #PF: level-4 table gfn 0x${(DIMM / 4096).toString(16)} is in no visible memslot`,
    });
    expect(v.getStats().pf_guest! - guestPf0).toBe(1);
    ch.onAccess(v, 0x1000, 'read', r); // the reference walks the same tables: a #PF is right
    expect(ch.violations).toEqual([]);
    expect([mmu.roots.has(v), mmu.dummyRoots.has(v)]).toEqual([false, true]);
    // The DIMM comes back (same tables in the model's guest memory): the walk succeeds on the dummy
    // root, FNAME(fetch) asks for KVM_REQ_MMU_FREE_OBSOLETE_ROOTS and retries; the next entry loads a
    // real root and the access completes.
    vm.setUserMemoryRegion(dimm);
    expect(v.access(0x1000, 'read')).toMatchObject({ exit: 'none', level: 1 });
    expect([mmu.roots.has(v), mmu.dummyRoots.has(v)]).toEqual([true, false]);
  });

  it("'shadow-leafs-only-zap': the pages shadowing the DIMM's tables outlive it and still translate RAM", () => {
    const { kvm, vm, v, dimm, mmu } = setup(['shadow-leafs-only-zap']);
    const ch = new Checker(kvm, { audit: 'points' });
    ch.watch(vm);
    const before = v.access(0x1000, 'read');
    v.access(DIMM + 0x10000, 'write');
    vm.setUserMemoryRegion({ ...dimm, memorySize: 0 });
    ch.auditPoint('after delete');
    // the root, L3, L2 and L1 of RAM's path, and L2 and L1 of the DIMM's: all in the DIMM
    expect(ch.violations.map((x) => `${x.id} ${(x.gfn! - DIMM / 4096).toString(16)}`)).toEqual(
      ['0', '1', '2', '3', '4', '5'].map((g) => `INV-SHADOW-001 ${g}`),
    );
    // the guest's tables are gone, yet the stale shadow path still reaches RAM (the kernel: no #PF)
    const after = v.access(0x1000, 'read');
    expect(after).toEqual(before);
    ch.onAccess(v, 0x1000, 'read', after);
    expect(ch.violations.at(-1)!.message).toBe(
      `VM ${vm.id}: read of gpa 0x1000 by vCPU 0 (a guest virtual address) reached pfn 0x${(after as { pfn: number }).pfn.toString(16)}, but KVM's walk of the guest's page tables fails: level-4 table gfn 0x40000 is in no visible memslot`,
    );
    expect(ch.violations.at(-1)!.id).toBe('INV-ACCESS-001');
    expect(mmu.dummyRoots.has(v)).toBe(false);
    kvm.host.exitMm(); // teardown: kvm_mmu_zap_all → unaccount_shadowed finds no slot
    expect(vm.warnings.map((w) => w.id)).toEqual(['INV-SHADOW-UNACCOUNT']);
  });

  it('writeGuestPte/readGuestPte: shadow-paging hosts only, page-aligned tables, 512 entries, 53-bit gPTEs', () => {
    const tdp = new Kvm().createVm(0);
    expect(() => tdp.writeGuestPte(0x1000, 0, 7)).toThrow(
      /^writeGuestPte: guest page tables are modelled under shadow paging only/,
    );
    const { vm } = setup();
    expect(() => vm.readGuestPte(0x1001, 0)).toThrow(/^readGuestPte: tableGpa 0x1001 is not page-aligned/);
    expect(() => vm.writeGuestPte(0x1000, 512, 7)).toThrow(RangeError);
    expect(() => vm.writeGuestPte(0x1000, 0, 2 ** 53)).toThrow(
      /^writeGuestPte: gpte must be an integer in \[0, 2\^53\)/,
    );
    vm.writeGuestPte(0x5000, 3, 0x9007);
    expect(vm.readGuestPte(0x5000, 3)).toBe(0x9007);
  });
});

describe('the guestPaging scenario step', () => {
  const yaml = (host: string, step: string) =>
    `name: s\n${host}vms:\n  - regions:\n      - { name: ram, gpa: 0, size: 2M }\n      - { name: pt, gpa: 0x40000000, size: 64K }\ntimeline:\n  - ${step}\n  - access: { region: ram, offset: 0x3000, length: 4K, kind: write }\n`;

  it('builds the tables in the table region and loads CR3: the access maps through four shadow pages', async () => {
    const p = parseScenario(
      yaml('host: { tdp: false }\n', 'guestPaging: { tables: pt, map: [ram] }'),
      's.yaml',
    );
    if (!p.ok) throw new Error(p.error);
    const r = await runScenario(p.scenario, designById('quirk')!, { audit: 'steps' });
    expect([r.verdict, r.violations.length]).toEqual(['ok', 0]);
    // one fault, four shadow pages created (root, L3, L2, L1: hash misses), one 4K leaf
    expect([r.totals['vcpu.pf_fixed'], r.totals['mmu_cache_miss'], r.totals['pages_4k']]).toEqual([1, 4, 1]);
  });

  it('refuses a TDP host, unknown regions and a pool too small', async () => {
    const tdp = parseScenario(yaml('', 'guestPaging: { tables: pt, map: [ram] }'), 's.yaml');
    expect(tdp).toEqual({
      ok: false,
      error:
        's.yaml:7:18: timeline.0.guestPaging: guest page tables need shadow paging (host: { tdp: false } or profile pvm-6.18)',
    });
    const unk = parseScenario(
      yaml('host: { tdp: false }\n', 'guestPaging: { tables: pt, map: [rom] }'),
      's.yaml',
    );
    expect(unk.ok ? '' : unk.error).toMatch(/timeline\.0\.guestPaging\.map\.0: unknown region 'rom'/);
    // 64K of tables cannot map 2M of RAM plus… it can (4 tables); a 4K pool cannot
    const small = parseScenario(
      yaml('host: { tdp: false }\n', 'guestPaging: { tables: pt, map: [ram] }').replace(
        'size: 64K',
        'size: 4K',
      ),
      's.yaml',
    );
    if (!small.ok) throw new Error(small.error);
    const r = await runScenario(small.scenario, designById('quirk')!, { audit: 'steps' });
    expect(r.verdict).toBe('error');
  });
});
