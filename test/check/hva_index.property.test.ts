/**
 * The checker's memslot index by host address (src/check/hva_index.ts) names the slots over an hva range
 * that a scan of every slot names, in the same order (address space, then slot order): random slot lists
 * per address space (host ranges that overlap, nest, touch or coincide, as aliasing slots may), random
 * ranges.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { HvaIndex } from '../../src/check/hva_index.ts';
import type { KvmMemorySlot } from '../../src/kvm/kvm_host.ts';

const slotArb = fc
  .tuple(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 1, max: 16 }))
  .map(([page, npages]) => ({ userspaceAddr: 0x7f0000000000 + page * 4096, npages }) as KvmMemorySlot);

describe('HvaIndex', () => {
  it('over() = a scan of every slot, in list order', () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(slotArb, { maxLength: 12 }), { minLength: 1, maxLength: 2 }),
        fc.array(fc.tuple(fc.integer({ min: -2, max: 90 }), fc.integer({ min: 1, max: 20 })), {
          minLength: 1,
          maxLength: 20,
        }),
        fc.boolean(),
        (given, queries, inHvaOrder) => {
          // (in hva order too: the build that skips its sort, as slots of one mapping usually come)
          const lists = inHvaOrder
            ? given.map((l) => [...l].sort((x, y) => x.userspaceAddr - y.userspaceAddr))
            : given;
          const ix = new HvaIndex();
          // (built twice: a build replaces what the last one made)
          ix.build([...lists].reverse());
          ix.build(lists);
          for (const [page, n] of queries) {
            const a = 0x7f0000000000 + page * 4096;
            const b = a + n * 4096;
            const want = lists
              .flat()
              .filter((s) => s.userspaceAddr < b && a < s.userspaceAddr + s.npages * 4096);
            expect([...ix.over(a, b)]).toEqual(want);
            // (the same objects, in the same order)
            ix.over(a, b).forEach((s, i) => expect(s).toBe(want[i]));
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});
