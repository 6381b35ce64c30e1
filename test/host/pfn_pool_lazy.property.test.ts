/**
 * Property: the host page pool's lazily made refcount/version chunks answer exactly as chunks made up
 * front. Two pools, one lazy (the default) and one with `eagerChunks`, run the same random sequence of
 * allocations (4K, 2M and 1G blocks, so alignment gaps and compound tails occur), frees, references,
 * long-term pins and unpins, content writes and copies, compound splits and swap-out/in; after every
 * step the pfns it touched, and at the end every pfn up to past the highest handed out, must have the
 * same refcount, content version, free and pinned answers, with the same allocation count and epoch.
 *
 * Replay a failure: fast-check prints `seed` and `path`; pass them to fc.assert's options.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PfnPool } from '../../src/host/pfn_pool.ts';
import { snapshot } from '../../src/kvm/snapshot.ts';

type Op =
  | { op: 'alloc'; n: 1 | 512 | 262144; count: number }
  | { op: 'put' | 'get' | 'pin' | 'unpin' | 'write' | 'split' | 'swap'; pick: number }
  | { op: 'copy'; pick: number; to: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant('alloc' as const),
      n: fc.constant(1 as const),
      count: fc.integer({ min: 1, max: 300 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('alloc' as const),
      n: fc.constant(512 as const),
      count: fc.integer({ min: 1, max: 3 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('alloc' as const),
      n: fc.constant(262144 as const),
      count: fc.constant(1),
    }),
  },
  {
    weight: 8,
    arbitrary: fc.record({
      op: fc.constantFrom(
        'put' as const,
        'get' as const,
        'pin' as const,
        'unpin' as const,
        'write' as const,
        'split' as const,
        'swap' as const,
      ),
      pick: fc.nat(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('copy' as const), pick: fc.nat(), to: fc.nat() }) },
);

/** What the pools answer for pfn. */
const view = (p: PfnPool, pfn: number): unknown[] => [
  p.refs(pfn),
  p.contentVersion(pfn),
  p.isFree(pfn),
  p.isPinned(pfn),
];

