/**
 * What the checker's incremental TLB audit needs to look at only what changed: each vCPU's TLB as the
 * last audit saw it (TlbSeen), and the gfn ranges whose TLB entries an audit checks (GfnRanges).
 *
 * A TLB entry's findings (audit_tlb.ts#checkTlbEntry) are a function of its gfn, pfn and level, the vCPU
 * (its id and address space), the memslots over the gfn and the host pages behind them. Slot and host
 * changes reach the audit as gfn ranges (audit_delta.ts), anything else makes it a whole one. So an
 * entry that holds the same translation in the same place as at the last audit, in a vCPU whose address
 * space is the same, can only repeat its findings. Every entry that differs, appeared or went away since
 * has its gfn range checked, in every vCPU alike (as a whole audit would visit it: the per-audit pfn
 * memo then suppresses the same repeats, whichever vCPU's entry changed).
 *
 * Kernel counterpart: none (the checker's own bookkeeping).
 */
import { TLB_PLACES, type Tlb } from '../host/tlb.ts';
import { PAGES_PER_LEVEL } from '../x86/mmu/tdp_iter.ts';

/** A TLB's valid entries as columns (Tlb.entriesInto), read into one scratch shared by the audits. */
export class TlbColumns {
  place = new Int32Array(64);
  gfn = new Float64Array(64);
  pfn = new Float64Array(64);
  level = new Uint8Array(64);

  /** Read tlb's entries (in place order); returns how many. */
  read(tlb: Tlb): number {
    const n = tlb.size();
    if (this.place.length < n) {
      const cap = Math.max(n, this.place.length * 2);
      this.place = new Int32Array(cap);
      this.gfn = new Float64Array(cap);
      this.pfn = new Float64Array(cap);
      this.level = new Uint8Array(cap);
    }
    return tlb.entriesInto(this.place, this.gfn, this.pfn, this.level);
  }
}

/** The checker's scratch (read and used before the next read; audits do not nest). */
export const tlbColumns = new TlbColumns();

/** GfnRanges.sweep's scratch (filled and read within one call; no state) */
let sweepStarts = new Float64Array(64);
let sweepEnds = new Float64Array(64);

/** gfn ranges ([start, end) pairs) collected in any order, then sealed into sorted disjoint ones. */
export class GfnRanges {
  /** as added, then (sealed) sorted and merged */
  private r: number[] = [];
  private sealed = false;

  get length(): number {
    return this.r.length;
  }

  add(start: number, end: number): void {
    this.sealed = false; // (unsorted again: overlaps() searches them one by one until the next seal)
    this.r.push(start, end);
  }

  clear(): void {
    // (setting an array's length is a runtime call, even to its length; pop() is not: popped while short)
    const r = this.r;
    if (r.length > 32) r.length = 0;
    else while (r.length > 0) r.pop();
    this.sealed = false;
  }

  /** Sort and merge (overlapping or touching ranges become one): overlaps() is then a binary search. */
  seal(): void {
    this.sealed = true;
    const r = this.r;
    const n = r.length >> 1;
    if (n <= 1) return;
    let sorted = true;
    for (let k = 1; k < n && sorted; k++) sorted = r[2 * k]! >= r[2 * k - 2]!;
    if (!sorted) return this.sweep(n);
    let w = 0;
    for (let k = 1; k < n; k++) {
      if (r[2 * k]! <= r[2 * w + 1]!) {
        if (r[2 * k + 1]! > r[2 * w + 1]!) r[2 * w + 1] = r[2 * k + 1]!;
      } else {
        w++;
        r[2 * w] = r[2 * k]!;
        r[2 * w + 1] = r[2 * k + 1]!;
      }
    }
    r.length = 2 * (w + 1);
  }

  /**
   * seal() of n ranges not in start order: their union from the starts and the ends sorted apart (two
   * native typed-array sorts, no comparator calls: a comparator sort of the 1,024 ranges a refault of
   * vsm-permission-split's working set names was ~40 ms of its first run), swept in order, a start before
   * an end at the same gfn, so touching ranges become one. The same ranges as a merge of the ranges
   * sorted by start.
   */
  private sweep(n: number): void {
    const r = this.r;
    if (sweepStarts.length < n) {
      sweepStarts = new Float64Array(Math.max(n, 2 * sweepStarts.length));
      sweepEnds = new Float64Array(sweepStarts.length);
    }
    const st = sweepStarts.subarray(0, n);
    const en = sweepEnds.subarray(0, n);
    for (let k = 0; k < n; k++) {
      st[k] = r[2 * k]!;
      en[k] = r[2 * k + 1]!;
    }
    st.sort();
    en.sort();
    let w = 0;
    let depth = 0;
    for (let i = 0, j = 0; j < n;) {
      if (i < n && st[i]! <= en[j]!) {
        if (depth++ === 0) r[2 * w] = st[i]!;
        i++;
      } else {
        if (--depth === 0) r[2 * w++ + 1] = en[j]!;
        j++;
      }
    }
    r.length = 2 * w;
  }

