import { describe, expect, it } from 'vitest';
import { CHUNK_TABLES, SP_ALLOCATED, SpPool, childTableOf, spToPfn } from './sp_pool.ts';
import { makeNonleafSpte, newSptePair, spteValue } from './spte.ts';

describe('sp_pool', () => {
  it('hands out tables filled with SHADOW_NONPRESENT_VALUE', () => {
    const pool = new SpPool();
    const before = pool.alloc();
    const t = pool.alloc();
    const after = pool.alloc();
    for (const x of [before, t, after])
      for (let i = 0; i < 512; i++) pool.write(x, i, 0x1234 + i, 0x5678 + x);
    pool.freeNow(t);
    const u = pool.alloc();
    expect(u).toBe(t);
    // every entry of the reused table (alloc copies a blank table over it), and not one word more
    for (let i = 0; i < 512; i++)
      expect(spteValue(pool.readLo(u, i), pool.readHi(u, i))).toBe(0x8000000000000000n);
    for (const x of [before, after])
      for (const i of [0, 511])
        expect([pool.readLo(x, i), pool.readHi(x, i)]).toEqual([0x1234 + i, 0x5678 + x]);
    expect(pool.flags[u]).toBe(SP_ALLOCATED);
    expect(pool.parent[u]).toBe(-1);
  });

  it('reuses an RCU-freed table only after the grace period', () => {
    const pool = new SpPool();
    const a = pool.alloc();
    pool.freeRcu(a);
    expect(pool.live).toBe(0);
    expect(pool.pendingRcu).toBe(1);
    const b = pool.alloc();
    expect(b).not.toBe(a);
    pool.rcuReclaim();
    expect(pool.alloc()).toBe(a);
    expect(() => pool.freeNow(12345)).toThrow(RangeError);
  });

  it('grows by chunks and keeps metadata small', () => {
    const pool = new SpPool();
    for (let i = 0; i < CHUNK_TABLES + 1; i++) pool.alloc();
    expect(pool.chunks).toHaveLength(2);
    expect(pool.created).toBe(CHUNK_TABLES + 1);
    // 2 chunks of SPTEs + metadata (capacity 512 tables × 19 B) + free list (64 × 4 B)
    expect(pool.bytes()).toBe(2 * CHUNK_TABLES * 4096 + 512 * 19 + 64 * 4);
  });

  it('encodes a table index in a non-leaf SPTE and decodes it back', () => {
    for (const t of [0, 1, 0xfffff, 0x100000, 2 ** 31 - 1]) {
      const s = makeNonleafSpte(newSptePair(), spToPfn(t), false);
      expect(childTableOf(s.lo, s.hi)).toBe(t);
    }
  });
});
