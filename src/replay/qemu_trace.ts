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
 * Records are scanned in place (scan.ts): no substring, Map or regex per line on the hot path; their
 * characters are read as the reader's bytes (TraceReader.b), the event name and keys compared four bytes
 * at a time (startsWith costs ~5x more on this V8). test/replay/qemu_fast_paths.property.test.ts holds the
 * reader to a plain string reading and to the frozen reader of 37fb73c (old_readers/).
 * Model-only file (no kernel counterpart).
 */
import { KVM_MEM_READONLY } from '../uapi/kvm.ts';
import type { Parsed, ReadOptions } from './events.ts';
import {
  B_IMPLIED,
  B_V2,
  K_MEMSLOT,
  MEMSLOT_WIDTH,
  S_QEMU,
  V_FLAGS,
  V_GMEM,
  V_GMEM_OFF,
  V_GPA,
  V_RET,
  V_SIZE,
  V_SLOT,
  V_UA,
  V_VM,
} from './event_table.ts';
import { Needle, digitsValue, sameAt, secondsUsUntil, tokenStop } from './scan.ts';
import { Word, bytesStop, hexTokenB, intTokenB, wordAt } from './scan_bytes.ts';
import { TraceReader } from './trace_reader.ts';

const USED = ['kvm_set_user_memory', 'kvm_convert_memory', 'kvm_memory_fault', 'kvm_clear_dirty_log'];
const USED_W = USED.map((n) => Word.of(n));

/** kvm_set_user_memory's fields, by name (`key=value` or `Key#value`); the first seven are required. */
const KEYS = [
  'AddrSpace',
  'Slot',
  'flags',
  'gpa',
  'size',
  'ua',
  'ret',
  'guest_memfd',
  'guest_memfd_offset',
] as const;
const NEED = ['Slot', 'flags', 'gpa', 'size', 'ua', 'ret'] as const;
const NEED_AT = NEED.map((k) => KEYS.indexOf(k));
const [AS, SLOT, FLAGS, GPA, SIZE, UA, RET, GMEM, GMEM_OFF] = [0, 1, 2, 3, 4, 5, 6, 7, 8] as const;
/** which KEYS are decimal (%d; a 0x prefix reads hex), the others hex */
const INT_KEY = KEYS.map((k) => k === 'AddrSpace' || k === 'Slot' || k === 'ret' || k === 'guest_memfd');
const KEY_W = KEYS.map((k) => Word.of(k));
const KEY_LEN = Int8Array.from(KEYS, (k) => k.length);

/** Slot ids below this (two address spaces of 16-bit slot numbers) are looked up by index. */
const DIRECT_SLOTS = 1 << 17;

function indexIn(list: readonly string[], s: string, a: number, b: number): number {
  for (let k = 0; k < list.length; k++) if (list[k]!.length === b - a && sameAt(s, a, list[k]!)) return k;
  return -1;
}

/** indexIn(KEYS, …) of the reader's bytes [a, e), dispatched on the key's length and first byte (one compare). */
function keyIndex(b: Uint8Array, dv: DataView, a: number, e: number): number {
  let k: number;
  switch (e - a) {
    case 2:
      k = UA;
      break;
    case 3:
      k = b[a] === 103 /* g */ ? GPA : RET;
      break;
    case 4:
      k = b[a] === 83 /* S */ ? SLOT : SIZE;
      break;
    case 5:
      k = FLAGS;
      break;
    case 9:
      k = AS;
      break;
    case 11:
      k = GMEM;
      break;
    case 18:
      k = GMEM_OFF;
      break;
    default:
      return -1;
  }
  return wordAt(dv, a, KEY_W[k]!) ? k : -1;
}

