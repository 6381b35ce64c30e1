/**
 * The 2019 precise zap on the MMU it ran on — EPT out of the shadow MMU's direct pages — and the
 * checker's shadow-page audits. Exact page lists, counts and invariant reports throughout.
 *
 * Mechanism (mmu-zap.md §4.3): v5.1 zapped every valid page whose base gfn lies in the deleted slot.
 * A BAR slot based at a 1 GiB boundary therefore takes the level-2 direct page for that GiB with it,
 * which cuts the level-1 pages below (here the OVMF flash's) loose; they keep their SPTEs in the hash,
 * and the next fault below re-links them as they are. 6.18 zaps no direct page on this path.
 */
import { describe, expect, it } from 'vitest';
import { Kvm, type Vm, type Vcpu } from '../../src/index.ts';
import { Checker } from '../../src/check/checker.ts';
import { KVM_CAP, KVM_MEM_READONLY } from '../../src/uapi/kvm.ts';
import { KVM_X86_QUIRK_SLOT_ZAP_ALL } from '../../src/uapi/kvm_x86.ts';
import { shadowMmuOf, type ShadowMmu } from '../../src/x86/mmu/shadow_mmu.ts';
import type { ShadowPage } from '../../src/x86/mmu/shadow_rmap.ts';
import { loadScenario } from '../../src/scenario/library.ts';
import { compareScenario, type RunResult } from '../../src/scenario/runner.ts';
import type { BugName } from '../../src/kvm/host_profile.ts';
import { pvmVm } from './harness.ts';

const PAGE = 4096;
const FLASH = 0xffe0_0000;
const BAR = 0xc000_0000;

interface Legacy {
  kvm: Kvm;
  vm: Vm;
  v: Vcpu;
  mmu: ShadowMmu;
  bar: { slot: number; flags: number; guestPhysAddr: number; memorySize: number; userspaceAddr: number };
}

/** EPT host with kvm.tdp_mmu=N, quirk off; a read-only 2 MiB flash slot and a 2 MiB BAR slot at 3 GiB. */
function legacy(bugs: BugName[]): Legacy {
  const kvm = new Kvm({ tdpMmu: false, bugs });
  const vm = kvm.createVm(0);
  vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
  vm.setUserMemoryRegion({
    slot: 0,
    flags: KVM_MEM_READONLY,
    guestPhysAddr: FLASH,
    memorySize: 2 << 20,
    userspaceAddr: kvm.host.mmap(2 << 20),
  });
  const bar = {
    slot: 1,
    flags: 0,
    guestPhysAddr: BAR,
    memorySize: 2 << 20,
    userspaceAddr: kvm.host.mmap(2 << 20),
  };
  vm.setUserMemoryRegion(bar);
  const v = vm.createVcpu(0);
  return { kvm, vm, v, mmu: shadowMmuOf(vm)!, bar };
}

const pages = (m: ShadowMmu): string[] =>
  m
    .shadowPages()
    .map(
      (sp) =>
        `${sp.direct ? 'd' : 'i'}L${sp.level}@0x${sp.gfn.toString(16)}${sp.parents.length === 0 && sp.rootCount === 0 ? ' unlinked' : ''}`,
    );
const leafs = (sp: ShadowPage): number => {
  let n = 0;
  for (let i = 0; i < 512; i++) if (sp.isLeaf(i)) n++;
  return n;
};
const find = (m: ShadowMmu, gfn: number, level: number): ShadowPage =>
  m.shadowPages().find((sp) => sp.gfn === gfn && sp.level === level)!;

