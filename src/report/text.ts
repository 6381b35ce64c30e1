/**
 * Terminal reports for run/compare/check: cli-table3 tables that fit 100 columns, colours only on a TTY
 * (node:util styleText). Modelled time is always labelled "modelled" and printed beside the counts it
 * came from. Reads run results only.
 */
import Table from 'cli-table3';
import { styleText } from 'node:util';
import type { RunResult, Verdict } from '../scenario/runner.ts';
import { fmtModelled } from '../metrics/cost.ts';
import { enUS } from './en_us.ts';

export interface Style {
  color: boolean;
}

const paint = (st: Style, fmt: Parameters<typeof styleText>[0], s: string): string =>
  st.color ? styleText(fmt, s) : s;

const n = (x: number | undefined): string => enUS(x ?? 0);

function verdictText(st: Style, v: Verdict, violations: number): string {
  switch (v) {
    case 'ok':
      return paint(st, 'green', 'ok');
    case 'violations':
      // Compact, so the widest compare table still fits 100 columns; the legend below spells it out.
      return paint(st, 'red', `✗ ${violations}`);
    case 'unchecked':
      return paint(st, 'yellow', 'unchecked');
    case 'missing-features':
      return paint(st, 'yellow', 'missing');
    case 'error':
      return paint(st, 'red', 'error');
  }
}

