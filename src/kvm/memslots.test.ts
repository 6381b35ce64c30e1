/**
 * searchMemslots against a linear scan of the slots, across the lookup directory's life: random slot
 * layouts (dense, sparse, clustered, with gaps and far-away slots), enough lookups to build the directory,
 * then changes that must drop it, then lookups again.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { KvmMemslots, newMemslot } from './memslots.ts';
import { asGfn, asHva } from '../types/addr.ts';
import type { KvmMemorySlot } from './kvm_host.ts';

function linear(slots: KvmMemorySlot[], gfn: number): KvmMemorySlot | null {
  return slots.find((s) => gfn >= s.baseGfn && gfn < s.baseGfn + s.npages) ?? null;
}

/** Disjoint [base, base + npages) ranges from (gap, npages) pairs, some gaps huge. */
function layout(parts: [number, number][]): { base: number; npages: number }[] {
  let at = 0;
  return parts.map(([gap, npages]) => {
    const base = at + gap;
    at = base + npages;
    return { base, npages };
  });
}

const partArb = fc.tuple(
  fc.oneof(
    fc.constant(0),
    fc.integer({ min: 0, max: 8 }),
    fc.integer({ min: 0, max: 2 ** 20 }),
    fc.constant(2 ** 36),
  ),
  fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 600 })),
);

describe('searchMemslots (last-used cache, binary search, lookup directory)', () => {
  it('finds the slot a linear scan finds, before and after the directory is built and after changes', () => {
    fc.assert(
      fc.property(
        fc.array(partArb, { minLength: 100, maxLength: 400, size: 'max' }),
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 50 }),
        fc.nat(1000),
        (parts, probes, seed) => {
          const set = new KvmMemslots(0, 0);
          const slots = layout(parts).map((r, id) =>
            newMemslot(0, id, asGfn(r.base), r.npages, asHva(2 ** 40), 0),
          );
          for (const s of slots) set.replace(null, s);
          const last = slots[slots.length - 1]!;
          const top = last.baseGfn + last.npages + 3;
          let x = seed;
          const gfns: number[] = [];
          for (const p of probes) gfns.push(Math.floor(p * top));
          for (const s of slots) {
            const end = s.baseGfn + s.npages;
            gfns.push(s.baseGfn - 1, s.baseGfn, s.baseGfn + 1, end - 1, end, end + 1);
          }
          for (let i = 0; i < 200; i++) {
            x = (Math.imul(x, 1103515245) + 12345) >>> 0;
            gfns.push(x % top);
          }
          const check = (live: KvmMemorySlot[]): void => {
            // twice over: the first pass builds the directory (past its threshold), the second uses it
            for (let pass = 0; pass < 2; pass++)
              for (const g of gfns) expect(set.searchMemslots(g)).toBe(linear(live, g));
            expect((set as unknown as { dir: unknown }).dir).not.toBeNull();
          };
          check(slots);
          // delete every third slot and grow one: the directory must go with the old layout
          const live = slots.filter((_, i) => i % 3 !== 1);
          for (let i = 1; i < slots.length; i += 3) set.replace(slots[i]!, null);
          check(live);
          return true;
        },
      ),
      { numRuns: 30 },
    );
  });

  it('slots on a power-of-two grid, one gfn in or out at cell edges: the whole-bucket entries', () => {
    // Directory buckets are powers of two from the first base, so on a grid they fall on cell edges;
    // a slot one gfn short of its last cell, one gfn late, or holding only a cell's last gfn is where a
    // bucket is almost (not) wholly inside a slot or a gap. Slots of 1-16 cells: the bucket size
    // follows the mean, so the long slots hold whole buckets.
    const cellArb = fc.oneof(
      fc.constant(null),
      fc.record({
        len: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 16 })),
        a: fc.constantFrom(0, 0, 1, -1),
        e: fc.constantFrom(0, 0, 1),
      }),
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 3, max: 10 }),
        fc.array(cellArb, { minLength: 80, maxLength: 300 }),
        fc.nat(1000),
        (k, items, seed) => {
          const cell = 2 ** k;
          const set = new KvmMemslots(0, 0);
          const slots: KvmMemorySlot[] = [];
          let at = 0; // in cells
          for (const c of items) {
            if (c === null) {
              at++;
              continue;
            }
            // a = -1: the slot is its first cell's last gfn only
            const base = c.a === -1 ? at * cell + cell - 1 : at * cell + c.a;
            const end = c.a === -1 ? base + 1 : (at + c.len) * cell - c.e;
            at += c.a === -1 ? 1 : c.len;
            const s = newMemslot(0, slots.length, asGfn(base), end - base, asHva(2 ** 40), 0);
            slots.push(s);
            set.replace(null, s);
          }
          fc.pre(slots.length >= 64);
          const gfns: number[] = [];
          for (let i = 0; i <= at; i++) gfns.push(i * cell - 1, i * cell, i * cell + 1);
          for (const s of slots) {
            const end = s.baseGfn + s.npages;
            gfns.push(s.baseGfn - 1, s.baseGfn, end - 1, end);
          }
          let x = seed;
          for (let i = 0; i < 300; i++) {
            x = (Math.imul(x, 1103515245) + 12345) >>> 0;
            gfns.push(x % (at * cell + 2));
          }
          // forwards, then backwards, twice: the first pass builds the directory past its threshold
          for (let pass = 0; pass < 4; pass++) {
            const order = pass % 2 === 0 ? gfns : [...gfns].reverse();
            for (const g of order) expect(set.searchMemslots(g)).toBe(linear(slots, g));
          }
          expect((set as unknown as { dir: unknown }).dir).not.toBeNull();
          return true;
        },
      ),
      { numRuns: 200 },
    );
  });

  it('32764 adjacent 2 MiB slots: every page boundary and random gfns', () => {
    const set = new KvmMemslots(0, 0);
    const slots: KvmMemorySlot[] = [];
    for (let id = 0; id < 32764; id++) {
      const s = newMemslot(0, id, asGfn(id * 512), 512, asHva(2 ** 40 + id * 2 ** 21), 0);
      slots.push(s);
      set.replace(null, s);
    }
    let x = 7;
    for (let i = 0; i < 100_000; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const g = x % (32764 * 512 + 100);
      const want = g < 32764 * 512 ? slots[Math.floor(g / 512)]! : null;
      if (set.searchMemslots(g) !== want) expect(set.searchMemslots(g)).toBe(want);
    }
    for (let id = 0; id < 32764; id += 97) {
      expect(set.searchMemslots(id * 512)).toBe(slots[id]);
      expect(set.searchMemslots(id * 512 + 511)).toBe(slots[id]);
    }
  });
});
