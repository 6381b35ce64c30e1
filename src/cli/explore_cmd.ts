/**
 * `zaplab explore <config>`: every interleaving of the configuration's actors (within its bounds), per
 * zap design, checked by the invariant checker after every step; a clean run prints what was explored,
 * a violation prints the shortest schedule as a race diagram with the command that replays it.
 *   --design <ids>      comma-separated designs (default: every design the configuration allows)
 *   --json              the results as JSON (what --merge reads)
 *   --first             stop at the first violation (no shrinking)
 *   --no-reduction      every interleaving, without sleep sets
 *   --state-hashing     prune states seen before (where the whole state is in the model's objects)
 *   --pct <runs>        random mode (PCT) instead of the exhaustive search (--depth, --seed)
 *   --shard <i/N>       explore only the i-th of N deterministic parts of the space
 *   --workers <n>       split the search into schedule prefixes run on n worker threads (same result)
 *   --merge <files...>  combine --json results of shards into one verdict
 *   --bug <names>       switch historical bugs on (BUG_NAMES), on top of the configuration's own
 *   --replay <schedule> re-run one schedule (actor indexes) under one --design, step by step (--trace)
 * Exit status: 0 no violation, 1 a violation, 2 bad input.
 */
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { InputFileError, MAX_SCENARIO_BYTES, MAX_TEXT_BYTES, readInputText } from '../scenario/input_file.ts';
import type { ConfigResult } from '../explore/run.ts';
import type { BugName } from '../kvm/host_profile.ts';
import type { ExploreConfig } from '../explore/config.ts';

/** The explorer and the model, loaded when the command runs (main.ts: `--help` loads none of it). */
async function modules() {
  return {
    ...(await import('../explore/config.ts')),
    ...(await import('../explore/run.ts')),
    ...(await import('../explore/run_parallel.ts')),
    ...(await import('../sweep/pool.ts')),
    ...(await import('../explore/race_diagram.ts')),
    ...(await import('../explore/program.ts')),
    ...(await import('../explore/merge.ts')),
    ...(await import('../explore/contrast.ts')),
    ...(await import('../kvm/host_profile.ts')),
  };
}
type Mods = Awaited<ReturnType<typeof modules>>;

interface Opts {
  design?: string;
  json?: boolean;
  first?: boolean;
  reduction?: boolean;
  stateHashing?: boolean;
  pct?: string;
  depth?: string;
  seed?: string;
  shard?: string;
  workers?: string;
  merge?: boolean;
  replay?: string;
  trace?: boolean;
  bug?: string;
}

class UsageError extends Error {}

function int(s: string, what: string, min: number): number {
  if (!/^\d+$/.test(s) || Number(s) < min)
    throw new UsageError(`${what}: expected an integer ≥ ${min} (got '${s}')`);
  return Number(s);
}

export function registerExplore(program: Command): void {
  program
    .command('explore')
    .description(
      "explore every interleaving of a configuration's actors under each zap design; a bounded guarantee or the shortest race",
    )
    .argument(
      '[config...]',
      'library name or file (no argument: list the library); with --merge: JSON result files',
    )
    .option('--design <ids>', 'comma-separated design ids (default: all the configuration allows)')
    .option('--json', 'print the results as JSON')
    .option('--first', 'stop at the first violation instead of shrinking to the shortest')
    .option('--no-reduction', 'explore without sleep-set reduction')
    .option('--state-hashing', 'prune states seen before')
    .option('--pct <runs>', 'random PCT mode: this many executions')
    .option('--depth <d>', 'PCT bug depth (default 2)')
    .option('--seed <n>', 'PCT seed (default 1)')
    .option('--shard <i/N>', 'explore the i-th of N parts (0-based)')
    .option('--workers <n>', 'split the search across n worker threads (0: split, in this thread)')
    .option('--merge', 'combine the JSON results given as arguments')
    .option('--replay <schedule>', 'replay one schedule (comma-separated actor indexes) under one --design')
    .option('--trace', 'with --replay: the model trace of every step')
    .option('--bug <names>', 'comma-separated historical bug switches to turn on')
    .action(async (args: string[], opts: Opts) => {
      const m = await modules();
      try {
        process.exitCode = await run(m, args, opts);
      } catch (e) {
        if (!(e instanceof UsageError || e instanceof TypeError)) throw e;
        process.stderr.write(`zaplab explore: ${e.message}\n`);
        process.exitCode = 2;
      }
    });
}