describe('shadow MMU on an EPT host (tdp: true, tdpMmu: false)', () => {
  it('builds direct pages by gfn rounded to their span; one root for every vCPU; 4K and 2M leafs with memtypes', () => {
    const { kvm, vm, v, mmu } = legacy([]);
    expect(kvm.cfg.tdp).toBe(true);
    expect(kvm.cfg.tdpMmu).toBe(false);
    expect(mmu.tdpEnabled).toBe(true);
    const ram = kvm.host.mmap(4 << 20, { backing: '2m' });
    vm.setUserMemoryRegion({
      slot: 2,
      flags: 0,
      guestPhysAddr: 0x4000_0000,
      memorySize: 4 << 20,
      userspaceAddr: ram,
    });
    expect(v.access(FLASH + 3 * PAGE, 'read')).toMatchObject({ exit: 'none', level: 1, memtype: 6 });
    expect(v.access(0x4020_1000, 'write')).toMatchObject({ exit: 'none', level: 2, memtype: 6 });
    const v1 = vm.createVcpu(1);
    expect(v1.access(0x4020_2000, 'read')).toMatchObject({ exit: 'none', level: 2 }); // shared root: no fault
    expect(pages(mmu)).toEqual(['dL4@0x0', 'dL3@0x0', 'dL2@0xc0000', 'dL1@0xffe00', 'dL2@0x40000']);
    // The 4K fault maps one leaf: direct_pte_prefetch never prefetches from a read-only slot
    // (kvm_prefetch_pages asks gfn_to_hva_many for a writable hva); the 2M fault one leaf.
    const s = vm.getStats();
    expect([s.pages_4k, s.pages_2m, v.getStats().pf_fixed, v1.getStats().pf_fixed]).toEqual([1, 1, 2, 0]);
    expect(find(mmu, 0xffe00, 1).bits![3]! & 0x78).toBe((6 << 3) | 0x40); // WB | IPAT: no non-coherent DMA
    // A write to the read-only flash is emulated (an MMIO exit), no SPTE changes.
    expect(v.access(FLASH, 'write')).toMatchObject({ exit: 'mmio' });
    expect(vm.getStats().pages_4k).toBe(1);
  });

  it('the kernel hash_64 picks the buckets (KVM_MMU_HASH_SHIFT 12)', async () => {
    const { kvmPageTableHashfn } = await import('../../src/x86/mmu/shadow_hash.ts');
    const G = 0x61c8864680b583ebn;
    for (const gfn of [0, 1, 0x200, 0xc0000, 0xffe00, 0x100000, 0x80a000, 2 ** 40 - 1, 2 ** 52 - 1])
      expect(kvmPageTableHashfn(gfn), `gfn ${gfn}`).toBe(
        Number(((BigInt(gfn) * G) & 0xffffffffffffffffn) >> 52n),
      );
  });

  for (const bug of [true, false]) {
    it(`${bug ? '2019 filter' : '6.18'}: deleting a BAR based at 3 GiB ${bug ? 'cuts the flash page loose; the next fault re-links it as it is' : 'zaps no direct page'}`, () => {
      const { vm, v, mmu, bar } = legacy(bug ? ['shadow-2019-precise-zap'] : []);
      v.access(FLASH, 'read');
      v.access(BAR, 'write');
      expect(pages(mmu)).toEqual(['dL4@0x0', 'dL3@0x0', 'dL2@0xc0000', 'dL1@0xffe00', 'dL1@0xc0000']);
      const flash = find(mmu, 0xffe00, 1);
      const z0 = vm.getStats().mmu_shadow_zapped!;
      vm.setUserMemoryRegion({ ...bar, memorySize: 0 });
      expect(vm.getStats().mmu_shadow_zapped! - z0).toBe(bug ? 2 : 0);
      expect(pages(mmu)).toEqual(
        bug
          ? ['dL4@0x0', 'dL3@0x0', 'dL1@0xffe00 unlinked']
          : ['dL4@0x0', 'dL3@0x0', 'dL2@0xc0000', 'dL1@0xffe00', 'dL1@0xc0000'],
      );
      // One leaf each: no prefetch from the read-only flash, nor around the BAR page the host never touched.
      expect(leafs(flash)).toBe(1);
      expect(vm.getStats().pages_4k).toBe(1); // the BAR's leaf went through the rmaps in both versions
      const t0 = v.getStats().pf_taken!;
      expect(v.access(FLASH, 'read')).toMatchObject({ exit: 'none', level: 1 });
      // 2019: one EPT violation; direct_map finds 0xc0000/L2 missing, makes a new one, and finds the old
      // flash page in the hash: same object, same SPTE, the faulting one unchanged (spurious).
      expect(v.getStats().pf_taken! - t0).toBe(bug ? 1 : 0);
      expect(find(mmu, 0xffe00, 1)).toBe(flash);
      expect(flash.parents.map((p) => `L${p.sp.level}@0x${p.sp.gfn.toString(16)}[${p.i}]`)).toEqual([
        'L2@0xc0000[511]',
      ]);
      expect(v.getStats().pf_spurious).toBe(bug ? 1 : 0);
    });
  }
});

