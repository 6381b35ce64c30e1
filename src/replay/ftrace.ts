/**
 * Reads the kernel's kvm/kvmmmu tracepoints as text: the tracefs `trace` file (`comm-pid [cpu] flags
 * secs.usecs: event: text`, optionally with `(tgid)`) and `trace-cmd report` (same record, flags
 * optional, header lines such as `cpus=2`). Event texts are read by field name, not position, because
 * they differ across versions; a missing field is counted under `missingFields` and the event skipped.
 * Formats (TP_printk), checked against the running 6.18.44 kernel's events/<sys>/<event>/format files and
 * linux-next's arch/x86/kvm/mmu/mmutrace.h and arch/x86/kvm/trace.h:
 *   kvm_page_fault            vcpu %u rip 0x%lx address 0x%016llx error_code 0x%llx
 *   kvm_mmu_set_spte          gfn %llx spte %llx (%s%s%s%s) level %d at %llx
 *   kvm_tdp_mmu_spte_changed  as id %d gfn %llx level %d old_spte %llx new_spte %llx
 *   kvm_mmu_spte_requested    gfn %llx pfn %llx level %d
 *   kvm_mmu_get_page          sp gen %u gfn %llx l%u … root %u sync|unsync new|existing
 *   kvm_mmu_prepare_zap_page  sp gen %u gfn %llx l%u … root %u sync|unsync
 *   kvm_mmu_zap_all_fast      kvm-mmu-valid-gen %u used_pages %x
 *   kvm_unmap_hva_range       mmu notifier unmap range: %#016lx -- %#016lx
 * trace-cmd report (3.1, libtraceevent's kvm plugin) prints kvm_mmu_get_page/prepare_zap_page in its own
 * format and prefixes records of an instance with its name (`inst:  comm-pid [cpu] …`); both are read.
 * Records are scanned in place (scan.ts): no substring, regex or object per field on the hot events; their
 * characters are read as the reader's bytes (TraceReader.b), their fields found and names compared by the
 * string builtins (a string compare costs about 4 ns a character on this V8, startsWith as much as a
 * charCodeAt loop; a byte compare less than half).
 * Model-only file (no kernel counterpart).
 */
import { countIn, type KernelEvent, type Parsed, type ReadOptions } from './events.ts';
import {
  B_CREATED,
  B_WRITE,
  KERNEL_WIDTH,
  K_FAULT,
  K_GET_PAGE,
  K_LEAF_ZAP,
  K_PREPARE_ZAP_PAGE,
  K_ZAP_ALL_FAST,
  S_KERNEL,
  V_GEN,
} from './event_table.ts';
import { TraceReader } from './trace_reader.ts';
import {
  EVENTS,
  EVENT_BYTES,
  type Rec,
  eventIndex,
  isEventNameAt,
  isHeaderAt,
  isLeaf,
  present,
  scanTask,
} from './ftrace_record.ts';
import {
  FieldFinder,
  Needle,
  hexAt,
  sameBytes,
  hexTokenB,
  hexTokenLow12B,
  intTokenB,
  secondsOfB,
} from './scan.ts';

/** Does this text look like tracefs or trace-cmd report output? */
export function looksLikeFtrace(head: string): boolean {
  return (
    head.startsWith('# tracer:') ||
    /(^|\n)cpus=\d+/.test(head) ||
    /\[\d{3}\] .*\d+\.\d+: (kvm|kvmmmu)?[a-z_]+:/.test(head)
  );
}

/** What an event's text gave: undefined (stored, or counted under missingFields) or what was expected. */
type Result = string | undefined;

/** One file's reader: the per-file search state; events go to the table, by column. */
class FtraceReader extends TraceReader {
  private readonly rec: Rec = { pid: 0, tgid: -1, time: 0, nameStart: 0, nameEnd: 0, textStart: 0, id: -1 };
  /** the last record's event (index in EVENTS), tried first on the next */
  private prevId = -1;
  private readonly cpuOpen = new Needle(' [');
  private readonly lSpace = new Needle(' l');
  private readonly f = {
    gfn: new FieldFinder('gfn'),
    level: new FieldFinder('level'),
    old: new FieldFinder('old_spte'),
    new: new FieldFinder('new_spte'),
    address: new FieldFinder('address'),
    errorCode: new FieldFinder('error_code'),
    gen: new FieldFinder('kvm-mmu-valid-gen'),
  };
  // the record being stored
  private t = 0;
  private tid = 0;
  private n = 0;

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
    const ok = this.scanRecord(from, le);
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

