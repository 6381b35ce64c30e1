/**
 * Reads the kernel's kvm/kvmmmu tracepoints as text: the tracefs `trace` file (`comm-pid [cpu] flags
 * secs.usecs: event: text`, optionally with `(tgid)`) and `trace-cmd report` (same record, flags
 * optional, header lines such as `cpus=2`; trace-cmd report prefixes records of an instance with its name,
 * `inst:  comm-pid [cpu] …`). This file frames the records: each line is scanned in place (ftrace_record.ts'
 * RecordScanner: no substring, regex or object per field; the reader's bytes, TraceReader.b), filtered by
 * pid, and its event text handed by event id to the event readers (ftrace_events.ts, where the formats
 * are listed).
 * Model-only file (no kernel counterpart).
 */
import type { KernelEvent, Parsed, ReadOptions } from './events.ts';
import { KERNEL_WIDTH } from './event_table.ts';
import { FtraceEventReader } from './ftrace_events.ts';
import { type Rec, RecordScanner, isEventNameAt, isHeaderAt } from './ftrace_record.ts';

/** Does this text look like tracefs or trace-cmd report output? */
export function looksLikeFtrace(head: string): boolean {
  return (
    head.startsWith('# tracer:') ||
    /(^|\n)cpus=\d+/.test(head) ||
    /\[\d{3}\] .*\d+\.\d+: (kvm|kvmmmu)?[a-z_]+:/.test(head)
  );
}

/** One file's reader: frames each record and hands its event text to the event readers. */
class FtraceReader extends FtraceEventReader {
  private readonly records = new RecordScanner();
  private readonly rec: Rec = this.records.rec;

  constructor(s: string, file: string, opts: ReadOptions) {
    super(s, file, opts, KERNEL_WIDTH, true);
  }

  protected line(from: number, le: number, n: number): void {
    const { s, report, opts, rec } = this;
    const c0 = s.charCodeAt(from);
    if (
      le === from ||
      c0 === 35 /* # */ ||
      (((c0 | 0x20) === 99 /* c|C */ || c0 === 118) /* v */ && isHeaderAt(s, from))
    ) {
      report.other++;
      return;
    }
    const ok = this.records.scan(s, this.b, this.dv, this.o, from, le);
    const t = ok ? rec.time : NaN;
    const id = ok ? rec.id : -1;
    if (!ok || Number.isNaN(t) || (id === -1 && !isEventNameAt(s, rec.nameStart, rec.nameEnd)))
      return this.bad(
        n,
        'expected "comm-pid [cpu] seconds.microseconds: event: fields" (tracefs or trace-cmd report)',
      );
    if (opts.pids && !opts.pids.has(rec.pid) && !opts.pids.has(rec.tgid)) {
      report.filtered++;
      return;
    }
    if (id === -1) {
      this.unknown(rec.nameStart, rec.nameEnd);
      return;
    }
    this.t = t;
    this.tid = rec.pid;
    this.n = n;
    const err = this.build(id, rec.textStart, le);
    if (err !== undefined) this.bad(n, err);
  }
}

export function readFtrace(text: string, file: string, opts: ReadOptions = {}): Parsed<KernelEvent> {
  return new FtraceReader(text, file, opts).read<KernelEvent>();
}
