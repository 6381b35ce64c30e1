import { describe, expect, it } from 'vitest';
import { ModelCorruption } from '../../kvm/model_corruption.ts';
import { asPfn } from '../../types/addr.ts';
import { tdpRootRole } from './mmu_internal.ts';
import type { MmuTraceEvent } from './mmu_trace.ts';
import {
  ACC_ALL,
  MT_MASK_WB_IPAT,
  makeMmioSpte,
  makeSpte,
  newSptePair,
  spteToPfn,
  type MakeSpteParams,
  tdpLeafParams,
} from './spte.ts';
import {
  TDP_MAP_FIXED,
  TDP_MAP_FLUSH,
  TDP_MAP_SPURIOUS,
  kvmTdpMmuGetWalk,
  kvmTdpMmuMap,
  kvmTdpMmuZapSp,
  tdpMmuZapLeafs,
  tdpMmuZapRoot,
  type TdpWalkResult,
} from './tdp_mmu.ts';
import {
  kvmTdpMmuAllocRoot,
  kvmTdpMmuInvalidateRoots,
  kvmTdpMmuPutRoot,
  kvmTdpMmuZapInvalidatedRoots,
} from './tdp_mmu_root.ts';
import { KVM_DIRECT_ROOTS, TdpMmu, tdpMmuStats, type TdpMmuOptions } from './tdp_mmu_state.ts';

const leafParams: MakeSpteParams = tdpLeafParams(1, asPfn(0), MT_MASK_WB_IPAT, true);
const s = newSptePair();

function setup(opts: TdpMmuOptions = {}): { mmu: TdpMmu; root: number } {
  const mmu = new TdpMmu(opts);
  return { mmu, root: kvmTdpMmuAllocRoot(mmu, tdpRootRole({ asId: 0 })) };
}
function map(mmu: TdpMmu, root: number, gfn: number, level: number, pfn: number): number {
  makeSpte(s, { ...leafParams, level, pfn: asPfn(pfn) });
  return kvmTdpMmuMap(mmu, root, gfn, level, s.lo, s.hi);
}
function lookup(mmu: TdpMmu, root: number, gfn: number): { level: number; pfn: number } | null {
  const w: TdpWalkResult = { lo: 0, hi: 0, level: 0 };
  return kvmTdpMmuGetWalk(mmu, root, gfn, w) ? { level: w.level, pfn: spteToPfn(w.lo, w.hi) } : null;
}
const pages = (mmu: TdpMmu): number[] => [mmu.pages[0]!, mmu.pages[1]!, mmu.pages[2]!];

