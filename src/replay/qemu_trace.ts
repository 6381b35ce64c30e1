/**
 * Reads QEMU's trace-event log (`-trace kvm_set_user_memory -D file`; `-msg timestamp=on` adds the
 * `tid@sec.usec:` prefix the log backend prints). Formats, from QEMU's accel/kvm/trace-events:
 *   7.2:  kvm_set_user_memory Slot#%d flags=0x%x gpa=0x%… size=0x%… ua=0x%… ret=%d
 *         (Slot# carries the address space in bits 16+, as the ioctl does)
 *   8.x:  kvm_set_user_memory AddrSpace#%d Slot#%d flags=0x%x gpa=0x%… size=0x%… ua=0x%… ret=%d
 *   9.x:  kvm_set_user_memory AddrSpace#%d Slot#%d flags=0x%x gpa=… size=… ua=… guest_memfd=%d
 *         guest_memfd_offset=0x… ret=%d   (the guest_memfd series, QEMU 9.1)
 *   9.x:  kvm_convert_memory start 0x… size 0x… <to_private|shared_to…>, kvm_memory_fault start … size …
 *         flags …, kvm_clear_dirty_log slot#%d start 0x… size 0x…
 * Fields are read by name, so both formats (and a reordering) parse. QEMU traces the call after the
 * ioctl returns, once per kvm_set_user_memory_region(); when a slot's KVM_MEM_READONLY flips on a flags
 * update, QEMU first makes an untraced size-0 call (kvm-all.c, "set the slot size to 0 before setting the
 * slot to the desired value"), which the reader adds as an `implied` DELETE so the replay sees it.
 * Records are scanned in place (scan.ts): no substring, Map or regex per line on the hot path.
 * Model-only file (no kernel counterpart).
 */
import { KVM_MEM_READONLY } from '../uapi/kvm.ts';
import {
  countIn, malformed, newReport,
  type MemslotEvent, type ParseReport, type Parsed, type ReadOptions, type TraceEvent,
} from './events.ts';
import { Needle, digitsAt, digitsValue, hexAt, intAt, secondsUsAt } from './scan.ts';

const USED = ['kvm_set_user_memory', 'kvm_convert_memory', 'kvm_memory_fault', 'kvm_clear_dirty_log'];

/** kvm_set_user_memory's fields, by name (`key=value` or `Key#value`); the first seven are required. */
const KEYS = ['AddrSpace', 'Slot', 'flags', 'gpa', 'size', 'ua', 'ret', 'guest_memfd', 'guest_memfd_offset'] as const;
const NEED = ['Slot', 'flags', 'gpa', 'size', 'ua', 'ret'] as const;
const NEED_AT = NEED.map((k) => KEYS.indexOf(k));
const [AS, SLOT, FLAGS, GPA, SIZE, UA, RET, GMEM, GMEM_OFF] = [0, 1, 2, 3, 4, 5, 6, 7, 8] as const;

function indexIn(list: readonly string[], s: string, a: number, b: number): number {
  for (let k = 0; k < list.length; k++) if (list[k]!.length === b - a && s.startsWith(list[k]!, a)) return k;
  return -1;
}

/** indexIn(KEYS, …) dispatched on the key's length and first character (one startsWith per token). */
function keyIndex(s: string, a: number, b: number): number {
  let k: number;
  switch (b - a) {
    case 2: k = UA; break;
    case 3: k = s.charCodeAt(a) === 103 /* g */ ? GPA : RET; break;
    case 4: k = s.charCodeAt(a) === 83 /* S */ ? SLOT : SIZE; break;
    case 5: k = FLAGS; break;
    case 9: k = AS; break;
    case 11: k = GMEM; break;
    case 18: k = GMEM_OFF; break;
    default: return -1;
  }
  return s.startsWith(KEYS[k]!, a) ? k : -1;
}

function isNameAt(s: string, a: number, b: number): boolean {
  if (a >= b) return false;
  for (let i = a; i < b; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 97 && c <= 122) || c === 95 || (i > a && c >= 48 && c <= 57))) return false;
  }
  return true;
}

/** Does this text look like a QEMU trace file (some line is a kvm_set_user_memory record)? */
export function looksLikeQemuTrace(head: string): boolean {
  return /(^|\n)(\d+@\d+\.\d+:)?kvm_set_user_memory /.test(head);
}

/** One file's reader: the text, its report, and where the current record's fields are. */
class QemuReader {
  readonly report: ParseReport;
  readonly events: TraceEvent[] = [];
  private readonly at = new Needle('@');
  private readonly colon = new Needle(':');
  /** value start/end of each of KEYS in the current record (-1: absent; a repeated key: the last) */
  private readonly vs = new Int32Array(KEYS.length);
  private readonly ve = new Int32Array(KEYS.length);
  /** each present slot's last successful call (the event itself: no copy per call) */
  private readonly present = new Map<number, MemslotEvent>();
  private lastUnknown = '';

  constructor(
    private readonly s: string,
    file: string,
    private readonly opts: ReadOptions,
  ) {
    this.report = newReport(file);
  }

  read(): void {
    const { s, report } = this;
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
    report.lines = n;
    if (this.events.some((e) => e.kind === 'memslot' && e.implied))
      report.notes.push('added the untraced size-0 call QEMU makes before a KVM_MEM_READONLY flip');
  }

