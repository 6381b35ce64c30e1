// FROZEN TEST ORACLE: src/replay/strace.ts as of 37fb73c (session 9's start), the reader that read every
// character with charCodeAt/startsWith, on the frozen session-7 reader base and scanning helpers in
// ../old_ftrace/. Only the import paths differ. Not shipped; do not edit: the property tests compare the
// shipped reader with this one.
/**
 * Reads `strace -f -ttt -e trace=ioctl` output of any VMM: the KVM ioctls that shape memslots, with
 * their answers (`= 0`, `= -1 EEXIST (…)`), and which fd is which VM (KVM_CREATE_VM's return value).
 * Handles `<unfinished ...>` / `<... ioctl resumed>` pairs (the call's time is its start), `-y` fd
 * decorations (`9<anon_inode:kvm-vm>`), and ioctls an older strace cannot name, printed as
 * `_IOC(dir, 0xae, nr, size)`: strace 6.1 (Debian 12) decodes KVM_SET_USER_MEMORY_REGION but not
 * …REGION2, KVM_CREATE_GUEST_MEMFD or KVM_SET_MEMORY_ATTRIBUTES, and prints KVM_ENABLE_CAP's struct as a
 * pointer; such calls are kept with what could be read and the gap is reported. Lines are scanned in
 * place (scan.ts) and an unused ioctl (KVM_RUN, most of a log) is counted without a substring or regex.
 * Model-only file.
 */
import { ERRNO } from '../../../src/uapi/errno.ts';
import { KVM_CAP } from '../../../src/uapi/kvm.ts';
import {
  countIn,
  parseInteger,
  type MemslotEvent,
  type Parsed,
  type ReadOptions,
  type TraceEvent,
} from '../../../src/replay/events.ts';
import { TraceReader } from '../old_ftrace/trace_reader.ts';
import { Needle, digitsValue, isTrimSpace, sameAt, secondsOf } from '../old_ftrace/scan.ts';

/** KVMIO (0xae) ioctl numbers, for `_IOC(…, 0xae, nr, size)` names (include/uapi/linux/kvm.h). */
const KVM_NR: Record<number, string> = {
  0x01: 'KVM_CREATE_VM',
  0x41: 'KVM_CREATE_VCPU',
  0x42: 'KVM_GET_DIRTY_LOG',
  0x46: 'KVM_SET_USER_MEMORY_REGION',
  0x49: 'KVM_SET_USER_MEMORY_REGION2',
  0xa3: 'KVM_ENABLE_CAP',
  0xc0: 'KVM_CLEAR_DIRTY_LOG',
  0xd2: 'KVM_SET_MEMORY_ATTRIBUTES',
  0xd4: 'KVM_CREATE_GUEST_MEMFD',
};

const MEM_FLAGS: Record<string, number> = {
  KVM_MEM_LOG_DIRTY_PAGES: 1,
  KVM_MEM_READONLY: 2,
  KVM_MEM_GUEST_MEMFD: 4,
  KVM_MEM_ZAP_LEAFS_ONLY: 8,
};

const USED = new Set([...Object.values(KVM_NR)]);

/** Does this text look like strace output with timestamps? */
export function looksLikeStrace(head: string): boolean {
  return /(^|\n)(\d+ +)?\d+\.\d+ (ioctl|<\.\.\. ioctl resumed>|execve|\+\+\+|---)/.test(head);
}

/** `{a=1, b=X|Y, c=[1, 2]}` → field texts by name (one level; nested braces kept whole). */
function structFields(s: string): Map<string, string> {
  const m = new Map<string, string>();
  const open = s.indexOf('{');
  if (open === -1) return m;
  let depth = 0;
  let start = open + 1;
  for (let i = open; i < s.length; i++) {
    const c = s[i];
    if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
    if ((c === ',' && depth === 1) || depth === 0) {
      const part = s.slice(start, i).trim();
      const eq = part.indexOf('=');
      if (eq > 0) m.set(part.slice(0, eq), part.slice(eq + 1));
      start = i + 1;
      if (depth === 0) break;
    }
  }
  return m;
}

