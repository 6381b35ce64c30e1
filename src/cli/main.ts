#!/usr/bin/env node
/**
 * The zaplab command line (commander).
 *   run <scenario>      one design (default: quirk), per-step counts and the modelled cost breakdown
 *   compare <scenario>  every policy × ABI design the scenario's VM types allow, side by side
 *   check <scenario>    compare with audits after every step (--audit full: after every access too);
 *                       exit 1 and print the violations grouped by invariant and step
 *   list / show         the scenario library
 *   memslots [script]   replay a memslot script (the first format; kept working)
 * A scenario is a library name or a path. Errors are one line (file:line:col when from a file), never a
 * stack trace; exit 2. Progress bars and colours only on a TTY.
 */
import { Command, Option } from 'commander';
import { InputFileError, MAX_SCENARIO_BYTES, readInputText } from '../scenario/input_file.ts';
import type { SingleBar } from 'cli-progress';
import { describeFile, libraryNames, resolveScenario } from '../scenario/library_files.ts';
import type { RunAudit, RunResult } from '../scenario/runner.ts';
import { designById, DESIGNS } from '../scenario/designs.ts';
import type { Style } from '../report/text.ts';
import type { TraceRecorder } from '../report/chrome_trace.ts';
import type { Scenario } from '../scenario/schema.ts';
import { registerConformance, registerHost } from './conformance_cmd.ts';
import { registerRecord, registerReplay } from './replay_cmd.ts';
import { registerSweep } from './sweep_cmd.ts';
import { registerReport } from './report_cmd.ts';
import { registerSchema } from './schema_cmd.ts';
import { progress } from './progress.ts';
import { EXIT, EXIT_HELP, exitCodeFor } from './exit_codes.ts';
import { DEFAULT_MAX_STEPS } from '../scenario/limits.ts';
import { registerExplore } from './explore_cmd.ts';
import { enUS } from '../report/en_us.ts';
import { checkOutputFile, isOutputPathError, writeOutputFile } from '../report/output_files.ts';

// Each command loads what it needs when it runs (the model, the parser, the report code): `list`, `show`
// and `--help` start without compiling or loading any of it.

const tty = process.stdout.isTTY === true;
// `zaplab schema | head`: a closed pipe ends the output, not the process with a stack trace. The exit
// status is a shell's for a process SIGPIPE killed (141), not 0: `zaplab check x | head` under pipefail
// must not report success for a run whose verdict was never known.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(EXIT.closedPipe);
  throw e;
});
const style: Style = { color: tty && !process.env['NO_COLOR'] };

interface Common {
  json?: boolean;
  trace?: string;
  param?: string[];
  maxSteps?: string;
}

function die(msg: string, code: number = EXIT.input): never {
  process.stderr.write(msg + '\n');
  process.exit(code);
}

async function load(name: string, opts: Common): Promise<Scenario> {
  // before the run: a --trace path that cannot be written is an error now, not after the run
  if (opts.trace !== undefined) checkOutputFile('--trace', opts.trace);
  const params: Record<string, string> = {};
  for (const p of opts.param ?? []) {
    const m = /^([A-Za-z_][\w-]*)=(.+)$/.exec(p);
    if (!m) die(`-p ${p}: expected name=value`, EXIT.usage);
    params[m[1]!] = m[2]!;
  }
  const maxSteps = opts.maxSteps === undefined ? DEFAULT_MAX_STEPS : Number(opts.maxSteps);
  if (!Number.isSafeInteger(maxSteps) || maxSteps < 1)
    die(`--max-steps ${opts.maxSteps}: expected a positive integer`, EXIT.usage);
  const { loadScenario } = await import('../scenario/library.ts');
  const r = loadScenario(name, params, { maxSteps });
  if (!r.ok) die(r.error);
  return r.scenario;
}

/** Exit code of finished runs: 'error' verdicts are input errors; violations fail `check`. */
function runsExitCode(runs: RunResult[], check: boolean): number {
  if (runs.some((r) => r.verdict === 'error')) return EXIT.input;
  if (check && runs.some((r) => r.verdict === 'violations')) return EXIT.violations;
  return EXIT.ok;
}

/** After the results are printed: a write that fails then loses only the trace. */
function writeTrace(rec: TraceRecorder | undefined, file: string | undefined): void {
  if (!rec || !file) return;
  writeOutputFile('--trace', file, JSON.stringify(rec.toJSON()));
  process.stderr.write(
    `trace: ${file} (${rec.events.length} events${rec.dropped ? `, ${rec.dropped} dropped` : ''}; open in https://ui.perfetto.dev)\n`,
  );
}

