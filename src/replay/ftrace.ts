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
 * Records are scanned in place (scan.ts): no substring, regex or object per field on the hot events.
 * Model-only file (no kernel counterpart).
 */
import { countIn, malformed, newReport, type KernelEvent, type ParseReport, type Parsed, type ReadOptions } from './events.ts';
import {
  FieldFinder, Needle, digitsAt, digitsValue, hexAt, intAt, isHexAt, isTrimSpace, low12At, secondsUsAt, tokenEnd,
} from './scan.ts';

/** Does this text look like tracefs or trace-cmd report output? */
export function looksLikeFtrace(head: string): boolean {
  return head.startsWith('# tracer:') || /(^|\n)cpus=\d+/.test(head) || /\[\d{3}\] .*\d+\.\d+: (kvm|kvmmmu)?[a-z_]+:/.test(head);
}

/** The record line being read: where its parts are in the file's text. */
interface Rec {
  pid: number;
  /** -1 when the trace has no tgid column (or prints "-----") */
  tgid: number;
  /** the time field (latency flags before it dropped) */
  timeStart: number;
  timeEnd: number;
  nameStart: number;
  nameEnd: number;
  /** the event's own text, to the end of the line */
  textStart: number;
}

const EVENTS = [
  'kvm_page_fault', 'kvm_mmu_set_spte', 'kvm_tdp_mmu_spte_changed', 'kvm_mmu_spte_requested',
  'kvm_mmu_get_page', 'kvm_mmu_prepare_zap_page', 'kvm_mmu_zap_all_fast', 'kvm_unmap_hva_range',
] as const;

/** Index in EVENTS of the name s[a, b), or -1: dispatched on length and one character, then one startsWith. */
function eventIndex(s: string, a: number, b: number): number {
  let k: number;
  switch (b - a) {
    case 14: k = 0; break;
    case 16: k = s.charCodeAt(a + 8) === 115 /* kvm_mmu_s */ ? 1 : 4; break;
    case 24: k = s.charCodeAt(a + 4) === 116 /* kvm_t */ ? 2 : 5; break;
    case 22: k = 3; break;
    case 20: k = 6; break;
    case 19: k = 7; break;
    default: return -1;
  }
  return s.startsWith(EVENTS[k]!, a) ? k : -1;
}

function isEventNameAt(s: string, a: number, b: number): boolean {
  for (let i = a; i < b; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 95)) return false;
  }
  return b > a;
}

/** trace-cmd report's header lines (`cpus=2`, `version = 7`, `CPU 0 is empty`). */
function isHeaderAt(s: string, a: number): boolean {
  return s.startsWith('cpus=', a) || s.startsWith('version =', a) || s.startsWith('CPU ', a);
}

/** SPTE_MMU_PRESENT_MASK (bit 11, 6.x spte.h) and PT_PAGE_SIZE_MASK (bit 7), from the low 12 bits. */
const present = (lo: number): boolean => (lo & 0x800) !== 0;
const isLeaf = (lo: number, level: number): boolean => level === 1 || (lo & 0x80) !== 0;

type Result = KernelEvent | null | string;

/** One file's reader: the text, its report and the per-file search state. */
class FtraceReader {
  readonly report: ParseReport;
  readonly events: KernelEvent[] = [];
  private readonly rec: Rec = { pid: 0, tgid: -1, timeStart: 0, timeEnd: 0, nameStart: 0, nameEnd: 0, textStart: 0 };
  private readonly cpuOpen = new Needle(' [');
  private readonly lSpace = new Needle(' l');
  private readonly f = {
    gfn: new FieldFinder('gfn'), level: new FieldFinder('level'), old: new FieldFinder('old_spte'),
    new: new FieldFinder('new_spte'), address: new FieldFinder('address'), errorCode: new FieldFinder('error_code'),
    gen: new FieldFinder('kvm-mmu-valid-gen'),
  };
  /** the last unknown event's name, reused while the next lines repeat it */
  private lastUnknown = '';
  // the line being built
  private t = 0;
  private tid = 0;
  private line = 0;