function flagsValue(s: string | undefined): number {
  if (s === undefined) return NaN;
  let v = 0;
  for (const p of s.split('|')) {
    const k = MEM_FLAGS[p.trim()];
    const n = k ?? parseInteger(p.trim());
    if (Number.isNaN(n)) return NaN;
    v |= n;
  }
  return v;
}

/** `= 0` → 0, `= -1 EEXIST (File exists)` → -17, `= ?` → NaN */
function retValue(s: string): number {
  const m = /^(-?\d+|0x[0-9a-f]+)(?: (E[A-Z0-9]+))?/.exec(s);
  if (!m) return NaN;
  if (m[1] === '-1' && m[2]) {
    const e = (ERRNO as Record<string, number>)[m[2]];
    return e === undefined ? -1000 : -e;
  }
  return parseInteger(m[1]);
}

function ioctlName(n: string): string {
  const m = /^_IOC\([^,]*, 0xae, (0x[0-9a-f]+), (0x[0-9a-f]+)\)$/.exec(n);
  return m ? (KVM_NR[parseInt(m[1]!, 16)] ?? n) : n;
}

interface Call {
  t: number;
  tid: number;
  line: number;
  text: string;
}

/** Where `[pid] seconds.microseconds rest` is in a line (the regex /^(?:(\d+) +)?(\d+\.\d+) (.*)$/, by hand). */
interface LineHead {
  tid: number;
  t: number;
  rest: number;
}

/** Scan s[ls, le) as `[pid ]secs.frac rest`; false if it is not one (as the regex would fail). */
function scanHead(s: string, ls: number, le: number, h: LineHead, lineBreaks: readonly Needle[]): boolean {
  let i = ls;
  while (i < le && isDigit(s.charCodeAt(i))) i++;
  if (i === ls) return false;
  let ts = ls;
  h.tid = -1;
  if (s.charCodeAt(i) === 32) {
    h.tid = digitsValue(s, ls, i);
    while (i < le && s.charCodeAt(i) === 32) i++;
    ts = i;
    while (i < le && isDigit(s.charCodeAt(i))) i++;
    if (i === ts) return false;
  }
  if (s.charCodeAt(i) !== 46 /* . */ || i >= le) return false;
  const dot = i++;
  while (i < le && isDigit(s.charCodeAt(i))) i++;
  if (i === dot + 1 || i >= le || s.charCodeAt(i) !== 32) return false;
  // the regex's (.*)$ stops at a line terminator
  for (const lt of lineBreaks) if (lt.within(s, i + 1, le) !== -1) return false;
  // the characters were checked above (digits, one '.'): only the value is left to read
  let sec = 0;
  for (let k = ts; k < dot; k++) sec = sec * 10 + (s.charCodeAt(k) - 48);
  h.t = secondsOf(s, ts, i, dot, sec);
  h.rest = i + 1;
  return true;
}

const isDigit = (c: number): boolean => c >= 48 && c <= 57;

function isBlank(s: string, a: number, b: number): boolean {
  for (let i = a; i < b; i++) if (!isTrimSpace(s.charCodeAt(i))) return false;
  return true;
}

const RESUMED = '<... ioctl resumed>';
const UNFINISHED = '<unfinished ...>';

/** One file's reader: which fd is which VM, calls waiting for their `resumed` line; events kept as objects. */
class StraceReader extends TraceReader {
  private readonly vmOfFd = new Map<number, number>();
  private readonly pending = new Map<number, Call>();
  private readonly undecoded = new Set<string>();
  private readonly h: LineHead = { tid: -1, t: NaN, rest: 0 };
  private readonly lineBreaks = ['\r', '\u2028', '\u2029'].map((c) => new Needle(c));