  /** Does [gfn, gfn + span) overlap a range? (Any order before seal(), a binary search after.) */
  overlaps(gfn: number, span: number): boolean {
    const r = this.r;
    const end = gfn + span;
    if (!this.sealed) {
      for (let i = 0; i < r.length; i += 2) if (r[i]! < end && gfn < r[i + 1]!) return true;
      return false;
    }
    // (before the first range or after the last: most entries of an audit, no search)
    if (r.length === 0 || end <= r[0]! || gfn >= r[r.length - 1]!) return false;
    // the first range ending after gfn: it overlaps if it starts before end
    let lo = 0;
    let hi = r.length >> 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (r[2 * mid + 1]! <= gfn) lo = mid + 1;
      else hi = mid;
    }
    return lo < r.length >> 1 && r[2 * lo]! < end;
  }
}

/** Entries a TlbSeen holds without growing (the explorer's small VMs stay below it: no storage made per run). */
const FIRST_ENTRIES = 32;

/**
 * One vCPU's TLB as the last audit that checked its entries saw it: its entries as columns in place
 * order (as Tlb.entriesInto reads them), so an update compares the two lists in one merge. The columns
 * are made with the object and grow only past FIRST_ENTRIES: the explorer restores this object before
 * every schedule, and storage made during a run would be made again in every run.
 */
export class TlbSeen {
  /** the TLB's write count at that audit; -1: its entries were not checked then (all count as new) */
  writes = -1;
  /** the vCPU's address space then */
  private asId = -1;
  /** the entries then, in place order: place (Tlb.entriesInto), base gfn, base pfn, level */
  private place = new Int32Array(FIRST_ENTRIES);
  private gfn = new Float64Array(FIRST_ENTRIES);
  private pfn = new Float64Array(FIRST_ENTRIES);
  private level = new Uint8Array(FIRST_ENTRIES);
  private n = 0;

  /** Forget what was seen: the vCPU's entries are not checked at this audit. */
  forget(): void {
    this.writes = -1;
  }

  /**
   * Compare the TLB with what the last audit saw and remember it as seen now: the gfn range of every
   * entry that differs, appeared or went away goes to `ranges` (with `ranges` null, nothing is added:
   * a whole audit checks every entry anyway).
   */
  update(tlb: Tlb, asId: number, ranges: GfnRanges | null): void {
    const known = this.writes >= 0 && this.asId === asId;
    if (known && this.writes === tlb.writes) return; // not written since: the same entries
    const c = tlbColumns;
    const n = c.read(tlb);
    if (ranges !== null) {
      if (known) this.diff(c, n, ranges);
      else for (let k = 0; k < n; k++) addEntry(ranges, c.gfn[k]!, c.level[k]!);
    }
    if (this.place.length < n) this.grow(n);
    // (an element loop: subarray() makes a view object per column, and set() is a call each)
    const { place, gfn, pfn, level } = this;
    for (let k = 0; k < n; k++) {
      place[k] = c.place[k]!;
      gfn[k] = c.gfn[k]!;
      pfn[k] = c.pfn[k]!;
      level[k] = c.level[k]!;
    }
    this.n = n;
    this.writes = tlb.writes;
    this.asId = asId;
  }

  /**
   * The ranges of the entries that differ between what was seen and the n entries in c (both in place
   * order): at a place held in both, a different translation names both entries (the new one and the one
   * it replaced); a place held in one only names its entry.
   */
  private diff(c: TlbColumns, n: number, ranges: GfnRanges): void {
    const m = this.n;
    let i = 0;
    let j = 0;
    while (i < m || j < n) {
      const pi = i < m ? this.place[i]! : TLB_PLACES;
      const pj = j < n ? c.place[j]! : TLB_PLACES;
      if (pi === pj) {
        if (this.gfn[i] !== c.gfn[j] || this.pfn[i] !== c.pfn[j]) {
          addEntry(ranges, c.gfn[j]!, c.level[j]!);
          addEntry(ranges, this.gfn[i]!, this.level[i]!);
        }
        i++;
        j++;
      } else if (pi < pj) addEntry(ranges, this.gfn[i]!, this.level[i++]!);
      else addEntry(ranges, c.gfn[j]!, c.level[j++]!);
    }
  }

  /**
   * The entries as last seen (after update(): what the TLB holds now), in forEachEntry's order, those
   * over `ranges` to `visit`: the incremental TLB audit, without reading the TLB again.
   */
  visitOver(ranges: GfnRanges, visit: (gfn: number, pfn: number, level: number) => void): void {
    const { gfn, pfn, level } = this;
    for (let k = 0; k < this.n; k++)
      if (ranges.overlaps(gfn[k]!, PAGES_PER_LEVEL[level[k]!]!)) visit(gfn[k]!, pfn[k]!, level[k]!);
  }

  private grow(n: number): void {
    const cap = Math.max(n, 2 * this.place.length);
    this.place = new Int32Array(cap);
    this.gfn = new Float64Array(cap);
    this.pfn = new Float64Array(cap);
    this.level = new Uint8Array(cap);
  }
}

/** The gfn range of an entry of `level` whose base gfn is gfn. */
function addEntry(ranges: GfnRanges, gfn: number, level: number): void {
  ranges.add(gfn, gfn + PAGES_PER_LEVEL[level]!);
}
