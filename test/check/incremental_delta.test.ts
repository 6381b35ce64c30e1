/**
 * The incremental audit's shortcuts find what a whole audit finds, at the same point, with the same
 * invariant ID and message: the TLB audit that checks only entries over gfns some TLB entry changed,
 * appeared or went away at since the last audit (src/check/tlb_seen.ts), and the SPTE walk that visits
 * only the 4K entries the engine changed and steps over 4K tables of 2M regions without a present leaf
 * (src/check/audit_dirty.ts, leaf_counts.ts). Each test runs two checkers on one VM, incremental and
 * whole, breaks the state (a bug switch, or a TLB entry or SPTE written directly) and compares their
 * violations; and the leaf counts kept from the engine's reports equal a count from the tables after
 * every audit of six library scenarios.
 */
import { describe, expect, it } from 'vitest';
import { Kvm, type BugName, type Vcpu, type Vm } from '../../src/index.ts';
import { Checker } from '../../src/check/checker.ts';
import { AuditDelta } from '../../src/check/audit_delta.ts';
import { LeafCounts } from '../../src/check/leaf_counts.ts';
import { auditSptes } from '../../src/check/audit_mmu.ts';
import type { VmState } from '../../src/kvm/vm_state.ts';
import type { X86Mmu } from '../../src/x86/mmu/mmu.ts';
import { spteIndex } from '../../src/x86/mmu/tdp_iter.ts';
import { childTableOf } from '../../src/x86/mmu/sp_pool.ts';
import { FROZEN_SPTE_HI, FROZEN_SPTE_LO, isLastSpte, isShadowPresentPte } from '../../src/x86/mmu/spte.ts';
import { loadScenario } from '../../src/scenario/library.ts';
import { runScenario } from '../../src/scenario/runner.ts';
import { designsFor } from '../../src/scenario/designs.ts';
import { guest, touch, BAR_GPA, MiB, RAM_SIZE } from '../mmu/fixture.ts';

/** An incremental and a whole checker on the same VM, driven alike. */
function pair(kvm: Kvm, vm: Vm) {
  const inc = new Checker(kvm, { audit: 'points' });
  const whole = new Checker(kvm, { audit: 'points', incremental: false });
  inc.watch(vm);
  whole.watch(vm);
  return {
    inc,
    whole,
    step(label: string) {
      inc.setStep(label);
      whole.setStep(label);
    },
    point(name: string) {
      inc.auditPoint(name);
      whole.auditPoint(name);
    },
    access(v: Vcpu, gpa: number, kind: 'read' | 'write' = 'read') {
      const r = v.access(gpa, kind);
      inc.onAccess(v, gpa, kind, r);
      whole.onAccess(v, gpa, kind, r);
      return r;
    },
    /** a checker's record of the VM (what its next audit compares against; the whole one's is recounted) */
    delta(ch: Checker = inc): AuditDelta {
      return (ch as unknown as { watched: { delta: AuditDelta }[] }).watched[0]!.delta;
    },
  };
}

/** [id, step, message] of each violation. */
const found = (ch: Checker) => ch.violations.map((v) => [v.id, v.step, v.message]);

/** Region → count, sorted. */
const counts = (c: LeafCounts) => [...c.entries()].sort((a, b) => a[0] - b[0]);

/** The table of `level` whose entries cover gfn in the vCPU's root (the walk stops at a leaf). */
function tableAt(vm: Vm, v: Vcpu, gfn: number, level: number): number {
  const pool = (vm.mmu as X86Mmu).tdp.pool;
  let table = v.mmu.root;
  for (let l = pool.role[table]! & 0xf; l > level; l--) {
    const i = spteIndex(gfn, l);
    const lo = pool.readLo(table, i);
    if (!isShadowPresentPte(lo) || isLastSpte(lo, l)) throw new Error(`no table at level ${level}`);
    table = childTableOf(lo, pool.readHi(table, i));
  }
  return table;
}

