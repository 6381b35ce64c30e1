/**
 * `zaplab report <results.json…> --html report.html --svg dir/`: the report (charts, cost model) from
 * saved results: a sweep (`sweep --json`), a `compare --json`, a `replay --json`, and/or a Chrome trace
 * (`--trace`) for the per-vCPU timeline. `zaplab sweep --html/--svg` calls writeReports directly.
 * Unreadable or unrecognised input exits 2 with one line naming the file.
 */
import type { Command } from 'commander';
import { readFileSync, writeFileSync } from 'node:fs';
import { chartsFor, timelineChart, type Chart } from '../report/charts.ts';
import { renderHtml } from '../report/html.ts';
import { writeSvgs } from '../report/svg.ts';
import { readDoc, ReportInputError, type ReportDoc, type TimelineDoc } from '../report/report_data.ts';

export interface BuiltReport {
  title: string;
  docs: ReportDoc[];
  charts: Chart[];
}

export function buildReport(inputs: (ReportDoc | TimelineDoc)[]): BuiltReport {
  const docs = inputs.filter((d): d is ReportDoc => d.kind !== 'trace');
  const traces = inputs.filter((d): d is TimelineDoc => d.kind === 'trace');
  const charts = [...docs.flatMap(chartsFor), ...traces.map((t, i) => timelineChart(t, i))];
  const names = [...new Set(docs.map((d) => d.scenario))];
  const kind = docs[0]?.kind ?? 'trace';
  return { title: `zaplab ${kind}: ${names.join(', ') || 'trace'}`, docs, charts };
}

/** Writes the HTML and/or SVG files; returns a line per file written (for stderr). */
export async function writeBuilt(r: BuiltReport, html: string | undefined, svgDir: string | undefined): Promise<string[]> {
  const out: string[] = [];
  if (html) {
    writeFileSync(html, renderHtml(r));
    out.push(`report: ${html} (${r.charts.length} charts, self-contained)`);
  }
  if (svgDir) for (const f of await writeSvgs(r.charts, svgDir)) out.push(`svg: ${f}`);
  return out;
}

export function loadInput(file: string): ReportDoc | TimelineDoc {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ReportInputError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ReportInputError(`${file}: not JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  return readDoc(json, file);
}

export function registerReport(program: Command, die: (msg: string) => never): void {
  program
    .command('report')
    .description('HTML/SVG report from saved results: sweep --json, compare --json, replay --json, --trace files')
    .argument('<results...>', 'JSON files')
    .option('--html <file>', 'write the self-contained HTML report')
    .option('--svg <dir>', 'write each chart as an SVG file into this directory')
    .action(async (files: string[], opts: { html?: string; svg?: string }) => {
      if (!opts.html && !opts.svg) die('report: nothing to write: give --html <file> and/or --svg <dir>');
      let inputs: (ReportDoc | TimelineDoc)[];
      try {
        inputs = files.map(loadInput);
      } catch (e) {
        if (e instanceof ReportInputError) die(e.message);
        throw e;
      }
      const built = buildReport(inputs);
      if (built.charts.length === 0) die(`report: ${files.join(', ')}: no chart to draw (no runs)`);
      for (const line of await writeBuilt(built, opts.html, opts.svg)) process.stderr.write(line + '\n');
    });
}
