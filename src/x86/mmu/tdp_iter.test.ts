import { describe, expect, it } from 'vitest';
import { asPfn } from '../../types/addr.ts';
import { tdpRootRole } from './mmu_internal.ts';
import {
  ACC_ALL,
  MT_MASK_WB_IPAT,
  isShadowPresentPte,
  makeSpte,
  newSptePair,
  tdpLeafParams,
} from './spte.ts';
import { TdpIter, forEachTdpPteMinLevel, tdpIterNext, tdpIterStart } from './tdp_iter.ts';
import { kvmTdpMmuMap } from './tdp_mmu.ts';
import { kvmTdpMmuAllocRoot } from './tdp_mmu_root.ts';
import { TdpMmu } from './tdp_mmu_state.ts';

function populated(gfns: number[]): { mmu: TdpMmu; root: number } {
  const mmu = new TdpMmu();
  const root = kvmTdpMmuAllocRoot(mmu, tdpRootRole({ asId: 0 }));
  const s = newSptePair();
  for (const g of gfns) {
    makeSpte(s, tdpLeafParams(1, asPfn(g), MT_MASK_WB_IPAT, true));
    kvmTdpMmuMap(mmu, root, g, 1, s.lo, s.hi);
  }
  return { mmu, root };
}

describe('tdp_iter', () => {
  it('visits only the tables that exist, not the range covered', () => {
    // Two 4K pages in different 512 GiB regions: the whole 2^36-gfn root is covered.
    const { mmu, root } = populated([0, 2 ** 27 + 5]);
    const iter = new TdpIter(mmu.pool);
    let visited = 0;
    let present = 0;
    forEachTdpPteMinLevel(iter, root, 1, 0, 2 ** 36, (it) => {
      visited++;
      if (isShadowPresentPte(it.oldLo)) present++;
    });
    // root: 512 entries; each of the 2 present root entries leads to 3 tables of 512 entries
    expect(visited).toBe(512 + 2 * 3 * 512);
    expect(present).toBe(2 * 4);
  });

  it('walks pre-order: a parent before its children, gfns ascending at each level', () => {
    const { mmu, root } = populated([0x201]);
    const iter = new TdpIter(mmu.pool);
    const seen: Array<[number, number]> = [];
    forEachTdpPteMinLevel(iter, root, 1, 0x1ff, 0x202, (it) => seen.push([it.level, it.gfn]));
    expect(seen).toEqual([
      [4, 0],
      [3, 0],
      [2, 0],
      [2, 0x200],
      [1, 0x200],
      [1, 0x201],
    ]);
  });

  it('stops at min_level and at the end of the range', () => {
    const { mmu, root } = populated([0x201]);
    const iter = new TdpIter(mmu.pool);
    let n = 0;
    forEachTdpPteMinLevel(iter, root, 2, 0, 0x400, () => n++);
    expect(n).toBe(4); // L4[0], L3[0], L2[0], L2[1]
    n = 0;
    forEachTdpPteMinLevel(iter, root, 1, 0, 1, () => n++);
    expect(n).toBe(3); // L4[0], L3[0], L2[0]: no 4K table under gfn 0's 2M entry
  });

  it('restarts from the root at next_last_level_gfn after a yield', () => {
    const { mmu, root } = populated([0x200, 0x201, 0x202]);
    const iter = new TdpIter(mmu.pool);
    const seen: number[] = [];
    let yielded = false;
    for (tdpIterStart(iter, root, 1, 0x200); iter.valid && iter.gfn < 0x203; tdpIterNext(iter)) {
      if (iter.level === 1) seen.push(iter.gfn);
      if (iter.level === 1 && iter.gfn === 0x201 && !yielded) {
        yielded = true;
        iter.yielded = true; // what tdp_mmu_iter_cond_resched does
        continue;
      }
    }
    // 0x201 is visited again after the restart walks down from the root
    expect(seen).toEqual([0x200, 0x201, 0x201, 0x202]);
    expect(iter.yieldedGfn).toBe(0x201);
  });
});
