/**
 * RmapLevel (src/x86/mmu/rmap_level.ts), one level of a memslot's rmaps, against a plain model (a Map
 * from rmap index to its chain as an array) on random histories (fast-check; a failure prints its seed
 * and path for fc.assert's options): add returns the chain's length with the new entry, remove unlinks
 * one entry, delete drops a chain, has finds an entry, collect and forEach list entries by index then in
 * chain (insertion) order. Histories are long enough to fill several blocks of the entry pool (1024
 * entries each) and to reuse freed entries; indices share and straddle 512-index chunks.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { RmapLevel } from '../../src/x86/mmu/rmap_level.ts';
import { makeRole, ShadowPage } from '../../src/x86/mmu/shadow_rmap.ts';

const pages = Array.from({ length: 6 }, (_, k) => new ShadowPage(k + 1, k, makeRole(1, false, 7), 0));

type Op =
  | { op: 'add'; k: number; sp: number; i: number; n: number }
  | { op: 'remove'; k: number; sp: number; i: number }
  | { op: 'delete'; k: number }
  | { op: 'collect'; lo: number; len: number };

const kArb = fc.oneof(
  fc.integer({ min: 0, max: 40 }),
  fc.integer({ min: 500, max: 530 }),
  fc.integer({ min: 0, max: 5000 }),
);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant('add' as const),
      k: kArb,
      sp: fc.nat({ max: 5 }),
      i: fc.nat({ max: 3 }),
      n: fc.integer({ min: 1, max: 600 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('remove' as const),
      k: kArb,
      sp: fc.nat({ max: 5 }),
      i: fc.nat({ max: 3 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), k: kArb }) },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant('collect' as const), lo: kArb, len: fc.nat({ max: 1200 }) }),
  },
);

/** The model: index → chain in insertion order. */
type Ref = Map<number, [ShadowPage, number][]>;

function refCollect(ref: Ref, lo: number, hi: number): [number, number][] {
  const out: [number, number][] = [];
  for (const k of [...ref.keys()].sort((a, b) => a - b))
    if (k >= lo && k <= hi) for (const [sp, i] of ref.get(k)!) out.push([sp.id, i]);
  return out;
}

describe('RmapLevel = a map of chains', () => {
  it('add/remove/delete/has/collect/forEach on random histories (fast-check)', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 30 }), (ops) => {
        const r = new RmapLevel();
        const ref: Ref = new Map();
        for (const o of ops) {
          if (o.op === 'add') {
            // n consecutive indices from k (a first touch adds runs): fills blocks of the entry pool
            for (let d = 0; d < o.n; d++) {
              const chain = ref.get(o.k + d) ?? [];
              chain.push([pages[o.sp]!, o.i]);
              ref.set(o.k + d, chain);
              expect(r.add(o.k + d, pages[o.sp]!, o.i)).toBe(chain.length);
            }
          } else if (o.op === 'remove') {
            const chain = ref.get(o.k) ?? [];
            const at = chain.findIndex(([sp, i]) => sp === pages[o.sp] && i === o.i);
            expect(r.has(o.k, pages[o.sp]!, o.i)).toBe(at >= 0);
            if (at >= 0) chain.splice(at, 1);
            if (chain.length === 0) ref.delete(o.k);
            r.remove(o.k, pages[o.sp]!, o.i);
            expect(r.has(o.k, pages[o.sp]!, o.i)).toBe(
              chain.some(([sp, i]) => sp === pages[o.sp] && i === o.i),
            );
          } else if (o.op === 'delete') {
            expect(r.delete(o.k)).toBe(ref.has(o.k));
            ref.delete(o.k);
          } else {
            const sps: ShadowPage[] = [];
            const is: number[] = [];
            const n = r.collect(o.lo, o.lo + o.len, sps, is);
            const want = refCollect(ref, o.lo, o.lo + o.len);
            expect(n).toBe(want.length);
            expect(sps.map((sp, j) => [sp.id, is[j]])).toEqual(want);
          }
        }
        const all: [number, number, number][] = [];
        r.forEach((k, sp, i) => all.push([k, sp.id, i]));
        // forEach goes by group of 4096 indices in first-use order: compare as a set, then per index order
        const want: [number, number, number][] = [];
        for (const [k, chain] of ref) for (const [sp, i] of chain) want.push([k, sp.id, i]);
        const key = (a: [number, number, number]) => a[0];
        expect([...all].sort((a, b) => key(a) - key(b))).toEqual([...want].sort((a, b) => key(a) - key(b)));
      }),
      { numRuns: Number(process.env.FC_RUNS ?? 100) },
    );
  });
});
