/**
 * The events the trace readers produce, whatever the source: VMM-side calls (QEMU trace events, strace
 * of KVM ioctls) and the kernel's own tracepoints (tracefs / trace-cmd text). Times are microseconds on
 * the source's clock (QEMU `-msg timestamp=on` and strace `-ttt` are wall-clock; tracefs with
 * `trace_clock` tai is wall-clock plus the TAI offset, 0 on the development hosts). Also the parse report
 * every reader fills: malformed lines as `file:line: what was expected`, unknown events counted.
 * Model-only file (no kernel counterpart).
 */

import type { EventTable } from './event_table.ts';

export type Source = 'qemu' | 'strace' | 'kernel';

interface Base {
  /** microseconds; NaN when the source printed no time (QEMU without -msg timestamp=on) */
  t: number;
  /** thread id that made the call or hit the tracepoint (-1 when unknown) */
  tid: number;
  src: Source;
  /** 1-based line in its file, for messages */
  line: number;
}

/** KVM_SET_USER_MEMORY_REGION(2) as the VMM made it, with the kernel's answer (0 or -errno). */
export interface MemslotEvent extends Base {
  kind: 'memslot';
  /** VM index (the order of KVM_CREATE_VM; 0 when the source cannot tell) */
  vm: number;
  /** slot id with the address space in bits 16+, as in the uAPI */
  slot: number;
  flags: number;
  gpa: number;
  size: number;
  ua: number;
  guestMemfd?: number;
  guestMemfdOffset?: number;
  v2: boolean;
  ret: number;
  /** a call the VMM made without tracing it (QEMU 7.2's size-0 call before a READONLY flip) */
  implied?: boolean;
}

export interface CreateVmEvent extends Base {
  kind: 'createVm';
  vm: number;
  type: number;
  ret: number;
}

export interface CreateVcpuEvent extends Base {
  kind: 'createVcpu';
  vm: number;
  id: number;
  ret: number;
}

/** KVM_ENABLE_CAP on a VM; args undefined when the tracer did not decode the struct */
export interface EnableCapEvent extends Base {
  kind: 'enableCap';
  vm: number;
  cap?: number;
  args?: number[];
  ret: number;
}

/** Other VM calls the replay counts but does not drive (dirty log, attributes, guest_memfd, conversions). */
export interface VmCallEvent extends Base {
  kind: 'vmCall';
  vm: number;
  name: string;
  ret: number;
}

/** A kernel SPTE install or change: the guest reached gfn through a leaf of `level` (1 = 4K). */
export interface FaultEvent extends Base {
  kind: 'fault';
  tp: 'kvm_mmu_set_spte' | 'kvm_tdp_mmu_spte_changed' | 'kvm_mmu_spte_requested' | 'kvm_page_fault';
  gfn: number;
  level: number;
  write: boolean;
}

/** kvm_tdp_mmu_spte_changed that made a present leaf non-present (a zap). */
export interface LeafZapEvent extends Base {
  kind: 'leafZap';
  gfn: number;
  level: number;
}

export interface ZapAllFastEvent extends Base {
  kind: 'zapAllFast';
  gen: number;
}

export interface ShadowPageEvent extends Base {
  kind: 'getPage' | 'prepareZapPage';
  gfn: number;
  level: number;
  created: boolean;
}

/** kvm_unmap_hva_range: an MMU-notifier invalidation of [start, end) in the VMM's address space */
export interface UnmapEvent extends Base {
  kind: 'unmap';
  start: number;
  end: number;
}

export type TraceEvent =
  | MemslotEvent
  | CreateVmEvent
  | CreateVcpuEvent
  | EnableCapEvent
  | VmCallEvent
  | FaultEvent
  | LeafZapEvent
  | ZapAllFastEvent
  | ShadowPageEvent
  | UnmapEvent;

export type KernelEvent = FaultEvent | LeafZapEvent | ZapAllFastEvent | ShadowPageEvent | UnmapEvent;

