/**
 * Text and JSON for `zaplab replay`: the inputs read, the compare table (report/text.ts's, unchanged),
 * the memslot answers, observed vs modelled for the traced design, and each difference with its time and
 * the memslot call that opened its segment. The JSON is `compare --json`'s shape plus a `replay` section.
 * Model-only file.
 */
import Table from 'cli-table3';
import { formatCompare, type Style } from '../report/text.ts';
import type { ParseReport } from './events.ts';
import type { ReplayResult } from './replay.ts';

const n = (x: number): string => x.toLocaleString('en-US');

function inputLine(r: ParseReport): string {
  const unknown = Object.values(r.unknown).reduce((a, b) => a + b, 0);
  const parts = [`${n(r.lines)} lines`];
  if (unknown) parts.push(`${n(unknown)} records of unused events skipped`);
  if (r.other) parts.push(`${n(r.other)} non-record lines`);
  if (r.filtered) parts.push(`${n(r.filtered)} of other pids filtered`);
  if (r.malformed.length) parts.push(`${r.malformed.length} malformed`);
  const miss = Object.entries(r.missingFields);
  if (miss.length) parts.push(`fields missing: ${miss.map(([k, v]) => `${k} ×${v}`).join(', ')}`);
  return `  ${r.file}: ${parts.join(', ')}`;
}

export function formatReplay(r: ReplayResult, st: Style, maxList = 20): string {
  const out: string[] = [];
  out.push(`replay of ${n(r.events)} events from:`);
  for (const i of r.inputs) {
    out.push(inputLine(i));
    for (const m of i.malformed.slice(0, 5)) out.push(`    ${m}`);
    for (const note of i.notes) out.push(`    note: ${note}`);
  }
  out.push(`faults from: ${r.faultSource}`);
  out.push(formatCompare(r.runs, r.skipped, st).trimEnd());
  const d = r.answers.disagreements;
  out.push(
    `memslot calls: ${n(r.answers.compared)} replayed, ${d.length} answered differently by the model (design ${r.tracedDesign})`,
  );
  for (const x of d.slice(0, maxList))
    out.push(`  ${x.where} ${x.call}: kernel ${x.traced}, model ${x.model}`);
  const t = new Table({
    head: [`observed vs modelled (${r.observed.design}, the traced kernel's design)`, 'trace', 'model'],
    style: { head: [], border: [], compact: true, 'padding-left': 1, 'padding-right': 0 },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
  for (const row of r.observed.rows) t.push([row.what, n(row.observed), n(row.modelled)]);
  out.push(t.toString());
  const diffs = r.observed.differences;
  if (diffs.length) {
    out.push(`differences by segment (${diffs.length}; a segment is a memslot call and what followed it):`);
    for (const x of diffs.slice(0, maxList))
      out.push(`  ${x.call}: ${x.what}: trace ${n(x.observed)}, model ${n(x.modelled)}`);
    if (diffs.length > maxList) out.push(`  … ${diffs.length - maxList} more (--json lists all)`);
  }
  if (r.impossible.length) {
    out.push(`impossible events (${r.impossible.length}):`);
    for (const x of r.impossible.slice(0, maxList)) out.push(`  ${x}`);
  }
  for (const note of r.notes) out.push(`note: ${note}`);
  return out.join('\n') + '\n';
}

/** `compare --json`'s shape (scenario, runs, skipped) plus the replay's own section. */
export function replayJson(r: ReplayResult): object {
  return {
    scenario: r.scenario,
    runs: r.runs.map((x) => ({ ...x, modelled: { ...x.modelled, label: 'modelled, not measured' } })),
    skipped: r.skipped,
    replay: {
      events: r.events,
      inputs: r.inputs,
      tracedDesign: r.tracedDesign,
      faultSource: r.faultSource,
      answers: r.answers,
      observed: r.observed,
      impossible: r.impossible,
      notes: r.notes,
    },
  };
}
