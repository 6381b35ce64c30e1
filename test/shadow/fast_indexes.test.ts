/**
 * The shadow MMU's model-only lookup shortcuts answer exactly what the structures they stand in front of
 * answer, on random histories (fast-check; a failure prints its seed and path for fc.assert's options):
 *   - MmuPageHash's gfn index of pages with gPTEs: hasValidGptesPage(gfn) equals the bucket walk
 *     (for_each_gfn_valid_sp_with_gptes non-empty) through adds, frees, invalidations and zap-all-fast's
 *     generation flips;
 *   - GuestPageTables' direct-mapped table cache: every read equals a plain map of the writes, also after
 *     a snapshot restore takes back tables made since (the cache is restored with them);
 *   - GfnCounter itself: counts equal a plain map's and no chunk outlives its last non-zero count.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MmuPageHash } from '../../src/x86/mmu/shadow_hash.ts';
import { makeRole, ROLE_INVALID, ShadowPage } from '../../src/x86/mmu/shadow_rmap.ts';
import { GuestPageTables } from '../../src/x86/mmu/guest_paging.ts';
import { GfnCounter } from '../../src/x86/mmu/gfn_bitmap.ts';
import { snapshot } from '../../src/kvm/snapshot.ts';

/** gfns that share hash buckets, cache entries and counter chunks, and some far apart (past 2^32). */
const gfnArb = fc.oneof(
  fc.integer({ min: 0, max: 70 }),
  fc.constantFrom(1023, 1024, 1025, 4096, 2 ** 32 + 3, 2 ** 40 - 1, 2 ** 40 + 64),
);

type HashOp =
  | { op: 'add'; gfn: number; level: number; direct: boolean; access: number }
  | { op: 'free'; k: number }
  | { op: 'invalidate'; k: number }
  | { op: 'flip' };

const hashOpArb: fc.Arbitrary<HashOp> = fc.oneof(
  fc.record({
    op: fc.constant('add' as const),
    gfn: gfnArb,
    level: fc.integer({ min: 1, max: 4 }),
    direct: fc.boolean(),
    access: fc.integer({ min: 0, max: 7 }),
  }),
  fc.record({ op: fc.constant('free' as const), k: fc.nat() }),
  fc.record({ op: fc.constant('invalidate' as const), k: fc.nat() }),
  fc.constant({ op: 'flip' as const }),
);

describe('MmuPageHash: the gfn index answers as the bucket walk', () => {
  it('hasValidGptesPage = validForGfn(gfn).some(hasGptes) after every step (fast-check)', () => {
    fc.assert(
      fc.property(fc.array(hashOpArb, { minLength: 1, maxLength: 60 }), (ops) => {
        const stats = { mmu_cache_miss: 0, max_mmu_page_hash_collisions: 0 };
        const mmu = { mmuValidGen: 0 };
        const hash = new MmuPageHash(stats, mmu);
        const live: ShadowPage[] = [];
        const gfns = new Set<number>();
        let id = 0;
        for (const o of ops) {
          if (o.op === 'add') {
            const sp = new ShadowPage(++id, o.gfn, makeRole(o.level, o.direct, o.access), mmu.mmuValidGen);
            hash.add(sp);
            live.push(sp);
            gfns.add(o.gfn);
          } else if (o.op === 'free' && live.length > 0) {
            hash.remove(live.splice(o.k % live.length, 1)[0]!);
          } else if (o.op === 'invalidate' && live.length > 0) {
            live[o.k % live.length]!.role |= ROLE_INVALID;
          } else if (o.op === 'flip') mmu.mmuValidGen ^= 1;
          for (const g of gfns)
            expect(hash.hasValidGptesPage(g)).toBe(hash.validForGfn(g).some((sp) => sp.hasGptes));
        }
      }),
      { numRuns: 300 },
    );
  });

  it('a valid page with gPTEs is found, a direct one is not, and freeing the last one clears the gfn', () => {
    const mmu = { mmuValidGen: 0 };
    const hash = new MmuPageHash({ mmu_cache_miss: 0, max_mmu_page_hash_collisions: 0 }, mmu);
    const table = new ShadowPage(1, 0x1234, makeRole(1, false, 7), 0);
    const direct = new ShadowPage(2, 0x5000, makeRole(1, true, 7), 0);
    hash.add(table);
    hash.add(direct);
    expect([hash.hasValidGptesPage(0x1234), hash.hasValidGptesPage(0x5000)]).toEqual([true, false]);
    mmu.mmuValidGen = 1; // obsolete: still hashed, no longer valid
    expect(hash.hasValidGptesPage(0x1234)).toBe(false);
    mmu.mmuValidGen = 0;
    hash.remove(table);
    expect(hash.hasValidGptesPage(0x1234)).toBe(false);
  });
});