describe('TLB audits check the mapping classes that changed', () => {
  function twoVcpus() {
    const kvm = new Kvm();
    const vm = kvm.createVm(0);
    vm.setUserMemoryRegion({
      slot: 0,
      guestPhysAddr: 0,
      memorySize: 4 * MiB,
      userspaceAddr: kvm.host.mmap(4 * MiB),
    });
    const v = [vm.createVcpu(0), vm.createVcpu(1)];
    const p = pair(kvm, vm);
    p.step('touch');
    for (const x of v) for (let g = 0; g < 8; g++) p.access(x, g * 4096, 'write');
    p.point('touched');
    expect(p.inc.violations).toEqual([]);
    return { kvm, vm, v, p };
  }

  it('a class one vCPU drops is checked again in the others (the memo picks the next holder)', () => {
    const { v, p } = twoVcpus();
    p.step('stale');
    // both TLBs translate gfn 3 to gfn 4's page: one mapping class, reported once, under vCPU 0
    const wrong = v[0]!.tlb.lookup(4)!.pfn;
    for (const x of v) x.tlb.fill(3, wrong, 1, true, 6);
    p.point('postStep');
    p.step('flush vCPU 0');
    v[0]!.tlb.flushAll();
    const before = p.inc.incrementalTlbAudits;
    p.point('postStep');
    expect(p.inc.incrementalTlbAudits).toBe(before + 1);
    const msg = (vcpu: number) =>
      `VM ${v[0]!.vm.id} at postStep: vCPU ${vcpu} TLB entry (level 1) maps gfn 0x3 to pfn 0x${wrong.toString(16)}, but the host page there is 0x${(wrong - 1).toString(16)}`;
    expect(found(p.whole)).toEqual([
      ['INV-PFN-002', 'stale', msg(0)],
      ['INV-PFN-002', 'flush vCPU 0', msg(1)],
    ]);
    expect(p.inc.violations).toEqual(p.whole.violations);
  });

  it('an entry one vCPU gains is checked, the classes no TLB touched are not', () => {
    const { v, p } = twoVcpus();
    p.step('fill');
    const wrong = v[0]!.tlb.lookup(6)!.pfn;
    v[1]!.tlb.fill(2, wrong, 1, false, 6);
    const before = p.inc.incrementalTlbAudits;
    p.point('postStep');
    expect(p.inc.incrementalTlbAudits).toBe(before + 1);
    expect(found(p.inc)).toEqual([
      [
        'INV-PFN-002',
        'fill',
        `VM ${v[0]!.vm.id} at postStep: vCPU 1 TLB entry (level 1) maps gfn 0x2 to pfn 0x${wrong.toString(16)}, but the host page there is 0x${(wrong - 4).toString(16)}`,
      ],
    ]);
    expect(p.inc.violations).toEqual(p.whole.violations);
  });

  it("'precise-zap-no-flush': INV-ZAP-002 for each of the 16 entries at delete-bar, from an incremental TLB audit", () => {
    const g = guest({ kvm: { bugs: ['precise-zap-no-flush'] as BugName[] }, quirk: false, vcpus: 2 });
    const p = pair(g.kvm, g.vm);
    p.step('touch-bar');
    expect(touch(g.vcpus[1]!, BAR_GPA, 16)).toBe(16);
    p.point('postStep');
    p.step('delete-bar');
    g.vm.setUserMemoryRegion({ slot: 1, memorySize: 0 });
    const before = p.inc.incrementalTlbAudits;
    p.point('postMemslotUpdate');
    expect(p.inc.incrementalTlbAudits).toBe(before + 1);
    p.step('access-after');
    p.access(g.vcpus[1]!, BAR_GPA + 0x2000);
    expect(p.inc.violations.filter((x) => x.id === 'INV-ZAP-002')).toHaveLength(16);
    expect(p.inc.violations[0]!.message).toBe(
      `VM ${g.vm.id} at postMemslotUpdate: vCPU 1 TLB entry (level 1) still translates gfn 0x10000 → pfn 0x${g.vcpus[1]!.tlb.lookup(0x10000)!.pfn.toString(16)} with no live memslot there, and no flush is pending`,
    );
    expect(p.inc.violations).toEqual(p.whole.violations);
  });
});

