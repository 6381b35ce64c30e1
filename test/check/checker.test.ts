/**
 * The checker itself: each invariant fires on a hand-broken state (SPTEs, roots, TLB entries, bindings
 * written directly) and stays silent on the good one; audit levels and the trace ring behave.
 */
import { describe, expect, it } from 'vitest';
import { Kvm, type Vm, type Vcpu } from '../../src/index.ts';
import { Checker } from '../../src/check/checker.ts';
import type { X86Mmu } from '../../src/x86/mmu/mmu.ts';
import { spteIndex } from '../../src/x86/mmu/tdp_iter.ts';
import { childTableOf } from '../../src/x86/mmu/sp_pool.ts';
import {
  FROZEN_SPTE_HI,
  FROZEN_SPTE_LO,
  isLastSpte,
  isShadowPresentPte,
  pfnLo,
  SPTE_BASE_ADDR_MASK_LO,
} from '../../src/x86/mmu/spte.ts';
import { ROLE_INVALID } from '../../src/x86/mmu/mmu_internal.ts';
import type { KvmGmemFile } from '../../src/kvm/guest_memfd.ts';

const MiB = 1 << 20;

interface Setup {
  kvm: Kvm;
  vm: Vm;
  v: Vcpu;
  ch: Checker;
  mmu: X86Mmu;
}

/** One slot of `size` at gpa 0, one vCPU, a checker; the first `touch` pages written. */
function setup(size = 3 * MiB, backing: '4k' | 'thp' = '4k', touch = 8): Setup {
  const kvm = new Kvm();
  const vm = kvm.createVm(0);
  const hva = kvm.host.mmap(size, { backing });
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: size, userspaceAddr: hva });
  const v = vm.createVcpu(0);
  const ch = new Checker(kvm, { audit: 'points' });
  ch.watch(vm);
  ch.setStep('touch');
  for (let i = 0; i < touch; i++) ch.onAccess(v, i * 4096, 'write', v.access(i * 4096, 'write'));
  ch.setStep('broken');
  return { kvm, vm, v, ch, mmu: vm.mmu as X86Mmu };
}

/** Where the leaf translating gfn lives in the vCPU's root. */
function leafAt(s: Setup, gfn: number): { table: number; index: number; level: number } {
  const pool = s.mmu.tdp.pool;
  let table = s.v.mmu.root;
  for (let level = pool.role[table]! & 0xf; level >= 1; level--) {
    const index = spteIndex(gfn, level);
    const lo = pool.readLo(table, index);
    if (!isShadowPresentPte(lo)) throw new Error(`gfn ${gfn} not mapped`);
    if (isLastSpte(lo, level)) return { table, index, level };
    table = childTableOf(lo, pool.readHi(table, index));
  }
  throw new Error('no leaf');
}

const ids = (ch: Checker): string[] => [...new Set(ch.violations.map((v) => v.id))];

function audited(s: Setup): string[] {
  s.ch.auditPoint('postStep');
  return ids(s.ch);
}

describe('Checker on good states', () => {
  it('is silent on a touched guest, at every audit level', () => {
    for (const audit of ['off', 'points', 'full'] as const) {
      const kvm = new Kvm();
      const vm = kvm.createVm(0);
      vm.setUserMemoryRegion({
        slot: 0,
        memorySize: 4 * MiB,
        userspaceAddr: kvm.host.mmap(4 * MiB, { backing: 'thp' }),
      });
      const v = vm.createVcpu(0);
      const ch = new Checker(kvm, { audit });
      ch.watch(vm);
      for (let i = 0; i < 1100; i += 7) ch.onAccess(v, i * 4096, 'read', v.access(i * 4096, 'read'));
      ch.onAccess(v, 0x40000000, 'write', v.access(0x40000000, 'write'));
      ch.auditPoint('postStep');
      expect(ch.violations).toEqual([]);
    }
  });
  it('rejects an unknown audit level', () => {
    expect(() => new Checker(new Kvm(), { audit: 'some' as 'off' })).toThrow(TypeError);
  });
});

