/**
 * LeafCounts (src/check/leaf_counts.ts), the incremental audit's present-4K-leaf count per 2M region,
 * against a plain Map: any sequence of adds (near and far regions, enough of them to make the table grow
 * several times), reads and clears answers every at() and entries() as the Map does.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { LeafCounts } from '../../src/check/leaf_counts.ts';

type Op = { add: [number, number] } | { addRun: [number, number] } | { at: number } | { clear: true };

const region = fc.oneof(
  fc.integer({ min: 0, max: 40 }),
  // regions 64 apart share a first slot: the probes collide
  fc.integer({ min: 0, max: 12 }).map((k) => k * 64),
  fc.integer({ min: 0, max: 2 ** 43 }),
  fc.constantFrom(0x7fffffff, 0x80000000, 0x100000000, 0x100000040),
);
const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.tuple(region, fc.constantFrom(1, -1, 512, 3)).map(([q, by]): Op => ({ add: [q, by] })),
  },
  { weight: 4, arbitrary: region.map((q): Op => ({ at: q })) },
  // a run of regions, one leaf each (a large working set)
  {
    weight: 2,
    arbitrary: fc.tuple(region, fc.integer({ min: 1, max: 200 })).map(([q, n]): Op => ({ addRun: [q, n] })),
  },
  { weight: 1, arbitrary: fc.constant<Op>({ clear: true }) },
);

describe('LeafCounts', () => {
  it('answers at() and entries() as a Map of counts does', () => {
    let regions = 0;
    fc.assert(
      fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
        const c = new LeafCounts();
        const m = new Map<number, number>();
        for (const o of ops) {
          if ('add' in o) {
            const [q, by] = o.add;
            c.add(q, by);
            m.set(q, (m.get(q) ?? 0) + by);
            regions = Math.max(regions, m.size);
            expect(c.at(q)).toBe(m.get(q));
          } else if ('addRun' in o) {
            const [q0, n] = o.addRun;
            for (let q = q0; q < q0 + n; q++) {
              c.add(q, 1);
              m.set(q, (m.get(q) ?? 0) + 1);
            }
            regions = Math.max(regions, m.size);
          } else if ('at' in o) expect(c.at(o.at)).toBe(m.get(o.at) ?? 0);
          else {
            c.clear();
            m.clear();
          }
        }
        const want = [...m].filter(([, n]) => n !== 0).sort((a, b) => a[0] - b[0]);
        expect(c.entries()).toEqual(want);
        for (const q of m.keys()) expect(c.at(q)).toBe(m.get(q));
      }),
      { numRuns: 300 },
    );
    // the table grew past its first 64 slots (more than 32 regions) in some runs
    expect(regions).toBeGreaterThan(100);
  });
});
