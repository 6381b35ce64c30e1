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

export interface MergeOptions {
  /** microseconds added to each source's times */
  offsetUs?: Partial<Record<Source, number>>;
}

export interface Merged {
  events: TraceEvent[];
  reports: ParseReport[];
  notes: string[];
}

const RANK: Record<Source, number> = { strace: 0, qemu: 1, kernel: 2 };

function isSorted(e: TraceEvent[]): boolean {
  for (let i = 1; i < e.length; i++) if (e[i]!.t < e[i - 1]!.t) return false;
  return true;
}

/** Stable two-way merge of sorted streams (ties: the earlier source rank first). */
function merge2(a: TraceEvent[], b: TraceEvent[]): TraceEvent[] {
  const out: TraceEvent[] = new Array(a.length + b.length);
  let i = 0;
  let j = 0;
  let k = 0;
  while (i < a.length && j < b.length) {
    const x = a[i]!;
    const y = b[j]!;
    if (x.t < y.t || (x.t === y.t && RANK[x.src] <= RANK[y.src])) out[k++] = a[i++]!;
    else out[k++] = b[j++]!;
  }
  while (i < a.length) out[k++] = a[i++]!;
  while (j < b.length) out[k++] = b[j++]!;
  return out;
}

const IN_IOCTL = new Set(['zapAllFast', 'prepareZapPage', 'leafZap']);

/**
 * Move each QEMU-traced DELETE before the zap events its own thread emitted since that thread's previous
 * traced call (the kernel ran them inside the ioctl QEMU traced afterwards).
 */
function attributeQemuWindows(ev: TraceEvent[]): number {
  let moved = 0;
  /** per thread, the time QEMU printed its previous record: older kernel events belong to earlier calls */
  const last = new Map<number, number>();
  for (let i = 0; i < ev.length; i++) {
    const e = ev[i]!;
    if (e.kind !== 'memslot' || e.src !== 'qemu' || e.tid < 0) continue;
    const since = last.get(e.tid) ?? -Infinity;
    last.set(e.tid, e.t);
    if (e.size !== 0) continue;
    let first = -1;
    for (let j = i - 1; j >= 0; j--) {
      const p = ev[j]!;
      if (p.t <= since) break;
      if (p.tid !== e.tid) continue;
      if (p.src !== 'kernel' || !IN_IOCTL.has(p.kind)) break;
      first = j;
    }
    if (first === -1) continue;
    // rotate ev[first..i] right by one in place (two splices would move the whole tail of a long trace)
    const call = { ...e, t: ev[first]!.t };
    for (let j = i; j > first; j--) ev[j] = ev[j - 1]!;
    ev[first] = call;
    moved++;
  }
  return moved;
}

export function mergeStreams(streams: Parsed[], opts: MergeOptions = {}): Merged {
  const notes: string[] = [];
  const reports = streams.map((s) => s.report);
  const hasStraceSlots = streams.some((s) => s.events.some((e) => e.kind === 'memslot' && e.src === 'strace'));
  let lists = streams.map((s) => {
    let ev = s.events;
    if (hasStraceSlots && ev.some((e) => e.src === 'qemu')) {
      const before = ev.length;
      ev = ev.filter((e) => !(e.src === 'qemu' && e.kind === 'memslot'));
      if (before !== ev.length)
        notes.push(`${s.report.file}: ${before - ev.length} memslot calls superseded by strace's (the same ioctls, all of them)`);
    }
    const off = ev.length ? (opts.offsetUs?.[ev[0]!.src] ?? 0) : 0;
    if (off !== 0) ev = ev.map((e) => ({ ...e, t: e.t + off }));
    return { ev, file: s.report.file };
  });
  lists = lists.filter((l) => l.ev.length > 0);
  const untimed = lists.filter((l) => l.ev.some((e) => Number.isNaN(e.t)));
  if (untimed.length && lists.length > 1)
    throw new Error(
      `${untimed[0]!.file}: events without times cannot be merged with other sources (QEMU: add -msg timestamp=on)`,
    );
  let events: TraceEvent[] = [];
  for (const l of lists) {
    let ev = l.ev;
    if (lists.length > 1 && !isSorted(ev)) {
      ev = ev.map((e, i) => [e, i] as const).sort((a, b) => a[0].t - b[0].t || a[1] - b[1]).map((p) => p[0]);
      notes.push(`${l.file}: records out of time order, sorted (stable)`);
    }
    events = events.length ? merge2(events, ev) : ev;
  }
  if (events === lists[0]?.ev) events = events.slice();
  const moved = attributeQemuWindows(events);
  if (moved) notes.push(`${moved} QEMU-traced DELETEs placed before the zap events their ioctl emitted (QEMU traces after the call)`);
  return { events, reports, notes };
}
