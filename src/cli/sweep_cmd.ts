/**
 * `zaplab sweep <scenario> -p name=values…`: the scenario over a parameter grid × every design its VM
 * types allow (or --design), points in parallel on the worker pool (--workers), each deterministic.
 * Results stream to stderr as they finish (a progress bar on a TTY, one plain line each otherwise); stdout
 * gets the table, --csv or --json (schema zaplab-sweep/1, docs/sweep.md). --html / --svg write the report.
 * Bad specs exit 2 with one line naming the flag; a point the model cannot run at all exits 1.
 */
import type { Command } from 'commander';
import { Option } from 'commander';
import type { SingleBar } from 'cli-progress';
import { DESIGNS } from '../scenario/designs.ts';
import type { SweepResult } from '../sweep/schema.ts';
import type { RunAudit } from '../scenario/runner.ts';
import { checkOutputDir, checkOutputFile } from '../report/output_files.ts';

interface SweepOpts {
  param?: string[];
  design?: string[];
  workers?: string;
  audit: RunAudit;
  seed?: string;
  json?: boolean;
  csv?: boolean;
  html?: string;
  svg?: string;
}

export class CliError extends Error {}

// The sweep code, the model and the report libraries load only when `sweep` runs (main.ts keeps
// `list`, `show` and `--help` free of them).
const loadSweep = async () => ({
  ...(await import('../sweep/sweep.ts')),
  ...(await import('../sweep/pool.ts')),
  ...(await import('../report/sweep_text.ts')),
  ...(await import('../report/report_data.ts')),
  ...(await import('../report/build.ts')),
  cliProgress: (await import('cli-progress')).default,
});

function intOpt(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new CliError(`${flag} ${v}: expected a non-negative integer`);
  return Number(v);
}

/** A progress bar on a TTY stderr; null otherwise (then one plain line per finished run). */
function progressBar(cliProgress: typeof import('cli-progress'), total: number): SingleBar | null {
  if (process.stderr.isTTY !== true) return null;
  const bar = new cliProgress.SingleBar(
    {
      format: 'sweep [{bar}] {value}/{total} eta {eta_formatted} {last}',
      stream: process.stderr,
      clearOnComplete: true,
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { last: '' });
  return bar;
}

export async function sweepAction(name: string, opts: SweepOpts, style: { color: boolean }): Promise<void> {
  const {
    planSweep,
    runSweep,
    checkWorkers,
    defaultWorkers,
    formatSweep,
    formatSweepCsv,
    progressLine,
    readDoc,
    buildReport,
    writeBuilt,
    cliProgress,
  } = await loadSweep();
  if (opts.json && opts.csv) throw new CliError('--json and --csv: choose one');
  // before the sweep runs: a report path that cannot be written fails now, not after the runs
  if (opts.html !== undefined) checkOutputFile('--html', opts.html);
  if (opts.svg !== undefined) checkOutputDir('--svg', opts.svg);
  const workers = intOpt('--workers', opts.workers);
  const bad = workers === undefined ? null : checkWorkers(workers);
  if (bad) throw new CliError(bad);
  const seed = intOpt('--seed', opts.seed);
  const designs = opts.design?.flatMap((d) => d.split(',')).filter((d) => d !== '');
  const plan = planSweep({
    scenario: name,
    params: opts.param ?? [],
    audit: opts.audit,
    ...(designs ? { designs } : {}),
    ...(seed !== undefined ? { seed } : {}),
  });
  if (plan.tasks.length === 0)
    throw new CliError(
      `${name}: no (point, design) to run: every requested design is ruled out by the VM types`,
    );
  const bar = progressBar(cliProgress, plan.tasks.length);
  let res: SweepResult;
  try {
    res = await runSweep(plan, {
      workers: workers ?? Math.min(defaultWorkers(), plan.tasks.length),
      onResult: (done, total, r) => {
        if (bar)
          bar.update(done, {
            last: `${Object.entries(r.params)
              .map(([k, v]) => `${k}=${v}`)
              .join(' ')} ${r.design}`,
          });
        else process.stderr.write(progressLine(plan.axes, done, total, r) + '\n');
      },
    });
  } finally {
    bar?.stop();
  }
  if (opts.json) process.stdout.write(JSON.stringify(res, null, 2) + '\n');
  else if (opts.csv) process.stdout.write(formatSweepCsv(res));
  else process.stdout.write(formatSweep(res, style));
  if (opts.html || opts.svg)
    for (const line of await writeBuilt(buildReport([readDoc(res, 'sweep')]), opts.html, opts.svg))
      process.stderr.write(line + '\n');
  process.stderr.write(
    `sweep: ${plan.tasks.length} runs on ${res.run.workers} worker${res.run.workers === 1 ? '' : 's'} in ${(res.run.elapsedMs / 1000).toFixed(1)} s (wall)\n`,
  );
  if (res.failures.length) process.exitCode = 1;
}

export function registerSweep(
  program: Command,
  style: { color: boolean },
  die: (msg: string) => never,
): void {
  program
    .command('sweep')
    .description(
      'run a scenario over a parameter grid × designs, in parallel; table, CSV, JSON, HTML/SVG report',
    )
    .argument('<scenario>', 'library name or path')
    .option(
      '-p, --param <name=values...>',
      'a swept parameter: list 1G,4G,16G; range 1G..256G*2 (factor) or 8..256+8 (step)',
    )
    .option('-d, --design <ids...>', `only these designs (${DESIGNS.map((d) => d.id).join(', ')})`)
    .option(
      '-w, --workers <n>',
      'worker threads (default: the CPU count, at most the number of runs; 0 = no threads)',
    )
    .addOption(
      new Option('--audit <level>', 'checker audit level')
        .choices(['off', 'points', 'steps', 'full'])
        .default('points'),
    )
    .option('--seed <n>', "override the scenario's seed (every point uses it)")
    .option('--json', 'print the sweep document (schema zaplab-sweep/1, docs/sweep.md)')
    .option('--csv', 'print CSV (one row per point and design)')
    .option('--html <file>', 'write the self-contained HTML report')
    .option('--svg <dir>', 'write each chart as an SVG file into this directory')
    .action(async (name: string, opts: SweepOpts) => {
      try {
        await sweepAction(name, opts, style);
      } catch (e) {
        if (e instanceof CliError || (e instanceof Error && e.name === 'GridError')) die(e.message);
        throw e;
      }
    });
}
