/**
 * A working set drawn once and kept by its seed key (src/scenario/patterns.ts, the runner's `patterns`)
 * is the draw made afresh: random patterns over random regions, each asked for several times in several
 * repeat iterations, give the offsets a context without the map gives.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { offsetAt, patternOffsets, type PatternOffsets } from '../../src/scenario/patterns.ts';
import { prng } from '../../src/scenario/prng.ts';
import type { RegionState } from '../../src/scenario/steps.ts';
import type { AccessPattern } from '../../src/scenario/schema.ts';

/** the runner's generator: the scenario seed and a hash of the key (any function of the key alone) */
const seededBy = (seed: number) => (key: string) => {
  let h = 0;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x9e3779b1);
  return prng(seed ^ h);
};
const offsets = (o: PatternOffsets): number[] => Array.from({ length: o.n }, (_, i) => offsetAt(o, i));

describe('patternOffsets: a kept working set is the fresh draw', () => {
  it('same offsets with and without the map, every time (fast-check)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1000 }),
        fc.array(
          fc.record({
            pages: fc.integer({ min: 1, max: 4096 }),
            // (a length of its own: patterns at different starts with the same length)
            lengthPages: fc.option(fc.constantFrom(64, 128, 2048), { nil: undefined }),
            // (few values: the same pattern asked again, at other starts too)
            workingSet: fc.option(fc.constantFrom(1, 8, 32, 600), { nil: undefined }),
            offsetPages: fc.constantFrom(0, 1, 64),
            stridePages: fc.integer({ min: 1, max: 2 }),
            iter: fc.integer({ min: 0, max: 3 }),
            region: fc.constantFrom('ram', 'dimms'),
          }),
          { minLength: 1, maxLength: 12 },
        ),
        (seed, asks) => {
          const kept = { iter: 0, seeded: seededBy(seed), patterns: new Map<string, PatternOffsets>() };
          for (const a of [...asks, ...asks]) {
            const r = { decl: { size: (a.pages + 2048 + 64 + 4) * 4096 } } as RegionState;
            const p = {
              region: a.region,
              kind: 'read',
              offset: a.offsetPages * 4096,
              eachOffset: 4096,
              stride: a.stridePages * 4096,
              ...(a.lengthPages === undefined ? {} : { length: a.lengthPages * 4096 }),
              ...(a.workingSet === undefined ? {} : { workingSet: a.workingSet }),
            } as AccessPattern;
            kept.iter = a.iter;
            const fresh = patternOffsets({ iter: a.iter, seeded: seededBy(seed) }, r, p);
            expect(offsets(patternOffsets(kept, r, p))).toEqual(offsets(fresh));
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('a working set is drawn once per key where the context keeps them', () => {
    let draws = 0;
    const seeded = (key: string) => {
      draws++;
      return seededBy(7)(key);
    };
    const x = { iter: 0, seeded, patterns: new Map<string, PatternOffsets>() };
    const r = { decl: { size: 1 << 30 } } as RegionState;
    const p = { region: 'ram', kind: 'read', workingSet: 512 } as AccessPattern;
    const a = patternOffsets(x, r, p);
    expect(patternOffsets(x, r, p)).toBe(a);
    expect(draws).toBe(1);
    patternOffsets({ iter: 0, seeded }, r, p);
    patternOffsets({ iter: 0, seeded }, r, p);
    expect(draws).toBe(3); // without the map: every time
    expect(new Set(offsets(a)).size).toBe(512);
  });
});
