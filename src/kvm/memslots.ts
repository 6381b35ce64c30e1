/**
 * One memslot set (struct kvm_memslots): the id hash, the gfn-ordered tree, the hva interval tree and the
 * last-used cache, plus the generation. KVM keeps two sets per address space and swaps them (see
 * kvm/set_memslot.ts); slot objects are shared between the two sets, as the kernel's are through
 * the per-set node index.
 *
 * Kernel counterpart: include/linux/kvm_host.h (struct kvm_memslots, id_to_memslot,
 * search_memslots, kvm_for_each_memslot_in_gfn_range), virt/kvm/kvm_main.c (kvm_replace_memslot).
 *
 * Simplifications: the rb-tree is a sorted array with one Float64Array of (base, end) gfn pairs (binary
 * search, O(log n) lookup, memmove insert), plus a bucket directory over it for lookups once a set has
 * stopped changing; the hva interval tree (memslots_hva.ts) is built lazily on the first hva query after
 * a change. Lookup results are those of the kernel's.
 */
import type { Gfn, Hva } from '../types/addr.ts';
import type { KvmMemorySlot } from './kvm_host.ts';
import { ModelCorruption } from './model_corruption.ts';
import { buildHvaIndex, hvaIndexRange, type HvaIndex } from './memslots_hva.ts';

/** Below this many slots the binary search is as quick as the directory. */
const DIR_MIN_SLOTS = 64;
/**
 * Bounds the last KvmMemslots.search() found, a part of its slot's range (a directory bucket's, or the
 * whole): a second result, read at once by the caller, not state (so no snapshot or state hash sees it).
 */
let foundBase = 0;
let foundEnd = 0;

/** A directory bucket that neither lies wholly in one slot nor wholly in a gap. */
const MIXED = Symbol('mixed bucket');

/**
 * The two fields of struct kvm_vcpu that kvm_vcpu_gfn_to_memslot keeps (the Vcpu has them), under symbol
 * keys: snapshots save and restore them, the state hash leaves them out. A cache never changes what a
 * lookup returns, so two states that differ only in it behave alike; hashing it would split states the
 * explorer merges (as the shadow MMU's indexes, shadow_hash.ts and guest_paging.ts).
 */
export const LAST_USED_SLOT: unique symbol = Symbol('zaplab.vcpu.lastUsedSlot');
export const LAST_USED_SLOT_GEN: unique symbol = Symbol('zaplab.vcpu.lastUsedSlotGen');
export interface VcpuLastUsedSlot {
  /** vcpu->last_used_slot */
  [LAST_USED_SLOT]: KvmMemorySlot | null;
  /** vcpu->last_used_slot_gen (the in-progress bit folded in as vcpuGfnToMemslot does) */
  [LAST_USED_SLOT_GEN]: number;
}

export class KvmMemslots {
  /** Generation without the in-progress bit. */
  generation = 0;
  /** KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS (bit 63 in the kernel). */
  updateInProgress = false;
  readonly nodeIdx: 0 | 1;
  private readonly byId = new Map<number, KvmMemorySlot>();
  private sorted: KvmMemorySlot[] = [];
  /**
   * base_gfn and base_gfn + npages of sorted[i], at be[2i] and be[2i + 1]: one cache line holds both
   * bounds a lookup compares. With them and the last-used bounds below, a lookup reads no slot object:
   * 32764 slot objects lie scattered over the heap (a cache miss each) and take more than one shape (a
   * polymorphic load at one site); either costs more than the whole search over this array.
   */
  private be = new Float64Array(32);
  private lastUsed: KvmMemorySlot | null = null;
  /** lastUsed's [base_gfn, base_gfn + npages) (an empty range while there is none) */
  private lastBase = 0;
  private lastEnd = 0;
  private hvaIndex: HvaIndex | null = null;

  constructor(nodeIdx: 0 | 1, generation: number) {
    this.nodeIdx = nodeIdx;
    this.generation = generation;
  }

  get size(): number {
    return this.sorted.length;
  }

  /** slots->last_used_slot (what __gfn_to_memslot last found), for inspection. */
  get lastUsedSlot(): KvmMemorySlot | null {
    return this.lastUsed;
  }

  /** @kernel include/linux/kvm_host.h#id_to_memslot */
  idToMemslot(id: number): KvmMemorySlot | null {
    return this.byId.get(id) ?? null;
  }