describe('PfnPool: lazily made chunks = chunks made up front', () => {
  it('same answers for every pfn after random allocation, reference and content sequences (fast-check)', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) => {
        const lazy = new PfnPool();
        const eager = new PfnPool({ eagerChunks: true });
        /** pages handed out (any page of a block), and pages pinned, as the test's own record */
        const pages: number[] = [];
        const pinned: number[] = [];
        let top = 0;
        for (const o of ops) {
          const touched: number[] = [];
          if (o.op === 'alloc') {
            for (let c = 0; c < o.count; c++) {
              const a = lazy.alloc(o.n);
              expect(eager.alloc(o.n)).toBe(a);
              pages.push(a, a + o.n - 1, a + (o.n >> 1));
              touched.push(a - 1, a, a + o.n - 1, a + o.n);
              top = Math.max(top, a + o.n);
            }
          } else if (pages.length > 0) {
            const i = o.pick % pages.length;
            const pfn = pages[i]!;
            touched.push(pfn);
            if (o.op === 'put') {
              if (lazy.refs(pfn) === 0 || lazy.isPinned(pfn)) continue;
              lazy.put(pfn);
              eager.put(pfn);
            } else if (o.op === 'get') {
              if (lazy.refs(pfn) === 0) continue;
              lazy.get(pfn);
              eager.get(pfn);
            } else if (o.op === 'pin') {
              if (lazy.refs(pfn) === 0) continue;
              lazy.pin(pfn);
              eager.pin(pfn);
              pinned.push(pfn);
            } else if (o.op === 'unpin') {
              if (pinned.length === 0) continue;
              const q = pinned.splice(o.pick % pinned.length, 1)[0]!;
              touched.push(q);
              lazy.unpin(q);
              eager.unpin(q);
            } else if (o.op === 'write') {
              lazy.write(pfn);
              eager.write(pfn);
            } else if (o.op === 'split') {
              const h = lazy.head(pfn);
              lazy.splitCompound(h);
              eager.splitCompound(h);
            } else if (o.op === 'swap') {
              lazy.swapSlotSave(pfn * 4096, pfn);
              eager.swapSlotSave(pfn * 4096, pfn);
              const nu = lazy.alloc(1);
              expect(eager.alloc(1)).toBe(nu);
              lazy.swapSlotRestore(pfn * 4096, nu);
              eager.swapSlotRestore(pfn * 4096, nu);
              pages.push(nu);
              touched.push(nu);
              top = Math.max(top, nu + 1);
            } else if (o.op === 'copy') {
              const to = pages[o.to % pages.length]!;
              lazy.copyContent(pfn, to);
              eager.copyContent(pfn, to);
              touched.push(to);
            }
          }
          for (const t of touched) if (t >= 0) expect(view(lazy, t)).toEqual(view(eager, t));
          expect([lazy.allocated, lazy.epoch]).toEqual([eager.allocated, eager.epoch]);
        }
        for (let pfn = 0; pfn <= top + 1; pfn++)
          if (
            lazy.refs(pfn) !== eager.refs(pfn) ||
            lazy.contentVersion(pfn) !== eager.contentVersion(pfn) ||
            lazy.isFree(pfn) !== eager.isFree(pfn)
          )
            expect([pfn, ...view(lazy, pfn)]).toEqual([pfn, ...view(eager, pfn)]);
      }),
      { numRuns: Number(process.env.FC_RUNS ?? 60) },
    );
  });

  it('a guest touched once at 4K costs no refcount or version chunk; a huge block makes the chunks it covers', () => {
    const p = new PfnPool();
    for (let i = 0; i < 200000; i++) p.alloc(1);
    const chunks = (): number =>
      [
        ...(
          p as unknown as { refChunks: Map<number, unknown>; verChunks: Map<number, unknown> }
        ).refChunks.keys(),
      ].length;
    expect(chunks()).toBe(0);
    expect([
      p.refs(1),
      p.contentVersion(200000),
      p.refs(200001),
      p.contentVersion(0),
      p.isFree(150000),
    ]).toEqual([1, 1, 0, 0, false]);
    const h = p.alloc(512);
    expect(h).toBe(200192); // 512-aligned past 200000: a gap of 191 pages
    expect(chunks()).toBe(1); // chunk 3 (pfns 196608…262143) holds the gap and the block
    expect([p.refs(200000), p.refs(200001), p.refs(h), p.refs(h + 1), p.contentVersion(h + 1)]).toEqual([
      1, 0, 1, 1, 1,
    ]);
    p.put(5); // a fresh page freed: its chunk is made, the page is free, its neighbours keep 1
    expect([p.refs(5), p.isFree(5), p.refs(4), p.refs(6), chunks()]).toEqual([0, true, 1, 1, 2]);
    expect(p.alloc(1)).toBe(5); // reused (LIFO): new owner, new content
    expect([p.refs(5), p.contentVersion(5), p.contentVersion(6)]).toEqual([1, 2, 1]);
  });

  it('epoch: moves when an alignment gap makes pfns past the end free, not for a block at the end', () => {
    const p = new PfnPool();
    const e0 = p.epoch;
    p.alloc(1);
    p.alloc(1); // pfns 1, 2; the end is 3
    expect([p.end, p.epoch, p.isFree(5)]).toEqual([3, e0, false]);
    const h = p.alloc(512); // aligned to 512: pfns 3…511 are a gap, free from now on
    expect([h, p.end, p.isFree(5), p.isFree(511), p.isFree(h)]).toEqual([512, 1024, true, true, false]);
    expect(p.epoch).toBe(e0 + 1);
    p.alloc(512); // at the end, no gap: no pfn's answer changed
    p.alloc(1);
    expect(p.epoch).toBe(e0 + 1);
    p.alloc(262144); // past a gap again
    expect(p.epoch).toBe(e0 + 2);
  });

  it('spare chunks: a chunk made after a snapshot is a spare, and the restore gives it back zeroed', () => {
    const p = new PfnPool();
    for (let i = 0; i < 100; i++) p.alloc(1);
    const inner = p as unknown as { refChunks: Map<number, Int32Array>; verChunks: Map<number, Uint32Array> };
    const spares = Object.getOwnPropertySymbols(p).map(
      (k) => (p as unknown as Record<symbol, { ref: Int32Array[]; ver: Uint32Array[] }>)[k]!,
    )[0]!;
    const ref0 = [...spares.ref];
    const ver0 = [...spares.ver];
    const snap = snapshot([p]);
    for (let run = 0; run < 3; run++) {
      p.put(5); // a fresh page freed: its chunks are made, from the spares
      p.write(7);
      p.alloc(1);
      expect(ref0).toContain(inner.refChunks.get(0));
      expect(ver0).toContain(inner.verChunks.get(0));
      expect([p.refs(5), p.contentVersion(5), p.contentVersion(7), p.refs(6)]).toEqual([1, 2, 2, 1]);
      snap.restore();
      expect([inner.refChunks.size, inner.verChunks.size, p.end]).toEqual([0, 0, 101]);
      expect([p.refs(5), p.contentVersion(5), p.contentVersion(7), p.isFree(5)]).toEqual([1, 1, 1, false]);
      expect(spares.ref).toEqual(ref0);
      expect(spares.ver).toEqual(ver0);
      for (const c of [...spares.ref, ...spares.ver]) expect(c.every((x) => x === 0)).toBe(true);
    }
  });
});
