/**
 * What changed below the roots between two whole-VM audits (AuditDelta, audit_delta.ts), kept as the
 * filter the second audit's SPTE walk follows (audit_mmu.ts): which tables to walk, and in each, which
 * entries. The TDP engine's reports arrive here as notes (gfn, level, and for 4K entries the values);
 * memslot and host changes as gfn ranges.
 *
 * Granularity: a 4K entry the engine changed is noted as itself (a bit of its 2M region's bitmap), so the
 * walk of an otherwise unchanged 4K table visits only those entries, in every root alike (a mapping's
 * findings, and the pfn memo's choices, depend on its gfn, not on which root holds it). A memslot or host
 * change, a change at level 2 (a table linked, a split: children written without a report of their own)
 * or above, makes the whole region suspect. A region with no present 4K leaf and no odd 4K entry written
 * since the last audit is stepped over altogether (leaf_counts.ts).
 *
 * Kernel counterpart: none (the checker's own bookkeeping).
 */
import { PAGES_PER_LEVEL } from '../x86/mmu/tdp_iter.ts';
import { SHADOW_NONPRESENT_HI, SHADOW_NONPRESENT_LO, SPTE_MMU_PRESENT_MASK } from '../x86/mmu/spte.ts';
import type { LeafCounts } from './leaf_counts.ts';
import { GfnRanges } from './tlb_seen.ts';
import { EntryBits } from './entry_bits.ts';

/**
 * Dirty's caches and additions beyond the region sets (left out of state hashes, AuditDelta.cacheKeys:
 * the region sets alone already tell the states apart that the explorer's counts were taken with).
 */
export const DIRTY_CACHE: ReadonlySet<PropertyKey> = new Set([
  'tlbRanges',
  'odd2m',
  'full2m',
  'bits',
  'leafs',
  'zapAll',
]);

/** Which vCPU TLB entries an audit must check. */
export interface TlbFilter {
  /** Check the entry translating [gfn, gfn + span)? */
  check(gfn: number, span: number): boolean;
}

/** Which tables an audit must walk (levels ≥ 3 always). */
export interface AuditFilter {
  /** Walk the table of `level` (1 or 2) whose first gfn is `baseGfn`? */
  scan(level: number, baseGfn: number): boolean;
  /** Nothing below the roots changed: no table needs a walk. */
  readonly clean?: boolean;
  /**
   * The entries of the table of `level` whose first gfn is `baseGfn` that can hold a new finding, in
   * increasing order; null where every entry must be looked at.
   */
  entries(level: number, baseGfn: number): readonly number[] | null;
}

const NO_ENTRIES: readonly number[] = [];
/** A gfn range over more 2M regions than this is noted as an interval (Dirty.addRange). */
const LONG_RANGE = 64;

/** Set bits [from, to) of the 512-bit map (16 words) at b[o], a word at a time. */
function setBits(b: Int32Array, o: number, from: number, to: number): void {
  for (let i = from; i < to;) {
    const w = o + (i >> 5);
    const hi = Math.min(to, ((i >> 5) + 1) << 5); // the end of this word's part of the run
    const n = hi - i;
    // n ones from bit (i & 31) up (n = 32 only for a whole word)
    b[w] = b[w]! | (n === 32 ? -1 : ((1 << n) - 1) << (i & 31));
    i = hi;
  }
}

/** Changed regions, entries and gfn intervals: collected between two audits, then read by the second. */
export class Dirty implements AuditFilter, TlbFilter {
  /** everything below the roots is suspect (an entry at level ≥ 4 changed) */
  everything = false;
  /** 2M regions (gfn / 512) where a level-1 or level-2 entry changed or a memslot/host range lies */
  readonly dirty2m = new Set<number>();
  /** 1G regions (gfn / 2^18) holding such a 2M region */
  readonly holds1g = new Set<number>();
  /** 1G regions where a level-3 entry changed (all below it is suspect) */
  readonly dirty1g = new Set<number>();
  last2m = -1;
  /** changed gfn intervals, [start, end) pairs */
  readonly intervals: number[] = [];
  /**
   * gfn intervals whose slots or host pages changed, or that a TLB entry changed since the last audit
   * held or holds (tlb_seen.ts): the TLB entries over them are checked
   */
  readonly tlbRanges = new GfnRanges();
  /** 2M regions where a 4K entry was written neither empty nor present (MMIO, FROZEN_SPTE, a bad value) */
  readonly odd2m = new Set<number>();
  /** 2M regions whose 4K tables are suspect as a whole (memslot/host range, level-2 change) */
  readonly full2m = new Set<number>();
  /** per 2M region: the 4K entries (by index) the engine changed, 512 bits */
  readonly bits = new EntryBits();
  /**
   * kvm_mmu_zap_all_fast began (the checker saw its tracepoint): it invalidates every root and zaps them,
   * which makes the next audit a whole one (the roots' roles change), so the 4K changes of its zap need
   * not be noted entry by entry: their regions still are (dirty2m, as before), but not their entries,
   * leaf counts (the whole walk recounts them) or odd values. begin() makes the audit whole.
   */
  zapAll = false;