/** What a reader found besides its events. */
export interface ParseReport {
  file: string;
  lines: number;
  /** `file:line: what was expected` */
  malformed: string[];
  /** record lines of events the replay does not use, by event/ioctl name */
  unknown: Record<string, number>;
  /** lines that are not trace records at all (headers, the VMM's own messages) */
  other: number;
  /** events whose text lacked a field the replay reads, by `event.field` (versions differ) */
  missingFields: Record<string, number>;
  /** events dropped by the pid/tid filter */
  filtered: number;
  notes: string[];
}

export interface Parsed<E extends TraceEvent = TraceEvent> {
  events: E[];
  report: ParseReport;
  /** the same events by column, as the readers store them (merge and replay read this when present) */
  table?: EventTable;
}

export class TraceFormatError extends Error {}

export function newReport(file: string): ParseReport {
  // counts keyed by names read from the trace: no prototype, so an event called `constructor` or
  // `__proto__` is counted like any other
  const counts = (): Record<string, number> => Object.create(null) as Record<string, number>;
  return {
    file,
    lines: 0,
    malformed: [],
    unknown: counts(),
    other: 0,
    missingFields: counts(),
    filtered: 0,
    notes: [],
  };
}

export interface ReadOptions {
  /** a malformed line throws TraceFormatError instead of being reported and skipped */
  strict?: boolean;
  /** keep only kernel events of these pids/tids (matched against the task pid and, when present, tgid) */
  pids?: ReadonlySet<number>;
}

/** Record a malformed line; fatal with `strict`. */
export function malformed(r: ParseReport, line: number, what: string, strict: boolean | undefined): void {
  const msg = `${r.file}:${line}: ${what}`;
  if (strict) throw new TraceFormatError(msg);
  r.malformed.push(msg);
}

export function countIn(m: Record<string, number>, k: string): void {
  m[k] = (m[k] ?? 0) + 1;
}

/** "1796562681.851642" → microseconds, without float rounding of the fraction; NaN if not a time. */
export function parseSecondsUs(s: string): number {
  const dot = s.indexOf('.');
  const fl = s.length - dot - 1;
  if (dot <= 0 || fl < 1 || fl > 9) return NaN;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (i !== dot && (c < 48 || c > 57)) return NaN;
  }
  const us = fl >= 6 ? Number(s.slice(dot + 1, dot + 7)) : Number(s.slice(dot + 1)) * 10 ** (6 - fl);
  return Number(s.slice(0, dot)) * 1e6 + us;
}

/** Hex with or without 0x (kernel %llx prints none); NaN if not hex. */
export function parseHex(s: string | undefined): number {
  if (s === undefined || s.length === 0) return NaN;
  const body = s.startsWith('0x') || s.startsWith('0X') ? s.slice(2) : s;
  if (body.length === 0 || body.length > 16) return NaN;
  for (let i = 0; i < body.length; i++) {
    const c = body.charCodeAt(i) | 0x20;
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return NaN;
  }
  // past 2^53 a number loses low bits; callers that need exact bits use parseHexBig
  return parseInt(body, 16);
}

/** A decimal or 0x-prefixed integer (strace prints both); NaN otherwise. */
export function parseInteger(s: string | undefined): number {
  if (s === undefined || s.length === 0) return NaN;
  if (s.startsWith('0x')) return parseHex(s);
  return /^-?\d+$/.test(s) ? Number(s) : NaN;
}

/** The whitespace-delimited token after `key ` in a tracepoint's text ("gfn 1f level 1" → gfn: "1f"). */
export function fieldAfter(text: string, key: string): string | undefined {
  let i = text.indexOf(key);
  while (i !== -1) {
    const before = i === 0 ? 32 : text.charCodeAt(i - 1);
    const end = i + key.length;
    if ((before === 32 || before === 9) && text.charCodeAt(end) === 32) {
      let j = end + 1;
      while (text.charCodeAt(j) === 32) j++;
      let k = j;
      while (k < text.length && text.charCodeAt(k) !== 32) k++;
      return k > j ? text.slice(j, k) : undefined;
    }
    i = text.indexOf(key, i + 1);
  }
  return undefined;
}