  /**
   * The slot containing gfn, INVALID slots included (callers decide what INVALID means), using and
   * updating the set-wide last-used cache (slots->last_used_slot): the VM-context lookup.
   * @kernel include/linux/kvm_host.h#__gfn_to_memslot
   */
  searchMemslots(gfn: number): KvmMemorySlot | null {
    if (gfn >= this.lastBase && gfn < this.lastEnd) return this.lastUsed;
    const s = this.search(gfn);
    if (s !== null) {
      this.lastUsed = s;
      this.lastBase = foundBase;
      this.lastEnd = foundEnd;
    }
    return s;
  }

  /**
   * kvm_vcpu_gfn_to_memslot on the vCPU's address space (this set): the vCPU's own last-used slot,
   * dropped when the set's generation is not the one it was cached under (another address space, or a
   * memslot update since), then a search that leaves the set-wide last-used cache alone.
   * @kernel virt/kvm/kvm_main.c#kvm_vcpu_gfn_to_memslot
   */
  vcpuGfnToMemslot(vcpu: VcpuLastUsedSlot, gfn: number): KvmMemorySlot | null {
    // slots->generation with KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS folded in: while it is set, another value
    const gen = this.updateInProgress ? -1 - this.generation : this.generation;
    if (gen !== vcpu[LAST_USED_SLOT_GEN]) {
      vcpu[LAST_USED_SLOT] = null;
      vcpu[LAST_USED_SLOT_GEN] = gen;
    }
    const c = vcpu[LAST_USED_SLOT]; // try_get_memslot
    if (c !== null && gfn >= c.baseGfn && gfn < c.baseGfn + c.npages) return c;
    const s = this.search(gfn);
    if (s !== null) vcpu[LAST_USED_SLOT] = s;
    return s;
  }

  /**
   * The vCPU's last-used slot when vcpuGfnToMemslot(vcpu, gfn) would answer from it (its generation
   * current, gfn inside), so that call would change nothing; else null. Reads the cache only.
   */
  vcpuCachedMemslot(vcpu: VcpuLastUsedSlot, gfn: number): KvmMemorySlot | null {
    const c = vcpu[LAST_USED_SLOT];
    const gen = this.updateInProgress ? -1 - this.generation : this.generation;
    return c !== null && gen === vcpu[LAST_USED_SLOT_GEN] && gfn >= c.baseGfn && gfn < c.baseGfn + c.npages
      ? c
      : null;
  }

  /**
   * The slot containing gfn, neither reading nor writing the last-used cache (search_memslots with
   * approx false); sets foundBase/foundEnd when it finds one.
   * @kernel include/linux/kvm_host.h#search_memslots
   */
  private search(gfn: number): KvmMemorySlot | null {
    let i: number;
    if (this.dir !== null) {
      const q = (gfn - this.dirBase) * this.dirInv;
      if (q >= 0 && q < this.dirLen) {
        const k = q | 0; // q < dirLen < 2^31
        const s = this.dirSlot[k]!;
        if (s !== MIXED) {
          // The bucket lies inside one slot (or one gap): its bounds, a part of the slot's, are what a
          // cache of the slot needs, so no bounds array is read.
          if (s !== null) {
            foundBase = this.dirBase + k * this.dirSize;
            foundEnd = foundBase + this.dirSize;
          }
          return s;
        }
        i = this.dirFloorIndex(gfn, k);
      } else i = q < 0 ? -1 : this.sorted.length - 1;
    } else {
      i = this.floorIndex(gfn);
      // Enough lookups since the last change to pay for the directory (one pass over the slots).
      if (
        ++this.searchesSinceChange > DIR_MIN_SLOTS + (this.sorted.length >>> 2) &&
        this.sorted.length >= DIR_MIN_SLOTS
      )
        this.buildDir();
    }
    if (i < 0 || gfn >= this.be[2 * i + 1]!) return null;
    foundBase = this.be[2 * i]!;
    foundEnd = this.be[2 * i + 1]!;
    return this.sorted[i]!;
  }

  /**
   * The slot searchMemslots(gfn) would return, leaving the last-used cache and the directory's lookup
   * count alone: for a caller deciding whether to take a path that then looks the slot up as the
   * kernel does (the bulk guest-access path), so the lookups counted are the kernel's.
   */
  peekMemslot(gfn: number): KvmMemorySlot | null {
    if (gfn >= this.lastBase && gfn < this.lastEnd) return this.lastUsed;
    if (this.dir !== null) return this.search(gfn); // counts nothing once the directory is built
    const i = this.floorIndex(gfn);
    return i < 0 || gfn >= this.be[2 * i + 1]! ? null : this.sorted[i]!;
  }

