/**
 * The record line of a tracefs `trace` file or `trace-cmd report` (`comm-pid (tgid) [cpu] flags secs.usecs:
 * event: text`): the parts the reader finds in it, the kvm/kvmmmu events the replay uses and how their names
 * are recognised in place, the SPTE bits read from an event's text, and the RecordScanner that finds a
 * line's parts (remembering recent prefixes and event names). ftrace.ts reads the event texts.
 * Model-only file (no kernel counterpart).
 */
import { NON_ASCII, Needle, isTrimSpace } from './scan.ts';
import { Word, digitsAtB, digitsValueB, secondsOfB, wordAt } from './scan_bytes.ts';

/** The record line being read: where its parts are in the file's text. */
export interface Rec {
  pid: number;
  /** -1 when the trace has no tgid column (or prints "-----") */
  tgid: number;
  /** the time field (latency flags before it dropped), in microseconds (NaN if not seconds.fraction) */
  time: number;
  nameStart: number;
  nameEnd: number;
  /** the event's own text, to the end of the line */
  textStart: number;
  /** index in EVENTS of the record's event (-1: not one the replay uses) */
  id: number;
}

export const EVENTS = [
  'kvm_page_fault',
  'kvm_mmu_set_spte',
  'kvm_tdp_mmu_spte_changed',
  'kvm_mmu_spte_requested',
  'kvm_mmu_get_page',
  'kvm_mmu_prepare_zap_page',
  'kvm_mmu_zap_all_fast',
  'kvm_unmap_hva_range',
] as const;

/** EVENTS as words (the reader compares a record's name in its bytes, four at a time). */
export const EVENT_WORDS = EVENTS.map((e) => Word.of(e));

/**
 * Index in EVENTS of the name in the reader's bytes [a, e), or -1: dispatched on length and one byte, then
 * one compare.
 */
export function eventIndexB(b: Uint8Array, dv: DataView, a: number, e: number): number {
  let k: number;
  switch (e - a) {
    case 14:
      k = 0;
      break;
    case 16:
      k = b[a + 8] === 115 /* kvm_mmu_s */ ? 1 : 4;
      break;
    case 24:
      k = b[a + 4] === 116 /* kvm_t */ ? 2 : 5;
      break;
    case 22:
      k = 3;
      break;
    case 20:
      k = 6;
      break;
    case 19:
      k = 7;
      break;
    default:
      return -1;
  }
  return wordAt(dv, a, EVENT_WORDS[k]!) ? k : -1;
}

export function isEventNameAt(s: string, a: number, b: number): boolean {
  for (let i = a; i < b; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 95)) return false;
  }
  return b > a;
}

/** trace-cmd report's header lines (`cpus=2`, `version = 7`, `CPU 0 is empty`). */
export function isHeaderAt(s: string, a: number): boolean {
  return s.startsWith('cpus=', a) || s.startsWith('version =', a) || s.startsWith('CPU ', a);
}

/** SPTE_MMU_PRESENT_MASK (bit 11, 6.x spte.h) and PT_PAGE_SIZE_MASK (bit 7), from the low 12 bits. */
export const present = (lo: number): boolean => (lo & 0x800) !== 0;
export const isLeaf = (lo: number, level: number): boolean => level === 1 || (lo & 0x80) !== 0;

/**
 * `comm-pid` or `comm-pid (tgid)` in the reader's bytes b[a, e) (text s from o, for the trim of a
 * character not in ASCII), trimmed: pid and tgid into r; false if neither.
 */
export function scanTask(b: Uint8Array, s: string, o: number, a: number, e: number, r: Rec): boolean {
  while (a < e && trimAt(b, s, o, a)) a++;
  while (e > a && trimAt(b, s, o, e - 1)) e--;
  r.tgid = -1;
  if (e > a && b[e - 1] === 41 /* ) */) {
    let open = e - 1;
    while (open >= a && b[open] !== 40) open--;
    if (open < a) return false;
    let ga = open + 1;
    let gb = e - 1;
    while (ga < gb && trimAt(b, s, o, ga)) ga++;
    while (gb > ga && trimAt(b, s, o, gb - 1)) gb--;
    if (digitsAtB(b, ga, gb)) r.tgid = digitsValueB(b, ga, gb);
    e = open;
    while (e > a && trimAt(b, s, o, e - 1)) e--;
  }
  // the pid: the digits after the last '-' (walking back over digits, the first other character must be it)
  let dash = e - 1;
  while (dash >= a && b[dash]! >= 48 && b[dash]! <= 57) dash--;
  if (dash < a || dash === e - 1 || b[dash] !== 45) return false;
  r.pid = digitsValueB(b, dash + 1, e);
  return true;
}

/** Is byte i (character o + i of s) one String.prototype.trim removes? */
function trimAt(b: Uint8Array, s: string, o: number, i: number): boolean {
  const c = b[i]!;
  return c === 32 || (c >= 9 && c <= 13) || (c === NON_ASCII && isTrimSpace(s.charCodeAt(o + i)));
}

/** Record prefixes remembered (a trace interleaves a few threads), and the longest one. */
const PREFIXES = 4;
const PREFIX_MAX = 64;

/**
 * Finds the parts of record lines into `rec`, one line at a time, with what it learnt from the lines before:
 * the last two events named (a record mostly repeats one of them) and the last few record prefixes
 * (`comm-pid [cpu] flags `, up to the time), each with its pid and tgid: a record that starts with one of
 * them is read from its time on. Only prefixes all in ASCII are kept (a NON_ASCII byte stands for any
 * character, and the task's trim reads the character).
 */
