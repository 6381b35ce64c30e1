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
 * Model-only file (no kernel counterpart).
 */
import {
  countIn, fieldAfter, malformed, newReport, parseHex, parseInteger, parseSecondsUs,
  type KernelEvent, type ParseReport, type Parsed, type ReadOptions,
} from './events.ts';

interface Rec {
  pid: number;
  /** -1 when the trace has no tgid column (or prints "-----") */
  tgid: number;
  time: string;
  name: string;
  text: string;
}

const isDigits = (s: string): boolean => s.length > 0 && /^\d+$/.test(s);

function isEventName(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 95)) return false;
  }
  return s.length > 0;
}

/**
 * Split `comm-pid [(tgid)] [cpu] [flags] secs.usecs: event: text` with indexOf (a regex with a free-form
 * comm backtracks badly on long lines); null if the line is not such a record.
 */
function splitRecord(raw: string): Rec | null {
  const lb = raw.indexOf(' [');
  if (lb === -1) return null;
  const rb = raw.indexOf('] ', lb);
  if (rb === -1 || !isDigits(raw.slice(lb + 2, rb))) return null;
  let task = raw.slice(0, lb).trim();
  let tgid = -1;
  if (task.endsWith(')')) {
    const open = task.lastIndexOf('(');
    if (open === -1) return null;
    const g = task.slice(open + 1, -1).trim();
    tgid = isDigits(g) ? Number(g) : -1;
    task = task.slice(0, open).trimEnd();
  }
  const dash = task.lastIndexOf('-');
  if (dash === -1 || !isDigits(task.slice(dash + 1))) return null;
  let i = rb + 2;
  while (raw.charCodeAt(i) === 32) i++;
  let colon = raw.indexOf(': ', i);
  if (colon === -1) return null;
  let time = raw.slice(i, colon);
  const sp = time.lastIndexOf(' ');
  if (sp !== -1) time = time.slice(sp + 1); // latency flags (d..1.) before the time
  const nameStart = colon + 2;
  colon = raw.indexOf(':', nameStart);
  if (colon === -1) return null;
  const name = raw.slice(nameStart, colon);
  let t0 = colon + 1;
  while (raw.charCodeAt(t0) === 32) t0++;
  return { pid: Number(task.slice(dash + 1)), tgid, time, name, text: raw.slice(t0) };
}

/** Does this text look like tracefs or trace-cmd report output? */
export function looksLikeFtrace(head: string): boolean {
  return head.startsWith('# tracer:') || /(^|\n)cpus=\d+/.test(head) || /\[\d{3}\] .*\d+\.\d+: (kvm|kvmmmu)?[a-z_]+:/.test(head);
}

/** SPTE_MMU_PRESENT_MASK (bit 11, 6.x spte.h) and PT_PAGE_SIZE_MASK (bit 7), from the low 12 bits. */
function low12(hex: string): number {
  return parseInt(hex.length > 3 ? hex.slice(-3) : hex, 16);
}
const present = (lo: number): boolean => (lo & 0x800) !== 0;
const isLeaf = (lo: number, level: number): boolean => level === 1 || (lo & 0x80) !== 0;

type Build = (text: string, ctx: { t: number; tid: number; line: number; r: ParseReport }) => KernelEvent | null | string;

function need(r: ParseReport, ev: string, fields: Record<string, string | undefined>): Record<string, string> | null {
  for (const k in fields) {
    if (fields[k] === undefined) {
      countIn(r.missingFields, `${ev}.${k}`);
      return null;
    }
  }
  return fields as Record<string, string>;
}