describe('each invariant fires on a hand-broken state', () => {
  it('INV-SPTE-001: a non-present SPTE without bit 63', () => {
    const s = setup();
    s.mmu.tdp.pool.write(s.v.mmu.root, 511, 0, 0);
    expect(audited(s)).toEqual(['INV-SPTE-001']);
  });
  it('INV-SPTE-002: a frozen SPTE at an audit point', () => {
    const s = setup();
    s.mmu.tdp.pool.write(s.v.mmu.root, 510, FROZEN_SPTE_LO, FROZEN_SPTE_HI);
    expect(audited(s)).toEqual(['INV-SPTE-002']);
  });
  it('INV-ROOT-001 / INV-ROOT-002: refcounts below the holders, a vCPU holding a freed root', () => {
    const s = setup();
    s.mmu.tdp.pool.rootCount[s.v.mmu.root] = 1; // the vCPU's reference, but not the TDP MMU's
    expect(audited(s)).toEqual(['INV-ROOT-001']);
    const t = setup();
    t.v.mmu.mirrorRoot = 4000;
    expect(audited(t)).toEqual(['INV-ROOT-002']);
  });
  it('INV-ZAP-001: a leaf for a gfn no slot holds', () => {
    const s = setup(1 * MiB);
    const l = leafAt(s, 5);
    const pool = s.mmu.tdp.pool;
    pool.write(l.table, 400, pool.readLo(l.table, l.index), pool.readHi(l.table, l.index));
    expect(audited(s)).toEqual(['INV-ZAP-001']);
    expect(s.ch.violations[0]).toMatchObject({ gfn: 400, step: 'broken' });
  });
  it('INV-ZAP-002: a TLB entry for a gfn no slot holds, with no flush pending', () => {
    const s = setup();
    s.v.tlb.fill(0x50000, 3, 1, true, 6);
    expect(audited(s)).toEqual(['INV-ZAP-002']);
  });
  it('INV-ZAP-003: a present leaf in an invalidated root', () => {
    const s = setup();
    s.mmu.tdp.pool.role[s.v.mmu.root]! |= ROLE_INVALID;
    expect(audited(s)).toContain('INV-ZAP-003');
  });
  it('INV-HUGE-001 / INV-HUGE-002: a 2M leaf across the slot edge; one lpage_info forbids', () => {
    const s = setup(3 * MiB, 'thp', 1);
    const l = leafAt(s, 0);
    expect(l.level).toBe(2);
    const pool = s.mmu.tdp.pool;
    pool.write(l.table, 1, pool.readLo(l.table, 0), pool.readHi(l.table, 0)); // gfns 512..1023, slot ends at 768
    expect(audited(s)).toContain('INV-HUGE-001');
    const t = setup(4 * MiB, 'thp', 1);
    t.vm.memslots()[0]!.arch.lpageInfo![0][0] = 1;
    expect(audited(t)).toEqual(['INV-HUGE-002']);
  });
  it('INV-PFN-001: a mapped page the host freed; INV-PFN-002: a leaf pointing at another page', () => {
    const s = setup();
    const r = s.v.access(0x3000, 'read');
    if (r.exit !== 'none') throw new Error('not mapped');
    s.kvm.host.pfns.put(r.pfn);
    expect(audited(s)).toContain('INV-PFN-001');
    const t = setup();
    const l = leafAt(t, 2);
    const pool = t.mmu.tdp.pool;
    const lo = pool.readLo(l.table, l.index);
    pool.write(l.table, l.index, (lo & ~SPTE_BASE_ADDR_MASK_LO) | pfnLo(7), pool.readHi(l.table, l.index));
    expect(audited(t)).toEqual(['INV-PFN-002']);
  });
  it('INV-MEMTYPE-001: a leaf whose memtype is not what KVM computes now', () => {
    const s = setup();
    const l = leafAt(s, 1);
    const pool = s.mmu.tdp.pool;
    pool.write(l.table, l.index, pool.readLo(l.table, l.index) ^ (1 << 3), pool.readHi(l.table, l.index));
    expect(audited(s)).toEqual(['INV-MEMTYPE-001']);
  });
  it('INV-ACCESS-001/002/004/005: accesses that reached the wrong page, exited wrongly, retried, used a wrong memtype', () => {
    const s = setup();
    const ok = s.v.access(0x1000, 'read');
    if (ok.exit !== 'none') throw new Error('not mapped');
    s.ch.onAccess(s.v, 0x1000, 'read', { ...ok, pfn: ok.pfn + 1 });
    s.ch.onAccess(s.v, 0x1000, 'read', { exit: 'mmio', gpa: 0x1000, write: false });
    s.ch.onAccess(s.v, 0x1000, 'read', { exit: 'retry', gpa: 0x1000, reason: 'test' });
    s.ch.onAccess(s.v, 0x1000, 'read', { ...ok, memtype: 0 });
    s.ch.onAccess(s.v, 0x7000000, 'read', { ...ok });
    expect(s.ch.violations.map((v) => v.id)).toEqual([
      'INV-ACCESS-001',
      'INV-ACCESS-002',
      'INV-ACCESS-004',
      'INV-ACCESS-005',
      'INV-ACCESS-001',
    ]);
  });
  it('INV-GMEM-001: a guest_memfd binding to a slot object outside the active set', () => {
    const kvm = new Kvm();
    const vm = kvm.createVm(1);
    const ch = new Checker(kvm);
    ch.watch(vm);
    const fd = vm.createGuestMemfd({ size: 2 * MiB });
    const file = kvm.lookupFd(fd) as KvmGmemFile;
    ch.auditPoint('postStep');
    expect(ch.violations).toEqual([]);
    const ghost = {
      ...vm.memslots()[0],
      id: 3,
      asId: 0,
      baseGfn: 0,
    } as unknown as KvmGmemFile['bindings'][0]['slot'];
    file.bindings.push({ start: 0, end: 16, slot: ghost });
    ch.auditPoint('postStep');
    expect(ids(ch)).toEqual(['INV-GMEM-001']);
  });
});

