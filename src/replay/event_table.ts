/**
 * The readers' events stored by column: one typed array per field instead of one object per event, so a
 * million-line trace costs a few growing buffers, not a million objects for the garbage collector to copy
 * (issue #14's 1 M lines/s). The kinds a trace holds by the million (memslot calls, faults, leaf zaps,
 * shadow pages, zap-all-fast) are stored in columns; the rare ones (VM and vCPU creation, capabilities,
 * other VM calls, unmaps, everything strace reads) are kept as the reader's own objects ("boxed"), with
 * their kind, source, time, tid and line copied into the columns so merge and replay read every row alike.
 * `event(i)` and `toEvents()` give each row back as the plain object the readers made before this store
 * (same keys, same order: test/replay/pinned_outputs.test.ts holds them to it).
 * Model-only file (no kernel counterpart).
 */
import type { FaultEvent, MemslotEvent, Parsed, ParseReport, Source, TraceEvent } from './events.ts';

export const KINDS = [
  'memslot',
  'createVm',
  'createVcpu',
  'enableCap',
  'vmCall',
  'fault',
  'leafZap',
  'zapAllFast',
  'getPage',
  'prepareZapPage',
  'unmap',
] as const satisfies readonly TraceEvent['kind'][];
export const K_MEMSLOT = 0;
export const K_FAULT = 5;
export const K_LEAF_ZAP = 6;
export const K_ZAP_ALL_FAST = 7;
export const K_GET_PAGE = 8;
export const K_PREPARE_ZAP_PAGE = 9;
export const K_UNMAP = 10;
const KIND_CODE: Record<string, number> = Object.fromEntries(KINDS.map((k, i) => [k, i]));

export const SOURCES = ['qemu', 'strace', 'kernel'] as const satisfies readonly Source[];
export const S_QEMU = 0;
export const S_STRACE = 1;
export const S_KERNEL = 2;
const SOURCE_CODE: Record<string, number> = { qemu: 0, strace: 1, kernel: 2 };

/** A fault row's tracepoint, by its `ref` */
export const FAULT_TPS = [
  'kvm_mmu_set_spte',
  'kvm_tdp_mmu_spte_changed',
  'kvm_mmu_spte_requested',
  'kvm_page_fault',
] as const satisfies readonly FaultEvent['tp'][];

/** `bits`: a fault's write, a shadow page created, a memslot call's v2 and implied flags, a boxed row */
export const B_WRITE = 1;
export const B_CREATED = 2;
export const B_V2 = 4;
export const B_IMPLIED = 8;
export const B_BOXED = 16;

/** Payload columns: memslot calls use all nine, the kernel rows the first two (gfn and level, or gen). */
export const V_VM = 0,
  V_SLOT = 1,
  V_FLAGS = 2,
  V_GPA = 3,
  V_SIZE = 4,
  V_UA = 5,
  V_RET = 6,
  V_GMEM = 7,
  V_GMEM_OFF = 8;
export const V_GFN = 0,
  V_LEVEL = 1,
  V_GEN = 0;
export const MEMSLOT_WIDTH = 9;
export const KERNEL_WIDTH = 2;

export class EventTable {
  n = 0;
  private cap: number;
  kind: Uint8Array;
  src: Uint8Array;
  bits: Uint8Array;
  line: Int32Array;
  /** a fault row's tracepoint (FAULT_TPS), a boxed row's index in `objs` */
  ref: Int32Array;
  t: Float64Array;
  tid: Float64Array;
  /** payload columns (numbers as the readers parsed them: doubles, since a malformed trace can hold anything) */
  v: Float64Array[];
  readonly objs: TraceEvent[] = [];

  constructor(
    readonly width: number,
    cap = 1024,
  ) {
    this.cap = cap;
    this.kind = new Uint8Array(cap);
    this.src = new Uint8Array(cap);
    this.bits = new Uint8Array(cap);
    this.line = new Int32Array(cap);
    this.ref = new Int32Array(cap);
    this.t = new Float64Array(cap);
    this.tid = new Float64Array(cap);
    this.v = Array.from({ length: width }, () => new Float64Array(cap));
  }

  private grow(): void {
    const cap = this.cap * 2;
    const more = <A extends Uint8Array | Int32Array | Float64Array>(a: A): A => {
      const b = new (a.constructor as new (n: number) => A)(cap);
      b.set(a);
      return b;
    };
    this.kind = more(this.kind);
    this.src = more(this.src);
    this.bits = more(this.bits);
    this.line = more(this.line);
    this.ref = more(this.ref);
    this.t = more(this.t);
    this.tid = more(this.tid);
    this.v = this.v.map(more);
    this.cap = cap;
  }