  /**
   * Find `comm-pid [(tgid)] [cpu] [flags] secs.usecs: event: text` in s[ls, le), by hand (a regex with a
   * free-form comm backtracks badly on long lines); false if the line is not such a record.
   */
  private scanRecord(ls: number, le: number): boolean {
    const b = this.b;
    const o = this.o;
    const r = this.rec;
    // positions in the chunk's bytes from here
    const e = le - o;
    const lb = this.cpuOpen.within(this.s, ls, le);
    if (lb === -1) return false;
    let rb = lb + 2 - o;
    while (rb < e && b[rb]! >= 48 && b[rb]! <= 57) rb++;
    if (rb === lb + 2 - o || rb >= e || b[rb] !== 93 /* ] */ || rb + 1 >= e || b[rb + 1] !== 32) return false;
    if (!scanTask(b, this.s, o, ls - o, lb - o, r)) return false;
    let i = rb + 2;
    while (i < e && b[i] === 32) i++;
    // the first ": ", and the token before it (latency flags such as d..1. come before the time), read
    // as seconds.fraction on the way (secondsUsAt of the token: NaN unless digits and one '.')
    let colon = -1;
    let ts = i;
    let dot = -1;
    let sec = 0;
    let bad = false;
    for (let p = i; p + 1 < e; p++) {
      const c = b[p]!;
      if (c === 32) {
        ts = p + 1;
        dot = -1;
        sec = 0;
        bad = false;
      } else if (c === 58 && b[p + 1] === 32) {
        colon = p;
        break;
      } else if (c === 46 && dot === -1) dot = p;
      else if (c < 48 || c > 57) bad = true;
      else if (dot === -1) sec = sec * 10 + (c - 48);
    }
    if (colon === -1) return false;
    r.time = bad ? NaN : secondsOfB(b, ts, colon, dot, sec);
    const nameStart = colon + 2 + o;
    let c2 = nameStart - o;
    r.id = this.usedAt(nameStart, le);
    if (r.id >= 0) c2 += EVENTS[r.id]!.length;
    else {
      while (c2 < e && b[c2] !== 58) c2++;
      if (c2 >= e) return false;
    }
    r.nameStart = nameStart;
    r.nameEnd = c2 + o;
    let t0 = c2 + 1;
    while (t0 < e && b[t0] === 32) t0++;
    r.textStart = t0 + o;
    return true;
  }

  /**
   * The index in EVENTS of the event named at a (its name and ':' there), else -1: records mostly repeat
   * the previous record's event, so its name is compared first, then the name is read up to ':' and
   * dispatched on its length and one character.
   */
  private usedAt(a: number, le: number): number {
    const s = this.s;
    const prev = this.prevId;
    if (prev >= 0) {
      const n = EVENTS[prev]!.length;
      if (a + n < le && this.b[a + n - this.o] === 58 && sameBytes(this.b, a - this.o, EVENT_BYTES[prev]!))
        return prev;
    }
    const b = this.b;
    const o = this.o;
    let c = a - o;
    while (c < le - o && b[c] !== 58) c++;
    const k = c < le - o ? eventIndex(s, a, c + o) : -1;
    if (k >= 0) this.prevId = k;
    return k;
  }

  private missing(ev: string, field: string): undefined {
    countIn(this.report.missingFields, `${ev}.${field}`);
    return undefined;
  }

  private build(id: number, ts: number, te: number): Result {
    switch (id) {
      case 0:
        return this.pageFault(ts, te);
      case 1:
        return this.setSpte(ts, te);
      case 2:
        return this.tdpSpteChanged(ts, te);
      case 3:
        return this.spteRequested(ts, te);
      case 4:
        return this.shadowPage(ts, te, K_GET_PAGE);
      case 5:
        return this.shadowPage(ts, te, K_PREPARE_ZAP_PAGE);
      case 6:
        return this.zapAllFast(ts, te);
      default:
        return this.unmapHvaRange(ts, te);
    }
  }