function table(head: string[], st: Style): Table.Table {
  return new Table({
    head: head.map((h) => paint(st, 'bold', h)),
    style: { head: [], border: [], compact: true, 'padding-left': 1, 'padding-right': 1 },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
}

const zapped = (t: Record<string, number>): number =>
  (t['sptes_zapped_4k'] ?? 0) + (t['sptes_zapped_2m'] ?? 0) + (t['sptes_zapped_1g'] ?? 0);
const refaults = (t: Record<string, number>): number => t['refaults'] ?? 0;

/** An optional compare column: shown only when some run has something to say in it. */
interface Extra {
  head: string;
  show: (runs: RunResult[]) => boolean;
  cell: (c: Record<string, number>) => string;
}

const EXTRA: Extra[] = [
  // SEAMCALLs only exist for TDX; a column of zeros would only cost width
  {
    head: 'SEAMCALL',
    show: (rs) => rs.some((r) => (r.totals['seamcalls'] ?? 0) > 0),
    cell: (c) => n(c['seamcalls']),
  },
  // leaf SPTEs whose EPT memtype differs from what KVM computes at the end (auditSpteMemtypes)
  {
    head: 'stale-MT',
    show: (rs) => rs.some((r) => r.totals['memtype_stale_sptes'] !== undefined),
    cell: (c) => n(c['memtype_stale_sptes']),
  },
];

/** The side-by-side table: one row per design. */
export function formatCompare(runs: RunResult[], skipped: { id: string; why: string }[], st: Style): string {
  const extra = EXTRA.filter((e) => e.show(runs));
  const t = table(
    [
      'design',
      'zap-all',
      'precise',
      'zapped',
      'refaults',
      'flush(IPI)',
      ...extra.map((e) => e.head),
      'modelled',
      'verdict',
    ],
    st,
  );
  const best = Math.min(...runs.map((r) => r.modelled.totalNs));
  for (const r of runs) {
    const c = r.totals;
    const time = fmtModelled(r.modelled.totalNs);
    t.push([
      r.design,
      n(c['memslot_zap_all_fast']),
      n(c['memslot_zap_precise']),
      n(zapped(c)),
      n(refaults(c)),
      `${n(c['remote_tlb_flush'])} (${n(c['tlb_flush_ipis'])})`,
      ...extra.map((e) => e.cell(c)),
      r.modelled.totalNs === best ? paint(st, 'green', time) : time,
      verdictText(st, r.verdict, r.violations.length),
    ]);
  }
  const lines = [t.toString()];
  lines.push('modelled = counts × per-event costs (docs/cost-model.md), not a measurement');
  const audits = [...new Set(runs.map((r) => r.audit))];
  if (audits.length)
    lines.push(
      `verdict = invariant checks at audit level ${audits.map((a) => `'${a}'`).join(', ')} (${audits.map(auditMeaning).join('; ')})`,
    );
  if (runs.some((r) => r.verdict === 'violations')) {
    lines.push('✗ N = N invariant violations (zaplab check <scenario> prints them with their steps)');
  }
  for (const s of skipped) lines.push(paint(st, 'dim', `not run: ${s.id} — ${s.why}`));
  const miss = runs[0]?.missing ?? [];
  if (miss.length) lines.push(paint(st, 'yellow', `model features not available yet: ${miss.join(', ')}`));
  const errs = [...new Set(runs.flatMap((r) => r.errors.map((e) => `${r.design}: ${e}`)))];
  for (const e of errs.slice(0, 5)) lines.push(paint(st, 'red', `failed call: ${e}`));
  if (errs.length > 5)
    lines.push(
      paint(
        st,
        'red',
        `… and ${errs.length - 5} more failed calls (zaplab run <scenario> -d <design> lists them)`,
      ),
    );
  if (runs.every((r) => r.verdict === 'unchecked'))
    lines.push(
      paint(
        st,
        'yellow',
        'verdicts: unchecked — this run had auditing off (--audit points or check for verdicts)',
      ),
    );
  return lines.join('\n') + '\n';
}

/** What an audit level checks, for the verdict legend. */
function auditMeaning(a: string): string {
  switch (a) {
    case 'off':
      return 'no checks';
    case 'points':
      return 'at named audit points and every access';
    case 'steps':
      return 'points, plus after every step';
    default:
      return 'steps, plus after every access';
  }
}

/** One design's run: per-step counts, then the modelled cost breakdown with its sources. */
export function formatRun(r: RunResult, st: Style): string {
  const t = table(['step', 'accesses', 'faults', 'refaults', 'zapped', 'zap-all', 'precise', 'flushes'], st);
  for (const s of r.steps) {
    const c = s.counts;
    const label = s.label.length > 40 ? s.label.slice(0, 39) + '…' : s.label;
    t.push([
      label,
      n(c['accesses']),
      n(c['vcpu.pf_fixed']),
      n(refaults(c)),
      n(zapped(c)),
      n(c['memslot_zap_all_fast']),
      n(c['memslot_zap_precise']),
      n(c['remote_tlb_flush']),
    ]);
  }
  const cost = table(['modelled cost item', 'count', 'each', 'total (modelled)'], st);
  for (const row of r.modelled.rows)
    cost.push([row.item, n(row.count), fmtModelled(row.unitNs), fmtModelled(row.totalNs)]);
  const head = `${paint(st, 'bold', r.scenario)} under ${paint(st, 'bold', r.design)} (${r.describe})`;
  const out = [head, t.toString(), cost.toString()];
  out.push(
    `total: ${fmtModelled(r.modelled.totalNs)} (modelled); verdict: ${verdictText(st, r.verdict, r.violations.length)} (audit level '${r.audit}')`,
  );
  for (const e of r.errors.slice(0, 10)) out.push(paint(st, 'red', `failed call: ${e}`));
  if (r.errors.length > 10)
    out.push(paint(st, 'red', `… and ${r.errors.length - 10} more failed calls (--json lists them all)`));
  if (r.missing.length)
    out.push(paint(st, 'yellow', `model features not available yet: ${r.missing.join(', ')}`));
  return out.join('\n') + '\n';
}

/** Word-wrap to `width` columns with an indent (checker messages are long sentences). */
function wrap(text: string, width: number, indent: string): string[] {
  const lines: string[] = [];
  let cur = indent;
  for (const w of text.split(' ')) {
    if (cur.length > indent.length && cur.length + 1 + w.length > width) {
      lines.push(cur);
      cur = indent + '  ';
    }
    cur += (cur.trim() ? ' ' : '') + w;
  }
  lines.push(cur);
  return lines;
}

/**
 * Violations, readably: grouped by invariant and step (a stale SPTE found at one audit is usually found
 * on many gfns at once); each group prints its first finding with the gfn/pfn and the trace tail that
 * led there, then how many more and which gfns.
 */
export function formatViolations(r: RunResult, st: Style, traceTail = 6): string {
  const groups = new Map<string, RunResult['violations']>();
  for (const v of r.violations) {
    const k = `${v.id}\u0000${v.step}`;
    groups.set(k, [...(groups.get(k) ?? []), v]);
  }
  const hex = (x: number | undefined): string => (x === undefined ? '' : `0x${x.toString(16)}`);
  const out: string[] = [];
  for (const vs of groups.values()) {
    const v = vs[0]!;
    out.push(
      paint(st, 'red', `✗ ${v.id}`) +
        ` [${r.design}] at step "${v.step}"` +
        (vs.length > 1 ? ` (${vs.length}×)` : ''),
    );
    out.push(...wrap(v.message, 100, '    '));
    const where = [
      v.gfn !== undefined ? `gfn ${hex(v.gfn)}` : '',
      v.pfn !== undefined ? `pfn ${hex(v.pfn)}` : '',
    ].filter(Boolean);
    if (where.length) out.push(`    ${where.join(', ')}`);
    if (vs.length > 1) {
      const gfns = vs
        .slice(1, 6)
        .map((x) => hex(x.gfn))
        .filter(Boolean);
      out.push(
        `    … ${vs.length - 1} more${gfns.length ? ` (gfn ${gfns.join(', ')}${vs.length > 6 ? ', …' : ''})` : ''}`,
      );
    }
    if (traceTail > 0) out.push(paint(st, 'dim', '    trace (most recent last):'));
    for (const line of v.trace.slice(-traceTail))
      out.push(paint(st, 'dim', `      ${line.length > 92 ? line.slice(0, 91) + '…' : line}`));
  }
  return out.join('\n') + (out.length ? '\n' : '');
}