const jsonRun = (r: RunResult): object => ({
  ...r,
  modelled: { ...r.modelled, label: 'modelled, not measured' },
});

/** `workers` threads (default: as many as idle cores allow for the most designs), or none. */
async function startDesignWorkers(workers: number | undefined) {
  const { DesignWorkers, defaultCompareWorkers } = await import('../scenario/compare_workers.ts');
  const k = workers ?? defaultCompareWorkers(DESIGNS.length);
  return k > 0 ? new DesignWorkers(k) : undefined;
}

const newTrace = async (file: string | undefined): Promise<TraceRecorder | undefined> =>
  file ? new (await import('../report/chrome_trace.ts')).TraceRecorder() : undefined;

async function compareCmd(
  name: string,
  opts: Common & { audit?: string; workers?: string },
  check: boolean,
): Promise<void> {
  const workers = opts.workers === undefined ? undefined : Number(opts.workers);
  if (workers !== undefined && !(Number.isSafeInteger(workers) && workers >= 0 && workers <= 64))
    die(`--workers ${opts.workers}: expected an integer from 0 to 64`, EXIT.usage);
  // the worker threads start first: they load the model while this thread parses the scenario
  const pool = opts.trace === undefined ? await startDesignWorkers(workers) : undefined;
  const sc = await load(name, opts);
  const [{ compareScenarioParallel }, { formatCompare, formatViolations }] = await Promise.all([
    import('../scenario/compare_parallel.ts'),
    import('../report/text.ts'),
  ]);
  const trace = await newTrace(opts.trace);
  const b = await progress(`${check ? 'check' : 'compare'} ${sc.name}`);
  const audit = (opts.audit ?? (check ? 'steps' : 'points')) as RunAudit;
  const { runs, skipped } = await compareScenarioParallel(sc, {
    audit,
    ...(workers === undefined ? {} : { workers }),
    ...(pool ? { pool } : {}),
    ...(trace ? { trace } : {}),
    onDesign: (i, n, id) => b.design(i, n, id),
    onStep: (done, total) => b.step(done, total),
  });
  b.stop();
  if (opts.json)
    process.stdout.write(
      JSON.stringify({ scenario: sc.name, runs: runs.map(jsonRun), skipped }, null, 2) + '\n',
    );
  else {
    process.stdout.write(
      sc.description ? `${sc.name}: ${wordCut(sc.description, 98 - sc.name.length)}\n` : `${sc.name}\n`,
    );
    process.stdout.write(formatCompare(runs, skipped, style));
  }
  if (check && !opts.json)
    for (const r of runs.filter((x) => x.verdict === 'violations'))
      process.stdout.write(formatViolations(r, style));
  process.exitCode = runsExitCode(runs, check);
  writeTrace(trace, opts.trace);
}

const program = new Command();
program.name('zaplab').description('An executable model of the KVM x86 MMU memslot machinery');
program.configureOutput({ outputError: (s, write) => write(s) });
// Usage errors become EXIT.usage below (commander would exit 1, the code of "violations found").
program.exitOverride();
program.addHelpText('after', EXIT_HELP);

const WORKERS_HELP =
  'threads running designs beside the main one (default: the cores idle, by the load average or what runs now; 0 = one thread; same results)';

/** off | points (named audit points) | steps (+ after every step) | full (+ after every access) */
const AUDITS = ['off', 'points', 'steps', 'full'];

const withCommon = (c: Command): Command =>
  c
    .option('--json', 'machine-readable output')
    .option('--trace <file>', 'write a Chrome trace-event JSON (faults, zaps, flushes per vCPU; Perfetto)')
    .option('-p, --param <name=value...>', 'override a scenario parameter')
    .option(
      '--max-steps <n>',
      `refuse a timeline that unrolls (repeats multiplied out, passes counted) to more steps than this (default ${enUS(DEFAULT_MAX_STEPS)})`,
    );

withCommon(
  program
    .command('run')
    .description('run a scenario under one design')
    .argument('<scenario>', 'library name or path'),
)
  .addOption(new Option('-d, --design <id>', 'design').choices(DESIGNS.map((d) => d.id)).default('quirk'))
  .addOption(new Option('--audit <level>', 'checker audit level').choices(AUDITS).default('points'))
  .action(async (name: string, opts: Common & { design: string; audit: RunAudit }) => {
    const sc = await load(name, opts);
    const d = designById(opts.design)!;
    const [{ runScenario }, { formatRun, formatViolations }] = await Promise.all([
      import('../scenario/runner.ts'),
      import('../report/text.ts'),
    ]);
    const trace = await newTrace(opts.trace);
    const b = await progress(`run ${sc.name}`);
    b.design(0, 1, d.id);
    const r = await runScenario(sc, d, {
      audit: opts.audit,
      ...(trace ? { trace } : {}),
      onStep: (done, total) => b.step(done, total),
    });
    b.stop();
    process.stdout.write(
      opts.json
        ? JSON.stringify(jsonRun(r), null, 2) + '\n'
        : formatRun(r, style) + formatViolations(r, style),
    );
    process.exitCode = runsExitCode([r], false);
    writeTrace(trace, opts.trace);
  });