const BUILD: Record<string, Build> = {
  kvm_page_fault(s, c) {
    const f = need(c.r, 'kvm_page_fault', { address: fieldAfter(s, 'address'), error_code: fieldAfter(s, 'error_code') });
    if (!f) return null;
    const addr = parseHex(f['address']);
    const ec = parseHex(f['error_code']);
    if (Number.isNaN(addr) || Number.isNaN(ec)) return 'kvm_page_fault: expected hex address and error_code';
    return { t: c.t, tid: c.tid, line: c.line, src: 'kernel', kind: 'fault', tp: 'kvm_page_fault', gfn: Math.floor(addr / 4096), level: 0, write: (ec & 2) !== 0 };
  },
  kvm_mmu_set_spte(s, c) {
    const f = need(c.r, 'kvm_mmu_set_spte', { gfn: fieldAfter(s, 'gfn'), level: fieldAfter(s, 'level') });
    if (!f) return null;
    const gfn = parseHex(f['gfn']);
    const level = parseInteger(f['level']);
    if (Number.isNaN(gfn) || Number.isNaN(level)) return 'kvm_mmu_set_spte: expected hex gfn and a decimal level';
    const perm = /\(([r-])([w-])/.exec(s);
    return { t: c.t, tid: c.tid, line: c.line, src: 'kernel', kind: 'fault', tp: 'kvm_mmu_set_spte', gfn, level, write: perm?.[2] === 'w' };
  },
  kvm_tdp_mmu_spte_changed(s, c) {
    const f = need(c.r, 'kvm_tdp_mmu_spte_changed', {
      gfn: fieldAfter(s, 'gfn'), level: fieldAfter(s, 'level'), old_spte: fieldAfter(s, 'old_spte'), new_spte: fieldAfter(s, 'new_spte'),
    });
    if (!f) return null;
    const gfn = parseHex(f['gfn']);
    const level = parseInteger(f['level']);
    if (Number.isNaN(gfn) || Number.isNaN(level) || Number.isNaN(parseHex(f['old_spte'])) || Number.isNaN(parseHex(f['new_spte'])))
      return 'kvm_tdp_mmu_spte_changed: expected hex gfn/old_spte/new_spte and a decimal level';
    const o = low12(f['old_spte']!);
    const n = low12(f['new_spte']!);
    if (!present(o) && present(n) && isLeaf(n, level))
      return { t: c.t, tid: c.tid, line: c.line, src: 'kernel', kind: 'fault', tp: 'kvm_tdp_mmu_spte_changed', gfn, level, write: (n & 2) !== 0 };
    if (present(o) && isLeaf(o, level) && !present(n)) return { t: c.t, tid: c.tid, line: c.line, src: 'kernel', kind: 'leafZap', gfn, level };
    countIn(c.r.unknown, 'kvm_tdp_mmu_spte_changed (non-leaf or leaf-to-leaf)');
    return null;
  },
  kvm_mmu_spte_requested(s, c) {
    const f = need(c.r, 'kvm_mmu_spte_requested', { gfn: fieldAfter(s, 'gfn'), level: fieldAfter(s, 'level') });
    if (!f) return null;
    const gfn = parseHex(f['gfn']);
    const level = parseInteger(f['level']);
    if (Number.isNaN(gfn) || Number.isNaN(level)) return 'kvm_mmu_spte_requested: expected hex gfn and a decimal level';
    return { t: c.t, tid: c.tid, line: c.line, src: 'kernel', kind: 'fault', tp: 'kvm_mmu_spte_requested', gfn, level, write: false };
  },
  kvm_mmu_get_page: (s, c) => shadowPage(s, c, 'getPage'),
  kvm_mmu_prepare_zap_page: (s, c) => shadowPage(s, c, 'prepareZapPage'),
  kvm_mmu_zap_all_fast(s, c) {
    const f = need(c.r, 'kvm_mmu_zap_all_fast', { 'kvm-mmu-valid-gen': fieldAfter(s, 'kvm-mmu-valid-gen') });
    if (!f) return null;
    const gen = parseInteger(f['kvm-mmu-valid-gen']);
    if (Number.isNaN(gen)) return 'kvm_mmu_zap_all_fast: expected a decimal kvm-mmu-valid-gen';
    return { t: c.t, tid: c.tid, line: c.line, src: 'kernel', kind: 'zapAllFast', gen };
  },
  kvm_unmap_hva_range(s, c) {
    const m = /range: (0x[0-9a-f]+|[0-9a-f]+) -- (0x[0-9a-f]+|[0-9a-f]+)/.exec(s);
    if (!m) {
      countIn(c.r.missingFields, 'kvm_unmap_hva_range.range');
      return null;
    }
    return { t: c.t, tid: c.tid, line: c.line, src: 'kernel', kind: 'unmap', start: parseHex(m[1]), end: parseHex(m[2]) };
  },
};

/**
 * kvm_mmu_get_page / kvm_mmu_prepare_zap_page. The kernel prints `sp gen %u gfn %llx l%u … new|existing`;
 * trace-cmd report formats them with libtraceevent's kvm plugin instead: `new|existing sp gfn %llx %u q…`
 * for get_page and `%u q…` (no gfn) for prepare_zap_page. The replay only counts these, so a missing gfn
 * or level is counted under missingFields and the event kept (gfn -1, level 0).
 */
function shadowPage(s: string, c: { t: number; tid: number; line: number; r: ParseReport }, kind: 'getPage' | 'prepareZapPage'): KernelEvent | null | string {
  const ev = kind === 'getPage' ? 'kvm_mmu_get_page' : 'kvm_mmu_prepare_zap_page';
  const g = fieldAfter(s, 'gfn');
  const gfn = g === undefined ? -1 : parseHex(g);
  if (Number.isNaN(gfn)) return `${ev}: expected a hex gfn`;
  if (g === undefined) countIn(c.r.missingFields, `${ev}.gfn`);
  // kernel: " l2 "; plugin: the bare number after the gfn, or the first token
  const lv = / l(\d) /.exec(s) ?? /^(?:(?:new|existing) sp gfn [0-9a-f]+ )?(\d) q/.exec(s);
  if (!lv) countIn(c.r.missingFields, `${ev}.level`);
  const created = s.endsWith(' new') || s.startsWith('new ');
  return { t: c.t, tid: c.tid, line: c.line, src: 'kernel', kind, gfn, level: lv ? Number(lv[1]) : 0, created };
}

export function readFtrace(text: string, file: string, opts: ReadOptions = {}): Parsed<KernelEvent> {
  const report = newReport(file);
  const events: KernelEvent[] = [];
  let start = 0;
  let n = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end === -1) end = text.length;
    const raw = text.slice(start, end);
    start = end + 1;
    n++;
    const c0 = raw.charCodeAt(0);
    if (raw.length === 0 || c0 === 35 /* # */ || raw.startsWith('cpus=') || raw.startsWith('version =') || raw.startsWith('CPU ')) {
      report.other++;
      continue;
    }
    const m = splitRecord(raw);
    const t = m ? parseSecondsUs(m.time) : NaN;
    if (!m || Number.isNaN(t) || !isEventName(m.name)) {
      malformed(report, n, 'expected "comm-pid [cpu] seconds.microseconds: event: fields" (tracefs or trace-cmd report)', opts.strict);
      continue;
    }
    const tid = m.pid;
    if (opts.pids && !opts.pids.has(tid) && !opts.pids.has(m.tgid)) {
      report.filtered++;
      continue;
    }
    const name = m.name;
    const build = BUILD[name];
    if (!build) {
      countIn(report.unknown, name);
      continue;
    }
    const ev = build(m.text, { t, tid, line: n, r: report });
    if (typeof ev === 'string') malformed(report, n, ev, opts.strict);
    else if (ev) events.push(ev);
  }
  report.lines = n;
  return { events, report };
}