describe('audit levels and traces', () => {
  it("'off' records nothing; 'full' finds a broken leaf at the end of the step without an audit point", () => {
    for (const [audit, n] of [
      ['off', 0],
      ['full', 1],
    ] as const) {
      const kvm = new Kvm();
      const vm = kvm.createVm(0);
      vm.setUserMemoryRegion({ slot: 0, memorySize: MiB, userspaceAddr: kvm.host.mmap(MiB) });
      const v = vm.createVcpu(0);
      const ch = new Checker(kvm, { audit });
      ch.watch(vm);
      ch.setStep('a');
      v.access(0, 'read');
      (vm.mmu as X86Mmu).tdp.pool.write(v.mmu.root, 511, 0, 0);
      ch.setStep('b');
      expect(ch.violations.length).toBe(n);
      if (n) expect(ch.violations[0]).toMatchObject({ id: 'INV-SPTE-001', step: 'a' });
    }
  });
  it('a violation carries the recent trace (MMU and TDP events, steps, accesses), bounded by traceDepth', () => {
    const s = setup(MiB, '4k', 0);
    const ch = new Checker(s.kvm, { traceDepth: 12 });
    ch.watch(s.vm);
    ch.setStep('go');
    ch.onAccess(s.v, 0x2000, 'write', s.v.access(0x2000, 'write'));
    ch.onAccess(s.v, 0x2000, 'read', { exit: 'mmio', gpa: 0x2000, write: false });
    const t = ch.violations[0]!.trace;
    expect(t.length).toBeLessThanOrEqual(12);
    expect(t.some((l) => l.startsWith('kvm_page_fault'))).toBe(true);
    expect(t.some((l) => l.startsWith('kvm_tdp_mmu_spte_changed'))).toBe(true);
    expect(t[t.length - 1]).toContain('access vcpu0 read gpa=0x2000 → mmio');
  });
  it('a shared teardown traces every entry it freezes: runs of empty entries, recorded as one ring entry each, print one line per SPTE', () => {
    // The kernel's handle_changed_spte fires kvm_tdp_mmu_spte_changed before its early return for a
    // non-present entry becoming FROZEN_SPTE. With a TDP trace sink installed the model takes the
    // per-entry path (one handleChangedSpte per entry); without, a run of equal empty entries reaches the
    // checker as one sptesFrozen call. The traces must be the same, line for line, at any depth.
    const traces = (depth: number, sink: boolean): string[] => {
      const kvm = new Kvm();
      const vm = kvm.createVm(0);
      const hva = kvm.host.mmap(MiB);
      vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: MiB, userspaceAddr: hva });
      const v = vm.createVcpu(0);
      const mmu = vm.mmu as X86Mmu;
      if (sink) mmu.tdp.trace = () => {};
      const ch = new Checker(kvm, { traceDepth: depth });
      ch.watch(vm);
      ch.setStep('touch');
      for (let i = 0; i < 8; i++) ch.onAccess(v, i * 0x2000, 'write', v.access(i * 0x2000, 'write'));
      // no slot above 1 MiB: an MMIO SPTE in the same 4K table breaks its run of empty entries
      ch.onAccess(v, 0x180000, 'read', v.access(0x180000, 'read'));
      ch.setStep('delete');
      vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memorySize: 0, userspaceAddr: hva });
      return ch.recentTrace();
    };
    for (const depth of [1, 7, 64, 300, 513, 1100, 4096]) {
      const runs = traces(depth, false);
      expect(runs).toEqual(traces(depth, true));
      expect(runs.length).toBe(Math.min(depth, runs.length));
    }
    const all = traces(4096, false);
    const frozen = all.filter(
      (l) => l.startsWith('kvm_tdp_mmu_spte_changed') && l.endsWith('newSpte=0x80000000000005a0'),
    );
    // the 4K, 2M and 1G tables of the zapped root, 512 entries each (the 8 leafs and the MMIO SPTE
    // among them were zapped or frozen in their turn)
    expect(frozen.length).toBe(3 * 512);
    expect(frozen.filter((l) => l.includes('oldSpte=0x8000000000000000 ')).length).toBe(3 * 512 - 1);
  });
  it('the trace tap composes with a sink installed later', () => {
    const s = setup(MiB, '4k', 0);
    const seen: string[] = [];
    (s.mmu as unknown as { trace: (e: { name: string }) => void }).trace = (e) => seen.push(e.name);
    s.v.access(0x5000, 'read');
    expect(seen).toContain('kvm_page_fault');
  });
});