describe('checker: shadow-page audits', () => {
  it("'shadow-leafs-only-zap' (6.12-rc1): a page shadowing a guest table outlives its slot — INV-SHADOW-001, then unaccount_shadowed finds no slot", () => {
    for (const bug of [true, false]) {
      const { kvm, vm, h } = pvmVm();
      if (bug) h.mmu.bugLeafsOnlyZap = true;
      vm.enableCap({ cap: KVM_CAP.KVM_CAP_DISABLE_QUIRKS2, args: [KVM_X86_QUIRK_SLOT_ZAP_ALL] });
      const ch = new Checker(kvm, { audit: 'points' });
      ch.watch(vm);
      // The harness's page tables live in its slot at 63 GiB: deleting it must take the indirect pages along.
      h.runAccesses([{ gpa: 0xf_c000_0000 + 20 * PAGE, kind: 'write' }]);
      const indirect = h.mmu.shadowPages().filter((sp) => !sp.direct).length;
      expect(indirect).toBe(4);
      vm.setUserMemoryRegion({
        slot: 32763,
        flags: 0,
        guestPhysAddr: 0xf_c000_0000,
        memorySize: 0,
        userspaceAddr: 0,
      });
      ch.setStep('delete the slot holding the guest page tables');
      ch.auditPoint('postMemslotUpdate');
      const found = ch.violations.map((x) => `${x.id} ${x.gfn?.toString(16)}`);
      // The root (CR3: the pool's first table page, after the code and the 16 list pages) and the 3 below.
      expect(found).toEqual(
        bug
          ? [
              'INV-SHADOW-001 fc0019',
              'INV-SHADOW-001 fc001a',
              'INV-SHADOW-001 fc001b',
              'INV-SHADOW-001 fc001c',
            ]
          : [],
      );
      kvm.host.exitMm(); // VM teardown: kvm_mmu_zap_all
      expect(vm.warnings.map((w) => w.id)).toEqual(bug ? ['INV-SHADOW-UNACCOUNT'] : []);
    }
  });

  it('INV-RMAP-001 (a leaf missing from its rmap) and INV-SHADOW-002 (an obsolete root with no request to drop it)', () => {
    const { kvm, vm, v, mmu } = legacy([]);
    const ch = new Checker(kvm, { audit: 'points' });
    ch.watch(vm);
    v.access(FLASH + 4 * PAGE, 'read');
    const slot = vm.activeMemslots(0).idToMemslot(0)!;
    (slot.arch.rmap as [Map<number, unknown[]>, Map<number, unknown[]>])[0].delete(4);
    mmu.mmuValidGen ^= 1; // roots become obsolete behind the vCPUs' backs
    ch.auditPoint('broken');
    expect(ch.violations.map((x) => `${x.id} ${x.gfn?.toString(16) ?? ''}`)).toEqual([
      'INV-RMAP-001 ffe04',
      'INV-SHADOW-002 ',
    ]);
  });

  it('kvm_zap_gfn_range reaches direct pages through the rmaps (kvm_rmap_zap_gfn_range) and flushes', async () => {
    const { kvmZapGfnRange, GFN_ALL_END } = await import('../../src/x86/mmu/zap_gfn_range.ts');
    const { vm, v } = legacy([]);
    v.access(FLASH, 'read');
    v.access(BAR, 'write');
    const f0 = vm.getStats().remote_tlb_flush_requests!;
    kvmZapGfnRange(vm, 0xc0000, 0xc0004);
    // The BAR's one leaf (no prefetch around a page the host never touched) goes; the flash's stays.
    expect([vm.getStats().pages_4k, vm.getStats().remote_tlb_flush_requests! - f0]).toEqual([1, 1]);
    kvmZapGfnRange(vm, 0, GFN_ALL_END);
    expect(vm.getStats().pages_4k).toBe(0);
  });

  it('INV-RMAP-001: a leaf dropped without its rmap entry, and an rmap entry left behind', () => {
    const { kvm, vm, v, mmu } = legacy([]);
    const ch = new Checker(kvm, { audit: 'points' });
    ch.watch(vm);
    v.access(FLASH + 2 * PAGE, 'read');
    const flash = find(mmu, 0xffe00, 1);
    flash.pfn![2] = -1; // lost SPTE, rmap entry stays
    ch.auditPoint('broken');
    expect(ch.violations.map((x) => x.id)).toEqual(['INV-RMAP-001']);
    expect(ch.violations[0]!.message).toContain(
      'rmap entry 2 points at entry 2 of direct shadow page gfn 0xffe00 level 1',
    );
  });
});

