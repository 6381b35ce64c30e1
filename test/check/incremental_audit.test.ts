/**
 * Incremental whole-VM audits (src/check/audit_delta.ts) find exactly what whole walks find: every library
 * scenario (some with smaller parameters) and every bug fixture, under every design, in `check` mode
 * (audits after every step), gives the same runs — verdicts, violations with their steps, messages and
 * traces, counts — with incremental audits on and off; and the incremental runs really did skip tables.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadScenario } from '../../src/scenario/library.ts';
import { compareScenario } from '../../src/scenario/runner.ts';
import { AuditDelta } from '../../src/check/audit_delta.ts';
import { Kvm } from '../../src/index.ts';
import { Checker } from '../../src/check/checker.ts';
import type { X86Mmu } from '../../src/x86/mmu/mmu.ts';
import { spteIndex } from '../../src/x86/mmu/tdp_iter.ts';
import { childTableOf } from '../../src/x86/mmu/sp_pool.ts';
import { isLastSpte } from '../../src/x86/mmu/spte.ts';

/** Count the audits that walked only what changed (begin() returned a filter). */
let partial = 0;
const begin = AuditDelta.prototype.begin;
AuditDelta.prototype.begin = function (this: AuditDelta, ...a: Parameters<typeof begin>) {
  const f = begin.apply(this, a);
  if (f !== null) partial++;
  return f;
};
afterAll(() => {
  AuditDelta.prototype.begin = begin;
});

const fixtures = fileURLToPath(new URL('../scenarios/fixtures/bugs/', import.meta.url));
const CASES: [string, Record<string, string>][] = [
  ['firmware-boot', {}],
  ['live-migration', {}],
  ['memory-hotplug', { dimms: '48', unplug: '12', ramSet: '256' }],
  ['ram-scaling', { ram: '2G', touched: '2G', deletes: '2' }],
  ['refault-storm', { workingSet: '32' }],
  ['smram-toggle', {}],
  ['snp-boot', {}],
  ['tdx-boot', {}],
  ['vfio-2019', {}],
  ['vfio-2019-shadow', {}],
  ['vsm-permission-split', { splits: '8' }],
  ...readdirSync(fixtures)
    .filter((f) => f.endsWith('.yaml'))
    .map((f): [string, Record<string, string>] => [fixtures + f, {}]),
];

describe('incremental audits give the same findings as whole ones', () => {
  for (const [name, params] of CASES) {
    it(`${name.split('/').pop()} ${JSON.stringify(params)}`, async () => {
      const r = loadScenario(name, params);
      if (!r.ok) throw new Error(r.error);
      const before = partial;
      const inc = await compareScenario(r.scenario, { audit: 'steps' });
      const used = partial - before;
      const whole = await compareScenario(r.scenario, { audit: 'steps', incrementalAudits: false });
      expect(JSON.stringify(inc)).toBe(JSON.stringify(whole));
      // TDX, private memory and the shadow MMU are always audited whole; everything else skips tables
      const skips = !/tdx|snp|shadow|gmem/.test(name);
      if (skips) expect(used).toBeGreaterThan(0);
    }, 120_000);
  }
});