  /** A new row with the fields every event has; its payload is the caller's to fill. */
  row(kind: number, src: number, t: number, tid: number, line: number, bits: number): number {
    if (this.n === this.cap) this.grow();
    const i = this.n++;
    this.kind[i] = kind;
    this.src[i] = src;
    this.t[i] = t;
    this.tid[i] = tid;
    this.line[i] = line;
    this.bits[i] = bits;
    return i;
  }

  /** A rare event kept as the object the reader made. */
  pushBoxed(e: TraceEvent): number {
    const i = this.row(KIND_CODE[e.kind]!, SOURCE_CODE[e.src]!, e.t, e.tid, e.line, B_BOXED);
    this.ref[i] = this.objs.length;
    this.objs.push(e);
    return i;
  }

  /** A kernel row of gfn and level (fault, leafZap, getPage, prepareZapPage). */
  pushGfn(
    kind: number,
    t: number,
    tid: number,
    line: number,
    gfn: number,
    level: number,
    bits: number,
    tp = 0,
  ): number {
    const i = this.row(kind, S_KERNEL, t, tid, line, bits);
    this.v[V_GFN]![i] = gfn;
    this.v[V_LEVEL]![i] = level;
    this.ref[i] = tp;
    return i;
  }

  isBoxed(i: number): boolean {
    return (this.bits[i]! & B_BOXED) !== 0;
  }

  private boxed(i: number): TraceEvent {
    return this.objs[this.ref[i]!]!;
  }

  /** Payload column c of row i, or the boxed event's field `key`. */
  num(i: number, c: number, key: string): number {
    return this.isBoxed(i) ? (this.boxed(i) as unknown as Record<string, number>)[key]! : this.v[c]![i]!;
  }

  /** A gfn row's gfn and level, a fault's tracepoint and write (columns, or the boxed event's fields). */
  gfn(i: number): number {
    return this.isBoxed(i) ? (this.boxed(i) as { gfn: number }).gfn : this.v[V_GFN]![i]!;
  }

  level(i: number): number {
    return this.isBoxed(i) ? (this.boxed(i) as { level: number }).level : this.v[V_LEVEL]![i]!;
  }

  faultTp(i: number): FaultEvent['tp'] {
    return this.isBoxed(i) ? (this.boxed(i) as FaultEvent).tp : FAULT_TPS[this.ref[i]!]!;
  }

  flag(i: number, bit: number, key: 'write' | 'created'): boolean {
    return this.isBoxed(i)
      ? (this.boxed(i) as unknown as Record<string, boolean>)[key] === true
      : (this.bits[i]! & bit) !== 0;
  }

  /** Row i as the plain object its reader made (a boxed row: that very object). */
  event(i: number): TraceEvent {
    if (this.isBoxed(i)) return this.boxed(i);
    const v = this.v;
    const t = this.t[i]!;
    const tid = this.tid[i]!;
    const line = this.line[i]!;
    const kind = this.kind[i]!;
    if (kind === K_MEMSLOT) return this.memslot(i);
    const src = 'kernel' as const;
    const gfn = v[V_GFN]![i]!;
    switch (kind) {
      case K_FAULT:
        return {
          t,
          tid,
          line,
          src,
          kind: 'fault',
          tp: FAULT_TPS[this.ref[i]!]!,
          gfn,
          level: v[V_LEVEL]![i]!,
          write: (this.bits[i]! & B_WRITE) !== 0,
        };
      case K_LEAF_ZAP:
        return { t, tid, line, src, kind: 'leafZap', gfn, level: v[V_LEVEL]![i]! };
      case K_ZAP_ALL_FAST:
        return { t, tid, line, src, kind: 'zapAllFast', gen: v[V_GEN]![i]! };
      default:
        return {
          t,
          tid,
          line,
          src,
          kind: kind === K_GET_PAGE ? 'getPage' : 'prepareZapPage',
          gfn,
          level: v[V_LEVEL]![i]!,
          created: (this.bits[i]! & B_CREATED) !== 0,
        };
    }
  }