  /** Point the last-used cache at s (or clear it), keeping its bounds in step. */
  private setLastUsed(s: KvmMemorySlot | null): void {
    this.lastUsed = s;
    this.lastBase = s === null ? 0 : s.baseGfn;
    this.lastEnd = s === null ? 0 : s.baseGfn + s.npages;
  }

  /**
   * A directory over the sorted bases, for lookups that miss the last-used cache: the gfn range from the
   * first base to the last is cut into 2^k-gfn buckets (about one per slot). dirSlot[b] is the slot that
   * holds all of bucket b, null when the bucket lies wholly in a gap, MIXED otherwise; a lookup in a
   * whole bucket reads that one entry and no other array (the bounds and slot arrays are ~0.8 MB at
   * 32764 slots, more than a core's L2 cache, so each array a random lookup touches is a cache miss).
   * For a MIXED bucket, dir[b] is the index of the last slot whose base is at or below the bucket's
   * start, and the gfn's slot index lies between dir[b] and dir[b + 1]. Built lazily once lookups
   * outnumber what the build costs; any change to the set drops it.
   */
  private dir: Int32Array | null = null;
  private dirSlot: (KvmMemorySlot | null | typeof MIXED)[] = [];
  private dirBase = 0;
  /** bucket size, a power of two, and its inverse (so the product is exact) */
  private dirSize = 0;
  private dirInv = 0;
  /** buckets; dir has dirLen + 1 entries */
  private dirLen = 0;
  private searchesSinceChange = 0;

  private buildDir(): void {
    const n = this.sorted.length;
    const b = this.be;
    const span = b[2 * (n - 1)]! - b[0]! + 1;
    let size = 1;
    while (size * n < span) size *= 2;
    const len = Math.ceil(span / size);
    const dir = new Int32Array(len + 1);
    const dirSlot: (KvmMemorySlot | null | typeof MIXED)[] = new Array(len);
    let i = 0;
    for (let k = 0; k < len; k++) {
      const start = b[0]! + k * size;
      while (i + 1 < n && b[2 * (i + 1)]! <= start) i++;
      dir[k] = i;
      const end = start + size; // the bucket is [start, end); b[2i] <= start holds
      if (end <= b[2 * i + 1]!) dirSlot[k] = this.sorted[i]!;
      else if (start >= b[2 * i + 1]! && (i + 1 === n || end <= b[2 * (i + 1)]!)) dirSlot[k] = null;
      else dirSlot[k] = MIXED;
    }
    dir[len] = n - 1;
    this.dir = dir;
    this.dirSlot = dirSlot;
    this.dirBase = b[0]!;
    this.dirSize = size;
    this.dirInv = 1 / size;
    this.dirLen = len;
  }

  /** floorIndex of a gfn in directory bucket k. */
  private dirFloorIndex(gfn: number, k: number): number {
    const dir = this.dir!;
    const b = this.be;
    let lo = dir[k]!;
    let hi = dir[k + 1]!;
    // the last index in [lo, hi] whose base is <= gfn (b[2 lo] <= gfn holds)
    while (hi - lo > 4) {
      const mid = (lo + hi + 1) >>> 1;
      if (b[2 * mid]! <= gfn) lo = mid;
      else hi = mid - 1;
    }
    while (lo < hi && b[2 * (lo + 1)]! <= gfn) lo++;
    return lo;
  }

  /** Index of the last slot whose base_gfn <= gfn, or -1. */
  private floorIndex(gfn: number): number {
    // Branch-free lower-bound search: the comparison result feeds arithmetic, not a branch, so random
    // lookups do not pay a misprediction per level.
    const b = this.be;
    let n = this.sorted.length;
    if (n === 0 || b[0]! > gfn) return -1;
    let base = 0;
    while (n > 1) {
      const half = n >>> 1;
      base = b[2 * (base + half)]! <= gfn ? base + half : base;
      n -= half;
    }
    return base;
  }