  private line(ls: number, le: number, line: number): void {
    const { s, report } = this;
    let t = NaN;
    let tid = -1;
    let bs = ls;
    const at = this.at.within(s, ls, le);
    const colon = this.colon.within(s, ls, le);
    if (at > ls && colon > at && digitsAt(s, ls, at)) {
      t = secondsUsAt(s, at + 1, colon);
      if (Number.isNaN(t))
        return malformed(report, line, `expected tid@seconds.microseconds: before the event, got "${s.slice(ls, colon + 1)}"`, this.opts.strict);
      tid = digitsValue(s, ls, at);
      bs = colon + 1;
    }
    let ne = bs;
    while (ne < le && s.charCodeAt(ne) !== 32) ne++;
    if (!isNameAt(s, bs, ne)) {
      report.other++; // QEMU's own messages share the log file
      return;
    }
    const used = indexIn(USED, s, bs, ne);
    if (used === -1) return this.unknown(bs, ne);
    if (used !== 0) {
      this.events.push({ kind: 'vmCall', t, tid, src: 'qemu', line, vm: 0, name: USED[used]!, ret: 0 });
      return;
    }
    this.fields(ne + 1, le);
    const ev = this.memslotRecord(t, tid, line);
    if (typeof ev === 'string') return malformed(report, line, ev, this.opts.strict);
    const prev = this.present.get(ev.slot);
    if (ev.ret === 0 && prev && ev.size !== 0 && ((prev.flags ^ ev.flags) & KVM_MEM_READONLY) !== 0) {
      this.events.push({ ...ev, flags: prev.flags, gpa: prev.gpa, size: 0, ua: prev.ua, implied: true });
    }
    if (ev.ret === 0) {
      if (ev.size === 0) this.present.delete(ev.slot);
      else this.present.set(ev.slot, ev);
    }
    this.events.push(ev);
  }

  private unknown(a: number, b: number): void {
    const u = this.lastUnknown;
    if (u.length !== b - a || !this.s.startsWith(u, a)) this.lastUnknown = this.s.slice(a, b);
    countIn(this.report.unknown, this.lastUnknown);
  }

  /** Space-separated `key=value` / `Key#value` tokens of s[a, b): where each known key's value is. */
  private fields(a: number, b: number): void {
    const { s, vs, ve } = this;
    vs.fill(-1);
    let i = a;
    while (i < b) {
      let j = i;
      while (j < b && s.charCodeAt(j) !== 32) j++;
      let k = i;
      while (k < j && s.charCodeAt(k) !== 61 /* = */ && s.charCodeAt(k) !== 35 /* # */) k++;
      if (k > i && k < j) {
        const key = keyIndex(s, i, k);
        if (key !== -1) {
          vs[key] = k + 1;
          ve[key] = j;
        }
      }
      i = j + 1;
    }
  }

  private value(key: number): string {
    return this.vs[key]! < 0 ? '' : this.s.slice(this.vs[key], this.ve[key]);
  }

  /** One kvm_set_user_memory record from the fields found, or what was expected. */
  private memslotRecord(t: number, tid: number, line: number): MemslotEvent | string {
    const { s, vs, ve } = this;
    if ((vs[SLOT]! | vs[FLAGS]! | vs[GPA]! | vs[SIZE]! | vs[UA]! | vs[RET]!) < 0) {
      const missing = NEED.filter((_, i) => vs[NEED_AT[i]!]! < 0);
      return `kvm_set_user_memory: expected fields ${NEED.join(', ')}; missing ${missing.join(', ')}`;
    }
    const hasAs = vs[AS]! >= 0;
    const as = hasAs ? intAt(s, vs[AS]!, ve[AS]!) : 0;
    const slot = intAt(s, vs[SLOT]!, ve[SLOT]!);
    const flags = hexAt(s, vs[FLAGS]!, ve[FLAGS]!);
    const gpa = hexAt(s, vs[GPA]!, ve[GPA]!);
    const size = hexAt(s, vs[SIZE]!, ve[SIZE]!);
    const ua = hexAt(s, vs[UA]!, ve[UA]!);
    const ret = intAt(s, vs[RET]!, ve[RET]!);
    if (Number.isNaN(as + slot + flags + gpa + size + ua + ret)) {
      const k = [as, slot, flags, gpa, size, ua, ret].findIndex((v) => Number.isNaN(v));
      return `kvm_set_user_memory: expected a number for ${KEYS[k]}, got "${this.value(k)}"`;
    }
    const v2 = vs[GMEM]! >= 0;
    const ev: MemslotEvent = {
      kind: 'memslot', t, tid, src: 'qemu', line, vm: 0, slot: hasAs ? (as << 16) | slot : slot, flags, gpa, size, ua, ret, v2,
    };
    if (v2) {
      ev.guestMemfd = intAt(s, vs[GMEM]!, ve[GMEM]!);
      ev.guestMemfdOffset = vs[GMEM_OFF]! >= 0 ? hexAt(s, vs[GMEM_OFF]!, ve[GMEM_OFF]!) : 0;
    }
    return ev;
  }
}

export function readQemuTrace(text: string, file: string, opts: ReadOptions = {}): Parsed {
  const r = new QemuReader(text, file, opts);
  r.read();
  return { events: r.events, report: r.report };
}
