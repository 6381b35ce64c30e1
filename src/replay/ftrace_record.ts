/**
 * The record line of a tracefs `trace` file or `trace-cmd report` (`comm-pid (tgid) [cpu] flags secs.usecs:
 * event: text`): the parts the reader finds in it, the kvm/kvmmmu events the replay uses and how their names
 * are recognised in place, and the SPTE bits read from an event's text. ftrace.ts reads the records.
 * Model-only file (no kernel counterpart).
 */
import { NON_ASCII, digitsAtB, digitsValueB, isTrimSpace, sameAt } from './scan.ts';

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

/** EVENTS as bytes (the reader compares a record's name with the previous record's in its bytes). */
export const EVENT_BYTES = EVENTS.map((e) => Uint8Array.from(e, (c) => c.charCodeAt(0)));

/** Index in EVENTS of the name s[a, b), or -1: dispatched on length and one character, then one compare. */
export function eventIndex(s: string, a: number, b: number): number {
  let k: number;
  switch (b - a) {
    case 14:
      k = 0;
      break;
    case 16:
      k = s.charCodeAt(a + 8) === 115 /* kvm_mmu_s */ ? 1 : 4;
      break;
    case 24:
      k = s.charCodeAt(a + 4) === 116 /* kvm_t */ ? 2 : 5;
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
  return sameAt(s, a, EVENTS[k]!) ? k : -1;
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
