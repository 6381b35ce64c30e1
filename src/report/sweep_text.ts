/**
 * Sweep results as text: the table (cli-table3, colours only when the Style allows), CSV, and the one
 * progress line per finished task printed when stderr is not a TTY. Modelled time is always labelled.
 * Reads SweepResult documents only.
 */
import Table from 'cli-table3';
import { styleText } from 'node:util';
import { fmtModelled } from '../metrics/cost.ts';
import type { ParamAxis, ParamValue } from '../sweep/grid.ts';
import type { SweepFailure, SweepPoint, SweepResult } from '../sweep/schema.ts';
import type { Style } from './text.ts';
import { enUS } from './en_us.ts';

const paint = (st: Style, fmt: Parameters<typeof styleText>[0], s: string): string =>
  st.color ? styleText(fmt, s) : s;
const n = (x: number): string => enUS(x);

/** 1073741824 → "1G" when the axis was written with size suffixes; otherwise the plain value. */
export function fmtParam(axis: ParamAxis | undefined, v: ParamValue | undefined): string {
  if (typeof v !== 'number' || !axis || !/\d[KMGT]/i.test(axis.spec)) return String(v ?? '');
  for (const [s, k] of [
    ['T', 2 ** 40],
    ['G', 2 ** 30],
    ['M', 2 ** 20],
    ['K', 2 ** 10],
  ] as const)
    if (v >= k && v % k === 0) return `${v / k}${s}`;
  return String(v);
}

function verdictCell(st: Style, p: SweepPoint): string {
  if (p.verdict === 'ok') return paint(st, 'green', 'ok');
  if (p.verdict === 'violations') return paint(st, 'red', `✗ ${p.violations} ${p.invariants.join(',')}`);
  if (p.verdict === 'error') return paint(st, 'red', 'error');
  return paint(st, 'yellow', p.verdict === 'missing-features' ? 'missing' : p.verdict);
}

const paramCell = (axes: ParamAxis[], params: Record<string, ParamValue>): string =>
  axes.map((a) => `${a.name}=${fmtParam(a, params[a.name])}`).join(' ');

/** The sweep table: one row per (point, design); the cheapest design of each point in green. */
export function formatSweep(res: SweepResult, st: Style): string {
  const multi = res.axes.filter((a) => a.values.length > 1);
  const t = new Table({
    head: [
      ...multi.map((a) => a.name),
      'design',
      'zapped',
      'refaults',
      'flush(IPI)',
      'modelled',
      'verdict',
    ].map((h) => paint(st, 'bold', h)),
    style: { head: [], border: [], compact: true, 'padding-left': 1, 'padding-right': 0 },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
  const best = new Map<number, number>();
  for (const p of res.points) best.set(p.point, Math.min(best.get(p.point) ?? Infinity, p.modelledNs));
  for (const p of res.points) {
    const time = fmtModelled(p.modelledNs);
    t.push([
      ...multi.map((a) => fmtParam(a, p.params[a.name])),
      p.design,
      n(p.sptesZapped),
      n(p.refaults),
      `${n(p.remoteTlbFlushes)} (${n(p.tlbFlushIpis)})`,
      p.modelledNs === best.get(p.point) ? paint(st, 'green', time) : time,
      verdictCell(st, p),
    ]);
  }
  const fixed = res.axes.filter((a) => a.values.length === 1);
  const lines = [
    `${res.scenario.name}: ${res.points.length} runs${fixed.length ? ` (${paramCell(fixed, Object.fromEntries(fixed.map((a) => [a.name, a.values[0]!])))})` : ''}`,
  ];
  lines.push(t.toString());
  lines.push('modelled = counts × per-event costs (docs/cost-model.md), not a measurement');
  const errs = res.points.filter((p) => p.errors.length);
  for (const p of errs.slice(0, 5))
    lines.push(
      paint(st, 'yellow', `rejected ioctl at ${paramCell(res.axes, p.params)} ${p.design}: ${p.errors[0]}`),
    );
  if (errs.length > 5)
    lines.push(
      paint(st, 'yellow', `… and ${errs.length - 5} more runs with rejected ioctls (--json has them all)`),
    );
  for (const f of res.failures)
    lines.push(paint(st, 'red', `failed: ${paramCell(res.axes, f.params)} ${f.design}: ${f.error}`));
  const skipped = new Map<string, string>();
  for (const s of res.skipped) skipped.set(s.design, s.why);
  for (const [id, why] of skipped) lines.push(paint(st, 'dim', `not run: ${id} — ${why}`));
  return lines.join('\n') + '\n';
}

/** RFC 4180 quoting: only fields with a comma, quote or newline are quoted. */
const csvField = (v: string | number): string => {
  const s = String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

/** CSV: one row per (point, design), parameters in raw units, modelled time in ns; failures as rows with an error. */
export function formatSweepCsv(res: SweepResult): string {
  const head = [
    ...res.axes.map((a) => a.name),
    'design',
    'verdict',
    'violations',
    'sptes_zapped',
    'refaults',
    'remote_tlb_flush',
    'tlb_flush_ipis',
    'modelled_ns',
    'error',
  ];
  const rows = res.points.map((p) => [
    ...res.axes.map((a) => p.params[a.name] ?? ''),
    p.design,
    p.verdict,
    p.violations,
    p.sptesZapped,
    p.refaults,
    p.remoteTlbFlushes,
    p.tlbFlushIpis,
    p.modelledNs,
    p.errors[0] ?? '',
  ]);
  for (const f of res.failures)
    rows.push([
      ...res.axes.map((a) => f.params[a.name] ?? ''),
      f.design,
      'failed',
      '',
      '',
      '',
      '',
      '',
      '',
      f.error,
    ]);
  return [head, ...rows].map((r) => r.map(csvField).join(',')).join('\n') + '\n';
}

/** The plain line printed per finished task when stderr is not a TTY. */
export function progressLine(
  axes: ParamAxis[],
  done: number,
  total: number,
  r: SweepPoint | SweepFailure,
): string {
  const at = `[${done}/${total}] ${paramCell(axes, r.params)} ${r.design}`;
  if ('error' in r) return `${at}: failed: ${r.error}`;
  return `${at}: ${r.verdict}, ${n(r.sptesZapped)} zapped, ${n(r.refaults)} refaults, ${fmtModelled(r.modelledNs)} modelled`;
}
