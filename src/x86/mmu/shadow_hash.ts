/**
 * kvm->arch.mmu_page_hash: the shadow MMU's pages in 4096 buckets chosen by hash_64(gfn), searched by
 * (gfn, role); a lookup counts the bucket mates it skips (max_mmu_page_hash_collisions) and its misses
 * (mmu_cache_miss). Obsolete and invalid pages stay in their bucket until they are freed, but lookups
 * pass over them (for_each_valid_sp).
 *
 * Kernel counterpart: arch/x86/kvm/mmu/mmu.c (kvm_page_table_hashfn, for_each_valid_sp,
 * kvm_mmu_find_shadow_page, kvm_mmu_alloc_shadow_page's hlist_add_head, kvm_mmu_free_shadow_page's
 * hlist_del), include/linux/hash.h#hash_64_generic.
 */
import type { ShadowPage } from './shadow_rmap.ts';
import { GfnCounter } from './gfn_bitmap.ts';

/** KVM_MMU_HASH_SHIFT */
const HASH_BUCKETS = 1 << 12;

/**
 * hash_64(gfn, KVM_MMU_HASH_SHIFT): the top 12 bits of gfn * GOLDEN_RATIO_64 mod 2^64, computed from
 * 16-bit pieces (gfn < 2^52) so that bucket mates — and max_mmu_page_hash_collisions — are the kernel's.
 * Only int32 operations (Math.imul, shifts, masks, additions truncated by `| 0`): no intermediate value
 * leaves the int32 range, so optimized code never deoptimizes on an overflow (the fault path inlines it).
 * @kernel arch/x86/kvm/mmu/mmu.c#kvm_page_table_hashfn
 */
export function kvmPageTableHashfn(gfn: number): number {
  const v0 = gfn >>> 0;
  const v1 = Math.floor(gfn / 2 ** 32) >>> 0;
  const g0 = 0x80b583eb;
  const g1 = 0x61c88646;
  // high 32 bits of v0 * g0 from the four 16x16 products, each taken as 32 bits by Math.imul
  const al = v0 & 0xffff;
  const ah = v0 >>> 16;
  const bl = g0 & 0xffff;
  const bh = g0 >>> 16;
  const lh = Math.imul(al, bh);
  const hl = Math.imul(ah, bl);
  const mid = (Math.imul(al, bl) >>> 16) + (lh & 0xffff) + (hl & 0xffff); // < 3 * 2^16
  let hi = (Math.imul(ah, bh) + (lh >>> 16)) | 0;
  hi = (hi + (hl >>> 16) + (mid >>> 16)) | 0;
  hi = (hi + Math.imul(v0, g1)) | 0;
  hi = (hi + Math.imul(v1, g0)) | 0;
  return hi >>> 20;
}

/**
 * The key of the hash's gfn index: a symbol, so the index is saved and restored with a snapshot but left
 * out of the state hash (it is a function of the buckets' contents, which are hashed).
 */
const GPTES_AT: unique symbol = Symbol('zaplab.mmuPageHash.gptesAt');

/** What a lookup counts into. */
export interface HashStats {
  mmu_cache_miss: number;
  max_mmu_page_hash_collisions: number;
}

export class MmuPageHash {
  private readonly buckets: (ShadowPage[] | undefined)[] = new Array(HASH_BUCKETS);
  /**
   * Model-only index: how many hashed pages with gPTEs (valid, obsolete or invalid alike) have each base
   * gfn. Zero answers hasValidGptesPage without walking a bucket: almost every gfn a fault maps is data,
   * and the bucket walk (a cache miss into a random bucket per fault) was a tenth of a shadow fault.
   */
  private readonly [GPTES_AT] = new GfnCounter();

  constructor(
    private readonly stats: HashStats,
    /** the MMU whose mmu_valid_gen decides is_obsolete_sp */
    private readonly mmu: { readonly mmuValidGen: number },
  ) {}

  /** @kernel arch/x86/kvm/mmu/mmu.c#is_obsolete_sp (inline here: lookups run on every fault) */
  private isObsolete(sp: ShadowPage): boolean {
    return sp.invalid || sp.mmuValidGen !== this.mmu.mmuValidGen;
  }

  private bucket(gfn: number): ShadowPage[] {
    const h = kvmPageTableHashfn(gfn);
    let b = this.buckets[h];
    if (b === undefined) this.buckets[h] = b = [];
    return b;
  }

  add(sp: ShadowPage): void {
    this.bucket(sp.gfn).push(sp);
    if (sp.hasGptes) this[GPTES_AT].add(sp.gfn, 1);
  }

  remove(sp: ShadowPage): void {
    const b = this.bucket(sp.gfn);
    const k = b.indexOf(sp);
    if (k < 0) return;
    b.splice(k, 1);
    if (sp.hasGptes) this[GPTES_AT].add(sp.gfn, -1);
  }

  /** Valid pages whose base gfn is gfn (for_each_valid_sp + the gfn check). */
  validForGfn(gfn: number): ShadowPage[] {
    return this.bucket(gfn).filter((sp) => sp.gfn === gfn && !this.isObsolete(sp));
  }

  /** Does a valid page shadow the guest table at gfn? (validForGfn(gfn).some(hasGptes), allocation-free) */
  hasValidGptesPage(gfn: number): boolean {
    if (this[GPTES_AT].get(gfn) === 0) return false;
    const b = this.buckets[kvmPageTableHashfn(gfn)];
    if (b === undefined) return false;
    for (let k = 0; k < b.length; k++) {
      const sp = b[k]!;
      if (sp.gfn === gfn && sp.hasGptes && !this.isObsolete(sp)) return true;
    }
    return false;
  }

  /** @kernel arch/x86/kvm/mmu/mmu.c#kvm_mmu_find_shadow_page */
  find(gfn: number, role: number): ShadowPage | null {
    let collisions = 0;
    let found: ShadowPage | null = null;
    for (const sp of this.bucket(gfn)) {
      if (this.isObsolete(sp)) continue;
      if (sp.gfn !== gfn) {
        collisions++;
        continue;
      }
      if (sp.role !== role) continue;
      found = sp;
      break;
    }
    if (found === null) this.stats.mmu_cache_miss++;
    if (collisions > this.stats.max_mmu_page_hash_collisions)
      this.stats.max_mmu_page_hash_collisions = collisions;
    return found;
  }
}
