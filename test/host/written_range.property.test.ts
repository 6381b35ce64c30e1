/**
 * Written ranges (src/kvm/written_range.ts): the owners whose typed arrays a snapshot restore copies back
 * only where they were written — a vCPU TLB (every page size, fills and flushes), the host's fault log
 * (wrapping its ring) and the MMU's ever-mapped bits (several chunks) — give back, after
 * snapshot → random operations → restore (twice, the second time from the restored state), exactly the
 * state of the snapshot: every property and typed-array byte, as the canonical dump compares them, equal
 * to the dump taken before the snapshot (what a restore of every array whole gives). Operations are
 * drawn over every place of the arrays, so a write path that does not note its write shows up.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Tlb } from '../../src/host/tlb.ts';
import { FaultLog } from '../../src/host/fault_log.ts';
import { Kvm } from '../../src/index.ts';
import { X86Mmu } from '../../src/x86/mmu/mmu.ts';
import { snapshot } from '../../src/kvm/snapshot.ts';
import { graphDump as dump } from '../explore/graph_dump.ts';

/** snapshot after `setup`, then each of `rounds` followed by a restore: the dump before the snapshot each time */
function restoresExactly<T extends object>(o: T, setup: (o: T) => void, rounds: ((o: T) => void)[]): void {
  setup(o);
  const before = dump([o]);
  const snap = snapshot([o]);
  for (const r of rounds) {
    r(o);
    snap.restore();
    expect(dump([o])).toEqual(before);
  }
}

type TlbOp = { fill: [number, 1 | 2 | 3, boolean, number] } | { fill4k: [number, boolean] } | { flush: true };
// Any gfn, or one of a few that share places, so fills land on valid entries (which need no new note).
const tlbGfn = fc.oneof(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.integer({ min: 0, max: 3 * 2048 }));
const tlbOp: fc.Arbitrary<TlbOp> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .tuple(tlbGfn, fc.constantFrom<1 | 2 | 3>(1, 2, 3), fc.boolean(), fc.integer({ min: 0, max: 7 }))
      .map((t): TlbOp => ({ fill: t })),
  },
  {
    weight: 4,
    arbitrary: fc.tuple(tlbGfn, fc.boolean()).map((t): TlbOp => ({ fill4k: t })),
  },
  { weight: 1, arbitrary: fc.constant<TlbOp>({ flush: true }) },
);
const SPAN = [0, 1, 512, 262144];
function runTlb(t: Tlb, ops: TlbOp[]): void {
  for (const o of ops) {
    if ('flush' in o) t.flushAll();
    else if ('fill4k' in o) t.fill4k(o.fill4k[0], o.fill4k[0] * 3, o.fill4k[1], 6);
    else {
      const [g, l, w, mt] = o.fill;
      const base = g - (g % SPAN[l]!);
      t.fill(g, base * 5 + 1, l, w, mt);
    }
  }
}

describe('restores that copy only written ranges are exact', () => {
  it('a vCPU TLB: fills at every page size, the 4K fast fill, flushes', () => {
    fc.assert(
      fc.property(
        fc.array(tlbOp, { maxLength: 20 }),
        fc.array(fc.array(tlbOp, { maxLength: 20 }), { minLength: 1, maxLength: 3 }),
        (setup, rounds) =>
          restoresExactly(
            new Tlb(),
            (t) => runTlb(t, setup),
            rounds.map((ops) => (t: Tlb) => runTlb(t, ops)),
          ),
      ),
      { numRuns: 400 },
    );
  });

  it("the host's fault log, around its ring", () => {
    const rec = fc.array(fc.tuple(fc.integer({ min: 0, max: 2 ** 40 }), fc.integer({ min: 1, max: 9 })), {
      maxLength: 40,
    });
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 3000 }),
        rec,
        fc.array(fc.tuple(fc.integer({ min: 0, max: 1500 }), rec), { minLength: 1, maxLength: 3 }),
        (skip, setup, rounds) => {
          const run = (l: FaultLog, n: number, rs: [number, number][]) => {
            for (let k = 0; k < n; k++) l.record(k * 4096, 1);
            for (const [s, len] of rs) l.record(s * 4096, len * 4096);
          };
          restoresExactly(
            new FaultLog(),
            (l) => run(l, skip, setup),
            rounds.map(
              ([n, rs]) =>
                (l: FaultLog) =>
                  run(l, n, rs),
            ),
          );
        },
      ),
      { numRuns: 200 },
    );
  });

  it("the MMU's ever-mapped bits, over several chunks", () => {
    // (and gfns close together, so bits land in bytes written before: only a byte's first bit is noted)
    const gfns = fc.array(
      fc.oneof(
        fc.integer({ min: 0, max: 4 * 32768 }),
        fc.integer({ min: 0, max: 2 ** 40 }),
        fc.integer({ min: 0, max: 63 }),
        fc.integer({ min: 32768, max: 32768 + 63 }),
      ),
      { maxLength: 30 },
    );
    fc.assert(
      fc.property(gfns, fc.array(gfns, { minLength: 1, maxLength: 3 }), (setup, rounds) => {
        const vm = new Kvm().createVm(0);
        const mmu = vm.mmu as X86Mmu;
        restoresExactly(
          mmu,
          (m) => {
            for (const g of setup) m.noteMapped(g);
          },
          rounds.map((gs) => (m: X86Mmu) => {
            for (const g of gs) m.noteMapped(g);
          }),
        );
      }),
      { numRuns: 200 },
    );
  });
});