  constructor(
    private readonly s: string,
    file: string,
    private readonly opts: ReadOptions,
  ) {
    this.report = newReport(file);
  }

  read(): void {
    const { s, report, opts, rec } = this;
    const len = s.length;
    let ls = 0;
    let n = 0;
    while (ls < len) {
      let le = s.indexOf('\n', ls);
      if (le === -1) le = len;
      const from = ls;
      ls = le + 1;
      n++;
      const c0 = s.charCodeAt(from);
      if (le === from || c0 === 35 /* # */ || (((c0 | 0x20) === 99 /* c|C */ || c0 === 118 /* v */) && isHeaderAt(s, from))) {
        report.other++;
        continue;
      }
      const ok = this.scanRecord(from, le);
      const t = ok ? secondsUsAt(s, rec.timeStart, rec.timeEnd) : NaN;
      const id = ok ? eventIndex(s, rec.nameStart, rec.nameEnd) : -1;
      if (!ok || Number.isNaN(t) || (id === -1 && !isEventNameAt(s, rec.nameStart, rec.nameEnd))) {
        malformed(report, n, 'expected "comm-pid [cpu] seconds.microseconds: event: fields" (tracefs or trace-cmd report)', opts.strict);
        continue;
      }
      if (opts.pids && !opts.pids.has(rec.pid) && !opts.pids.has(rec.tgid)) {
        report.filtered++;
        continue;
      }
      if (id === -1) {
        this.unknown(rec.nameStart, rec.nameEnd);
        continue;
      }
      this.t = t;
      this.tid = rec.pid;
      this.line = n;
      const ev = this.build(id, rec.textStart, le);
      if (typeof ev === 'string') malformed(report, n, ev, opts.strict);
      else if (ev) this.events.push(ev);
    }
    report.lines = n;
  }

  private unknown(a: number, b: number): void {
    const u = this.lastUnknown;
    if (u.length !== b - a || !this.s.startsWith(u, a)) this.lastUnknown = this.s.slice(a, b);
    countIn(this.report.unknown, this.lastUnknown);
  }

  /**
   * Find `comm-pid [(tgid)] [cpu] [flags] secs.usecs: event: text` in s[ls, le), by hand (a regex with a
   * free-form comm backtracks badly on long lines); false if the line is not such a record.
   */
  private scanRecord(ls: number, le: number): boolean {
    const s = this.s;
    const r = this.rec;
    const lb = this.cpuOpen.within(s, ls, le);
    if (lb === -1) return false;
    let rb = lb + 2;
    while (rb < le && s.charCodeAt(rb) >= 48 && s.charCodeAt(rb) <= 57) rb++;
    if (rb === lb + 2 || s.charCodeAt(rb) !== 93 /* ] */ || rb + 1 >= le || s.charCodeAt(rb + 1) !== 32) return false;
    if (!this.scanTask(ls, lb)) return false;
    let i = rb + 2;
    while (i < le && s.charCodeAt(i) === 32) i++;
    let colon = i;
    while (colon + 1 < le && !(s.charCodeAt(colon) === 58 && s.charCodeAt(colon + 1) === 32)) colon++;
    if (colon + 1 >= le) return false;
    let ts = colon;
    while (ts > i && s.charCodeAt(ts - 1) !== 32) ts--; // latency flags (d..1.) before the time
    r.timeStart = ts;
    r.timeEnd = colon;
    const nameStart = colon + 2;
    let c2 = nameStart;
    while (c2 < le && s.charCodeAt(c2) !== 58) c2++;
    if (c2 >= le) return false;
    r.nameStart = nameStart;
    r.nameEnd = c2;
    let t0 = c2 + 1;
    while (t0 < le && s.charCodeAt(t0) === 32) t0++;
    r.textStart = t0;
    return true;
  }

