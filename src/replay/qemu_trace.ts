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
 * Model-only file (no kernel counterpart).
 */
import { KVM_MEM_READONLY } from '../uapi/kvm.ts';
import {
  countIn, malformed, newReport, parseHex, parseInteger, parseSecondsUs,
  type MemslotEvent, type Parsed, type ReadOptions, type TraceEvent,
} from './events.ts';

const USED = new Set(['kvm_set_user_memory', 'kvm_convert_memory', 'kvm_memory_fault', 'kvm_clear_dirty_log']);

/** `key=value` and `Key#value` tokens of one record's argument text. */
function tokens(args: string): Map<string, string> {
  const m = new Map<string, string>();
  let i = 0;
  while (i < args.length) {
    let j = args.indexOf(' ', i);
    if (j === -1) j = args.length;
    let k = i;
    while (k < j && args.charCodeAt(k) !== 61 /* = */ && args.charCodeAt(k) !== 35 /* # */) k++;
    if (k > i && k < j) m.set(args.slice(i, k), args.slice(k + 1, j));
    i = j + 1;
  }
  return m;
}

function isName(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 97 && c <= 122) || c === 95 || (i > 0 && c >= 48 && c <= 57))) return false;
  }
  return true;
}

function allDigits(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return s.length > 0;
}

/** Does this text look like a QEMU trace file (some line is a kvm_set_user_memory record)? */
export function looksLikeQemuTrace(head: string): boolean {
  return /(^|\n)(\d+@\d+\.\d+:)?kvm_set_user_memory /.test(head);
}

export function readQemuTrace(text: string, file: string, opts: ReadOptions = {}): Parsed {
  const report = newReport(file);
  const events: TraceEvent[] = [];
  const present = new Map<number, { size: number; flags: number; gpa: number; ua: number }>();
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  report.lines = lines.length;
  for (let n = 0; n < lines.length; n++) {
    const raw = lines[n]!;
    let t = NaN;
    let tid = -1;
    let body = raw;
    const at = raw.indexOf('@');
    const colon = raw.indexOf(':');
    if (at > 0 && colon > at && allDigits(raw.slice(0, at))) {
      t = parseSecondsUs(raw.slice(at + 1, colon));
      if (Number.isNaN(t)) {
        malformed(report, n + 1, `expected tid@seconds.microseconds: before the event, got "${raw.slice(0, colon + 1)}"`, opts.strict);
        continue;
      }
      tid = Number(raw.slice(0, at));
      body = raw.slice(colon + 1);
    }
    const sp = body.indexOf(' ');
    const name = sp === -1 ? body : body.slice(0, sp);
    if (!isName(name)) {
      report.other++; // QEMU's own messages share the log file
      continue;
    }
    if (!USED.has(name)) {
      countIn(report.unknown, name);
      continue;
    }
    const f = tokens(sp === -1 ? '' : body.slice(sp + 1));
    const line = n + 1;
    if (name === 'kvm_set_user_memory') {
      const ev = memslotRecord(f, t, tid, line);
      if (typeof ev === 'string') {
        malformed(report, line, ev, opts.strict);
        continue;
      }
      const prev = present.get(ev.slot);
      if (ev.ret === 0 && prev && ev.size !== 0 && ((prev.flags ^ ev.flags) & KVM_MEM_READONLY) !== 0) {
        events.push({ ...ev, flags: prev.flags, gpa: prev.gpa, size: 0, ua: prev.ua, implied: true });
      }
      if (ev.ret === 0) {
        if (ev.size === 0) present.delete(ev.slot);
        else present.set(ev.slot, { size: ev.size, flags: ev.flags, gpa: ev.gpa, ua: ev.ua });
      }
      events.push(ev);
      continue;
    }
    const ret = 0;
    events.push({ kind: 'vmCall', t, tid, src: 'qemu', line, vm: 0, name, ret });
  }
  if (events.some((e) => e.kind === 'memslot' && e.implied))
    report.notes.push('added the untraced size-0 call QEMU makes before a KVM_MEM_READONLY flip');
  return { events, report };
}

/** One kvm_set_user_memory record, or what was expected. */
function memslotRecord(f: Map<string, string>, t: number, tid: number, line: number): MemslotEvent | string {
  const need = ['Slot', 'flags', 'gpa', 'size', 'ua', 'ret'];
  const missing = need.filter((k) => !f.has(k));
  if (missing.length) return `kvm_set_user_memory: expected fields ${need.join(', ')}; missing ${missing.join(', ')}`;
  const as = f.has('AddrSpace') ? parseInteger(f.get('AddrSpace')) : 0;
  const slot = parseInteger(f.get('Slot'));
  const flags = parseHex(f.get('flags'));
  const gpa = parseHex(f.get('gpa'));
  const size = parseHex(f.get('size'));
  const ua = parseHex(f.get('ua'));
  const ret = parseInteger(f.get('ret'));
  if (Number.isNaN(as + slot + flags + gpa + size + ua + ret)) {
    const bad = Object.entries({ AddrSpace: as, Slot: slot, flags, gpa, size, ua, ret }).find(([, v]) => Number.isNaN(v))!;
    return `kvm_set_user_memory: expected a number for ${bad[0]}, got "${f.get(bad[0]) ?? ''}"`;
  }
  const ev: MemslotEvent = {
    kind: 'memslot', t, tid, src: 'qemu', line, vm: 0,
    slot: f.has('AddrSpace') ? (as << 16) | slot : slot,
    flags, gpa, size, ua, ret, v2: f.has('guest_memfd'),
  };
  if (f.has('guest_memfd')) {
    ev.guestMemfd = parseInteger(f.get('guest_memfd'));
    ev.guestMemfdOffset = parseHex(f.get('guest_memfd_offset') ?? '0');
  }
  return ev;
}
