/**
 * Building the report from result documents: recognise each input (report_data.ts), draw its charts
 * (charts.ts), write the HTML (html.ts) and/or SVG files (svg.ts; vega loads only then). Used by
 * `zaplab report` and `zaplab sweep --html/--svg`. Reads results only.
 */
import { InputFileError, MAX_TEXT_BYTES, readInputText } from '../scenario/input_file.ts';
import { writeOutputFile } from './output_files.ts';
import { chartsFor, timelineChart, type Chart } from './charts.ts';
import { readDoc, ReportInputError, type ReportDoc, type TimelineDoc } from './report_data.ts';

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
export async function writeBuilt(
  r: BuiltReport,
  html: string | undefined,
  svgDir: string | undefined,
): Promise<string[]> {
  const out: string[] = [];
  if (html) {
    const { renderHtml } = await import('./html.ts');
    writeOutputFile('--html', html, renderHtml(r));
    out.push(`report: ${html} (${r.charts.length} charts, self-contained)`);
  }
  if (svgDir) {
    // vega and vega-lite load only when SVG is asked for
    const { writeSvgs } = await import('./svg.ts');
    for (const f of await writeSvgs(r.charts, svgDir)) out.push(`svg: ${f}`);
  }
  return out;
}

export function loadInput(file: string): ReportDoc | TimelineDoc {
  let text: string;
  try {
    text = readInputText(file, MAX_TEXT_BYTES);
  } catch (e) {
    if (!(e instanceof InputFileError)) throw e;
    throw new ReportInputError(`${file}: ${e.message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ReportInputError(`${file}: not JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  return readDoc(json, file);
}