  private pageFault(ts: number, te: number): Result {
    const s = this.s;
    const a = this.f.address.value(s, ts, te);
    const e = this.f.errorCode.value(s, ts, te);
    if (a < 0) return this.missing('kvm_page_fault', 'address');
    if (e < 0) return this.missing('kvm_page_fault', 'error_code');
    const addr = hexTokenB(this.b, a - this.o, te - this.o);
    const ec = hexTokenB(this.b, e - this.o, te - this.o);
    if (Number.isNaN(addr) || Number.isNaN(ec)) return 'kvm_page_fault: expected hex address and error_code';
    this.fault(3, Math.floor(addr / 4096), 0, (ec & 2) !== 0);
    return undefined;
  }

  /** A fault row; tp indexes FAULT_TPS. */
  private fault(tp: number, gfn: number, level: number, write: boolean): void {
    this.table.pushGfn(K_FAULT, this.t, this.tid, this.n, gfn, level, write ? B_WRITE : 0, tp);
  }

  // gfnLevel's result (no object per event)
  private gfn = 0;
  private level = 0;

  /** Read gfn and level of an SPTE event into this.gfn/this.level: true, or false after counting a missing field, or what was expected. */
  private gfnLevel(ev: string, ts: number, te: number): boolean | string {
    const s = this.s;
    const g = this.f.gfn.value(s, ts, te);
    const l = this.f.level.value(s, ts, te);
    if (g < 0) return this.missing(ev, 'gfn') ?? false;
    if (l < 0) return this.missing(ev, 'level') ?? false;
    this.gfn = hexTokenB(this.b, g - this.o, te - this.o);
    this.level = intTokenB(this.b, l - this.o, te - this.o);
    return Number.isNaN(this.gfn) || Number.isNaN(this.level)
      ? `${ev}: expected hex gfn and a decimal level`
      : true;
  }

  private setSpte(ts: number, te: number): Result {
    const v = this.gfnLevel('kvm_mmu_set_spte', ts, te);
    if (v !== true) return v || undefined;
    // the permission string "(rwxu)": the first "(" followed by r|- and w|-
    const b = this.b;
    const o = this.o;
    let write = false;
    for (let p = ts - o; p + 2 < te - o; p++) {
      if (b[p] !== 40) continue;
      const r = b[p + 1];
      const w = b[p + 2];
      if ((r === 114 || r === 45) && (w === 119 || w === 45)) {
        write = w === 119;
        break;
      }
    }
    this.fault(0, this.gfn, this.level, write);
    return undefined;
  }

  private tdpSpteChanged(ts: number, te: number): Result {
    const s = this.s;
    const f = this.f;
    const g = f.gfn.value(s, ts, te);
    const l = f.level.value(s, ts, te);
    const o = f.old.value(s, ts, te);
    const nw = f.new.value(s, ts, te);
    const ev = 'kvm_tdp_mmu_spte_changed';
    if (g < 0) return this.missing(ev, 'gfn');
    if (l < 0) return this.missing(ev, 'level');
    if (o < 0) return this.missing(ev, 'old_spte');
    if (nw < 0) return this.missing(ev, 'new_spte');
    const gfn = hexTokenB(this.b, g - this.o, te - this.o);
    const level = intTokenB(this.b, l - this.o, te - this.o);
    // only the low bits of an SPTE are read (present, huge page, writable)
    const ol = hexTokenLow12B(this.b, o - this.o, te - this.o);
    const nl = hexTokenLow12B(this.b, nw - this.o, te - this.o);
    if (Number.isNaN(gfn) || Number.isNaN(level) || ol < 0 || nl < 0)
      return 'kvm_tdp_mmu_spte_changed: expected hex gfn/old_spte/new_spte and a decimal level';
    if (!present(ol) && present(nl) && isLeaf(nl, level)) this.fault(1, gfn, level, (nl & 2) !== 0);
    else if (present(ol) && isLeaf(ol, level) && !present(nl))
      this.table.pushGfn(K_LEAF_ZAP, this.t, this.tid, this.n, gfn, level, 0);
    else countIn(this.report.unknown, 'kvm_tdp_mmu_spte_changed (non-leaf or leaf-to-leaf)');
    return undefined;
  }

