/**
 * Host physical pages: allocation with reuse, a refcount and a content version per pfn, and the swap
 * slots that keep a page's content while it is out. A freed pfn is handed out again (LIFO), so a
 * secondary-MMU mapping that outlives its page points at whatever the host reused it for.
 *
 * Kernel counterpart: the buddy allocator and struct page's refcount, as far as KVM can observe them.
 */
export class PfnPool {
  /** next never-used pfn; pfn 0 is never handed out so typed arrays can use 0 for "none" */
  private next = 1;
  private refcount = new Int32Array(1 << 16);
  private version = new Uint32Array(1 << 16);
  /** free single pages, most recently freed last */
  private free: number[] = [];
  private swap = new Map<number, number>();
  /** Pages currently allocated. */
  allocated = 0;

  private grow(upTo: number): void {
    if (upTo < this.refcount.length) return;
    let n = this.refcount.length;
    while (n <= upTo) n *= 2;
    const r = new Int32Array(n);
    r.set(this.refcount);
    const v = new Uint32Array(n);
    v.set(this.version);
    this.refcount = r;
    this.version = v;
  }

  /** Allocate `n` contiguous pages (n a power of two, naturally aligned), refcount 1 each. */
  alloc(n: number): number {
    let base: number;
    if (n === 1 && this.free.length > 0) base = this.free.pop()!;
    else {
      base = Math.ceil(this.next / n) * n;
      this.next = base + n;
    }
    this.grow(base + n);
    for (let k = 0; k < n; k++) {
      this.refcount[base + k] = 1;
      this.version[base + k] = (this.version[base + k]! + 1) >>> 0; // new owner, new content
    }
    this.allocated += n;
    return base;
  }

  get(pfn: number): void {
    this.refcount[pfn]!++;
  }

  /** Drop a reference; at zero the page is free and may be reused. */
  put(pfn: number): void {
    const r = --this.refcount[pfn]!;
    if (r === 0) {
      this.free.push(pfn);
      this.allocated--;
    }
  }

  refs(pfn: number): number {
    return this.refcount[pfn] ?? 0;
  }

  isFree(pfn: number): boolean {
    return pfn < this.next && this.refcount[pfn] === 0;
  }

  /** Content version: bumped by writes and by reallocation to a new owner. */
  contentVersion(pfn: number): number {
    return this.version[pfn]!;
  }

  write(pfn: number): void {
    this.version[pfn] = (this.version[pfn]! + 1) >>> 0;
  }

  copyContent(from: number, to: number): void {
    this.version[to] = this.version[from]!;
  }

  swapSlotSave(hva: number, pfn: number): void {
    this.swap.set(hva, this.version[pfn]!);
  }

  /** Swap-in: the content saved for hva, if it was swapped out, moves into pfn. */
  swapSlotRestore(hva: number, pfn: number): void {
    const v = this.swap.get(hva);
    if (v === undefined) return;
    this.version[pfn] = v;
    this.swap.delete(hva);
  }
}
