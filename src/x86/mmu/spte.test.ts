import { describe, expect, it } from 'vitest';
import { asPfn } from '../../types/addr.ts';
import {
  ACC_ALL,
  ACC_EXEC_MASK,
  ACC_USER_MASK,
  EPT_SPTE_HOST_WRITABLE_HI,
  EPT_SPTE_MMU_WRITABLE_HI,
  FROZEN_SPTE_HI,
  FROZEN_SPTE_LO,
  MMIO_SPTE_GEN_HIGH_MASK_HI,
  MMIO_SPTE_GEN_LOW_MASK_LO,
  MT_MASK_WB_IPAT,
  SHADOW_ACC_TRACK_SAVED_MASK_HI,
  SHADOW_NONPRESENT_HI,
  SHADOW_NONPRESENT_LO,
  SPTE_BASE_ADDR_MASK_HI,
  SPTE_BASE_ADDR_MASK_LO,
  SPTE_MASKS,
  SPTE_MMU_PRESENT_MASK,
  SPTE_TDP_AD_MASK_HI,
  getMmioSpteGeneration,
  isAccessTrackSpte,
  isFrozenSpte,
  isLastSpte,
  isMmioSpte,
  isShadowPresentPte,
  isWritablePte,
  makeMmioSpte,
  makeNonleafSpte,
  makeSmallSpte,
  makeSpte,
  newSptePair,
  restoreAccTrackSpte,
  spteFromValue,
  spteToPfn,
  spteValue,
  type MakeSpteParams,
  tdpLeafParams,
} from './spte.ts';

const base: MakeSpteParams = tdpLeafParams(1, asPfn(0x1234), MT_MASK_WB_IPAT, true);
const value = (p: { lo: number; hi: number }): bigint => spteValue(p.lo, p.hi);

describe('spte masks (spte.h static_asserts)', () => {
  const M = SPTE_MASKS;
  const disjoint = (a: bigint, b: bigint): boolean => (a & b) === 0n;
  it('keeps the masks that must not overlap disjoint', () => {
    expect(disjoint(M.SPTE_MMU_PRESENT_MASK, M.MMIO_SPTE_GEN_LOW_MASK | M.MMIO_SPTE_GEN_HIGH_MASK)).toBe(
      true,
    );
    expect(disjoint(M.SPTE_TDP_AD_MASK, M.SHADOW_ACC_TRACK_SAVED_MASK)).toBe(true);
    for (const w of [M.EPT_SPTE_HOST_WRITABLE, M.EPT_SPTE_MMU_WRITABLE]) {
      expect(disjoint(w, M.SPTE_TDP_AD_MASK)).toBe(true);
      expect(disjoint(w, M.SHADOW_ACC_TRACK_SAVED_MASK)).toBe(true);
    }
    expect(disjoint(M.FROZEN_SPTE, M.SPTE_MMU_PRESENT_MASK)).toBe(true);
    expect(disjoint(M.MMIO_SPTE_GEN_LOW_MASK, M.MMIO_SPTE_GEN_HIGH_MASK)).toBe(true);
    expect(disjoint(M.SPTE_BASE_ADDR_MASK, M.MMIO_SPTE_GEN_LOW_MASK | M.MMIO_SPTE_GEN_HIGH_MASK)).toBe(true);
    expect(disjoint(M.MMIO_SPTE_GEN_HIGH_MASK, M.SHADOW_NONPRESENT_VALUE)).toBe(true);
  });
  it('has 32-bit halves that agree with the u64 masks', () => {
    const lo = (v: bigint): number => Number(v & 0xffffffffn) | 0;
    const hi = (v: bigint): number => Number(v >> 32n) | 0;
    expect(SPTE_MMU_PRESENT_MASK).toBe(lo(M.SPTE_MMU_PRESENT_MASK));
    expect(SPTE_TDP_AD_MASK_HI).toBe(hi(M.SPTE_TDP_AD_MASK));
    expect(SHADOW_ACC_TRACK_SAVED_MASK_HI).toBe(hi(M.SHADOW_ACC_TRACK_SAVED_MASK));
    expect(EPT_SPTE_HOST_WRITABLE_HI).toBe(hi(M.EPT_SPTE_HOST_WRITABLE));
    expect(EPT_SPTE_MMU_WRITABLE_HI).toBe(hi(M.EPT_SPTE_MMU_WRITABLE));
    expect(MMIO_SPTE_GEN_LOW_MASK_LO).toBe(lo(M.MMIO_SPTE_GEN_LOW_MASK));
    expect(MMIO_SPTE_GEN_HIGH_MASK_HI).toBe(hi(M.MMIO_SPTE_GEN_HIGH_MASK));
    expect(SPTE_BASE_ADDR_MASK_LO).toBe(lo(M.SPTE_BASE_ADDR_MASK));
    expect(SPTE_BASE_ADDR_MASK_HI).toBe(hi(M.SPTE_BASE_ADDR_MASK));
  });
});

