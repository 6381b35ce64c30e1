/**
 * The TLB's inspection order (entriesInto, forEachEntry): its valid entries by place, whether the fills
 * since the last read were few (put in place by an insertion sort) or many in any order (a native sort
 * of a copy), against a model of the direct-mapped arrays.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { TLB_PLACES, Tlb } from './tlb.ts';

const SIZES = [2048, 512, 16];
const BASE = [0, 2048, 2560];
const SPAN = [1, 512, 262144];

type Fill = [gfn: number, level: 1 | 2 | 3];
const fill = fc.tuple(
  fc.oneof(fc.integer({ min: 0, max: 1 << 22 }), fc.integer({ min: 2 ** 31, max: 2 ** 33 })),
  fc.constantFrom<1 | 2 | 3>(1, 1, 1, 2, 3),
);

describe('Tlb entriesInto', () => {
  it('lists the valid entries by place after runs of few or many fills, with flushes between', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.array(fill, { maxLength: 300, size: 'max' }), fc.boolean()), {
          minLength: 1,
          maxLength: 6,
        }),
        (rounds) => {
          const t = new Tlb();
          const want = new Map<number, [number, number, number]>();
          for (const [fills, flush] of rounds) {
            if (flush) {
              t.flushAll();
              want.clear();
            }
            for (const [gfn, level] of fills as Fill[]) {
              const l = level - 1;
              const index = Math.floor(gfn / SPAN[l]!);
              const pfn = gfn * 3 + 7;
              if (level === 1 && gfn < 2 ** 31) t.fill4k(gfn, pfn, true, 6);
              else t.fill(gfn, pfn, level, true, 6);
              want.set(BASE[l]! + (index % SIZES[l]!), [index * SPAN[l]!, pfn, level]);
            }
            const n = t.size();
            const place = new Int32Array(n);
            const gfn = new Float64Array(n);
            const pfn = new Float64Array(n);
            const level = new Uint8Array(n);
            expect(t.entriesInto(place, gfn, pfn, level)).toBe(want.size);
            const sorted = [...want].sort((a, b) => a[0] - b[0]);
            expect([...place]).toEqual(sorted.map(([p]) => p));
            expect([...place].every((p) => p < TLB_PLACES)).toBe(true);
            expect(sorted.map(([, e]) => e)).toEqual([...place].map((_, k) => [gfn[k], pfn[k], level[k]]));
            const visited: number[][] = [];
            t.forEachEntry((g, p, l) => visited.push([g, p, l]));
            expect(visited).toEqual(sorted.map(([, e]) => e));
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});