/** "invariant@step ×count", in order of first appearance. */
const fired = (r: RunResult): string[] => {
  const m = new Map<string, number>();
  for (const x of r.violations) m.set(`${x.id}@${x.step}`, (m.get(`${x.id}@${x.step}`) ?? 0) + 1);
  return [...m].map(([k, n]) => `${k} ×${n}`);
};

async function runWith(bugs: BugName[]): Promise<Record<string, string[]>> {
  const r = loadScenario('vfio-2019-shadow');
  if (!r.ok) throw new Error(r.error);
  const sc = { ...r.scenario, host: { ...r.scenario.host, bugs } };
  const out: Record<string, string[]> = {};
  for (const run of (await compareScenario(sc, { audit: 'steps' })).runs) out[run.design] = fired(run);
  return out;
}

describe("vfio-2019-shadow: Alex Williamson's report on the shadow MMU's EPT", () => {
  const CD = [
    'INV-MEMTYPE-001@boot[0] BSP clears CR0.CD ×64',
    'INV-MEMTYPE-001@boot[0] APs touch RAM above 4G with CD=1 ×128',
  ];
  it('2019 code: the precise zap leaves the flash page cut loose with 64 stale SPTEs, the checker flags it, and its re-link serves 63 reads with WB instead of UC; zap-all hides it after the remap', async () => {
    const r = await runWith(['shadow-2019-precise-zap', 'vfio-2019-memtype']);
    expect(r['quirk-off']).toEqual([
      ...CD,
      'INV-MEMTYPE-001@boot[0] PCI re-enumeration turns BAR decode off[0] #1 delete gpu-bar0 ×64',
      'INV-ACCESS-005@boot[0] runtime services read the flash again ×63',
    ]);
    for (const d of ['quirk', 'vm-type', 'slot-flag']) expect(r[d], d).toEqual(CD);
  });

  it('6.18 code passes under every design', async () => {
    const r = await runWith([]);
    expect(Object.keys(r)).toEqual(['quirk', 'quirk-off', 'vm-type', 'slot-flag']);
    for (const d of Object.keys(r)) expect(r[d], d).toEqual([]);
  });

  it('finding: the sp->gfn filter is not needed — v5.3 memtypes with the 6.18 zap fail the same reads (all 64: nothing re-faults)', async () => {
    const r = await runWith(['vfio-2019-memtype']);
    expect(r['quirk-off']).toEqual([
      ...CD,
      'INV-ACCESS-005@boot[0] runtime services read the flash again ×64',
    ]);
    const only2019Zap = await runWith(['shadow-2019-precise-zap']);
    for (const d of Object.keys(only2019Zap)) expect(only2019Zap[d], d).toEqual([]);
  });
});
