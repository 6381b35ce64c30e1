import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { GfnBitmap } from './gfn_bitmap.ts';

describe('GfnBitmap', () => {
  it('testAndSet answers as a Set of gfns does, in runs and jumps across chunks', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.nat(4096), fc.integer({ min: 2 ** 31 - 2048, max: 2 ** 40 })), {
          maxLength: 300,
        }),
        (gfns) => {
          const b = new GfnBitmap();
          const set = new Set<number>();
          for (const g of gfns) {
            expect([g, b.testAndSet(g)]).toEqual([g, set.has(g)]);
            set.add(g);
          }
          // each again, in reverse: every one is there now
          for (const g of [...gfns].reverse()) expect(b.testAndSet(g)).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });
});
