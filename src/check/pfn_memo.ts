/** The checker's per-audit memo of mappings already checked (audit_mmu.ts, audit_tlb.ts): typed columns, no string per mapping. */
/**
 * Per-audit memo of mappings already checked, keyed by gfn (then slot id, base pfn, span, private) with
 * no string and no array built per mapping: the gfn maps to the first of its records, kept in columns that
 * chain the others; `only` ≥ 0 restricts the checks to that one gfn.
 */
/** The columns of a memo that has seen nothing (never written: the first mapping grows them). */
const NONE_I32 = new Int32Array(0);
const NONE_F64 = new Float64Array(0);
const NONE_U8 = new Uint8Array(0);

export class PfnMemo {
  // One memo per audit, and most audits see a few mappings or none (an incremental audit with nothing to
  // walk): nothing is allocated until the first mapping; then columns of 8, which stay inside V8's heap
  // (64 bytes at most) and are several times cheaper to allocate than an off-heap buffer; they double
  // as needed.
  private head: Map<number, number> | null = null;
  private slot = NONE_I32;
  private pfn = NONE_F64;
  private span = NONE_I32;
  private priv = NONE_U8;
  private next = NONE_I32;
  private n = 0;

  constructor(readonly only: number) {}

  /** Was this mapping seen in this audit? Records it if not. */
  seen(slotId: number, gfn: number, basePfn: number, span: number, isPrivate: boolean): boolean {
    const priv = isPrivate ? 1 : 0;
    const head = (this.head ??= new Map());
    const first = head.get(gfn);
    for (let i = first ?? -1; i !== -1; i = this.next[i]!)
      if (
        this.slot[i] === slotId &&
        this.pfn[i] === basePfn &&
        this.span[i] === span &&
        this.priv[i] === priv
      )
        return true;
    if (this.n === this.slot.length) this.grow();
    const i = this.n++;
    this.slot[i] = slotId;
    this.pfn[i] = basePfn;
    this.span[i] = span;
    this.priv[i] = priv;
    this.next[i] = first ?? -1;
    head.set(gfn, i);
    return false;
  }

  private grow(): void {
    const cap = Math.max(8, this.slot.length * 2);
    const more = <T extends Int32Array | Float64Array | Uint8Array>(a: T, b: T): T => (b.set(a), b);
    this.slot = more(this.slot, new Int32Array(cap));
    this.pfn = more(this.pfn, new Float64Array(cap));
    this.span = more(this.span, new Int32Array(cap));
    this.priv = more(this.priv, new Uint8Array(cap));
    this.next = more(this.next, new Int32Array(cap));
  }
}

export const newPfnMemo = (only = -1): PfnMemo => new PfnMemo(only);