  /** `comm-pid` or `comm-pid (tgid)` in s[a, b), trimmed: pid and tgid into rec; false if neither. */
  private scanTask(a: number, b: number): boolean {
    const s = this.s;
    const r = this.rec;
    while (a < b && isTrimSpace(s.charCodeAt(a))) a++;
    while (b > a && isTrimSpace(s.charCodeAt(b - 1))) b--;
    r.tgid = -1;
    if (b > a && s.charCodeAt(b - 1) === 41 /* ) */) {
      let open = b - 1;
      while (open >= a && s.charCodeAt(open) !== 40) open--;
      if (open < a) return false;
      let ga = open + 1;
      let gb = b - 1;
      while (ga < gb && isTrimSpace(s.charCodeAt(ga))) ga++;
      while (gb > ga && isTrimSpace(s.charCodeAt(gb - 1))) gb--;
      if (digitsAt(s, ga, gb)) r.tgid = digitsValue(s, ga, gb);
      b = open;
      while (b > a && isTrimSpace(s.charCodeAt(b - 1))) b--;
    }
    let dash = b - 1;
    while (dash >= a && s.charCodeAt(dash) !== 45) dash--;
    if (dash < a || !digitsAt(s, dash + 1, b)) return false;
    r.pid = digitsValue(s, dash + 1, b);
    return true;
  }

  private missing(ev: string, field: string): null {
    countIn(this.report.missingFields, `${ev}.${field}`);
    return null;
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
        return this.shadowPage(ts, te, 'getPage');
      case 5:
        return this.shadowPage(ts, te, 'prepareZapPage');
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
    const addr = hexAt(s, a, tokenEnd(s, a, te));
    const ec = hexAt(s, e, tokenEnd(s, e, te));
    if (Number.isNaN(addr) || Number.isNaN(ec)) return 'kvm_page_fault: expected hex address and error_code';
    return { t: this.t, tid: this.tid, line: this.line, src: 'kernel', kind: 'fault', tp: 'kvm_page_fault', gfn: Math.floor(addr / 4096), level: 0, write: (ec & 2) !== 0 };
  }

  // gfnLevel's result (no object per event)
  private gfn = 0;
  private level = 0;

  /** Read gfn and level of an SPTE event into this.gfn/this.level: undefined, or null (missing) or what was expected. */
  private gfnLevel(ev: string, ts: number, te: number): undefined | null | string {
    const s = this.s;
    const g = this.f.gfn.value(s, ts, te);
    const l = this.f.level.value(s, ts, te);
    if (g < 0) return this.missing(ev, 'gfn');
    if (l < 0) return this.missing(ev, 'level');
    this.gfn = hexAt(s, g, tokenEnd(s, g, te));
    this.level = intAt(s, l, tokenEnd(s, l, te));
    return Number.isNaN(this.gfn) || Number.isNaN(this.level) ? `${ev}: expected hex gfn and a decimal level` : undefined;
  }

  private setSpte(ts: number, te: number): Result {
    const v = this.gfnLevel('kvm_mmu_set_spte', ts, te);
    if (v !== undefined) return v;
    // the permission string "(rwxu)": the first "(" followed by r|- and w|-
    const s = this.s;
    let write = false;
    for (let p = ts; p + 2 < te; p++) {
      if (s.charCodeAt(p) !== 40) continue;
      const r = s.charCodeAt(p + 1);
      const w = s.charCodeAt(p + 2);
      if ((r === 114 || r === 45) && (w === 119 || w === 45)) {
        write = w === 119;
        break;
      }
    }
    return { t: this.t, tid: this.tid, line: this.line, src: 'kernel', kind: 'fault', tp: 'kvm_mmu_set_spte', gfn: this.gfn, level: this.level, write };
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
    const gfn = hexAt(s, g, tokenEnd(s, g, te));
    const level = intAt(s, l, tokenEnd(s, l, te));
    const oe = tokenEnd(s, o, te);
    const ne = tokenEnd(s, nw, te);
    if (Number.isNaN(gfn) || Number.isNaN(level) || !isHexAt(s, o, oe) || !isHexAt(s, nw, ne))
      return 'kvm_tdp_mmu_spte_changed: expected hex gfn/old_spte/new_spte and a decimal level';
    const ol = low12At(s, o, oe);
    const nl = low12At(s, nw, ne);
    if (!present(ol) && present(nl) && isLeaf(nl, level))
      return { t: this.t, tid: this.tid, line: this.line, src: 'kernel', kind: 'fault', tp: 'kvm_tdp_mmu_spte_changed', gfn, level, write: (nl & 2) !== 0 };
    if (present(ol) && isLeaf(ol, level) && !present(nl)) return { t: this.t, tid: this.tid, line: this.line, src: 'kernel', kind: 'leafZap', gfn, level };
    countIn(this.report.unknown, 'kvm_tdp_mmu_spte_changed (non-leaf or leaf-to-leaf)');
    return null;
  }