withCommon(
  program
    .command('compare')
    .description('run a scenario under every policy × ABI design, side by side')
    .argument('<scenario>', 'library name or path'),
)
  .addOption(new Option('--audit <level>', 'checker audit level').choices(AUDITS).default('points'))
  .option('-w, --workers <n>', WORKERS_HELP)
  .action((name: string, opts: Common & { audit: string }) => compareCmd(name, opts, false));

withCommon(
  program
    .command('check')
    .description('compare with audits after every step; exit 1 on an invariant violation')
    .argument('<scenario>', 'library name or path'),
)
  .addOption(
    new Option('--audit <level>', "checker audit level ('full' also audits after every access: slow)")
      .choices(AUDITS)
      .default('steps'),
  )
  .option('-w, --workers <n>', WORKERS_HELP)
  .action((name: string, opts: Common & { audit: string }) => compareCmd(name, opts, true));

program
  .command('list')
  .description('list the scenario library')
  .option('--json', 'machine-readable output')
  .action((opts: { json?: boolean }) => {
    const rows = libraryNames().map((n) => ({ name: n, description: describeFile(resolveScenario(n)!) }));
    if (opts.json) return void process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
    const w = Math.max(...rows.map((r) => r.name.length));
    for (const r of rows) process.stdout.write(`${r.name.padEnd(w)}  ${wordCut(r.description, 98 - w)}\n`);
  });

/** Cut a description at the last word boundary that fits `width` columns, marking the cut with '…'. */
function wordCut(text: string, width: number): string {
  if (text.length <= width) return text;
  const cut = text.slice(0, width - 1);
  const sp = cut.lastIndexOf(' ');
  return (sp > width / 2 ? cut.slice(0, sp) : cut).replace(/[\s,;:(—-]+$/, '') + '…';
}

/** A scenario or script file's text, or exit 2 naming the file and why (a directory, /dev/zero, …). */
function readOrDie(file: string): string {
  try {
    return readInputText(file, MAX_SCENARIO_BYTES);
  } catch (e) {
    if (e instanceof InputFileError) die(`${file}: ${e.message}`);
    throw e;
  }
}

program
  .command('show')
  .description('print a library scenario (with its source-of-realism header)')
  .argument('<scenario>', 'library name or path')
  .action((name: string) => {
    const f = resolveScenario(name);
    if (f === null) die(`${name}: no such scenario (library: ${libraryNames().join(', ')})`);
    process.stdout.write(readOrDie(f));
  });

program
  .command('memslots')
  .description('replay a memslot script (YAML/JSON) and print the slot table and generations')
  .argument('[script]', 'path to the script; the built-in demo if omitted')
  .option('--json', 'machine-readable output')
  .action(async (file: string | undefined, opts: { json?: boolean }) => {
    const { replayMemslotScript, DEMO_SCRIPT, formatReplay } = await import('./memslot_script.ts');
    let text = DEMO_SCRIPT;
    if (file !== undefined) {
      text = readOrDie(file);
    }
    const result = replayMemslotScript(text, file ?? '<demo>');
    if (!result.ok) die(result.error);
    process.stdout.write(
      opts.json ? JSON.stringify(result.replay, null, 2) + '\n' : formatReplay(result.replay),
    );
  });

program
  .command('demo')
  .description('replay the built-in memslot demo')
  .action(async () => {
    const { replayMemslotScript, DEMO_SCRIPT, formatReplay } = await import('./memslot_script.ts');
    const result = replayMemslotScript(DEMO_SCRIPT, '<demo>');
    if (result.ok) process.stdout.write(formatReplay(result.replay));
  });

registerConformance(program);
registerHost(program);
registerReplay(program);
registerRecord(program);
registerSweep(program, style, die);
registerReport(program, die);
registerSchema(program);
registerExplore(program);

program.parseAsync().catch((e: unknown) => {
  if (isOutputPathError(e)) die(e.message, EXIT.input);
  const code = exitCodeFor(e);
  if (code !== EXIT.internal) process.exit(code);
  const msg = e instanceof Error ? (e.stack ?? e.message) : String(e);
  die(`zaplab: internal error (please report it with the command line): ${msg}`, code);
});