  private spteRequested(ts: number, te: number): Result {
    const v = this.gfnLevel('kvm_mmu_spte_requested', ts, te);
    if (v !== true) return v || undefined;
    this.fault(2, this.gfn, this.level, false);
    return undefined;
  }

  /**
   * kvm_mmu_get_page / kvm_mmu_prepare_zap_page. The kernel prints `sp gen %u gfn %llx l%u … new|existing`;
   * trace-cmd report formats them with libtraceevent's kvm plugin instead: `new|existing sp gfn %llx %u q…`
   * for get_page and `%u q…` (no gfn) for prepare_zap_page. The replay only counts these, so a missing gfn
   * or level is counted under missingFields and the event kept (gfn -1, level 0).
   */
  private shadowPage(ts: number, te: number, kind: number): Result {
    const s = this.s;
    const ev = kind === K_GET_PAGE ? 'kvm_mmu_get_page' : 'kvm_mmu_prepare_zap_page';
    const g = this.f.gfn.value(s, ts, te);
    const gfn = g < 0 ? -1 : hexTokenB(this.b, g - this.o, te - this.o);
    if (Number.isNaN(gfn)) return `${ev}: expected a hex gfn`;
    if (g < 0) countIn(this.report.missingFields, `${ev}.gfn`);
    const level = this.shadowLevel(ts, te);
    if (level === -1) countIn(this.report.missingFields, `${ev}.level`);
    const created =
      (te - ts >= 4 && s.startsWith(' new', te - 4)) || (te - ts >= 4 && s.startsWith('new ', ts));
    this.table.pushGfn(
      kind,
      this.t,
      this.tid,
      this.n,
      gfn,
      level === -1 ? 0 : level,
      created ? B_CREATED : 0,
    );
    return undefined;
  }

  /** The kernel's " l2 ", else the plugin's bare level before " q"; -1 if neither. */
  private shadowLevel(ts: number, te: number): number {
    const s = this.s;
    for (let i = this.lSpace.within(s, ts, te); i !== -1; i = this.lSpace.within(s, i + 1, te)) {
      const d = s.charCodeAt(i + 2);
      if (i + 3 < te && d >= 48 && d <= 57 && s.charCodeAt(i + 3) === 32) return d - 48;
    }
    const m = /^(?:(?:new|existing) sp gfn [0-9a-f]+ )?(\d) q/.exec(s.slice(ts, te));
    return m ? Number(m[1]) : -1;
  }

  private zapAllFast(ts: number, te: number): Result {
    const s = this.s;
    const g = this.f.gen.value(s, ts, te);
    if (g < 0) return this.missing('kvm_mmu_zap_all_fast', 'kvm-mmu-valid-gen');
    const gen = intTokenB(this.b, g - this.o, te - this.o);
    if (Number.isNaN(gen)) return 'kvm_mmu_zap_all_fast: expected a decimal kvm-mmu-valid-gen';
    const i = this.table.row(K_ZAP_ALL_FAST, S_KERNEL, this.t, this.tid, this.n, 0);
    this.table.v[V_GEN]![i] = gen;
    return undefined;
  }

  private unmapHvaRange(ts: number, te: number): Result {
    const m = /range: (0x[0-9a-f]+|[0-9a-f]+) -- (0x[0-9a-f]+|[0-9a-f]+)/.exec(this.s.slice(ts, te));
    if (!m) return this.missing('kvm_unmap_hva_range', 'range');
    const start = hexAt(m[1]!, 0, m[1]!.length);
    const end = hexAt(m[2]!, 0, m[2]!.length);
    this.table.pushBoxed({
      t: this.t,
      tid: this.tid,
      line: this.n,
      src: 'kernel',
      kind: 'unmap',
      start,
      end,
    });
    return undefined;
  }
}

export function readFtrace(text: string, file: string, opts: ReadOptions = {}): Parsed<KernelEvent> {
  return new FtraceReader(text, file, opts).read<KernelEvent>();
}