  constructor(private readonly leafs: LeafCounts) {}

  get clean(): boolean {
    return (
      !this.everything && this.dirty2m.size === 0 && this.dirty1g.size === 0 && this.intervals.length === 0
    );
  }

  clear(): void {
    this.everything = false;
    this.zapAll = false;
    // (clear() allocates a new table even for an empty Set)
    if (this.dirty2m.size > 0) this.dirty2m.clear();
    if (this.holds1g.size > 0) this.holds1g.clear();
    if (this.dirty1g.size > 0) this.dirty1g.clear();
    if (this.odd2m.size > 0) this.odd2m.clear();
    if (this.full2m.size > 0) this.full2m.clear();
    this.bits.clear();
    this.last2m = -1;
    this.intervals.length = 0;
    this.tlbRanges.clear();
  }

  /**
   * Gfns [start, end) changed: their 2M regions, or an interval when that is shorter to note (more than
   * LONG_RANGE regions: a slot of 128 MiB or more appearing or going; the walk then treats every table
   * over the interval as suspect as a whole, which is what its regions in full2m would say).
   */
  addRange(start: number, end: number): void {
    this.tlbRanges.add(start, end);
    const q0 = Math.floor(start / 512);
    const q1 = Math.ceil(end / 512);
    if (q1 - q0 > LONG_RANGE) {
      this.intervals.push(start, end);
      return;
    }
    let r = -1;
    for (let q = q0; q < q1; q++) {
      this.dirty2m.add(q);
      this.full2m.add(q);
      // (added once per 1G region: the set's order is the order of the first add either way)
      if (Math.floor(q / 512) !== r) this.holds1g.add((r = Math.floor(q / 512)));
    }
  }

  /** Does a noted interval overlap gfns [start, end)? */
  private inInterval(start: number, end: number): boolean {
    const iv = this.intervals;
    for (let i = 0; i < iv.length; i += 2) if (iv[i]! < end && start < iv[i + 1]!) return true;
    return false;
  }

  /** The engine changed the SPTE of `level` at gfn from one whose low word is oldLo to (newLo, newHi). */
  noteSpte(gfn: number, level: number, oldLo: number, newLo: number, newHi: number): void {
    // everything is suspect already: nothing more to note (the next audit walks everything and recounts
    // the leafs, so the counts need not follow either)
    if (this.everything) return;
    if (level === 1) {
      const q = Math.floor(gfn / 512);
      if (this.zapAll) return this.region(q);
      const is = (newLo & SPTE_MMU_PRESENT_MASK) !== 0;
      if (is !== ((oldLo & SPTE_MMU_PRESENT_MASK) !== 0)) this.leafs.add(q, is ? 1 : -1);
      if (!is && (newLo !== SHADOW_NONPRESENT_LO || newHi !== SHADOW_NONPRESENT_HI)) this.odd2m.add(q);
      const i = gfn - q * 512;
      const o = this.bits.blockOf(q) + (i >> 5);
      const b = this.bits.words;
      b[o] = b[o]! | (1 << (i & 31));
      this.region(q);
      return;
    }
    if (level >= 4) {
      this.everything = true;
      return;
    }
    if (level === 3) {
      this.dirty1g.add(Math.floor(gfn / 262144));
      return;
    }
    const q = Math.floor(gfn / 512);
    this.full2m.add(q);
    this.region(q);
  }

