/**
 * Text output of the explorer: the per-design summary table, and a violating schedule drawn the way races
 * are drawn on the KVM list — one column per thread (vCPU, VMM thread, host, device), one step per row,
 * the kernel function of each step and what it did — followed by the invariant, the gfn/pfn and the
 * command that replays it. Model-only file (no kernel counterpart).
 */
import type { ConfigResult, DesignResult } from './run.ts';

const hex = (n: number): string => '0x' + n.toString(16);

function cut(s: string, w: number): string {
  return s.length <= w ? s.padEnd(w) : s.slice(0, w - 1) + '…';
}

/** The race diagram of one violation. */
export function raceDiagram(
  actors: readonly string[],
  v: NonNullable<DesignResult['violation']>,
  width = 100,
): string {
  const n = actors.length;
  const col = Math.max(24, Math.floor((width - 5) / n) - 1);
  const lines: string[] = [];
  lines.push('  # ' + actors.map((a) => cut(a, col)).join(' '));
  lines.push('    ' + actors.map(() => '─'.repeat(col)).join(' '));
  v.steps.forEach((s, i) => {
    const mark = i === v.step ? '✗' : ' ';
    const row = (text: string): string =>
      actors
        .map((_, k) => (k === s.actor ? cut(text, col) : ' '.repeat(col)))
        .join(' ')
        .trimEnd();
    lines.push(`${String(i + 1).padStart(3)}${mark}${row(s.fn)}`);
    lines.push(`    ${row('  ' + s.what)}`);
  });
  return lines.join('\n');
}

/** The command that replays a design's violation step by step. */
export function replayCommand(
  file: string,
  design: string,
  schedule: readonly number[],
  bugs: readonly string[] = [],
): string {
  const b = bugs.length ? ` --bug ${bugs.join(',')}` : '';
  return `zaplab explore ${file} --design ${design}${b} --replay ${schedule.join(',')} --trace`;
}

function where(v: NonNullable<DesignResult['violation']>): string {
  const parts: string[] = [];
  if (v.gfn !== undefined) parts.push(`gfn ${hex(v.gfn)}`);
  if (v.pfn !== undefined) parts.push(`pfn ${hex(v.pfn)}`);
  return parts.length ? ` (${parts.join(', ')})` : '';
}

function verdict(d: DesignResult): string {
  if (d.violation !== null) return `✗ ${d.violation.invariant} in ${d.violation.schedule.length} steps`;
  if (d.mode === 'pct') return `no violation in ${d.executions} random schedules`;
  if (!d.stats.exhausted) return 'stopped at the execution bound';
  return d.stats.boundHit ? '✓ exhausted within the bounds' : '✓ exhausted';
}

/** The summary: one row per design. */
export function formatSummary(r: ConfigResult): string {
  const lines = [`${r.config}: ${r.actors.join(' ∥ ')}`];
  const head = ['design', 'schedules', 'executions', 'sleep-cut', 'bound-cut', 'ms', 'verdict'];
  const rows = r.designs.map((d) => [
    d.design + (d.shard ? ` [${d.shard.index}/${d.shard.count}]` : ''),
    String(d.stats.complete),
    String(d.executions),
    String(d.stats.sleepBlocked),
    String(d.stats.boundCut),
    String(d.ms),
    verdict(d),
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const fmt = (row: string[]): string =>
    row
      .map((c, i) => (i === 0 || i === 6 ? c.padEnd(w[i]!) : c.padStart(w[i]!)))
      .join('  ')
      .trimEnd();
  lines.push('  ' + fmt(head));
  for (const row of rows) lines.push('  ' + fmt(row));
  for (const s of r.skipped) lines.push(`  (${s.id} skipped: ${s.why})`);
  const b = r.designs[0]?.bounds;
  if (b) lines.push(`  bounds: steps ${b.steps ?? '∞'}, preemptions ${b.preemptions ?? '∞'}`);
  return lines.join('\n');
}

/** Summary, then each design's violation as a race diagram with its replay command. */
export function formatExplore(r: ConfigResult): string {
  const out = [formatSummary(r)];
  for (const d of r.designs) {
    const v = d.violation;
    if (v === null) continue;
    out.push('');
    out.push(
      `✗ ${v.invariant} [${d.design}]${where(v)}, ${v.step < 0 ? 'at the final audit' : `after step ${v.step + 1}`}:`,
    );
    out.push(`  ${v.message}`);
    out.push(raceDiagram(r.actors, v));
    out.push(`  replay: ${replayCommand(r.file, d.design, v.schedule, r.bugs)}`);
  }
  return out.join('\n');
}
