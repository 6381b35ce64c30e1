/**
 * The checker's index of memslots by host address (audit_delta.ts): which slots a host fault-in landed in,
 * found by a binary search instead of a look at every slot of every address space.
 *
 * Kernel counterpart: none (the checker's own bookkeeping; the kernel's hva lookup for MMU notifiers is
 * the interval tree walked by kvm_handle_hva_range, which this plays no part in).
 */
import type { KvmMemorySlot } from '../kvm/kvm_host.ts';

/**
 * Memslots by host address: the slots of every address space sorted by userspaceAddr, with the running
 * maximum of their ends, so the slots over an hva range are found by a binary search and a short walk
 * back instead of a look at every slot (a host fault-in is looked up for each audit that follows it).
 */
export class HvaIndex {
  /** sorted by userspaceAddr */
  private slots: KvmMemorySlot[] = [];
  /** each slot's place in the order of the lists given to build (address space, then slot order) */
  private order: number[] = [];
  private starts: number[] = [];
  private ends: number[] = [];
  /** max(ends[0..i]) */
  private maxEnds: number[] = [];
  private readonly out: KvmMemorySlot[] = [];
  private readonly outOrder: number[] = [];

  build(lists: readonly (readonly KvmMemorySlot[])[]): void {
    const slots: KvmMemorySlot[] = [];
    for (const l of lists) for (const s of l) slots.push(s);
    const n = slots.length;
    const order: number[] = [];
    for (let i = 0; i < n; i++) order.push(i);
    // Slots in gfn order mostly lie in hva order too (one mapping per region, slots at increasing
    // offsets): then the list order is the sorted one (ties keep list order either way), no sort.
    let sorted = true;
    for (let i = 1; i < n && sorted; i++) sorted = slots[i - 1]!.userspaceAddr <= slots[i]!.userspaceAddr;
    if (!sorted) {
      order.sort((x, y) => slots[x]!.userspaceAddr - slots[y]!.userspaceAddr || x - y);
      const copy = slots.slice();
      for (let i = 0; i < n; i++) slots[i] = copy[order[i]!]!;
    }
    // (filled by push: packed arrays, as over() reads them)
    const starts: number[] = [];
    const ends: number[] = [];
    const maxEnds: number[] = [];
    let m = -Infinity;
    for (let i = 0; i < n; i++) {
      const s = slots[i]!;
      const end = s.userspaceAddr + s.npages * 4096;
      starts.push(s.userspaceAddr);
      ends.push(end);
      maxEnds.push((m = Math.max(m, end)));
    }
    this.slots = slots;
    this.order = order;
    this.starts = starts;
    this.ends = ends;
    this.maxEnds = maxEnds;
  }

  /** The slots whose hva range overlaps [a, b), in the order of the lists (a list reused by the next call). */
  over(a: number, b: number): readonly KvmMemorySlot[] {
    const out = this.out;
    const ord = this.outOrder;
    out.length = 0;
    ord.length = 0;
    // the slots starting before b: [0, hi)
    let lo = 0;
    let hi = this.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.starts[mid]! < b) lo = mid + 1;
      else hi = mid;
    }
    // back while some slot at or before i may still end after a
    for (let i = hi - 1; i >= 0 && this.maxEnds[i]! > a; i--) {
      if (this.ends[i]! <= a) continue;
      // insertion by list order (almost always one slot)
      let k = out.length;
      out.push(this.slots[i]!);
      ord.push(this.order[i]!);
      while (k > 0 && ord[k - 1]! > ord[k]!) {
        const o = ord[k - 1]!;
        ord[k - 1] = ord[k]!;
        ord[k] = o;
        const s = out[k - 1]!;
        out[k - 1] = out[k]!;
        out[k] = s;
        k--;
      }
    }
    return out;
  }
}