  /**
   * Slots intersecting [start, end) in base_gfn order.
   * @kernel include/linux/kvm_host.h#kvm_for_each_memslot_in_gfn_range
   */
  *inGfnRange(start: number, end: number): IterableIterator<KvmMemorySlot> {
    let i = this.floorIndex(start);
    if (i < 0) i = 0;
    for (; i < this.sorted.length; i++) {
      const s = this.sorted[i]!;
      if (s.baseGfn >= end) break;
      if (s.baseGfn + s.npages > start) yield s;
    }
  }

  /** True if any slot other than `exceptId` intersects [start, end). @kernel virt/kvm/kvm_main.c#kvm_check_memslot_overlap */
  overlapsOther(exceptId: number, start: number, end: number): KvmMemorySlot | null {
    for (const s of this.inGfnRange(start, end)) if (s.id !== exceptId) return s;
    return null;
  }

  /** Slots whose userspace range intersects [start, end) (bytes). The kernel's hva interval tree. */
  hvaRange(start: number, end: number): KvmMemorySlot[] {
    return hvaIndexRange((this.hvaIndex ??= buildHvaIndex(this.sorted)), start, end);
  }

  /** Every slot in base_gfn order (a copy). */
  all(): KvmMemorySlot[] {
    return this.sorted.slice();
  }

  /**
   * Replace `old` by `nu` in this set (either may be null).
   * @kernel virt/kvm/kvm_main.c#kvm_replace_memslot
   */
  replace(old: KvmMemorySlot | null, nu: KvmMemorySlot | null): void {
    this.hvaIndex = null;
    this.dir = null;
    this.dirSlot = [];
    this.searchesSinceChange = 0;
    if (old !== null) {
      if (this.lastUsed === old) this.setLastUsed(nu);
      if (nu !== null && nu.baseGfn === old.baseGfn) {
        // Same key in the gfn tree: the kernel replaces the node in place.
        const i = this.floorIndex(old.baseGfn);
        if (this.sorted[i] !== old) throw new ModelCorruption(`memslot ${old.id} missing from its gfn tree`);
        this.sorted[i] = nu;
        this.be[2 * i + 1] = nu.baseGfn + nu.npages;
        this.byId.delete(old.id);
        this.byId.set(nu.id, nu);
        return;
      }
      this.removeSorted(old);
      this.byId.delete(old.id);
    }
    if (nu !== null) {
      this.insertSorted(nu);
      this.byId.set(nu.id, nu);
    }
  }

  private insertSorted(s: KvmMemorySlot): void {
    const n = this.sorted.length;
    const i = this.floorIndex(s.baseGfn) + 1;
    if (i > 0 && this.be[2 * (i - 1)] === s.baseGfn) {
      throw new ModelCorruption(`duplicate base_gfn 0x${s.baseGfn.toString(16)} in the gfn tree`);
    }
    if (2 * n === this.be.length) {
      const nb = new Float64Array(4 * n);
      nb.set(this.be);
      this.be = nb;
    }
    if (i === n) this.sorted.push(s);
    else this.sorted.splice(i, 0, s);
    this.be.copyWithin(2 * (i + 1), 2 * i, 2 * n);
    this.be[2 * i] = s.baseGfn;
    this.be[2 * i + 1] = s.baseGfn + s.npages;
  }

  private removeSorted(s: KvmMemorySlot): void {
    const i = this.floorIndex(s.baseGfn);
    if (i < 0 || this.sorted[i] !== s) throw new ModelCorruption(`memslot ${s.id} missing from its gfn tree`);
    const n = this.sorted.length;
    if (i === n - 1) this.sorted.pop();
    else this.sorted.splice(i, 1);
    this.be.copyWithin(2 * i, 2 * (i + 1), 2 * n);
  }
}

/** A fresh slot object. */
export function newMemslot(
  asId: number,
  id: number,
  baseGfn: Gfn,
  npages: number,
  userspaceAddr: Hva,
  flags: number,
): KvmMemorySlot {
  return {
    id,
    asId,
    baseGfn,
    npages,
    userspaceAddr,
    flags,
    dirtyBitmap: null,
    arch: { lpageInfo: null, rmap: null, gfnWriteTrack: null },
    gmem: null,
  };
}

/** A shallow copy (the kernel's memcpy of a slot: shares bitmap, arch arrays and gmem binding). */
export function copyMemslot(s: KvmMemorySlot): KvmMemorySlot {
  return { ...s, arch: { ...s.arch } };
}