export class RecordScanner {
  readonly rec: Rec = { pid: 0, tgid: -1, time: 0, nameStart: 0, nameEnd: 0, textStart: 0, id: -1 };
  /** the last record's event (index in EVENTS), tried first on the next, and the one before it */
  private prevId = -1;
  private prevId2 = -1;
  private readonly cpuOpen = new Needle(' [');
  private readonly prefix: Word[] = [];
  private readonly prefixPid = new Float64Array(PREFIXES);
  private readonly prefixTgid = new Float64Array(PREFIXES);
  private prefixNext = 0;
  // the line being scanned: the chunk's bytes (b[i - o] for the text's s[i]) and a view of them
  private b: Uint8Array = new Uint8Array(0);
  private dv: DataView = new DataView(this.b.buffer);
  private o = 0;

  /**
   * Find `comm-pid [(tgid)] [cpu] [flags] secs.usecs: event: text` in s[ls, le), by hand (a regex with a
   * free-form comm backtracks badly on long lines); false if the line is not such a record.
   */
  scan(s: string, b: Uint8Array, dv: DataView, o: number, ls: number, le: number): boolean {
    this.b = b;
    this.dv = dv;
    this.o = o;
    const r = this.rec;
    // positions in the chunk's bytes from here
    const e = le - o;
    const a = ls - o;
    // a remembered prefix: the same bytes up to the time give the same task, cpu and flags, and the scan
    // below is at the same state at its end (a token starts there: it ends with a space, no ': ' in it)
    let i = this.knownPrefix(a, e);
    const known = i !== -1;
    if (!known) {
      const lb = this.cpuOpen.within(s, ls, le);
      if (lb === -1) return false;
      let rb = lb + 2 - o;
      while (rb < e && b[rb]! >= 48 && b[rb]! <= 57) rb++;
      if (rb === lb + 2 - o || rb >= e || b[rb] !== 93 /* ] */ || rb + 1 >= e || b[rb + 1] !== 32)
        return false;
      if (!scanTask(b, s, o, a, lb - o, r)) return false;
      i = rb + 2;
      while (i < e && b[i] === 32) i++;
    }
    // the first ": ", and the token before it (latency flags such as d..1. come before the time), read
    // as seconds.fraction on the way (secondsUsAt of the token: NaN unless digits and one '.')
    let colon = -1;
    let ts = i;
    let dot = -1;
    let sec = 0;
    let bad = false;
    // after a known prefix the time is next: digits, '.', digits and ': ' end the scan below at once
    if (known) {
      let p = i;
      for (let c = b[p]!; c >= 48 && c <= 57; c = b[++p]!) sec = sec * 10 + (c - 48);
      if (b[p] === 46) for (dot = p++; b[p]! >= 48 && b[p]! <= 57;) p++;
      if (p + 1 < e && b[p] === 58 && b[p + 1] === 32) colon = p;
      else {
        dot = -1;
        sec = 0;
      }
    }
    for (let p = i; colon === -1 && p + 1 < e; p++) {
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
    if (!known) this.rememberPrefix(a, ts);
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

  /** The end (chunk) of a remembered prefix the line [a, e) starts with (its pid, tgid into rec), else -1. */
  private knownPrefix(a: number, e: number): number {
    const p = this.prefix;
    for (let k = 0; k < p.length; k++) {
      const w = p[k]!;
      if (w.length < e - a && wordAt(this.dv, a, w)) {
        this.rec.pid = this.prefixPid[k]!;
        this.rec.tgid = this.prefixTgid[k]!;
        return a + w.length;
      }
    }
    return -1;
  }

  /** Remember the record prefix [a, ts) (chunk) with rec's pid and tgid, if short and all ASCII. */
  private rememberPrefix(a: number, ts: number): void {
    if (ts - a > PREFIX_MAX) return;
    for (let i = a; i < ts; i++) if (this.b[i] === NON_ASCII) return;
    const k = this.prefixNext;
    this.prefix[k] = Word.ofBytes(this.b, a, ts - a);
    this.prefixPid[k] = this.rec.pid;
    this.prefixTgid[k] = this.rec.tgid;
    this.prefixNext = (k + 1) % PREFIXES;
  }

  /**
   * The index in EVENTS of the event named at a (its name and ':' there), else -1: records mostly repeat
   * the previous record's event, so its name is compared first, then the name is read up to ':' and
   * dispatched on its length and one character.
   */
  private usedAt(a: number, le: number): number {
    const { b, dv, o } = this;
    const prev = this.prevId;
    if (prev >= 0 && this.named(a, le, prev)) return prev;
    const prev2 = this.prevId2;
    if (prev2 >= 0 && this.named(a, le, prev2)) {
      this.prevId2 = prev;
      this.prevId = prev2;
      return prev2;
    }
    let c = a - o;
    while (c < le - o && b[c] !== 58) c++;
    const k = c < le - o ? eventIndexB(b, dv, a - o, c) : -1;
    if (k >= 0 && k !== prev) {
      this.prevId2 = prev;
      this.prevId = k;
    }
    return k;
  }

  /** Is EVENTS[id] the name at a, ':' after it? (names hold no ':', so that ':' is the first) */
  private named(a: number, le: number, id: number): boolean {
    const n = EVENTS[id]!.length;
    return a + n < le && this.b[a + n - this.o] === 58 && wordAt(this.dv, a - this.o, EVENT_WORDS[id]!);
  }
}
