/**
 * enUS (src/report/en_us.ts) prints every number as toLocaleString('en-US') does: safe integers by its
 * own grouping (no ICU), everything else through toLocaleString.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { enUS } from '../../src/report/en_us.ts';

describe('enUS', () => {
  it("equals toLocaleString('en-US') on integers of every length and sign (fast-check)", () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.maxSafeInteger(), fc.integer(), fc.integer({ min: -9999, max: 9999 })),
        (x) => enUS(x) === x.toLocaleString('en-US'),
      ),
      { numRuns: 2000 },
    );
  });

  it('equals it on the edges and on what is not a safe integer', () => {
    const xs = [0, -0, 1, -1, 999, 1000, -1000, 999_999, 1_000_000, 123_456_789, Number.MAX_SAFE_INTEGER];
    for (const x of [...xs, -Number.MAX_SAFE_INTEGER, 2 ** 53, 1e21, 1.5, -2.25, 1234.5678, 0.0001, NaN])
      expect(enUS(x)).toBe(x.toLocaleString('en-US'));
    for (const x of [Infinity, -Infinity, 1e300]) expect(enUS(x)).toBe(x.toLocaleString('en-US'));
    expect(enUS(1536)).toBe('1,536');
    expect(enUS(-1234567)).toBe('-1,234,567');
  });
});
