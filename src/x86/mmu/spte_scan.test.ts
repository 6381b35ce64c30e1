/**
 * The eight-at-a-time scans (spte_scan.ts) against the entry-by-entry loops they stand for, on tables
 * made of runs of few values, among them the words whose pairs a double cannot stand for: 0 beside
 * 0x80000000 (+0 and -0 as doubles), NaN patterns, and values equal as doubles only in part.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { HI_OFFSET, SPTE_ENT_PER_PAGE, TABLE_WORDS } from './sp_pool.ts';
import { isBlankTable, pairsOf, sameRunEnd, skipZeroQuads } from './spte_scan.ts';
import { SHADOW_NONPRESENT_HI } from './spte.ts';

/** low and high words: SHADOW_NONPRESENT's halves, -0's upper word, NaN's, FROZEN_SPTE's low, a leaf's */
const WORDS = [0, 0x80000000 | 0, 0x7ff80000, 0xfff80000 | 0, 0x5a0, 0x907, 1, 0x80000000 | 1];

/** A chunk of 3 tables of runs (value pair, length) drawn from WORDS. */
const chunk = fc
  .array(fc.tuple(fc.nat(WORDS.length - 1), fc.nat(2), fc.integer({ min: 1, max: 70 })), {
    minLength: 1,
    maxLength: 40,
  })
  .map((runs) => {
    const arr = new Int32Array(3 * TABLE_WORDS);
    // the runs one after another, again from the first until the three tables are full
    let r = 0;
    let left = runs[0]![2];
    for (let e = 0; e < 3 * SPTE_ENT_PER_PAGE; e++, left--) {
      if (left === 0) left = runs[(r = (r + 1) % runs.length)]![2];
      const at = Math.floor(e / SPTE_ENT_PER_PAGE) * TABLE_WORDS + (e % SPTE_ENT_PER_PAGE);
      arr[at] = WORDS[runs[r]![0]]!;
      arr[at + HI_OFFSET] = WORDS[runs[r]![1]]!;
    }
    return arr;
  });

describe('sameRunEnd', () => {
  it('ends the run where the first differing entry is, as a loop over entries does', () => {
    fc.assert(
      fc.property(chunk, fc.nat(2), fc.nat(SPTE_ENT_PER_PAGE - 1), (arr, t, first) => {
        const base = t * TABLE_WORDS;
        const lo = arr[base + first]!;
        const hi = arr[base + HI_OFFSET + first]!;
        let want = first + 1;
        while (want < SPTE_ENT_PER_PAGE && arr[base + want] === lo && arr[base + HI_OFFSET + want] === hi)
          want++;
        expect(sameRunEnd(arr, base, first + 1, lo, hi)).toBe(want);
      }),
      { numRuns: 1000 },
    );
  });

  it('tells 0 from 0x80000000 beside it (+0 and -0) and compares NaN patterns word by word', () => {
    for (const [lo, hi, other, at] of [
      [0, 0x80000000 | 0, 0x80000000 | 0, 9], // low words 0 then -0's upper word at an odd entry
      [0, 0x80000000 | 0, 0x80000000 | 0, 100],
      [0x7ff80000, 0x7ff80000, 0x7ff80001, 333], // a NaN pattern, then another NaN
      [0x5a0, 0x80000000 | 0, 0x5a1, 40],
    ] as const) {
      const arr = new Int32Array(TABLE_WORDS).fill(lo, 0, HI_OFFSET).fill(hi, HI_OFFSET);
      arr[at] = other;
      expect(sameRunEnd(arr, 0, 1, lo, hi)).toBe(at);
      arr[at] = lo;
      arr[HI_OFFSET + at] = other;
      expect(sameRunEnd(arr, 0, 1, lo, hi)).toBe(lo === 0 && hi === other ? SPTE_ENT_PER_PAGE : at);
    }
  });

  it('reads the chunk it is given, not the last one viewed', () => {
    const a = new Int32Array(TABLE_WORDS);
    const b = new Int32Array(TABLE_WORDS).fill(0x5a0, 0, 100);
    expect(pairsOf(a)[0]).toBe(0);
    expect(sameRunEnd(b, 0, 1, 0x5a0, 0)).toBe(100);
    expect(sameRunEnd(a, 0, 1, 0, 0)).toBe(SPTE_ENT_PER_PAGE);
  });
});

describe('isBlankTable', () => {
  it('is true exactly when all 1,024 words of that table are SHADOW_NONPRESENT_VALUE halves', () => {
    const blank = (): Int32Array => {
      const a = new Int32Array(3 * TABLE_WORDS);
      for (let t = 0; t < 3; t++)
        a.fill(SHADOW_NONPRESENT_HI, t * TABLE_WORDS + HI_OFFSET, (t + 1) * TABLE_WORDS);
      return a;
    };
    fc.assert(
      fc.property(
        fc.nat(2),
        fc.array(fc.tuple(fc.nat(3 * TABLE_WORDS - 1), fc.constantFrom(...WORDS)), { maxLength: 3 }),
        (t, writes) => {
          const a = blank();
          for (const [w, v] of writes) a[w] = v;
          let want = true;
          for (let i = 0; i < SPTE_ENT_PER_PAGE; i++)
            if (a[t * TABLE_WORDS + i] !== 0 || a[t * TABLE_WORDS + HI_OFFSET + i] !== SHADOW_NONPRESENT_HI)
              want = false;
          expect(isBlankTable(a, t * TABLE_WORDS)).toBe(want);
        },
      ),
      { numRuns: 500 },
    );
    // the first and the last word of a table, and the words just outside it
    for (const [w, want] of [
      [TABLE_WORDS, false],
      [2 * TABLE_WORDS - 1, false],
      [TABLE_WORDS - 1, true],
      [2 * TABLE_WORDS, true],
    ] as const) {
      const a = blank();
      a[w] = 0x5a0;
      expect(isBlankTable(a, TABLE_WORDS)).toBe(want);
    }
  });
});

describe('skipZeroQuads', () => {
  it('stops at the first group of four doubles with one other than +-0, as a loop over the words does', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(255), fc.constantFrom(0x907, 0x80000000 | 0, 0x7ff80000, 1)), {
          maxLength: 4,
        }),
        fc.nat(63),
        fc.nat(64),
        (writes, from, len) => {
          const words = new Int32Array(512);
          for (const [w, v] of writes) words[w] = v;
          const k0 = from * 4;
          const kStop = Math.min(256, k0 + len * 4);
          // the words of the groups from k0 on: a group stops the skip if a word is neither 0 nor -0's upper
          let want = kStop;
          for (let k = k0; k < kStop && want === kStop; k += 4)
            for (let w = 2 * k; w < 2 * k + 8; w++)
              if (words[w] !== 0 && !(w % 2 === 1 && words[w] === (0x80000000 | 0) && words[w - 1] === 0)) {
                want = k;
                break;
              }
          expect(skipZeroQuads(pairsOf(words), k0, kStop)).toBe(Math.max(want, k0));
        },
      ),
      { numRuns: 1000 },
    );
  });
});