  constructor(s: string, file: string, opts: ReadOptions) {
    // strace's events are few (a VMM's KVM_RUN calls are counted, not kept): stored as objects
    super(s, file, opts, 0);
  }

  protected line(from: number, le: number, n: number): void {
    const { s, h, report } = this;
    if (!scanHead(s, from, le, h, this.lineBreaks)) {
      if (!isBlank(s, from, le))
        this.bad(n, 'expected "[pid] seconds.microseconds syscall(…)" (strace -f -ttt)');
      return;
    }
    const { tid, t, rest } = h;
    if (sameAt(s, rest, RESUMED) && rest + RESUMED.length <= le) {
      const head = this.pending.get(tid);
      if (!head) return this.bad(n, 'ioctl resumed without its <unfinished ...> line');
      this.pending.delete(tid);
      const joined = head.text + s.slice(rest + RESUMED.length, le);
      return this.call(head.t, head.tid, head.line, joined, 0, joined.length);
    }
    if (!(sameAt(s, rest, 'ioctl(') && rest + 6 <= le)) {
      report.other++;
      return;
    }
    if (le - rest >= UNFINISHED.length && sameAt(s, le - UNFINISHED.length, UNFINISHED)) {
      this.pending.set(tid, { t, tid, line: n, text: s.slice(rest, le - UNFINISHED.length).trimEnd() });
      return;
    }
    this.call(t, tid, n, s, rest, le);
  }

  protected override done(): void {
    for (const p of this.pending.values()) this.bad(p.line, 'ioctl <unfinished ...> never resumed');
    for (const u of this.undecoded)
      this.report.notes.push(
        `${u}: this strace prints the argument as a pointer (not decoded); the call is counted, its contents unknown`,
      );
  }

  /** Is `ioctl(fd, REQUEST…` in str[a, b) an unused, plainly named request (KVM_RUN…)? Then it is counted. */
  private unusedRequest(str: string, a: number, b: number): boolean {
    let comma = a;
    while (comma + 1 < b && !(str.charCodeAt(comma) === 44 && str.charCodeAt(comma + 1) === 32)) comma++;
    if (comma + 1 >= b) return false;
    const r0 = comma + 2;
    let e = r0;
    for (let c = str.charCodeAt(e); e < b && c !== 44 && c !== 41 && c !== 32; c = str.charCodeAt(++e));
    if (e === r0 || sameAt(str, r0, '_IOC')) return false;
    for (let i = r0; i < e; i++) {
      const c = str.charCodeAt(i);
      if (!((c >= 65 && c <= 90) || isDigit(c) || c === 95)) return false;
    }
    return this.unknown(r0, e, str, USED);
  }