async function run(m: Mods, args: string[], opts: Opts): Promise<number> {
  if (opts.merge) {
    if (args.length === 0) throw new UsageError('--merge needs the JSON result files');
    const merged = m.mergeResults(args.map((f) => ({ file: f, text: readOrUsage(f, MAX_TEXT_BYTES) })));
    print(m, merged, opts);
    return merged.designs.some((d) => d.violation !== null) ? 1 : 0;
  }
  if (args.length === 0) {
    process.stdout.write(m.exploreLibraryNames().join('\n') + '\n');
    return 0;
  }
  if (args.length > 1) throw new UsageError(`one configuration at a time (got ${args.join(', ')})`);
  const cfg = load(m, args[0]!, opts);
  const designs = opts.design
    ?.split(',')
    .map((d) => d.trim())
    .filter(Boolean);
  if (opts.replay !== undefined) return replay(m, args[0]!, opts, designs);
  let shard: { index: number; count: number } | undefined;
  if (opts.shard !== undefined) {
    const m = /^(\d+)\/(\d+)$/.exec(opts.shard);
    if (!m || Number(m[2]) < 1 || Number(m[1]) >= Number(m[2]))
      throw new UsageError(`--shard ${opts.shard}: expected i/N with 0 ≤ i < N`);
    shard = { index: Number(m[1]), count: Number(m[2]) };
  }
  const pct =
    opts.pct === undefined
      ? undefined
      : {
          runs: int(opts.pct, '--pct', 1),
          depth: opts.depth === undefined ? 2 : int(opts.depth, '--depth', 1),
          seed: opts.seed === undefined ? 1 : int(opts.seed, '--seed', 0),
        };
  const ro = {
    ...(designs ? { designs } : {}),
    ...(opts.reduction === false ? { noReduction: true } : {}),
    ...(opts.stateHashing ? { stateHashing: true } : {}),
    ...(opts.first ? { first: true } : {}),
    ...(pct ? { pct } : {}),
    ...(shard ? { shard } : {}),
  };
  let workers: number | undefined;
  if (opts.workers !== undefined) {
    workers = int(opts.workers, '--workers', 0);
    const bad = m.checkWorkers(workers);
    if (bad !== null) throw new UsageError(bad);
  }
  const r =
    workers === undefined ? m.exploreConfig(cfg, ro) : await m.exploreConfigParallel(cfg, ro, workers);
  print(m, r, opts);
  // where some designs fail and others are exhausted clean: the failing schedule under a clean design
  if (!opts.json && pct === undefined) {
    const why = m.formatContrast(cfg, r);
    if (why !== '') process.stdout.write(why + '\n');
  }
  return r.designs.some((d) => d.violation !== null) ? 1 : 0;
}

/** The configuration, with --bug switches added to its host. */
/** A named file's text (bounded: a directory or /dev/zero is an error naming the file, not a crash). */
function readOrUsage(file: string, maxBytes: number): string {
  try {
    return readInputText(file, maxBytes);
  } catch (e) {
    if (e instanceof InputFileError) throw new UsageError(`${file}: ${e.message}`);
    throw e;
  }
}

function load(m: Mods, name: string, opts: Opts): ExploreConfig {
  // a path is read here, bounded (loadExploreConfig, which prefers a path too, would read it unbounded)
  const loaded = existsSync(name)
    ? m.parseExploreConfig(readOrUsage(name, MAX_SCENARIO_BYTES), name)
    : m.loadExploreConfig(name);
  if (!loaded.ok) throw new UsageError(loaded.error);
  const cfg = loaded.config;
  if (opts.bug === undefined) return cfg;
  const bugs = opts.bug
    .split(',')
    .map((b) => b.trim())
    .filter(Boolean);
  for (const b of bugs)
    if (!(m.BUG_NAMES as readonly string[]).includes(b))
      throw new UsageError(`--bug ${b}: unknown (known: ${m.BUG_NAMES.join(', ')})`);
  const host = cfg.scenario.host ?? {};
  const all = [...new Set([...(host.bugs ?? []), ...bugs])] as BugName[];
  return { ...cfg, scenario: { ...cfg.scenario, host: { ...host, bugs: all } } };
}

function print(m: Mods, r: ConfigResult, opts: Opts): void {
  process.stdout.write(opts.json ? JSON.stringify(r, null, 2) + '\n' : m.formatExplore(r) + '\n');
}

function replay(m: Mods, name: string, opts: Opts, designs: string[] | undefined): number {
  if (designs?.length !== 1) throw new UsageError('--replay needs exactly one --design');
  const sched = opts.replay!.split(',').map((s) => int(s.trim(), '--replay', 0));
  const cfg = load(m, name, opts);
  const out = m.replaySchedule(cfg, designs[0]!, sched, opts.trace ? { traceSteps: true } : {});
  const actors = cfg.actors.map((a) => a.name);
  const v = out.violation;
  const view = {
    invariant: v?.id ?? '',
    message: v?.message ?? '',
    step: v?.step ?? -2,
    schedule: sched,
    steps: out.records,
    trace: v?.trace ?? [],
  };
  if (opts.json) process.stdout.write(JSON.stringify({ ending: out.ending, ...view }, null, 2) + '\n');
  else {
    process.stdout.write(m.raceDiagram(actors, view) + '\n');
    process.stdout.write(
      v ? `✗ ${v.id}: ${v.message}\n` : `${out.ending}: no violation along this schedule\n`,
    );
    if (opts.trace)
      out.records.forEach((s, i) => {
        process.stdout.write(`step ${i + 1} ${actors[s.actor]}: ${s.fn}\n`);
        for (const l of s.trace ?? []) process.stdout.write(`    ${l}\n`);
      });
  }
  return v ? 1 : 0;
}