describe('what an incremental audit walks', () => {
  const MiB = 1 << 20;
  /** 8 MiB at gpa 0 (4K or THP), 64 pages touched, one whole audit done. */
  function setup(backing: '4k' | 'thp') {
    const kvm = new Kvm();
    const vm = kvm.createVm(0);
    const hva = kvm.host.mmap(8 * MiB, { backing });
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 8 * MiB, userspaceAddr: hva });
    const v = vm.createVcpu(0);
    const ch = new Checker(kvm, { audit: 'points' });
    ch.watch(vm);
    for (let i = 0; i < 64; i++) ch.onAccess(v, i * 4096 * 32, 'write', v.access(i * 4096 * 32, 'write'));
    ch.auditPoint('first');
    expect(ch.violations).toEqual([]);
    const mmu = vm.mmu as X86Mmu;
    return { kvm, vm, v, ch, mmu, pool: mmu.tdp.pool };
  }
  /** The leaf translating gfn in the vCPU's root. */
  function leafAt(s: ReturnType<typeof setup>, gfn: number) {
    let table = s.v.mmu.root;
    for (let level = s.pool.role[table]! & 0xf; level >= 1; level--) {
      const index = spteIndex(gfn, level);
      const lo = s.pool.readLo(table, index);
      if (isLastSpte(lo, level)) return { table, index, level, lo, hi: s.pool.readHi(table, index) };
      table = childTableOf(lo, s.pool.readHi(table, index));
    }
    throw new Error('no leaf');
  }
  /** Point the leaf of gfn at another pfn, through the TDP engine's recorder (as its writers report). */
  function repoint(s: ReturnType<typeof setup>, gfn: number, notify: boolean): void {
    const l = leafAt(s, gfn);
    const lo = l.lo ^ (1 << 12); // the next or previous pfn
    s.pool.write(l.table, l.index, lo, l.hi);
    if (notify)
      s.mmu.tdp.recorder!.spteChanged(
        0,
        gfn - (gfn % (l.level === 2 ? 512 : 1)),
        l.level,
        l.lo,
        l.hi,
        lo,
        l.hi,
      );
  }

  for (const backing of ['4k', 'thp'] as const) {
    it(`a ${backing} leaf the engine rewrote is walked (and found wrong)`, () => {
      const s = setup(backing);
      s.ch.auditPoint('quiet'); // nothing changed: an incremental audit that walks only the roots' top
      expect(s.ch.incrementalAudits).toBe(1);
      repoint(s, 32 * 5, true);
      s.ch.auditPoint('after');
      expect(s.ch.incrementalAudits).toBe(2);
      expect(s.ch.violations.map((v) => v.id)).toEqual(['INV-PFN-002']);
    });
  }

  it('trusts the engine: a write it did not report is found by the next whole audit only', () => {
    const s = setup('4k');
    repoint(s, 32 * 7, false);
    s.ch.auditPoint('after');
    expect(s.ch.violations).toEqual([]);
    const whole = new Checker(s.kvm, { audit: 'points', incremental: false });
    whole.watch(s.vm);
    whole.auditPoint('whole');
    expect(whole.violations.map((v) => v.id)).toEqual(['INV-PFN-002']);
  });

  it('a memslot change makes its gfns walked: a leaf under a new slot is checked against it', () => {
    const kvm = new Kvm();
    const vm = kvm.createVm(0);
    vm.setUserMemoryRegion({
      slot: 0,
      guestPhysAddr: 0,
      memorySize: 1 * MiB,
      userspaceAddr: kvm.host.mmap(1 * MiB),
    });
    const v = vm.createVcpu(0);
    const ch = new Checker(kvm, { audit: 'points' });
    ch.watch(vm);
    for (let i = 0; i < 8; i++) ch.onAccess(v, i * 4096, 'write', v.access(i * 4096, 'write'));
    ch.auditPoint('touched');
    const s = { v, pool: (vm.mmu as X86Mmu).tdp.pool } as ReturnType<typeof setup>;
    // gfn 300 (no slot yet) gets, unreported, a copy of gfn 0's leaf: an incremental audit trusts the engine
    const l0 = leafAt(s, 0);
    s.pool.write(l0.table, 300, l0.lo, l0.hi);
    ch.auditPoint('unchanged');
    expect(ch.violations).toEqual([]);
    // a new slot over it: its gfns are walked, and the leaf does not map the slot's (absent) page
    vm.setUserMemoryRegion({
      slot: 1,
      guestPhysAddr: 1 * MiB,
      memorySize: 1 * MiB,
      userspaceAddr: kvm.host.mmap(1 * MiB),
    });
    ch.auditPoint('created');
    expect(ch.incrementalAudits).toBe(2);
    expect(ch.violations.map((x) => [x.id, x.gfn])).toEqual([['INV-PFN-002', 300]]);
  });

  it('a host page fault-in makes the gfns over it walked', () => {
    const s = setup('4k');
    // gfn 1's leaf (unreported) pointed at gfn 0's page while gfn 1's host page does not exist yet
    const l0 = leafAt(s, 0);
    const l = leafAt(s, 0);
    s.pool.write(l.table, 1, l0.lo, l0.hi);
    s.ch.auditPoint('stale');
    expect(s.ch.violations).toEqual([]);
    s.kvm.host.hvaToPfn(s.vm.activeMemslots(0).searchMemslots(1)!.userspaceAddr + 4096, true);
    s.ch.auditPoint('faulted in');
    expect(s.ch.incrementalAudits).toBe(2);
    expect(s.ch.violations.map((v) => [v.id, v.gfn])).toEqual([['INV-PFN-002', 1]]);
  });
});