describe('the SPTE walk steps over 4K tables of regions without a present leaf', () => {
  /** Quirk off: deleting the BAR slot zaps its leafs and leaves their (now empty) 4K table linked. */
  function emptiedBar() {
    const g = guest({ quirk: false, vcpus: 1 });
    const v = g.vcpus[0]!;
    const p = pair(g.kvm, g.vm);
    p.step('touch');
    for (let i = 0; i < 16; i++) p.access(v, BAR_GPA + i * 4096, 'write');
    p.access(v, 0, 'write');
    p.point('postStep');
    p.step('delete-bar');
    g.vm.setUserMemoryRegion({ slot: 1, memorySize: 0 });
    p.point('postMemslotUpdate');
    const gfn = BAR_GPA / 4096;
    expect(p.delta().leafs.at(gfn / 512)).toBe(0);
    return { g, v, p, gfn, table: tableAt(g.vm, v, gfn, 1) };
  }

  it('an odd entry the engine reports there is walked: INV-SPTE-002 at the same point as a whole walk', () => {
    const { g, p, gfn, table } = emptiedBar();
    p.step('freeze');
    const tdp = (g.vm.mmu as X86Mmu).tdp;
    const lo = tdp.pool.readLo(table, 5);
    const hi = tdp.pool.readHi(table, 5);
    tdp.pool.write(table, 5, FROZEN_SPTE_LO, FROZEN_SPTE_HI);
    tdp.recorder!.spteChanged(0, gfn + 5, 1, lo, hi, FROZEN_SPTE_LO, FROZEN_SPTE_HI);
    const before = p.inc.incrementalAudits;
    p.point('postStep');
    expect(p.inc.incrementalAudits).toBe(before + 1);
    expect(found(p.inc)).toEqual([
      [
        'INV-SPTE-002',
        'freeze',
        `VM ${g.vm.id} at postStep: frozen SPTE at gfn 0x${(gfn + 5).toString(16)} level 1 outside mmu_lock`,
      ],
    ]);
    expect(p.inc.violations).toEqual(p.whole.violations);
  });

  it('trusts the engine: a leaf written there without a report is found by whole walks only', () => {
    const { g, v, p, table } = emptiedBar();
    p.step('unreported');
    const ram = tableAt(g.vm, v, 0, 1);
    const tdp = (g.vm.mmu as X86Mmu).tdp;
    tdp.pool.write(table, 5, tdp.pool.readLo(ram, 0), tdp.pool.readHi(ram, 0));
    // a new slot over the region: its leafs would be checked against it, but the region has none known
    g.vm.setUserMemoryRegion({
      slot: 1,
      guestPhysAddr: BAR_GPA,
      memorySize: 2 * MiB,
      userspaceAddr: g.kvm.host.mmap(2 * MiB),
    });
    p.point('postMemslotUpdate');
    expect(p.inc.violations).toEqual([]);
    expect(found(p.whole).map((f) => f[0])).toEqual(['INV-PFN-002']);
  });

  it('the counts follow faults, splits, precise zaps and notifier zaps (equal to a recount)', () => {
    const g = guest({ quirk: false, backing: 'thp', vcpus: 1 });
    const v = g.vcpus[0]!;
    const p = pair(g.kvm, g.vm);
    const check = (label: string, act: () => void) => {
      p.step(label);
      act();
      p.point('postStep');
      expect(counts(p.delta().leafs)).toEqual(counts(p.delta(p.whole).leafs));
    };
    check('4k faults in the BAR', () => touch(v, BAR_GPA, 40, 'write'));
    check('thp faults in RAM', () => touch(v, 0, 4, 'write'));
    const ram = g.vm.memslots()[0]!;
    check('dirty logging on, a write splits the 2M leaf', () => {
      g.vm.setUserMemoryRegion({ slot: 0, flags: 1, memorySize: RAM_SIZE, userspaceAddr: ram.userspaceAddr });
      touch(v, 5 * 4096, 1, 'write');
    });
    expect(p.delta().leafs.at(0)).toBe(512);
    check('notifier zap of 8 pages', () => g.kvm.host.migrate(ram.userspaceAddr + 16 * 4096, 8 * 4096));
    check('refault', () => touch(v, 16 * 4096, 8, 'write'));
    check('precise zap of the BAR', () => g.vm.setUserMemoryRegion({ slot: 1, memorySize: 0 }));
    expect(p.delta().leafs.at(BAR_GPA / 4096 / 512)).toBe(0);
    check('precise zap of RAM', () =>
      g.vm.setUserMemoryRegion({ slot: 0, flags: 1, memorySize: 0, userspaceAddr: ram.userspaceAddr }),
    );
    expect(counts(p.delta().leafs)).toEqual([]);
    expect(p.inc.incrementalAudits).toBeGreaterThan(2);
    expect(p.inc.violations).toEqual(p.whole.violations);
  });
});

describe('leaf counts equal a recount at every audit of the library scenarios', () => {
  const CASES: [string, Record<string, string>][] = [
    ['live-migration', {}],
    ['memory-hotplug', { dimms: '24', unplug: '8', ramSet: '128' }],
    ['ram-scaling', { ram: '2G', touched: '2G', deletes: '2' }],
    ['refault-storm', { workingSet: '32' }],
    ['firmware-boot', {}],
    ['vsm-permission-split', { splits: '3' }],
  ];
  for (const [name, params] of CASES) {
    it(`${name} ${JSON.stringify(params)}`, async () => {
      const begin = AuditDelta.prototype.begin;
      const seen = new WeakSet<AuditDelta>();
      let compared = 0;
      AuditDelta.prototype.begin = function (this: AuditDelta, vm: VmState) {
        // (once everything below the roots is suspect the notes stop: that audit walks all and recounts)
        const everything = (this as unknown as { pending: { everything: boolean } }).pending.everything;
        if (seen.has(this) && !everything) {
          const fresh = new LeafCounts();
          auditSptes(vm, () => {}, undefined, null, fresh);
          expect(counts(this.leafs)).toEqual(counts(fresh));
          compared++;
        }
        seen.add(this);
        return begin.call(this, vm);
      };
      try {
        const r = loadScenario(name, params);
        if (!r.ok) throw new Error(r.error);
        for (const d of designsFor(r.scenario).allowed) {
          const run = await runScenario(r.scenario, d, { audit: 'steps' });
          expect(run.verdict).toBe('ok');
        }
      } finally {
        AuditDelta.prototype.begin = begin;
      }
      expect(compared).toBeGreaterThan(10);
    }, 60_000);
  }
});