  private call(t: number, tid: number, line: number, str: string, a: number, b: number): void {
    const { report, vmOfFd, table } = this;
    // fast path: most of a VMM's ioctls (KVM_RUN above all) are not used; skip them before the regex
    if (this.unusedRequest(str, a, b)) return;
    const s = str.slice(a, b);
    const m = /^ioctl\((\d+)(?:<[^>]*>)?, ([^,{(]+(?:\([^)]*\))?)(?:, (.*))?\) += (.*)$/.exec(s);
    if (!m) return this.bad(line, 'expected "ioctl(fd, REQUEST, arg) = result"');
    const fd = Number(m[1]);
    const name = ioctlName(m[2]!.trim());
    const arg = m[3] ?? '';
    const ret = retValue(m[4]!);
    if (!USED.has(name)) return countIn(report.unknown, name.startsWith('_IOC') ? '_IOC(…)' : name);
    if (Number.isNaN(ret)) return this.bad(line, `${name}: expected a result after "=", got "${m[4]}"`);
    const base = { t, tid, src: 'strace' as const, line };
    if (name === 'KVM_CREATE_VM') {
      const type = parseInteger(arg.trim()) || 0;
      const vm = vmOfFd.size;
      if (ret >= 0) vmOfFd.set(ret, vm);
      table.pushBoxed({ ...base, kind: 'createVm', vm, type, ret: ret >= 0 ? 0 : ret });
      return;
    }
    const vm = vmOfFd.get(fd);
    if (vm === undefined) {
      // a vCPU fd, or a VM created before tracing started
      if (name === 'KVM_SET_USER_MEMORY_REGION' || name === 'KVM_SET_USER_MEMORY_REGION2')
        return this.bad(line, `${name} on fd ${fd}, which no traced KVM_CREATE_VM returned`);
      return countIn(report.unknown, name);
    }
    if (name === 'KVM_SET_USER_MEMORY_REGION' || name === 'KVM_SET_USER_MEMORY_REGION2') {
      const ev = memslotCall(name, arg, vm, ret, base);
      if (typeof ev === 'string') return this.bad(line, ev);
      if (ev.kind === 'vmCall') this.undecoded.add(name);
      table.pushBoxed(ev);
      return;
    }
    if (name === 'KVM_CREATE_VCPU') {
      table.pushBoxed({
        ...base,
        kind: 'createVcpu',
        vm,
        id: parseInteger(arg.trim()),
        ret: ret >= 0 ? 0 : ret,
      });
      return;
    }
    if (name === 'KVM_ENABLE_CAP') {
      const f = structFields(arg);
      const capText = f.get('cap') ?? '';
      const cap = (KVM_CAP as Record<string, number>)[capText] ?? parseInteger(capText);
      const args = f
        .get('args')
        ?.replace(/[[\]]/g, '')
        .split(',')
        .map((x) => parseInteger(x.trim()));
      if (f.size === 0) this.undecoded.add(name);
      table.pushBoxed({
        ...base,
        kind: 'enableCap',
        vm,
        ret,
        ...(Number.isNaN(cap) ? {} : { cap }),
        ...(args && !args.some(Number.isNaN) ? { args } : {}),
      });
      return;
    }
    table.pushBoxed({ ...base, kind: 'vmCall', vm, name, ret });
  }
}

export function readStrace(text: string, file: string, opts: ReadOptions = {}): Parsed {
  return new StraceReader(text, file, opts).read();
}

/**
 * A decoded KVM_SET_USER_MEMORY_REGION(2); a vmCall when strace printed only a pointer; else what was
 * expected. The event is written as one literal in the key order the spreads `{ ...base, kind, vm, ...val,
 * v2, ret }` gave (a spread of a non-literal object after other keys is a runtime call: it cost about 15 us
 * a call, a quarter of a KVM_RUN-heavy log's parse).
 */
function memslotCall(
  name: string,
  arg: string,
  vm: number,
  ret: number,
  base: { t: number; tid: number; src: 'strace'; line: number },
): TraceEvent | string {
  const f = structFields(arg);
  if (f.size === 0) return { ...base, kind: 'vmCall', vm, name: `${name} (not decoded)`, ret };
  const v2 = name.endsWith('2');
  const slot = parseInteger(f.get('slot'));
  const flags = flagsValue(f.get('flags'));
  const gpa = parseInteger(f.get('guest_phys_addr'));
  const size = parseInteger(f.get('memory_size'));
  const ua = parseInteger(f.get('userspace_addr'));
  const bad = Number.isNaN(slot)
    ? 'slot'
    : Number.isNaN(flags)
      ? 'flags'
      : Number.isNaN(gpa)
        ? 'gpa'
        : Number.isNaN(size)
          ? 'size'
          : Number.isNaN(ua)
            ? 'ua'
            : undefined;
  if (bad !== undefined) return `${name}: expected a number for ${bad}`;
  const { t, tid, src, line } = base;
  const ev: MemslotEvent = { t, tid, src, line, kind: 'memslot', vm, slot, flags, gpa, size, ua, v2, ret };
  if (v2) {
    ev.guestMemfd = parseInteger(f.get('guest_memfd') ?? '0');
    ev.guestMemfdOffset = parseInteger(f.get('guest_memfd_offset') ?? '0');
  }
  return ev;
}
