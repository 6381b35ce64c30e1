/**
 * Merges the readers' streams into one timeline by time. Clocks: QEMU's `-msg timestamp=on` and strace
 * `-ttt` print wall-clock time; tracefs with `trace_clock` tai prints CLOCK_TAI, which is wall-clock plus
 * the kernel's TAI offset (0 on the development hosts; `adjtimex` shows it elsewhere). Another clock is
 * aligned with a per-source offset (`--offset kernel=-37` for a 37 s TAI offset). A stream without times
 * (QEMU without timestamps) can only be replayed alone, in its own order.
 *
 * Two corrections keep each kernel event with the memslot call that caused it:
 * * when strace and the QEMU trace both give the memslot calls, strace's are used (it sees every ioctl,
 *   including calls QEMU does not trace) and QEMU's are dropped;
 * * QEMU traces a call after its ioctl returned, so the zap events the kernel emitted inside that ioctl
 *   (same thread, just before the record) are moved after it. strace stamps the call at its entry.
 * Model-only file.
 */
import type { ParseReport, Parsed, Source, TraceEvent } from './events.ts';
import {
  EventTable,
  K_LEAF_ZAP,
  K_MEMSLOT,
  K_PREPARE_ZAP_PAGE,
  K_ZAP_ALL_FAST,
  SOURCES,
  S_KERNEL,
  S_QEMU,
  S_STRACE,
  V_SIZE,
  tableOf,
} from './event_table.ts';

export interface MergeOptions {
  /** microseconds added to each source's times */
  offsetUs?: Partial<Record<Source, number>>;
}

export interface Merged {
  /** the merged events as objects (made when first asked for; replay reads `table`) */
  events: TraceEvent[];
  table: EventTable;
  reports: ParseReport[];
  notes: string[];
}

/** Tie order at equal times, by source code (SOURCES: qemu, strace, kernel): strace, then QEMU, then the kernel. */
const RANK = [1, 0, 2];

/** One stream's rows to merge, in order: a table and which of its rows (all, when `rows` is null). */
interface List {
  tb: EventTable;
  rows: Int32Array | null;
  file: string;
}

const count = (l: List): number => (l.rows ? l.rows.length : l.tb.n);
const rowOf = (l: List, k: number): number => (l.rows ? l.rows[k]! : k);

/** The rows of tb that pass keep, or null when all do. */
function select(tb: EventTable, keep: (i: number) => boolean): Int32Array | null {
  const out: number[] = [];
  for (let i = 0; i < tb.n; i++) if (keep(i)) out.push(i);
  return out.length === tb.n ? null : Int32Array.from(out);
}

function isSorted(l: List): boolean {
  const t = l.tb.t;
  for (let k = 1; k < count(l); k++) if (t[rowOf(l, k)]! < t[rowOf(l, k - 1)]!) return false;
  return true;
}

/** A list's rows copied into a table of their own, in order (times shifted by off). */
function copyOf(l: List, width: number, off: number): EventTable {
  const out = new EventTable(width, Math.max(16, count(l)));
  if (l.rows === null && off === 0) {
    out.copyRows(l.tb, 0, l.tb.n);
    return out;
  }
  for (let k = 0; k < count(l); k++) {
    const j = out.copyRow(l.tb, rowOf(l, k));
    // `{ ...e, t: e.t + off }`: a boxed event is copied, not changed under its reader's answer
    if (off !== 0) out.setTime(j, out.t[j]! + off);
  }
  return out;
}

/** Stable two-way merge of sorted tables (ties: the earlier source rank first), copied run by run. */
function merge2(a: EventTable, b: EventTable): EventTable {
  const out = new EventTable(Math.max(a.width, b.width), a.n + b.n);
  const first = (i: number, j: number): boolean => {
    const x = a.t[i]!;
    const y = b.t[j]!;
    return x < y || (x === y && RANK[a.src[i]!]! <= RANK[b.src[j]!]!);
  };
  let i = 0;
  let j = 0;
  while (i < a.n && j < b.n) {
    if (first(i, j)) {
      let e = i + 1;
      while (e < a.n && first(e, j)) e++;
      out.copyRows(a, i, e);
      i = e;
    } else {
      let e = j + 1;
      while (e < b.n && !first(i, e)) e++;
      out.copyRows(b, j, e);
      j = e;
    }
  }
  out.copyRows(a, i, a.n);
  out.copyRows(b, j, b.n);
  return out;
}