  private spteRequested(ts: number, te: number): Result {
    const v = this.gfnLevel('kvm_mmu_spte_requested', ts, te);
    if (v !== undefined) return v;
    return { t: this.t, tid: this.tid, line: this.line, src: 'kernel', kind: 'fault', tp: 'kvm_mmu_spte_requested', gfn: this.gfn, level: this.level, write: false };
  }

  /**
   * kvm_mmu_get_page / kvm_mmu_prepare_zap_page. The kernel prints `sp gen %u gfn %llx l%u … new|existing`;
   * trace-cmd report formats them with libtraceevent's kvm plugin instead: `new|existing sp gfn %llx %u q…`
   * for get_page and `%u q…` (no gfn) for prepare_zap_page. The replay only counts these, so a missing gfn
   * or level is counted under missingFields and the event kept (gfn -1, level 0).
   */
  private shadowPage(ts: number, te: number, kind: 'getPage' | 'prepareZapPage'): Result {
    const s = this.s;
    const ev = kind === 'getPage' ? 'kvm_mmu_get_page' : 'kvm_mmu_prepare_zap_page';
    const g = this.f.gfn.value(s, ts, te);
    const gfn = g < 0 ? -1 : hexAt(s, g, tokenEnd(s, g, te));
    if (Number.isNaN(gfn)) return `${ev}: expected a hex gfn`;
    if (g < 0) countIn(this.report.missingFields, `${ev}.gfn`);
    const level = this.shadowLevel(ts, te);
    if (level === -1) countIn(this.report.missingFields, `${ev}.level`);
    const created = (te - ts >= 4 && s.startsWith(' new', te - 4)) || (te - ts >= 4 && s.startsWith('new ', ts));
    return { t: this.t, tid: this.tid, line: this.line, src: 'kernel', kind, gfn, level: level === -1 ? 0 : level, created };
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
    const gen = intAt(s, g, tokenEnd(s, g, te));
    if (Number.isNaN(gen)) return 'kvm_mmu_zap_all_fast: expected a decimal kvm-mmu-valid-gen';
    return { t: this.t, tid: this.tid, line: this.line, src: 'kernel', kind: 'zapAllFast', gen };
  }

  private unmapHvaRange(ts: number, te: number): Result {
    const m = /range: (0x[0-9a-f]+|[0-9a-f]+) -- (0x[0-9a-f]+|[0-9a-f]+)/.exec(this.s.slice(ts, te));
    if (!m) return this.missing('kvm_unmap_hva_range', 'range');
    const start = hexAt(m[1]!, 0, m[1]!.length);
    const end = hexAt(m[2]!, 0, m[2]!.length);
    return { t: this.t, tid: this.tid, line: this.line, src: 'kernel', kind: 'unmap', start, end };
  }
}

export function readFtrace(text: string, file: string, opts: ReadOptions = {}): Parsed<KernelEvent> {
  const r = new FtraceReader(text, file, opts);
  r.read();
  return { events: r.events, report: r.report };
}
