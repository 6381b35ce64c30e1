/**
 * A vCPU's TLB for guest-physical translations (EPT/NPT-derived, tagged by nothing else in this model):
 * it caches gfn → (pfn, level, writable, memtype) after an access and keeps serving it until a flush
 * reaches the vCPU or a root load flushes it. A missing or late flush therefore shows up as an access
 * that reaches a page the SPTEs no longer map.
 *
 * Kernel counterpart: the hardware TLB as KVM manages it: kvm_flush_remote_tlbs → KVM_REQ_TLB_FLUSH →
 * kvm_vcpu_flush_tlb_all on the next entry; kvm_mmu_load → kvm_mmu_flush_tlb_current.
 *
 * Simplification: a direct-mapped array per page size (2048 4K entries, 512 2M, 16 1G, like a modern
 * STLB's reach), so old entries also leave by eviction, as in hardware. No PCID/VPID tagging.
 *
 * The entries it writes are noted by place (written_range.ts), so a snapshot restore copies back those
 * and not the ~42 KB of arrays.
 */
import { SNAPSHOT_WRITTEN, WRITTEN, WrittenRange, type SnapshotWritten } from '../kvm/written_range.ts';

const SIZES = [2048, 512, 16] as const;
/** Where each page size's entries start among the places entriesInto numbers (4K, then 2M, then 1G). */
const PLACE_BASE = [0, SIZES[0], SIZES[0] + SIZES[1]] as const;
/** How many places entriesInto numbers: one per entry of the three arrays. */
export const TLB_PLACES = SIZES[0] + SIZES[1] + SIZES[2];

/** Entries past the sorted start of `used` that an insertion sort still puts in place (sortedUsed). */
const FEW_UNSORTED = 16;
/** sortByCopy's scratch (filled and read within one call: no state) */
let sortScratch = new Int32Array(64);

/** Sort u (distinct small non-negative integers) in place in increasing order, by a native sort of a copy. */
function sortByCopy(u: number[]): number[] {
  const n = u.length;
  if (sortScratch.length < n) sortScratch = new Int32Array(Math.max(n, 2 * sortScratch.length));
  const s = sortScratch.subarray(0, n);
  for (let k = 0; k < n; k++) s[k] = u[k]!;
  s.sort();
  for (let k = 0; k < n; k++) u[k] = s[k]!;
  return u;
}

export interface TlbHit {
  pfn: number;
  level: 1 | 2 | 3;
  writable: boolean;
  memtype: number;
}

export class Tlb implements SnapshotWritten {
  private readonly tag = SIZES.map((n) => new Float64Array(n).fill(-1));
  private readonly pfn = SIZES.map((n) => new Float64Array(n));
  /** bit 0 writable, bits 1..3 memtype */
  private readonly meta = SIZES.map((n) => new Uint8Array(n));
  /**
   * The valid entries as level * 4096 + index (entries leave only by a flush of all of them), so a
   * flush and an audit cost what is cached, not the TLB's size.
   */
  private readonly used: number[] = [];
  /** Valid entries per page size: a probe skips the sizes that hold none. */
  private readonly valid = new Int32Array(3);
  /** The 4K arrays again (the same objects), for fill4k without the per-size indirection. */
  private readonly tag4k = this.tag[0]!;
  private readonly pfn4k = this.pfn[0]!;
  private readonly meta4k = this.meta[0]!;
  /** flushes that reached this TLB (model counter) */
  flushes = 0;
  /** fills and flushes so far: the TLB holds what it held when this last had the same value */
  writes = 0;

  /** the places of the entries written (every array of a page size, at PLACE_BASE of its size) */
  readonly [WRITTEN] = new WrittenRange();

  [SNAPSHOT_WRITTEN](): [ArrayBufferView, number][] {
    const out: [ArrayBufferView, number][] = [];
    for (let l = 0; l < 3; l++)
      for (const a of [this.tag[l]!, this.pfn[l]!, this.meta[l]!]) out.push([a, PLACE_BASE[l]!]);
    return out;
  }

  /** Where probe() leaves a hit (read right after the call). */
  readonly hit: TlbHit = { pfn: 0, level: 1, writable: false, memtype: 0 };

  /** Look gfn up at 1G, 2M, then 4K granularity. */
  lookup(gfn: number): TlbHit | null {
    if (!this.probe(gfn)) return null;
    const h = this.hit;
    return { pfn: h.pfn, level: h.level, writable: h.writable, memtype: h.memtype };
  }

  /** lookup() without an object per hit: true on a hit, with the translation in `this.hit`. */
  probe(gfn: number): boolean {
    const valid = this.valid;
    for (let l = 2; l >= 0; l--) {
      if (valid[l] === 0) continue;
      const span = l === 0 ? 1 : l === 1 ? 512 : 262144;
      const index = Math.floor(gfn / span);
      const base = index * span;
      // index mod the size (a power of two): ToInt32 keeps the low bits of any safe integer
      if (this.probeAt(l, base, index & (SIZES[l]! - 1), gfn)) return true;
    }
    return false;
  }

  /** probe() for gfn below 2^31: the same lookups in int32 arithmetic. */
  probe31(gfn: number): boolean {
    const valid = this.valid;
    if (valid[2] !== 0 && this.probeAt(2, gfn & ~262143, (gfn >>> 18) & 15, gfn)) return true;
    if (valid[1] !== 0 && this.probeAt(1, gfn & ~511, (gfn >>> 9) & 511, gfn)) return true;
    return valid[0] !== 0 && this.probeAt(0, gfn, gfn & 2047, gfn);
  }