/** The first space in s[a, b), else b. */
function nameEnd(s: string, a: number, b: number): number {
  let i = a;
  while (i < b && s.charCodeAt(i) !== 32) i++;
  return i;
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

/** One file's reader: where the current record's fields are; events go to the table, by column. */
class QemuReader extends TraceReader {
  private readonly colon = new Needle(':');
  /** value start/end of each of KEYS in the current record (-1: absent; a repeated key: the last) */
  private readonly vs = new Int32Array(KEYS.length);
  private readonly ve = new Int32Array(KEYS.length);
  /** the current record's values, by KEYS index (parsed as the fields are found) */
  private readonly val = new Float64Array(KEYS.length);
  /** the key (index in KEYS, -1: none) at each token position of the previous kvm_set_user_memory record */
  private readonly order = new Int8Array(16).fill(-1);
  /** the time usTime read (microseconds) */
  private us = 0;
  /** the current record's time (a field, not an argument: a double passed to a call is boxed) */
  private recT = 0;
  /** the current record's slot with its address space in bits 16+ */
  private slotId = 0;
  /**
   * each present slot's last successful call: its row + 1 (0: absent), indexed by slot id for the ids of
   * two address spaces (below 2^17, as QEMU's are); others (a malformed or odd trace) in the map
   */
  private presentRow = new Int32Array(64);
  private readonly presentFar = new Map<number, number>();
  private implied = false;
  /** the last record's index in USED */
  private prevUsed = 0;

  constructor(s: string, file: string, opts: ReadOptions) {
    super(s, file, opts, MEMSLOT_WIDTH, true);
  }

  protected override done(): void {
    if (this.implied)
      this.report.notes.push('added the untraced size-0 call QEMU makes before a KVM_MEM_READONLY flip');
  }

  protected line(ls: number, le: number, line: number): void {
    const { s, b, o, report } = this;
    let t = NaN;
    let tid = -1;
    let bs = ls;
    // `tid@`: digits from the line's start, then '@' (the first '@' of the line); positions in the chunk's
    // bytes (b[e] is a newline, so a loop that stops at a non-digit stops there)
    const e = le - o;
    let at = ls - o;
    let v = 0;
    for (let c = b[at]!; at < e && c >= 48 && c <= 57; c = b[++at]!) v = v * 10 + (c - 48);
    let colon = -1;
    if (at > ls - o && at < e && b[at] === 64) {
      // QEMU's own `%zu.%06zu:` read here; any other text by secondsUsUntil, which reads the time up to
      // the line's first ':' in one pass; else that ':' is looked for (t is NaN)
      colon = this.usTime(at + 1, e);
      if (colon !== -1) {
        t = this.us;
        colon += o;
      } else {
        t = secondsUsUntil(s, at + o + 1, le, 58);
        colon = tokenStop !== -1 ? tokenStop : this.colon.within(s, at + o, le);
      }
    }
    if (colon !== -1) {
      if (Number.isNaN(t))
        return this.bad(
          line,
          `expected tid@seconds.microseconds: before the event, got "${s.slice(ls, colon + 1)}"`,
        );
      tid = at + o - ls > 15 ? digitsValue(s, ls, at + o) : v;
      bs = colon + 1;
    }
    // most records repeat the previous record's event: its name, then a space or the line's end, is this
    // record's name (a name, so no isNameAt; no scan for the space)
    const pu = this.prevUsed;
    const pn = USED[pu]!.length;
    let ne = bs + pn;
    let used: number;
    if ((ne === le || (ne < le && b[ne - o] === 32)) && wordAt(this.dv, bs - o, USED_W[pu]!)) used = pu;
    else if (!isNameAt(s, bs, (ne = nameEnd(s, bs, le)))) {
      report.other++; // QEMU's own messages share the log file
      return;
    } else used = indexIn(USED, s, bs, ne);
    if (used !== -1) this.prevUsed = used;
    if (used === -1) {
      this.unknown(bs, ne);
      return;
    }
    if (used !== 0) {
      this.table.pushBoxed({ kind: 'vmCall', t, tid, src: 'qemu', line, vm: 0, name: USED[used]!, ret: 0 });
      return;
    }
    this.fields(ne + 1 - o, e);
    const err = this.memslotRecord();
    if (err !== undefined) return this.bad(line, err);
    this.recT = t;
    this.store(tid, line);
  }

  /**
   * `seconds.microseconds:` at chunk position a (1 to 15 digits, '.', 6 digits, ':'), as QEMU's log prefix
   * prints it: the ':' (in the chunk) with the time in `us` (the value secondsUsUntil gives), else -1 (the
   * caller asks secondsUsUntil).
   */
  private usTime(a: number, e: number): number {
    const b = this.b;
    let i = a;
    let sec = 0;
    for (let c = b[i]!; i < e && c >= 48 && c <= 57; c = b[++i]!) sec = sec * 10 + (c - 48);
    if (i === a || i - a > 15 || i + 8 > e || b[i] !== 46 || b[i + 7] !== 58) return -1;
    let f = 0;
    for (let k = i + 1; k < i + 7; k++) {
      const c = b[k]!;
      if (c < 48 || c > 57) return -1;
      f = f * 10 + (c - 48);
    }
    this.us = sec * 1e6 + f;
    return i + 7;
  }

  /** Store the record read by memslotRecord, after the implied size-0 call of a READONLY flip. */
  private store(tid: number, line: number): void {
    const { val, table } = this;
    const t = this.recT;
    const slot = this.slotId;
    const flags = val[FLAGS]!;
    const size = val[SIZE]!;
    const ret = val[RET]!;
    const v2 = this.vs[GMEM]! >= 0;
    const prev = this.presentAt(slot);
    if (
      ret === 0 &&
      prev !== -1 &&
      size !== 0 &&
      ((table.v[V_FLAGS]![prev]! ^ flags) & KVM_MEM_READONLY) !== 0
    ) {
      this.row(
        t,
        tid,
        line,
        v2,
        B_IMPLIED,
        table.v[V_FLAGS]![prev]!,
        table.v[V_GPA]![prev]!,
        0,
        table.v[V_UA]![prev]!,
      );
      this.implied = true;
    }
    const i = this.row(t, tid, line, v2, 0, flags, val[GPA]!, size, val[UA]!);
    if (ret === 0) this.setPresent(slot, size === 0 ? -1 : i);
  }

  /** The row of slot id `slot`'s last successful call while the slot is present, else -1. */
  private presentAt(slot: number): number {
    // an id is an integer (a -0 is 0, as for the map); | 0 makes it an int32 index
    if (slot >= 0 && slot < DIRECT_SLOTS)
      return (slot | 0) < this.presentRow.length ? this.presentRow[slot | 0]! - 1 : -1;
    return this.presentFar.get(slot) ?? -1;
  }

  /** Slot id `slot` present with its last successful call in row i, or absent (-1). */
  private setPresent(slot: number, i: number): void {
    if (slot >= 0 && slot < DIRECT_SLOTS) {
      let p = this.presentRow;
      if (slot >= p.length) {
        p = new Int32Array(Math.min(DIRECT_SLOTS, 1 << (32 - Math.clz32(slot))));
        p.set(this.presentRow);
        this.presentRow = p;
      }
      p[slot | 0] = i + 1;
    } else if (i === -1) this.presentFar.delete(slot);
    else this.presentFar.set(slot, i);
  }

  private row(
    t: number,
    tid: number,
    line: number,
    v2: boolean,
    bits: number,
    flags: number,
    gpa: number,
    size: number,
    ua: number,
  ): number {
    const { val, table } = this;
    const i = table.row(K_MEMSLOT, S_QEMU, t, tid, line, bits | (v2 ? B_V2 : 0));
    const v = table.v;
    v[V_VM]![i] = 0;
    v[V_SLOT]![i] = this.slotId;
    v[V_FLAGS]![i] = flags;
    v[V_GPA]![i] = gpa;
    v[V_SIZE]![i] = size;
    v[V_UA]![i] = ua;
    v[V_RET]![i] = val[RET]!;
    v[V_GMEM]![i] = v2 ? val[GMEM]! : 0;
    v[V_GMEM_OFF]![i] = v2 ? val[GMEM_OFF]! : 0;
    return i;
  }

  /**
   * Space-separated `key=value` / `Key#value` tokens of the chunk's bytes [a, e): where each known key's
   * value is. A QEMU log prints one format, so the key at each token position is first compared with the
   * key found there in the previous record (with its '=' or '#' after it, it is the very key the scan for
   * the delimiter would find: keys hold no ' ', '=' or '#'); else the key is scanned for and dispatched.
   */
  private fields(a: number, e: number): void {
    const { b, dv, o, vs, ve, val, order } = this;
    for (let k = 0; k < vs.length; k++) vs[k] = -1;
    let i = a;
    let pos = 0;
    while (i < e) {
      // the key up to the token's first '=' or '#' at k; a known key's value is parsed as it is read
      const p = pos < order.length ? order[pos]! : -1;
      let k = p >= 0 ? i + KEY_LEN[p]! : i;
      let c = k < e ? b[k]! : 0;
      let key: number;
      if (p >= 0 && (c === 61 /* = */ || c === 35) /* # */ && wordAt(dv, i, KEY_W[p]!)) key = p;
      else {
        for (k = i; k < e; k++) {
          c = b[k]!;
          if (c === 32 || c === 61 /* = */ || c === 35 /* # */) break;
        }
        key = k > i && k < e && c !== 32 ? keyIndex(b, dv, i, k) : -1;
      }
      if (pos < order.length) order[pos] = key;
      pos++;
      let j = k;
      if (key !== -1) {
        val[key] = INT_KEY[key] ? intTokenB(b, k + 1, e) : hexTokenB(b, k + 1, e);
        j = bytesStop > k ? bytesStop : k + 1;
      }
      while (j < e && b[j] !== 32) j++;
      if (key !== -1) {
        vs[key] = k + 1 + o;
        ve[key] = j + o;
      }
      i = j + 1;
    }
  }

  private value(key: number): string {
    return this.vs[key]! < 0 ? '' : this.s.slice(this.vs[key], this.ve[key]);
  }

  /** One kvm_set_user_memory record from the fields found, into `val` (SLOT with the address space), or what was expected. */
  private memslotRecord(): string | undefined {
    const { vs, val } = this;
    if ((vs[SLOT]! | vs[FLAGS]! | vs[GPA]! | vs[SIZE]! | vs[UA]! | vs[RET]!) < 0) {
      const missing = NEED.filter((_, i) => vs[NEED_AT[i]!]! < 0);
      return `kvm_set_user_memory: expected fields ${NEED.join(', ')}; missing ${missing.join(', ')}`;
    }
    const hasAs = vs[AS]! >= 0;
    const as = hasAs ? val[AS]! : 0;
    const slot = val[SLOT]!;
    if (Number.isNaN(as + slot + val[FLAGS]! + val[GPA]! + val[SIZE]! + val[UA]! + val[RET]!)) {
      const k = [as, slot, val[FLAGS], val[GPA], val[SIZE], val[UA], val[RET]].findIndex((v) =>
        Number.isNaN(v),
      );
      return `kvm_set_user_memory: expected a number for ${KEYS[k]}, got "${this.value(k)}"`;
    }
    this.slotId = hasAs ? (as << 16) | slot : slot;
    if (vs[GMEM_OFF]! < 0) val[GMEM_OFF] = 0;
    return undefined;
  }
}

export function readQemuTrace(text: string, file: string, opts: ReadOptions = {}): Parsed {
  return new QemuReader(text, file, opts).read();
}