  /**
   * `count` non-present SPTEs of one table frozen (FROZEN_SPTE: an odd value), the first of `level` at
   * gfn, each next one a level's span on: as many noteSpte calls would note.
   */
  noteFrozenRun(gfn: number, level: number, count: number): void {
    if (count <= 0 || this.everything) return;
    if (level >= 4) {
      this.everything = true;
      return;
    }
    if (level === 3) {
      const r0 = Math.floor(gfn / 262144);
      for (let k = 0; k < count; k++) this.dirty1g.add(r0 + k);
      return;
    }
    if (level === 1) {
      // a 4K table lies in one 2M region
      const q = Math.floor(gfn / 512);
      if (this.zapAll) return this.region(q);
      this.odd2m.add(q);
      const o = this.bits.blockOf(q);
      setBits(this.bits.words, o, gfn - q * 512, gfn - q * 512 + count);
      this.region(q);
      return;
    }
    // level 2: one table lies in one 1G region. A table is torn down only after the entry over it
    // changed, which noted its 1G region as a whole (dirty1g): the audit walks every entry under a
    // region in dirty1g (scan, entries), so its 2M regions add nothing there.
    const q0 = Math.floor(gfn / 512);
    if (this.dirty1g.has(Math.floor(q0 / 512))) return;
    for (let k = 0; k < count; k++) {
      this.full2m.add(q0 + k);
      this.dirty2m.add(q0 + k);
    }
    this.holds1g.add(Math.floor(q0 / 512));
    this.last2m = q0 + count - 1;
  }

  /** A table of 512 present leafs was linked below the huge leaf of `level` at gfn (a split). */
  noteSplit(gfn: number, level: number): void {
    if (level !== 2 || this.everything) return;
    const q = Math.floor(gfn / 512);
    this.leafs.add(q, 512);
    this.full2m.add(q);
    this.region(q);
  }

  private region(q: number): void {
    if (q === this.last2m) return;
    this.last2m = q;
    this.dirty2m.add(q);
    this.holds1g.add(Math.floor(q / 512));
  }

  scan(level: number, baseGfn: number): boolean {
    if (level >= 3) return true;
    const r = Math.floor(baseGfn / 262144);
    if (this.dirty1g.has(r)) return true;
    if (level === 2 ? this.holds1g.has(r) : this.dirty2m.has(Math.floor(baseGfn / 512))) return true;
    return this.inInterval(baseGfn, baseGfn + (level === 2 ? 262144 : 512));
  }

  /**
   * An entry whose region holds no noted change kept its SPTE (a change at level 3 or 4 is noted too) and
   * the slots and host pages under it: whatever it maps can only repeat a finding (see the header). So a
   * table at level ≥ 3 needs only its entries over a 1G region with a change below, a 2M table only its
   * entries over changed 2M regions, a 4K table only the entries the engine changed — unless a change
   * above made all of it suspect (then all of it), or a long interval was noted over the table (then
   * every entry, as scan() would answer them); and a 4K table of a region with no present leaf and no odd
   * entry written holds nothing that can report.
   */
  entries(level: number, baseGfn: number): readonly number[] | null {
    if (level === 1) return this.entries4k(baseGfn);
    const per = PAGES_PER_LEVEL[level]!;
    const end = baseGfn + 512 * per;
    if (this.everything || this.inInterval(baseGfn, end)) return null;
    const out: number[] = [];
    if (level === 2) {
      if (this.dirty1g.has(Math.floor(baseGfn / 262144))) return null;
      const q0 = baseGfn / 512;
      const d = this.dirty2m;
      // in increasing order: the table's 512 regions looked up, or the few noted ones sorted
      if (d.size > 64) {
        for (let k = 0; k < 512; k++) if (d.has(q0 + k)) out.push(k);
        return out;
      }
      for (const q of d) if (q * 512 >= baseGfn && q * 512 < end) out.push(q - q0);
    } else {
      const add = (r: number): void => {
        const g = r * 262144;
        if (g < baseGfn || g >= end) return;
        const i = Math.floor((g - baseGfn) / per);
        if (!out.includes(i)) out.push(i);
      };
      for (const r of this.dirty1g) add(r);
      for (const r of this.holds1g) add(r);
    }
    return out.length > 1 ? out.sort((a, b) => a - b) : out;
  }

  private entries4k(baseGfn: number): readonly number[] | null {
    const q = baseGfn / 512;
    if (this.leafs.at(q) === 0 && !this.odd2m.has(q)) return NO_ENTRIES;
    if (this.everything || this.full2m.has(q) || this.inInterval(baseGfn, baseGfn + 512)) return null;
    if (this.dirty1g.has(Math.floor(baseGfn / 262144))) return null;
    const o = this.bits.find(q);
    if (o < 0) return NO_ENTRIES;
    const b = this.bits.words;
    const out: number[] = [];
    for (let w = 0; w < 16; w++)
      for (let m = b[o + w]!; m !== 0; m &= m - 1) out.push(w * 32 + (31 - Math.clz32(m & -m)));
    return out;
  }

  check(gfn: number, span: number): boolean {
    return this.tlbRanges.overlaps(gfn, span);
  }
}
