/**
 * `zaplab report <results.json…> --html report.html --svg dir/`: the report (charts, cost model) from
 * saved results: a sweep (`sweep --json`), a `compare --json`, a `replay --json`, and/or a Chrome trace
 * (`--trace`) for the per-vCPU timeline (src/report/build.ts does the work, loaded when the command runs).
 * Unreadable or unrecognised input exits 2 with one line naming the file.
 */
import type { Command } from 'commander';
import type { ReportDoc, TimelineDoc } from '../report/report_data.ts';
import { checkOutputDir, checkOutputFile } from '../report/output_files.ts';

export function registerReport(program: Command, die: (msg: string) => never): void {
  program
    .command('report')
    .description(
      'HTML/SVG report from saved results: sweep --json, compare --json, replay --json, --trace files',
    )
    .argument('<results...>', 'JSON files')
    .option('--html <file>', 'write the self-contained HTML report')
    .option('--svg <dir>', 'write each chart as an SVG file into this directory')
    .action(async (files: string[], opts: { html?: string; svg?: string }) => {
      const { loadInput, buildReport, writeBuilt } = await import('../report/build.ts');
      const { ReportInputError } = await import('../report/report_data.ts');
      if (!opts.html && !opts.svg) die('report: nothing to write: give --html <file> and/or --svg <dir>');
      if (opts.html !== undefined) checkOutputFile('--html', opts.html);
      if (opts.svg !== undefined) checkOutputDir('--svg', opts.svg);
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
