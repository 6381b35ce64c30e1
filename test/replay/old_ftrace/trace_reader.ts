/**
 * What the three trace readers (QEMU trace, strace, kernel trace text) share: the file's text, the
 * options, the report, the event table, the line loop (one indexOf per line, no substring), malformed
 * lines, and the count of unknown events by name (the name is sliced only when it differs from the
 * previous unknown one: a log of one unused event costs one substring). Model-only file (no kernel
 * counterpart).
 */
import {
  countIn,
  malformed,
  newReport,
  type ParseReport,
  type Parsed,
  type ReadOptions,
  type TraceEvent,
} from '../../../src/replay/events.ts';
import { EventTable, parsedOf } from '../../../src/replay/event_table.ts';
import { sameAt } from './scan.ts';

export abstract class TraceReader {
  readonly report: ParseReport;
  readonly table: EventTable;
  private lastUnknown = '';

  constructor(
    protected readonly s: string,
    file: string,
    protected readonly opts: ReadOptions,
    width: number,
  ) {
    this.report = newReport(file);
    // a reader with payload columns stores most records: about one row per 80 characters of trace
    // (records are longer), so few or no doublings of the columns
    this.table = new EventTable(
      width,
      width === 0 ? 1024 : Math.min(1 << 22, Math.max(1024, Math.ceil(s.length / 80))),
    );
  }

  /** One line, s[ls, le) without its newline; `line` is 1-based. */
  protected abstract line(ls: number, le: number, line: number): void;

  read<E extends TraceEvent = TraceEvent>(): Parsed<E> {
    const s = this.s;
    const len = s.length;
    let ls = 0;
    let n = 0;
    while (ls < len) {
      let le = s.indexOf('\n', ls);
      if (le === -1) le = len;
      n++;
      this.line(ls, le, n);
      ls = le + 1;
    }
    this.report.lines = n;
    this.done();
    return parsedOf<E>(this.table, this.report);
  }

  /** After the last line (notes about the whole file). */
  protected done(): void {}

  protected bad(line: number, what: string): void {
    malformed(this.report, line, what, this.opts.strict);
  }

  /**
   * Count a record of the unused event named str[a, b) (by default in the file's text) and say true; but
   * say false, counting nothing, when the name is one of `used`.
   */
  protected unknown(a: number, b: number, str = this.s, used?: ReadonlySet<string>): boolean {
    const u = this.lastUnknown;
    if (u.length !== b - a || !sameAt(str, a, u)) {
      const name = str.slice(a, b);
      if (used?.has(name)) return false;
      this.lastUnknown = name;
    }
    countIn(this.report.unknown, this.lastUnknown);
    return true;
  }
}
