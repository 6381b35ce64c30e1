/**
 * The runner's counts at a step's end: everything countable, summed over VMs and vCPUs — the runner's
 * derived counters, the VMs' model counters and kernel stats, a TD's SEAMCALL counts, the vCPUs' stats
 * (as `vcpu.<name>`) — and the change from one reading to the next, as `{name: value}` objects in the
 * order the names were met (derived counters first). A run reads them once per top-level step, and a
 * replayed trace has one step per memslot call: a reading builds no object and no name, it follows the
 * previous reading's sequence of names (the public API returns them in the same order every time) and
 * adds each value into its place; only the change is built as an object. Model-only file.
 */
import type { Vm } from '../kvm/kvm_main.ts';
import type { Vcpu } from '../kvm/vcpu.ts';

export type Counts = Record<string, number>;

/** One reading: a copy of the derived counters, the other values by place, and the places in order. */
export interface CountsSample {
  derived: Counts;
  vals: Float64Array;
  /** the places of the names in the order the reading met them (each once) */
  order: Int32Array;
}

const PREFIX = ['', 'tdx.', 'vcpu.'] as const;

export class CountsReader {
  /** every stat name met in this run, by place */
  private readonly names: string[] = [];
  private readonly placeOf = new Map<string, number>();
  /** the last reading's sequence: each (key, prefix) pair met and its place */
  private seqKey: string[] = [];
  private seqPrefix: number[] = [];
  private seqPlace: number[] = [];
  private j = 0;
  private matched = true;
  private vals = new Float64Array(0);
  private order: Int32Array = new Int32Array(0);
  private seen = new Uint8Array(0);
  private orderList: number[] = [];

  read(vms: readonly { vm: Vm; vcpus: readonly Vcpu[] }[], derived: Counts): CountsSample {
    this.j = 0;
    this.matched = true;
    this.vals = new Float64Array(Math.max(this.names.length, 16));
    this.orderList.length = 0;
    this.seen = new Uint8Array(this.vals.length);
    for (const c of vms) {
      this.visit(c.vm.getModelStats(), 0);
      this.visit(c.vm.getStats(), 0);
      // per-SEAMCALL counts and S-EPT page states of a TD (inspection only)
      const tdx = (c.vm.arch as { tdx?: { stats(): Record<string, number> } }).tdx;
      if (tdx) this.visit(tdx.stats(), 1);
      for (const vc of c.vcpus) this.visit(vc.getStats(), 2);
    }
    if (this.j !== this.seqKey.length) {
      this.matched = false;
      this.seqKey.length = this.seqPrefix.length = this.seqPlace.length = this.j;
    }
    // the same sequence as last time: the same order (shared by the readings)
    if (!this.matched || this.order.length !== this.orderList.length)
      this.order = Int32Array.from(this.orderList);
    return { derived: { ...derived }, vals: this.vals, order: this.order };
  }

  private visit(stats: Record<string, number>, prefix: number): void {
    for (const k in stats) {
      const j = this.j++;
      let p: number;
      if (this.seqKey[j] === k && this.seqPrefix[j] === prefix) p = this.seqPlace[j]!;
      else {
        this.matched = false;
        p = this.placeFor(prefix === 0 ? k : PREFIX[prefix] + k);
        this.seqKey[j] = k;
        this.seqPrefix[j] = prefix;
        this.seqPlace[j] = p;
      }
      if (p >= this.vals.length) this.grow(p + 1);
      if (this.seen[p] === 0) {
        this.seen[p] = 1;
        this.orderList.push(p);
      }
      this.vals[p]! += stats[k]!;
    }
  }

  private placeFor(name: string): number {
    let p = this.placeOf.get(name);
    if (p === undefined) {
      p = this.names.length;
      this.names.push(name);
      this.placeOf.set(name, p);
    }
    return p;
  }

  private grow(n: number): void {
    const cap = Math.max(n, this.vals.length * 2);
    const v = new Float64Array(cap);
    v.set(this.vals);
    this.vals = v;
    const s = new Uint8Array(cap);
    s.set(this.seen);
    this.seen = s;
  }

  /** The reading as `{name: value}`: the derived counters, then each stat (summed into a derived one of its name). */
  counts(s: CountsSample): Counts {
    const out: Counts = { ...s.derived };
    for (let i = 0; i < s.order.length; i++) {
      const p = s.order[i]!;
      const k = this.names[p]!;
      out[k] = (out[k] ?? 0) + s.vals[p]!;
    }
    return out;
  }

  /** Has a derived counter of s the name of a stat met in this run (the two would be summed)? */
  private collides(s: CountsSample | null): boolean {
    if (s !== null) for (const k in s.derived) if (this.placeOf.has(k)) return true;
    return false;
  }

  /** What changed from a to b (a null: from nothing), the names in b's order: nonzero changes only. */
  diff(a: CountsSample | null, b: CountsSample): Counts {
    if (this.collides(a) || this.collides(b))
      return diffCounts(a === null ? {} : this.counts(a), this.counts(b));
    const out: Counts = {};
    for (const k in b.derived) {
      const d = b.derived[k]! - (a?.derived[k] ?? 0);
      if (d !== 0) out[k] = d;
    }
    for (let i = 0; i < b.order.length; i++) {
      const p = b.order[i]!;
      const d = b.vals[p]! - (a !== null && p < a.vals.length ? a.vals[p]! : 0);
      if (d !== 0) out[this.names[p]!] = d;
    }
    return out;
  }
}

/** The nonzero changes from a to b, in b's order. */
export function diffCounts(a: Counts, b: Counts): Counts {
  const out: Counts = {};
  for (const [k, v] of Object.entries(b)) if (v - (a[k] ?? 0) !== 0) out[k] = v - (a[k] ?? 0);
  return out;
}