  /** A memslot row as its reader made it (the QEMU reader's key order; strace's are boxed). */
  private memslot(i: number): MemslotEvent {
    const v = this.v;
    const b = this.bits[i]!;
    const e: MemslotEvent = {
      kind: 'memslot',
      t: this.t[i]!,
      tid: this.tid[i]!,
      src: SOURCES[this.src[i]!]!,
      line: this.line[i]!,
      vm: v[V_VM]![i]!,
      slot: v[V_SLOT]![i]!,
      flags: v[V_FLAGS]![i]!,
      gpa: v[V_GPA]![i]!,
      size: v[V_SIZE]![i]!,
      ua: v[V_UA]![i]!,
      ret: v[V_RET]![i]!,
      v2: (b & B_V2) !== 0,
    };
    if (b & B_V2) {
      e.guestMemfd = v[V_GMEM]![i]!;
      e.guestMemfdOffset = v[V_GMEM_OFF]![i]!;
    }
    if (b & B_IMPLIED) e.implied = true;
    return e;
  }

  toEvents(): TraceEvent[] {
    const out: TraceEvent[] = new Array(this.n);
    for (let i = 0; i < this.n; i++) out[i] = this.event(i);
    return out;
  }

  /** Append row i of `from` (same or narrower width). */
  copyRow(from: EventTable, i: number): number {
    const j = this.row(from.kind[i]!, from.src[i]!, from.t[i]!, from.tid[i]!, from.line[i]!, from.bits[i]!);
    if (from.isBoxed(i)) {
      this.ref[j] = this.objs.length;
      this.objs.push(from.boxed(i));
    } else {
      this.ref[j] = from.ref[i]!;
      for (let c = 0; c < from.width; c++) this.v[c]![j] = from.v[c]![i]!;
    }
    return j;
  }

  /** Append rows [a, b) of `from` (same or narrower width): each column copied as one block. */
  copyRows(from: EventTable, a: number, b: number): void {
    const n = b - a;
    if (n <= 0) return;
    while (this.n + n > this.cap) this.grow();
    const j = this.n;
    this.kind.set(from.kind.subarray(a, b), j);
    this.src.set(from.src.subarray(a, b), j);
    this.bits.set(from.bits.subarray(a, b), j);
    this.line.set(from.line.subarray(a, b), j);
    this.ref.set(from.ref.subarray(a, b), j);
    this.t.set(from.t.subarray(a, b), j);
    this.tid.set(from.tid.subarray(a, b), j);
    for (let c = 0; c < from.width; c++) this.v[c]!.set(from.v[c]!.subarray(a, b), j);
    // a boxed row's ref indexes its own table's objects (a table without objects has no boxed rows)
    if (from.objs.length > 0)
      for (let k = 0; k < n; k++) {
        if ((this.bits[j + k]! & B_BOXED) === 0) continue;
        this.ref[j + k] = this.objs.length;
        this.objs.push(from.objs[from.ref[a + k]!]!);
      }
    this.n += n;
  }

  /** Move row i to position `to` (< i), shifting rows to..i-1 down by one (merge's QEMU attribution). */
  moveBack(i: number, to: number): void {
    const cols: (Uint8Array | Int32Array | Float64Array)[] = [
      this.kind,
      this.src,
      this.bits,
      this.line,
      this.ref,
      this.t,
      this.tid,
      ...this.v,
    ];
    for (const c of cols) {
      const x = c[i]!;
      c.copyWithin(to + 1, to, i);
      c[to] = x;
    }
  }

  /** Set row i's time (a boxed row gets a copy of its event with the new time, as `{ ...e, t }` did). */
  setTime(i: number, t: number): void {
    this.t[i] = t;
    if (this.isBoxed(i)) this.objs[this.ref[i]!] = { ...this.boxed(i), t };
  }

  /** Every event boxed, as given (replay of events that did not come from a reader's table). */
  static fromEvents(ev: readonly TraceEvent[]): EventTable {
    const tb = new EventTable(0, Math.max(16, ev.length));
    for (const e of ev) tb.pushBoxed(e);
    return tb;
  }
}

/** A reader's answer: the table, and the events as objects, made only when asked for. */
export function parsedOf<E extends TraceEvent = TraceEvent>(
  table: EventTable,
  report: ParseReport,
): Parsed<E> {
  let events: E[] | undefined;
  return {
    get events(): E[] {
      return (events ??= table.toEvents() as E[]);
    },
    report,
    table,
  };
}

export function tableOf(p: { events: readonly TraceEvent[]; table?: EventTable }): EventTable {
  return p.table ?? EventTable.fromEvents(p.events);
}