describe('kvm_tdp_mmu_map and lookup', () => {
  it('maps 4K, 2M and 1G leafs and finds them', () => {
    const { mmu, root } = setup();
    expect(map(mmu, root, 0x1234, 1, 0x100)).toBe(TDP_MAP_FIXED);
    expect(map(mmu, root, 0x200, 2, 0x4000)).toBe(TDP_MAP_FIXED);
    expect(map(mmu, root, 0x40000, 3, 0x80000)).toBe(TDP_MAP_FIXED);
    expect(lookup(mmu, root, 0x1234)).toEqual({ level: 1, pfn: 0x100 });
    expect(lookup(mmu, root, 0x3ff)).toEqual({ level: 2, pfn: 0x4000 });
    expect(lookup(mmu, root, 0x7ffff)).toEqual({ level: 3, pfn: 0x80000 });
    expect(lookup(mmu, root, 0x1235)).toBeNull();
    expect(lookup(mmu, root, 0x80000)).toBeNull();
    expect(pages(mmu)).toEqual([1, 1, 1]);
    // root + L3 + L2 (gfn 0..1G) + L1 (the 4K leaf's table)
    expect(mmu.spAllocated).toBe(4);
    expect(mmu.tdpMmuPages).toBe(3);
    expect(map(mmu, root, 0x1234, 1, 0x100)).toBe(TDP_MAP_SPURIOUS);
  });

  it('replaces a table with a huge leaf, frees the subtree and asks for a flush', () => {
    const { mmu, root } = setup();
    for (let g = 0x200; g < 0x210; g++) map(mmu, root, g, 1, 0x9000 + g);
    expect(pages(mmu)).toEqual([16, 0, 0]);
    const live = mmu.pool.live;
    expect(map(mmu, root, 0x200, 2, 0x4000)).toBe(TDP_MAP_FIXED | TDP_MAP_FLUSH);
    expect(pages(mmu)).toEqual([0, 1, 0]);
    expect(mmu.pool.live).toBe(live - 1);
    expect(mmu.pool.pendingRcu).toBe(1); // freed through RCU, not yet reusable
    expect(mmu.sptesZapped[0]).toBe(16);
    expect(lookup(mmu, root, 0x205)).toEqual({ level: 2, pfn: 0x4000 });
  });

  it('splits a huge leaf to map inside it and accounts 512 children', () => {
    const { mmu, root } = setup();
    map(mmu, root, 0x200, 2, 0x1000);
    // The same memory at 4K: the split child already is that SPTE.
    expect(map(mmu, root, 0x205, 1, 0x1005)).toBe(TDP_MAP_SPURIOUS);
    expect(pages(mmu)).toEqual([512, 0, 0]);
    expect(mmu.hugePagesSplit).toBe(1);
    expect(lookup(mmu, root, 0x3ff)).toEqual({ level: 1, pfn: 0x11ff });
    // 1G → 2M split, then one 2M child → 4K
    map(mmu, root, 0x80000, 3, 0x100000);
    expect(map(mmu, root, 0x80400, 1, 0x100400)).toBe(TDP_MAP_SPURIOUS);
    expect(pages(mmu)).toEqual([1024, 511, 0]);
    expect(mmu.hugePagesSplit).toBe(3);
  });

  it('treats a different pfn over a present leaf as a model bug (missing notifier)', () => {
    const { mmu, root } = setup();
    map(mmu, root, 0x200, 2, 0x1000);
    expect(() => map(mmu, root, 0x205, 1, 0x7777)).toThrow(ModelCorruption);
  });

  it('installs an MMIO SPTE without touching page stats', () => {
    const { mmu, root } = setup();
    makeMmioSpte(s, 0xfee00, 42);
    expect(kvmTdpMmuMap(mmu, root, 0xfee00, 1, s.lo, s.hi)).toBe(TDP_MAP_FIXED);
    const w: TdpWalkResult = { lo: 0, hi: 0, level: 0 };
    expect(kvmTdpMmuGetWalk(mmu, root, 0xfee00, w)).toBe(false);
    expect({ lo: w.lo, hi: w.hi, level: w.level }).toEqual({ lo: s.lo, hi: s.hi, level: 1 });
    expect(pages(mmu)).toEqual([0, 0, 0]);
    expect(mmu.warnings).toBe(0);
  });
});

describe('tdp_mmu_zap_leafs', () => {
  it('zaps exactly the leafs in [start, end) and leaves the tables', () => {
    const { mmu, root } = setup();
    for (const g of [0x1ff, 0x200, 0x201, 0x3ff, 0x400]) map(mmu, root, g, 1, 0x5000 + g);
    map(mmu, root, 0x600, 2, 0x8000); // 2M leaf at [0x600, 0x800)
    map(mmu, root, 0x40000, 3, 0x40000); // 1G leaf
    const live = mmu.pool.live;
    expect(tdpMmuZapLeafs(mmu, root, 0x200, 0x601)).toBe(true);
    const remaining = [0x1ff, 0x200, 0x201, 0x3ff, 0x400, 0x600, 0x40000].filter((g) => lookup(mmu, root, g));
    expect(remaining).toEqual([0x1ff, 0x40000]);
    expect(pages(mmu)).toEqual([1, 0, 1]);
    expect(mmu.pool.live).toBe(live); // zap_leafs frees no table
    expect(mmu.sptesZapped[0]).toBe(4);
    expect(mmu.sptesZapped[1]).toBe(1);
    expect(tdpMmuZapLeafs(mmu, root, 0x200, 0x601)).toBe(false); // nothing left to zap
  });

  it('zaps a huge leaf that only overlaps the range', () => {
    const { mmu, root } = setup();
    map(mmu, root, 0x40000, 3, 0x40000);
    expect(tdpMmuZapLeafs(mmu, root, 0x7fff0, 0x80000)).toBe(true);
    expect(lookup(mmu, root, 0x40000)).toBeNull();
  });

  it('owes no flush for zaps in an invalid root', () => {
    const { mmu, root } = setup();
    map(mmu, root, 0x10, 1, 0x10);
    kvmTdpMmuInvalidateRoots(mmu, KVM_DIRECT_ROOTS);
    expect(tdpMmuZapLeafs(mmu, root, 0, 0x100)).toBe(false);
    expect(pages(mmu)).toEqual([0, 0, 0]);
  });

  it('flushes before yielding and still zaps everything', () => {
    let flushes = 0;
    const { mmu, root } = setup({ env: { needResched: () => true, flushRemoteTlbs: () => flushes++ } });
    for (let g = 0; g < 8; g++) map(mmu, root, g * 512, 1, g);
    const flush = tdpMmuZapLeafs(mmu, root, 0, 8 * 512);
    expect(pages(mmu)).toEqual([0, 0, 0]);
    expect(mmu.yields).toBeGreaterThan(0);
    // Each of the 8 zaps is followed by a yield, which flushes first; nothing is owed at the end.
    expect(flushes).toBe(8);
    expect(flush).toBe(false);
  });
});