  /** Entry i of size l (0 = 4K) holds base's translation: true, with gfn's translation in `hit`. */
  private probeAt(l: number, base: number, i: number, gfn: number): boolean {
    if (this.tag[l]![i] !== base) return false;
    const m = this.meta[l]![i]!;
    const h = this.hit;
    h.pfn = this.pfn[l]![i]! + (gfn - base);
    h.level = (l + 1) as 1 | 2 | 3;
    h.writable = (m & 1) === 1;
    h.memtype = m >> 1;
    return true;
  }

  /** Cache the translation of a leaf at `level` (pfn is the leaf's base pfn, gfn any gfn inside it). */
  fill(gfn: number, basePfn: number, level: 1 | 2 | 3, writable: boolean, memtype: number): void {
    const l = level - 1;
    const span = l === 0 ? 1 : l === 1 ? 512 : 262144;
    const index = Math.floor(gfn / span);
    const i = index & (SIZES[l]! - 1);
    if (this.tag[l]![i] === -1) {
      this.used.push(l * 4096 + i);
      this.valid[l]!++;
      // (a valid entry was filled, so noted, before: only an invalid one's place may be new to the range)
      this[WRITTEN].note(PLACE_BASE[l]! + i);
    }
    this.tag[l]![i] = index * span;
    this.pfn[l]![i] = basePfn;
    this.meta[l]![i] = (writable ? 1 : 0) | (memtype << 1);
    this.writes++;
  }

  /** fill() of a 4K leaf for gfn below 2^31 (int32 index arithmetic). */
  fill4k(gfn: number, pfn: number, writable: boolean, memtype: number): void {
    const i = gfn & 2047;
    if (this.tag4k[i] === -1) {
      this.used.push(i);
      this.valid[0]!++;
      this[WRITTEN].note(i); // (see fill)
    }
    this.tag4k[i] = gfn;
    this.pfn4k[i] = pfn;
    this.meta4k[i] = (writable ? 1 : 0) | (memtype << 1);
    this.writes++;
  }

  /** Everything goes (INVEPT single-context / root load). */
  flushAll(): void {
    // (no note: every entry in `used` was written by a fill, which noted its place)
    const u = this.used;
    for (let k = 0; k < u.length; k++) this.tag[u[k]! >> 12]![u[k]! & 4095] = -1;
    u.length = 0;
    this.valid.fill(0);
    this.flushes++;
    this.writes++;
  }

  /** Visit every valid entry (inspection, read-only): the leaf's base gfn and pfn, level, writable, memtype. */
  forEachEntry(
    f: (gfn: number, pfn: number, level: 1 | 2 | 3, writable: boolean, memtype: number) => void,
  ): void {
    // in level then index order, as a scan of the arrays would visit them
    const u = this.sortedUsed();
    for (let k = 0; k < u.length; k++) {
      const l = u[k]! >> 12;
      const i = u[k]! & 4095;
      const m = this.meta[l]![i]!;
      f(this.tag[l]![i]!, this.pfn[l]![i]!, (l + 1) as 1 | 2 | 3, (m & 1) === 1, m >> 1);
    }
  }

  /**
   * The valid entries into columns, in level then index order as forEachEntry visits them (inspection,
   * read-only but for that order of the list of valid entries, which forEachEntry sorts too; no call per
   * entry): each entry's place (increasing; stable while the entry stays valid; below TLB_PLACES, one per
   * entry of each page size's array), base gfn, base pfn and level. The columns must hold size()
   * entries; returns size().
   */
  entriesInto(place: Int32Array, gfn: Float64Array, pfn: Float64Array, level: Uint8Array): number {
    const u = this.sortedUsed();
    for (let k = 0; k < u.length; k++) {
      const p = u[k]!;
      const l = p >> 12;
      const i = p & 4095;
      place[k] = PLACE_BASE[l]! + i;
      gfn[k] = this.tag[l]![i]!;
      pfn[k] = this.pfn[l]![i]!;
      level[k] = l + 1;
    }
    return u.length;
  }

  /**
   * `used` in increasing order (sorted in place, as Array.prototype.sort with a numeric comparison would:
   * the values are distinct). The list is sorted at each read and only the entries filled since come
   * after: a few are put in place by an insertion sort (a pass, no comparator calls); more (a working set
   * touched after a flush: 1,024 fills in gfn-random order made the insertion sort ~260,000 moves, 290 M
   * instructions of compare vsm-permission-split) by a native numeric sort of a typed-array copy.
   */
  private sortedUsed(): number[] {
    const u = this.used;
    let k = 1;
    while (k < u.length && u[k - 1]! <= u[k]!) k++;
    if (u.length - k > FEW_UNSORTED) return sortByCopy(u);
    for (; k < u.length; k++) {
      const x = u[k]!;
      if (u[k - 1]! <= x) continue;
      let j = k - 1;
      while (j >= 0 && u[j]! > x) {
        u[j + 1] = u[j]!;
        j--;
      }
      u[j + 1] = x;
    }
    return u;
  }

  /** Number of valid entries (inspection). */
  size(): number {
    return this.used.length;
  }
}
