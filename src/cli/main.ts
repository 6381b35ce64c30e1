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
import { readFileSync, writeFileSync } from 'node:fs';
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

// Each command loads what it needs when it runs (the model, the parser, the report code): `list`, `show`
// and `--help` start without compiling or loading any of it.

const tty = process.stdout.isTTY === true;
const style: Style = { color: tty && !process.env['NO_COLOR'] };

interface Common {
  json?: boolean;
  trace?: string;
  param?: string[];
}

function die(msg: string): never {
  process.stderr.write(msg + '\n');
  process.exit(2);
}

async function load(name: string, opts: Common): Promise<Scenario> {
  const params: Record<string, string> = {};
  for (const p of opts.param ?? []) {
    const m = /^([A-Za-z_][\w-]*)=(.+)$/.exec(p);
    if (!m) die(`--param ${p}: expected name=value`);
    params[m[1]!] = m[2]!;
  }
  const { loadScenario } = await import('../scenario/library.ts');
  const r = loadScenario(name, params);
  if (!r.ok) die(r.error);
  return r.scenario;
}

async function bar(total: number, what: string): Promise<SingleBar | null> {
  if (!process.stderr.isTTY) return null;
  const { default: cliProgress } = await import('cli-progress');
  const b = new cliProgress.SingleBar(
    {
      format: `${what} [{bar}] {value}/{total} {design}`,
      stream: process.stderr,
      clearOnComplete: true,
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  b.start(total, 0, { design: '' });
  return b;
}

function writeTrace(rec: TraceRecorder | undefined, file: string | undefined): void {
  if (!rec || !file) return;
  writeFileSync(file, JSON.stringify(rec.toJSON()));
  process.stderr.write(
    `trace: ${file} (${rec.events.length} events${rec.dropped ? `, ${rec.dropped} dropped` : ''}; open in https://ui.perfetto.dev)\n`,
  );
}

const jsonRun = (r: RunResult): object => ({
  ...r,
  modelled: { ...r.modelled, label: 'modelled, not measured' },
});

const newTrace = async (file: string | undefined): Promise<TraceRecorder | undefined> =>
  file ? new (await import('../report/chrome_trace.ts')).TraceRecorder() : undefined;

async function compareCmd(name: string, opts: Common & { audit?: string }, check: boolean): Promise<void> {
  const sc = await load(name, opts);
  const [{ compareScenario }, { designsFor }, { formatCompare, formatViolations }] = await Promise.all([
    import('../scenario/runner.ts'),
    import('../scenario/designs.ts'),
    import('../report/text.ts'),
  ]);
  const trace = await newTrace(opts.trace);
  const n = designsFor(sc).allowed.length;
  const b = await bar(n, check ? 'check' : 'compare');
  const audit = (opts.audit ?? (check ? 'steps' : 'points')) as RunAudit;
  const { runs, skipped } = await compareScenario(sc, {
    audit,
    ...(trace ? { trace } : {}),
    onDesign: (i, _n, id) => b?.update(i, { design: id }),
  });
  b?.update(n, { design: '' });
  b?.stop();
  writeTrace(trace, opts.trace);
  if (opts.json)
    process.stdout.write(
      JSON.stringify({ scenario: sc.name, runs: runs.map(jsonRun), skipped }, null, 2) + '\n',
    );
  else {
    process.stdout.write(`${sc.name}: ${sc.description ?? ''}`.slice(0, 100) + '\n');
    process.stdout.write(formatCompare(runs, skipped, style));
  }
  if (check) {
    const bad = runs.filter((r) => r.verdict === 'violations');
    if (!opts.json) for (const r of bad) process.stdout.write(formatViolations(r, style));
    if (bad.length) process.exitCode = 1;
  }
}

const program = new Command();
program.name('zaplab').description('An executable model of the KVM x86 MMU memslot machinery');
program.configureOutput({ outputError: (s, write) => write(s) });

/** off | points (named audit points) | steps (+ after every step) | full (+ after every access) */
const AUDITS = ['off', 'points', 'steps', 'full'];

const withCommon = (c: Command): Command =>
  c
    .option('--json', 'machine-readable output')
    .option('--trace <file>', 'write a Chrome trace-event JSON (faults, zaps, flushes per vCPU; Perfetto)')
    .option('-p, --param <name=value...>', 'override a scenario parameter');

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
    const b = await bar(sc.timeline.length, 'run');
    const r = await runScenario(sc, d, {
      audit: opts.audit,
      ...(trace ? { trace } : {}),
      onProgress: (i) => b?.update(i),
    });
    b?.stop();
    writeTrace(trace, opts.trace);
    process.stdout.write(
      opts.json
        ? JSON.stringify(jsonRun(r), null, 2) + '\n'
        : formatRun(r, style) + formatViolations(r, style),
    );
  });

withCommon(
  program
    .command('compare')
    .description('run a scenario under every policy × ABI design, side by side')
    .argument('<scenario>', 'library name or path'),
)
  .addOption(new Option('--audit <level>', 'checker audit level').choices(AUDITS).default('points'))
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
  .action((name: string, opts: Common & { audit: string }) => compareCmd(name, opts, true));

program
  .command('list')
  .description('list the scenario library')
  .option('--json', 'machine-readable output')
  .action((opts: { json?: boolean }) => {
    const rows = libraryNames().map((n) => ({ name: n, description: describeFile(resolveScenario(n)!) }));
    if (opts.json) return void process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
    const w = Math.max(...rows.map((r) => r.name.length));
    for (const r of rows) process.stdout.write(`${r.name.padEnd(w)}  ${r.description.slice(0, 98 - w)}\n`);
  });

program
  .command('show')
  .description('print a library scenario (with its source-of-realism header)')
  .argument('<scenario>', 'library name or path')
  .action((name: string) => {
    const f = resolveScenario(name);
    if (f === null) die(`${name}: no such scenario (library: ${libraryNames().join(', ')})`);
    process.stdout.write(readFileSync(f, 'utf8'));
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
      try {
        text = readFileSync(file, 'utf8');
      } catch {
        die(`${file}: cannot read`);
      }
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

program.parseAsync().catch((e: unknown) => die(`zaplab: ${e instanceof Error ? e.message : String(e)}`));