describe('batched 4K leaf zaps', () => {
  it('match the per-SPTE path exactly (stats, survivors, SPTEs walked)', () => {
    const run = (traced: boolean) => {
      const { mmu, root } = setup(traced ? { trace: () => {} } : {});
      let x = 7;
      const gfns: number[] = [];
      for (let i = 0; i < 3000; i++) gfns.push((x = (x * 1103515245 + 12345) >>> 0) % 0x4000);
      for (const g of gfns) map(mmu, root, g, 1, g + 0x100000);
      map(mmu, root, 0x40000, 3, 0x40000);
      tdpMmuZapLeafs(mmu, root, 0x123, 0x2f05);
      const survivors = gfns.filter((g) => lookup(mmu, root, g) !== null);
      const afterLeafs = tdpMmuStats(mmu);
      tdpMmuZapRoot(mmu, root, true);
      return { mmu, survivors, afterLeafs };
    };
    const a = run(false);
    const b = run(true);
    expect(a.survivors.length).toBeGreaterThan(100);
    expect(a.survivors.every((g) => g < 0x123 || g >= 0x2f05)).toBe(true);
    expect(a.survivors).toEqual(b.survivors);
    expect(a.afterLeafs).toEqual(b.afterLeafs);
    expect(tdpMmuStats(a.mmu)).toEqual(tdpMmuStats(b.mmu));
    expect(a.mmu.pool.live).toBe(1);
  });
});

describe('shared teardown of removed tables', () => {
  // freezeNonPresentRun (runs of equal non-present entries frozen at once: a whole table's run copied,
  // high halves already FROZEN_SPTE's left) against the per-entry xchg loop a trace sink forces
  it('leaves the same words in every table as the per-entry freeze, and the same stats', () => {
    const run = (traced: boolean) => {
      const { mmu, root } = setup(traced ? { trace: () => {} } : {});
      for (let g = 0; g < 0x1400; g += 7) map(mmu, root, g, 1, g + 0x100000);
      // MMIO SPTEs: non-present, a value per gfn, high halves without SUPPRESS_VE (runs of one)
      for (const g of [0x400, 0x401, 0x402, 0x5ff, 0x1003]) {
        makeMmioSpte(s, g, 3);
        kvmTdpMmuMap(mmu, root, g, 1, s.lo, s.hi);
      }
      tdpMmuZapLeafs(mmu, root, 0x200, 0x900); // some tables partly zapped, some emptied
      map(mmu, root, 0x40000, 2, 0x40000);
      tdpMmuZapRoot(mmu, root, true);
      const words = mmu.pool.chunks.map((c) => Array.from(c.subarray(0, mmu.pool.created * 1024)));
      return { words, stats: tdpMmuStats(mmu), live: mmu.pool.live };
    };
    const a = run(false);
    const b = run(true);
    expect(a.live).toBe(1);
    expect(a.stats).toEqual(b.stats);
    expect(a.words).toEqual(b.words);
  });
});