type GptOp =
  | { op: 'write'; gfn: number; index: number; gpte: number }
  | { op: 'read'; gfn: number; index: number }
  | { op: 'snapshot' }
  | { op: 'restore' };

const gptOpArb: fc.Arbitrary<GptOp> = fc.oneof(
  fc.record({
    op: fc.constant('write' as const),
    gfn: gfnArb,
    index: fc.integer({ min: 0, max: 511 }),
    gpte: fc.integer({ min: 0, max: 2 ** 40 }),
  }),
  fc.record({ op: fc.constant('read' as const), gfn: gfnArb, index: fc.integer({ min: 0, max: 511 }) }),
  fc.constant({ op: 'snapshot' as const }),
  fc.constant({ op: 'restore' as const }),
);

describe('GuestPageTables: the table cache reads what was written', () => {
  it('read/tableIfAny = a plain map of the writes, across snapshot restores (fast-check)', () => {
    fc.assert(
      fc.property(fc.array(gptOpArb, { minLength: 1, maxLength: 80 }), (ops) => {
        const gpt = new GuestPageTables();
        let model = new Map<string, number>();
        const tables = new Set<number>();
        let snap: { s: ReturnType<typeof snapshot>; model: Map<string, number>; tables: Set<number> } | null =
          null;
        let cur = tables;
        for (const o of ops) {
          if (o.op === 'write') {
            gpt.write(o.gfn, o.index, o.gpte);
            model.set(`${o.gfn}:${o.index}`, o.gpte);
            cur.add(o.gfn);
          } else if (o.op === 'snapshot') {
            snap = { s: snapshot([gpt]), model: new Map(model), tables: new Set(cur) };
          } else if (o.op === 'restore' && snap !== null) {
            snap.s.restore();
            model = new Map(snap.model);
            cur = new Set(snap.tables);
          }
          const g = o.op === 'read' || o.op === 'write' ? o.gfn : 0;
          const i = o.op === 'read' || o.op === 'write' ? o.index : 0;
          expect(gpt.read(g, i)).toBe(model.get(`${g}:${i}`) ?? 0);
          expect(gpt.tableIfAny(g) !== undefined).toBe(cur.has(g));
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('GfnCounter', () => {
  it('counts as a plain map and drops emptied chunks (fast-check)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ gfn: gfnArb, up: fc.boolean() }), { minLength: 1, maxLength: 80 }),
        (ops) => {
          const c = new GfnCounter();
          const model = new Map<number, number>();
          for (const o of ops) {
            const was = model.get(o.gfn) ?? 0;
            if (!o.up && was === 0) {
              expect(() => c.add(o.gfn, -1)).toThrow(RangeError);
            } else {
              c.add(o.gfn, o.up ? 1 : -1);
              model.set(o.gfn, was + (o.up ? 1 : -1));
            }
            for (const [g, n] of model) expect(c.get(g)).toBe(n);
          }
          const chunks = (c as unknown as { chunks: Map<number, Int32Array> }).chunks;
          const live = new Set([...model].filter(([, n]) => n !== 0).map(([g]) => Math.floor(g / 1024)));
          expect(new Set(chunks.keys())).toEqual(live);
        },
      ),
      { numRuns: 300 },
    );
  });
});
