/**
 * What the three trace readers (QEMU trace, strace, kernel trace text) share: the file's text, the
 * options, the report, the event table, the line loop (one indexOf per line, no substring), malformed
 * lines, and the count of unknown events by name (the name is sliced only when it differs from the
 * previous unknown one: a log of one unused event costs one substring). A reader that scans characters
 * by the hundred per line asks for the text as bytes too (`bytes`): reading a byte from a Uint8Array costs
 * about half a charCodeAt on this V8. The bytes come in chunks of whole lines copied into one reused
 * buffer (copying the whole file at once costs ~1.2 ns a character in fresh memory, the chunks ~0.1).
 * Model-only file (no kernel counterpart).
 */
import {
  countIn,
  malformed,
  newReport,
  type ParseReport,
  type Parsed,
  type ReadOptions,
  type TraceEvent,
} from './events.ts';
import { EventTable, parsedOf } from './event_table.ts';
import { NON_ASCII, sameAt } from './scan.ts';
import { WORD_SLACK, Word, wordAt } from './scan_bytes.ts';

/** Characters per chunk of bytes (a longer line gets a chunk of its own). */
const CHUNK = 1 << 16;

export abstract class TraceReader {
  readonly report: ParseReport;
  readonly table: EventTable;
  private lastUnknown = '';
  /** lastUnknown as a word when it is all ASCII (compared in the bytes), else null */
  private lastUnknownWord: Word | null = null;
  /**
   * With `bytes`: the chunk of the text being read, b[i - o] for s[i]: the character code when below 128,
   * else NON_ASCII (whose callers look at s itself), so a byte equals an ASCII code exactly when the
   * character does.
   */
  protected b: Buffer = Buffer.alloc(0);
  /** b as a DataView (wordAt reads four bytes at a time) */
  protected dv = new DataView(this.b.buffer, this.b.byteOffset, this.b.length);
  protected o = 0;
  private readonly ascii: boolean;

  constructor(
    protected readonly s: string,
    file: string,
    protected readonly opts: ReadOptions,
    width: number,
    private readonly bytes = false,
  ) {
    this.report = newReport(file);
    this.ascii = bytes && Buffer.byteLength(s, 'utf8') === s.length;
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
      // the lines up to ce: one chunk (the whole text when not read as bytes)
      let ce = len;
      if (this.bytes && ls + CHUNK < len) {
        ce = s.lastIndexOf('\n', ls + CHUNK - 1) + 1;
        if (ce <= ls) ce = s.indexOf('\n', ls) + 1 || len;
      }
      if (this.bytes) this.fill(ls, ce);
      while (ls < ce) {
        let le = s.indexOf('\n', ls);
        if (le === -1) le = len;
        n++;
        this.line(ls, le, n);
        ls = le + 1;
      }
    }
    this.report.lines = n;
    this.done();
    return parsedOf<E>(this.table, this.report);
  }

  /** s[a, e) into b, as bytes from o = a. */
  private fill(a: number, e: number): void {
    // one byte more: a newline after the last line, also when the text has none (no stale byte there)
    if (e - a + 1 + WORD_SLACK > this.b.length) {
      this.b = Buffer.allocUnsafe(Math.max(CHUNK, e - a) + 1 + WORD_SLACK);
      this.dv = new DataView(this.b.buffer, this.b.byteOffset, this.b.length);
    }
    const b = this.b;
    this.o = a;
    b[e - a] = 10;
    if (this.ascii) {
      b.write(this.s.slice(a, e), 0, 'latin1');
      return;
    }
    const s = this.s;
    for (let i = a; i < e; i++) {
      const c = s.charCodeAt(i);
      b[i - a] = c < 128 ? c : NON_ASCII;
    }
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
    const w = this.lastUnknownWord;
    // in the bytes only for an all-ASCII name (a NON_ASCII byte stands for any character); a miss costs
    // only a slice (the same name is set again)
    const same =
      u.length === b - a &&
      (w !== null && this.bytes && str === this.s ? wordAt(this.dv, a - this.o, w) : sameAt(str, a, u));
    if (!same) {
      const name = str.slice(a, b);
      if (used?.has(name)) return false;
      this.lastUnknown = name;
      this.lastUnknownWord = /^[\x00-\x7f]*$/.test(name) ? Word.of(name) : null;
    }
    countIn(this.report.unknown, this.lastUnknown);
    return true;
  }
}
