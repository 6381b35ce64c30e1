/**
 * A map from page numbers to small integer values, stored as sorted disjoint runs. Stands in for the
 * kernel's xarray of per-gfn memory attributes (kvm->mem_attr_array), where conversions touch ranges of
 * millions of gfns at once. A value of 0 is "no entry", as xa_erase leaves it.
 */
export class RangeMap {
  private starts: number[] = [];
  private ends: number[] = [];
  private values: number[] = [];

  /** Index of the last run with start <= x, or -1. */
  private floor(x: number): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    let ans = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid]! <= x) {
        ans = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return ans;
  }

  get(x: number): number {
    const i = this.floor(x);
    return i >= 0 && x < this.ends[i]! ? this.values[i]! : 0;
  }

  /** True if every page of [start, end) has exactly `value`. */
  rangeIs(start: number, end: number, value: number): boolean {
    let x = start;
    while (x < end) {
      const i = this.floor(x);
      const inRun = i >= 0 && x < this.ends[i]!;
      const v = inRun ? this.values[i]! : 0;
      if (v !== value) return false;
      // advance to the end of this run, or to the next run's start
      x = inRun ? this.ends[i]! : i + 1 < this.starts.length ? this.starts[i + 1]! : end;
    }
    return true;
  }

  /** Set [start, end) to value (0 erases). */
  set(start: number, end: number, value: number): void {
    if (start >= end) return;
    const ns: number[] = [];
    const ne: number[] = [];
    const nv: number[] = [];
    const push = (s: number, e: number, v: number) => {
      if (s >= e || v === 0) return;
      const k = ns.length - 1;
      if (k >= 0 && ne[k] === s && nv[k] === v) ne[k] = e;
      else (ns.push(s), ne.push(e), nv.push(v));
    };
    let placed = false;
    for (let i = 0; i < this.starts.length; i++) {
      const s = this.starts[i]!;
      const e = this.ends[i]!;
      const v = this.values[i]!;
      if (e <= start || s >= end) {
        if (!placed && s >= end) (push(start, end, value), (placed = true));
        push(s, e, v);
        continue;
      }
      push(s, Math.min(e, start), v);
      if (!placed) (push(start, end, value), (placed = true));
      push(Math.max(s, end), e, v);
    }
    if (!placed) push(start, end, value);
    this.starts = ns;
    this.ends = ne;
    this.values = nv;
  }

  /** The runs, for inspection. */
  runs(): { start: number; end: number; value: number }[] {
    return this.starts.map((s, i) => ({ start: s, end: this.ends[i]!, value: this.values[i]! }));
  }
}
