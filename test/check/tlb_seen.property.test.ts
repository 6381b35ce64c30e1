/**
 * The incremental TLB audit's bookkeeping (src/check/tlb_seen.ts): GfnRanges answers overlaps() as a
 * scan of the ranges as added does, sealed or not; TlbSeen names exactly the gfn ranges of the entries
 * that differ, appeared or went away since the last update (by place: an entry evicted by another at
 * the same place names both), everything when it was not known or the address space changed, and
 * nothing when the TLB was not written.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { GfnRanges, TlbSeen } from '../../src/check/tlb_seen.ts';
import { Tlb } from '../../src/host/tlb.ts';

const SPAN = [0, 1, 512, 262144];

/** overlaps() as a scan of the ranges */
const scan = (r: [number, number][], gfn: number, span: number): boolean =>
  r.some(([a, b]) => a < gfn + span && gfn < b);

/** The entries a TLB holds, by gfn range (for comparing what TlbSeen says changed). */
function entries(t: Tlb): Map<string, [number, number]> {
  const m = new Map<string, [number, number]>();
  t.forEachEntry((gfn, pfn, level) => m.set(`${level}:${gfn}`, [pfn, SPAN[level]!]));
  return m;
}

/** The gfns [0, 4096 + 3 * 512) that the ranges cover: a finite picture to compare. */
function covered(r: GfnRanges, limit: number): number[] {
  const out: number[] = [];
  for (let g = 0; g < limit; g++) if (r.overlaps(g, 1)) out.push(g);
  return out;
}

describe('GfnRanges', () => {
  it('overlaps() as a scan of the ranges added, before and after seal()', () => {
    const range = fc.tuple(
      // few gfns, a TLB array's length apart: entries evict each other at their places
      fc.tuple(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 2 })).map(([g, k]) => g + k * 2048),
      fc.integer({ min: 1, max: 700 }),
    );
    fc.assert(
      fc.property(
        fc.array(range, { maxLength: 40 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 6000 }), fc.constantFrom(1, 512, 262144)), {
          minLength: 1,
          maxLength: 40,
        }),
        (rs, probes) => {
          const pairs = rs.map(([a, n]): [number, number] => [a, a + n]);
          const g = new GfnRanges();
          for (const [a, b] of pairs) g.add(a, b);
          for (const [gfn, span] of probes) expect(g.overlaps(gfn, span)).toBe(scan(pairs, gfn, span));
          g.seal();
          for (const [gfn, span] of probes) expect(g.overlaps(gfn, span)).toBe(scan(pairs, gfn, span));
          // added after seal: still answered
          g.add(7000, 7001);
          expect(g.overlaps(7000, 1)).toBe(true);
          for (const [gfn, span] of probes)
            expect(g.overlaps(gfn, span)).toBe(scan(pairs, gfn, span) || (gfn <= 7000 && 7000 < gfn + span));
        },
      ),
      { numRuns: 300 },
    );
  });
});