describe('tdp_mmu_zap_root and kvm_tdp_mmu_zap_sp', () => {
  it('frees every table of the root and returns the pool to its initial count', () => {
    const { mmu, root } = setup();
    const initial = mmu.pool.live;
    for (let g = 0; g < 2048; g += 3) map(mmu, root, g, 1, g);
    map(mmu, root, 0x80000, 3, 0x80000);
    map(mmu, root, 0x8000000, 2, 0x99000); // second 512 GiB slot of the root
    tdpMmuZapRoot(mmu, root, false);
    expect(mmu.pool.live).toBe(initial);
    expect(mmu.tdpMmuPages).toBe(0);
    expect(pages(mmu)).toEqual([0, 0, 0]);
    expect(mmu.spAllocated - mmu.spFreed).toBe(1); // only the root
    mmu.pool.rcuReclaim();
    expect(mmu.pool.pendingRcu).toBe(0);
  });

  it('zaps one table through its parent SPTE', () => {
    const { mmu, root } = setup();
    map(mmu, root, 0x1000, 1, 1);
    map(mmu, root, 0x1001, 1, 2);
    const w: TdpWalkResult = { lo: 0, hi: 0, level: 0 };
    kvmTdpMmuGetWalk(mmu, root, 0x1000, w);
    const l1 = [...Array(mmu.pool.created).keys()].find(
      (t) => mmu.pool.isAllocated(t) && (mmu.pool.role[t]! & 0xf) === 1,
    )!;
    expect(kvmTdpMmuZapSp(mmu, l1)).toBe(true);
    expect(pages(mmu)).toEqual([0, 0, 0]);
    expect(mmu.pool.isAllocated(l1)).toBe(false);
    expect(kvmTdpMmuZapSp(mmu, root)).toBe(false);
    expect(mmu.warnings).toBe(1);
  });
});

describe('trace events', () => {
  it('emits kernel tracepoints with exact SPTE values', () => {
    const events: MmuTraceEvent[] = [];
    const { mmu, root } = setup({ trace: (e) => events.push(e) });
    map(mmu, root, 0x200, 1, 0x1234);
    tdpMmuZapLeafs(mmu, root, 0x200, 0x201);
    const changed = events.filter((e) => e.name === 'kvm_tdp_mmu_spte_changed');
    expect(events.filter((e) => e.name === 'kvm_mmu_get_page')).toHaveLength(4);
    expect(
      changed.map((e) =>
        e.name === 'kvm_tdp_mmu_spte_changed' ? [e.level, e.gfn, e.oldSpte, e.newSpte] : [],
      ),
    ).toEqual([
      [4, 0, 0x8000000000000000n, 0x8001000000001907n],
      [3, 0, 0x8000000000000000n, 0x8001000000002907n],
      [2, 0x200, 0x8000000000000000n, 0x8001000000003907n],
      [1, 0x200, 0x8000000000000000n, 0x8600000001234b77n],
      [1, 0x200, 0x8600000001234b77n, 0x8000000000000000n],
    ]);
  });

  it('reports every table removed by a shared-mode zap', () => {
    const events: MmuTraceEvent[] = [];
    const { mmu, root } = setup({ trace: (e) => events.push(e) });
    map(mmu, root, 0x200, 1, 0x1234);
    events.length = 0;
    kvmTdpMmuInvalidateRoots(mmu, KVM_DIRECT_ROOTS);
    kvmTdpMmuZapInvalidatedRoots(mmu, true);
    expect(events.filter((e) => e.name === 'kvm_mmu_prepare_zap_page')).toHaveLength(3);
    // shared mode freezes all 512 entries of each removed table (3 × 512) plus the 4K leaf and the three non-leaf entries
    expect(events.filter((e) => e.name === 'kvm_tdp_mmu_spte_changed')).toHaveLength(3 * 512 + 4);
    kvmTdpMmuPutRoot(mmu, root);
    expect(tdpMmuStats(mmu)).toMatchObject({ pages_4k: 0, sp_allocated: 4, sp_freed: 4, tdp_mmu_pages: 0 });
  });
});