const inIoctl = (kind: number): boolean =>
  kind === K_ZAP_ALL_FAST || kind === K_PREPARE_ZAP_PAGE || kind === K_LEAF_ZAP;

/**
 * Move each QEMU-traced DELETE before the zap events its own thread emitted since that thread's previous
 * traced call (the kernel ran them inside the ioctl QEMU traced afterwards).
 */
function attributeQemuWindows(tb: EventTable): number {
  let moved = 0;
  /** per thread, the time QEMU printed its previous record: older kernel events belong to earlier calls */
  const last = new Map<number, number>();
  const { kind, src, t, tid } = tb;
  for (let i = 0; i < tb.n; i++) {
    if (kind[i] !== K_MEMSLOT || src[i] !== S_QEMU || tid[i]! < 0) continue;
    const me = tid[i]!;
    const since = last.get(me) ?? -Infinity;
    last.set(me, t[i]!);
    if (tb.num(i, V_SIZE, 'size') !== 0) continue;
    let first = -1;
    for (let j = i - 1; j >= 0; j--) {
      if (t[j]! <= since) break;
      if (tid[j] !== me) continue;
      if (src[j] !== S_KERNEL || !inIoctl(kind[j]!)) break;
      first = j;
    }
    if (first === -1) continue;
    // the call takes the first zap's time and place; the rows between move down by one
    const at = t[first]!;
    tb.moveBack(i, first);
    tb.setTime(first, at);
    moved++;
  }
  return moved;
}

export function mergeStreams(streams: Parsed[], opts: MergeOptions = {}): Merged {
  const notes: string[] = [];
  const reports = streams.map((s) => s.report);
  const tables = streams.map(tableOf);
  const any = (tb: EventTable, f: (i: number) => boolean): boolean => {
    for (let i = 0; i < tb.n; i++) if (f(i)) return true;
    return false;
  };
  const hasStraceSlots = tables.some((tb) =>
    any(tb, (i) => tb.kind[i] === K_MEMSLOT && tb.src[i] === S_STRACE),
  );
  let lists: (List & { off: number })[] = tables.map((tb, k) => {
    let rows: Int32Array | null = null;
    if (hasStraceSlots && any(tb, (i) => tb.src[i] === S_QEMU)) {
      rows = select(tb, (i) => !(tb.src[i] === S_QEMU && tb.kind[i] === K_MEMSLOT));
      if (rows)
        notes.push(
          `${streams[k]!.report.file}: ${tb.n - rows.length} memslot calls superseded by strace's (the same ioctls, all of them)`,
        );
    }
    const l = { tb, rows, file: streams[k]!.report.file };
    const off = count(l) ? (opts.offsetUs?.[SOURCES[tb.src[rowOf(l, 0)]!]!] ?? 0) : 0;
    return { ...l, off };
  });
  lists = lists.filter((l) => count(l) > 0);
  const untimed = lists.filter((l) => {
    for (let k = 0; k < count(l); k++) if (Number.isNaN(l.tb.t[rowOf(l, k)]! + l.off)) return true;
    return false;
  });
  if (untimed.length && lists.length > 1)
    throw new Error(
      `${untimed[0]!.file}: events without times cannot be merged with other sources (QEMU: add -msg timestamp=on)`,
    );
  const width = Math.max(0, ...lists.map((l) => l.tb.width));
  let table: EventTable | null = null;
  for (const l of lists) {
    // merge2 copies its inputs: a whole, unshifted stream of several is read in place
    let tb = lists.length > 1 && l.rows === null && l.off === 0 ? l.tb : copyOf(l, width, l.off);
    if (lists.length > 1 && !isSorted({ tb, rows: null, file: l.file })) {
      const order = Array.from({ length: tb.n }, (_, i) => i).sort((a, b) => tb.t[a]! - tb.t[b]! || a - b);
      tb = copyOf({ tb, rows: Int32Array.from(order), file: l.file }, width, 0);
      notes.push(`${l.file}: records out of time order, sorted (stable)`);
    }
    table = table ? merge2(table, tb) : tb;
  }
  table ??= new EventTable(0, 16);
  const moved = attributeQemuWindows(table);
  if (moved)
    notes.push(
      `${moved} QEMU-traced DELETEs placed before the zap events their ioctl emitted (QEMU traces after the call)`,
    );
  const merged = table;
  let events: TraceEvent[] | undefined;
  return {
    get events(): TraceEvent[] {
      return (events ??= merged.toEvents());
    },
    table: merged,
    reports,
    notes,
  };
}