describe('special values', () => {
  it('SHADOW_NONPRESENT_VALUE is bit 63 and FROZEN_SPTE is bit 63 | 0x5a0', () => {
    expect(spteValue(SHADOW_NONPRESENT_LO, SHADOW_NONPRESENT_HI)).toBe(0x8000000000000000n);
    expect(spteValue(FROZEN_SPTE_LO, FROZEN_SPTE_HI)).toBe(0x80000000000005a0n);
    expect(isShadowPresentPte(FROZEN_SPTE_LO)).toBe(false);
    expect(isFrozenSpte(FROZEN_SPTE_LO, FROZEN_SPTE_HI)).toBe(true);
  });
  it('never takes the non-present or frozen value for an MMIO SPTE (EPT and TDX MMIO values)', () => {
    for (const mmio of [0x6, 0]) {
      expect(isMmioSpte(SHADOW_NONPRESENT_LO, SHADOW_NONPRESENT_HI, mmio)).toBe(false);
      expect(isMmioSpte(FROZEN_SPTE_LO, FROZEN_SPTE_HI, mmio)).toBe(false);
    }
  });
  it('round-trips bigints through halves', () => {
    const p = spteFromValue(0x8600000001234b77n, newSptePair());
    expect(p).toEqual({ lo: 0x01234b77, hi: 0x86000000 | 0 });
    expect(value(p)).toBe(0x8600000001234b77n);
  });
});

describe('make_spte', () => {
  it('builds a writable 4K WB leaf bit for bit', () => {
    const p = newSptePair();
    expect(makeSpte(p, base)).toBe(false);
    // MMU-present | R (present) | A | X | R (user) | WB<<3 | IPAT | W | D | pfn | SVE | host-W | MMU-W
    expect(value(p)).toBe(0x8600000001234b77n);
    expect(spteToPfn(p.lo, p.hi)).toBe(0x1234);
    expect(isLastSpte(p.lo, 1)).toBe(true);
    expect(isWritablePte(p.lo)).toBe(true);
  });
  it('drops X on huge leafs with the NX huge page mitigation, and W without host-writable', () => {
    const p = newSptePair();
    makeSpte(p, { ...base, level: 2, pfn: asPfn(0x200), nxHugePages: true, hostWritable: false });
    expect(value(p)).toBe(0x80000000002009f1n);
    expect(isLastSpte(p.lo, 2)).toBe(true);
  });
  it('write-protects for shadowing without MMU-writable', () => {
    const p = newSptePair();
    expect(makeSpte(p, { ...base, wrprotForShadowing: true })).toBe(true);
    expect(value(p)).toBe(0x8200000001234975n);
  });
  it('creates prefetched A/D-disabled SPTEs access-tracked, saving R and X', () => {
    const p = newSptePair();
    makeSpte(p, { ...base, pteAccess: ACC_EXEC_MASK | ACC_USER_MASK, prefetch: true, adDisabled: true });
    expect(value(p)).toBe(0x8350000001234870n);
    expect(isAccessTrackSpte(p.lo, p.hi)).toBe(true);
    restoreAccTrackSpte(p);
    expect(value(p)).toBe(0x8210000001234875n);
  });
  it('keeps a 40-bit pfn exact', () => {
    const p = newSptePair();
    makeSpte(p, { ...base, pfn: asPfn(2 ** 39 + 5) });
    expect(spteToPfn(p.lo, p.hi)).toBe(2 ** 39 + 5);
  });
});

describe('make_nonleaf_spte / make_mmio_spte / make_small_spte', () => {
  it('points a non-leaf at its child with RWX and A', () => {
    const p = makeNonleafSpte(newSptePair(), 0x5678, false);
    expect(value(p)).toBe(0x8000000005678907n);
    expect(isLastSpte(p.lo, 2)).toBe(false);
    expect(value(makeNonleafSpte(newSptePair(), 0x5678, true))).toBe(0x8010000005678807n);
  });
  it('splits a 19-bit generation across bits 10:3 and 62:52', () => {
    const p = makeMmioSpte(newSptePair(), 0xfee00, 0x12345);
    expect(value(p)).toBe(0x12300000fee0022en);
    expect(getMmioSpteGeneration(p.lo, p.hi)).toBe(0x12345);
    expect(isMmioSpte(p.lo, p.hi)).toBe(true);
    expect(isShadowPresentPte(p.lo)).toBe(false);
    const g = makeMmioSpte(newSptePair(), 1, 0x7ffff);
    expect(getMmioSpteGeneration(g.lo, g.hi)).toBe(0x7ffff);
    // TDX: per-VM MMIO value 0; an EPT-value check does not recognise it.
    const t = makeMmioSpte(newSptePair(), 0xfee00, 3, 0);
    expect(isMmioSpte(t.lo, t.hi, 0)).toBe(true);
    expect(isMmioSpte(t.lo, t.hi)).toBe(false);
  });
  it('derives 4K children from a 2M leaf', () => {
    const huge = newSptePair();
    makeSpte(huge, { ...base, level: 2, pfn: asPfn(0x1000) });
    const c = makeSmallSpte(newSptePair(), huge.lo, huge.hi, 1, 5, false);
    const direct = newSptePair();
    makeSpte(direct, { ...base, level: 1, pfn: asPfn(0x1005) });
    expect(value(c)).toBe(value(direct));
    const c2 = makeSmallSpte(newSptePair(), huge.lo, huge.hi, 2, 3, false);
    expect(spteToPfn(c2.lo, c2.hi)).toBe(0x1000 + 3 * 512);
  });
});
