/**
 * The per-region entry bitmaps of the incremental audit (src/check/entry_bits.ts) against a plain map of
 * sets: after any sequence of bits set (in regions spread far enough apart to collide in the table and
 * make it grow), clears and more bits, every region reads back exactly the entries set since the last
 * clear, and a region with none has no block.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BLOCK_WORDS, EntryBits } from '../../src/check/entry_bits.ts';

type Op = { set: [number, number] } | { clear: true };

/** The entries (0..511) region q's block holds, in order; null when it has no block. */
function read(b: EntryBits, q: number): number[] | null {
  const o = b.find(q);
  if (o < 0) return null;
  const out: number[] = [];
  for (let w = 0; w < BLOCK_WORDS; w++)
    for (let bit = 0; bit < 32; bit++) if ((b.words[o + w]! >>> bit) & 1) out.push(w * 32 + bit);
  return out;
}

describe('EntryBits', () => {
  it('holds exactly the entries set since the last clear, per region', () => {
    // regions: small ones, ones 16 and 64 apart (the same slot of a small table), and past 2^31
    const region = fc.oneof(
      fc.integer({ min: 0, max: 40 }),
      fc.integer({ min: 0, max: 40 }).map((k) => k * 16),
      fc.integer({ min: 0, max: 20 }).map((k) => k * 64 + 3),
      fc.integer({ min: 0, max: 5 }).map((k) => 2 ** 33 + k * 16),
    );
    const op: fc.Arbitrary<Op> = fc.oneof(
      {
        weight: 12,
        arbitrary: fc.tuple(region, fc.integer({ min: 0, max: 511 })).map(([q, i]): Op => ({ set: [q, i] })),
      },
      { weight: 1, arbitrary: fc.constant<Op>({ clear: true }) },
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const b = new EntryBits();
        let want = new Map<number, Set<number>>();
        const seen = new Set<number>();
        for (const o of ops) {
          if ('clear' in o) {
            b.clear();
            want = new Map();
            continue;
          }
          const [q, i] = o.set;
          seen.add(q);
          const at = b.blockOf(q) + (i >> 5);
          b.words[at] = b.words[at]! | (1 << (i & 31));
          if (!want.has(q)) want.set(q, new Set());
          want.get(q)!.add(i);
        }
        for (const q of seen) {
          const w = want.get(q);
          expect(read(b, q)).toEqual(w === undefined ? null : [...w].sort((x, y) => x - y));
        }
      }),
      { numRuns: 300 },
    );
  });
});