/** The sorted disjoint union of pairs as seal() had it: sorted by start (then end), touching ones merged. */
function merged(pairs: [number, number][]): [number, number][] {
  const out: [number, number][] = [];
  for (const [a, b] of [...pairs].sort((x, y) => x[0] - y[0] || x[1] - y[1])) {
    const last = out[out.length - 1];
    if (last !== undefined && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

describe('GfnRanges.seal', () => {
  // the sweep of sorted starts and ends (unsorted input) and the first/last-range reject of overlaps():
  // the same ranges as the comparator sort and merge, so the same count and the same answers at and
  // around every range end
  it('merges unsorted, nested, touching and empty ranges as a sort by start and a merge does', () => {
    const gfn = fc.oneof(
      fc.integer({ min: 0, max: 3000 }),
      fc.integer({ min: 2 ** 31 - 50, max: 2 ** 31 + 50 }),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(gfn, fc.integer({ min: 0, max: 600 })), { maxLength: 80 }), (rs) => {
        const pairs = rs.map(([a, n]): [number, number] => [a, a + n]);
        const g = new GfnRanges();
        for (const [a, b] of pairs) g.add(a, b);
        g.seal();
        const want = merged(pairs);
        expect(g.length).toBe(2 * want.length);
        const edges = want.flatMap(([a, b]) => [a - 1, a, b - 1, b]);
        for (const x of [...edges, -1, 0, 2 ** 31 + 700])
          for (const span of [1, 2, 512])
            expect(g.overlaps(x, span), `${x}+${span}`).toBe(want.some(([a, b]) => a < x + span && x < b));
      }),
      { numRuns: 400 },
    );
  });
});

describe('TlbSeen', () => {
  type Op = { fill: [number, number, 1 | 2 | 3] } | { fillRun: [number, number] } | { flush: true };
  const op = fc.oneof(
    {
      weight: 8,
      arbitrary: fc
        .tuple(
          // gfns a TLB array's length apart evict each other at their place
          fc.oneof(
            fc.integer({ min: 0, max: 5000 }),
            fc
              .tuple(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 2 }))
              .map(([g, k]) => g + k * 2048),
          ),
          fc.integer({ min: 1, max: 3 }),
          fc.constantFrom<1 | 2 | 3>(1, 1, 1, 1, 1, 1, 2, 3),
        )
        .map(([g, p, l]): Op => ({ fill: [g, p, l] })),
    },
    { weight: 1, arbitrary: fc.constant<Op>({ flush: true }) },
    // a run of 4K fills (a large working set)
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 1, max: 100 }))
        .map(([g, n]): Op => ({ fillRun: [g, n] })),
    },
  );

  // (rounds of up to 60 fills: a TlbSeen holds 32 entries before it grows)
  it.each([6, 60])(
    'names the ranges of the entries that changed, appeared or went away since the last update (rounds of ≤ %i operations)',
    (perRound) => {
      let most = 0;
      fc.assert(
        fc.property(
          fc.array(fc.array(op, { maxLength: perRound }), { minLength: 1, maxLength: 8 }),
          fc.array(fc.boolean(), { maxLength: 6 }),
          (rounds, asFlips) => {
            const t = new Tlb();
            const seen = new TlbSeen();
            let as = 0;
            let before: Map<string, [number, number]> | null = null;
            rounds.forEach((ops, k) => {
              for (const o of ops) {
                if ('flush' in o) t.flushAll();
                else if ('fillRun' in o) {
                  const [g, n] = o.fillRun;
                  for (let k = g; k < g + n; k++) t.fill(k, k * 3 + 1, 1, false, 6);
                } else {
                  const [g, p, l] = o.fill;
                  // a base gfn and pfn of the level, as the MMU fills them
                  const base = g - (g % SPAN[l]!);
                  t.fill(base, base * 7 + p * SPAN[l]!, l, true, 6);
                }
              }
              if (asFlips[k]) as ^= 1;
              const asChanged = asFlips[k] === true;
              const r = new GfnRanges();
              seen.update(t, as, r);
              const now = entries(t);
              most = Math.max(most, now.size);
              // what must be named: every entry now that was not there with the same pfn, every entry gone
              const want = new GfnRanges();
              for (const [key, [pfn, span]] of now) {
                const gfn = Number(key.split(':')[1]);
                const was = before?.get(key);
                if (before === null || asChanged || was === undefined || was[0] !== pfn)
                  want.add(gfn, gfn + span);
              }
              if (before !== null && !asChanged)
                for (const [key, [pfn, span]] of before) {
                  const gfn = Number(key.split(':')[1]);
                  const is = now.get(key);
                  if (is === undefined || is[0] !== pfn) want.add(gfn, gfn + span);
                }
              want.seal();
              r.seal();
              expect(covered(r, 8000)).toEqual(covered(want, 8000));
              // not written since: nothing is named
              const again = new GfnRanges();
              seen.update(t, as, again);
              expect(again.length).toBe(0);
              before = now;
            });
          },
        ),
        { numRuns: perRound > 6 ? 150 : 500 },
      );
      if (perRound > 6) expect(most).toBeGreaterThan(64);
    },
  );

  it('after forget() every entry is named again', () => {
    const t = new Tlb();
    t.fill(5, 100, 1, true, 6);
    t.fill(1024, 2048, 2, true, 6);
    const seen = new TlbSeen();
    seen.update(t, 0, new GfnRanges());
    seen.forget();
    const r = new GfnRanges();
    seen.update(t, 0, r);
    r.seal();
    expect(covered(r, 2000)).toEqual([5, ...Array.from({ length: 512 }, (_, i) => 1024 + i)]);
  });
});
