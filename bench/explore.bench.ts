/**
 * The explorer's throughput (issue 13's targets: ≥ 5,000 schedules/s on one core for the two-actor
 * library configurations, ≥ 1.8× with --workers 2). Every line runs the compiled build (dist/, what
 * `zaplab explore` and the package run) when it is at least as new as every source file; from sources
 * (no build, or a stale one: `npm run build`) the lines say so in their names, and the worker threads
 * then get tsx's CommonJS copy of the model, several times slower.
 *   - steady state, 1 core: the model program built once (VM, setup, snapshot), then whole searches
 *     repeated, each schedule starting from a restore of the snapshot: what a long exploration runs at.
 *     Timed after 1.5 s of the same searches: V8 needs about that long to optimize the code (in a
 *     fresh process the first 0.5 s ran 7-12× slower than later, the first 1-2 s, some 3,000-5,000
 *     schedules, below full speed; --trace-opt counted ~4.5 s of optimizing-compiler time in the first
 *     6 s), so the first configuration measured after a single warm-up search reported its warm-up;
 *   - one search, 1 core: `exploreDesign` as the CLI runs it, its one build included (small spaces are
 *     dominated by it);
 *   - a snapshot restore on its own;
 *   - workers: one large search (48,620 schedules) in one thread, then split on 2 worker threads. A
 *     worker thread's first run pays its start-up: loading the model's modules and V8's warm-up of its
 *     code (the first ~1,000 schedules run several times slower than later ones, in any thread), a fixed
 *     cost of seconds per thread. The threads are kept (openExplorePool) and the same search run again:
 *     the steady-state speed-up, what a long `zaplab explore --workers 2` gets after its first seconds,
 *     is the target line; the first run's speed-up and the start-up cost are printed beside it, and the
 *     cores the process got during the 2-worker run (CPU time / wall time: below 2, the machine's other
 *     load took a share of the second core). The 1-thread and 2-worker runs alternate, twice.
 * Schedules are executions (complete, cut by the sleep sets or a bound, or violating).
 */
import type { ExploreConfig } from '../src/explore/config.ts';
import * as config from '../src/explore/config.ts';
import * as runMod from '../src/explore/run.ts';
import * as parMod from '../src/explore/run_parallel.ts';
import * as progMod from '../src/explore/program.ts';
import * as schedMod from '../src/explore/scheduler.ts';
import type { BenchLine } from './report.ts';
import { buildDist } from './dist.ts';
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';

interface Mods {
  loadExploreConfig: typeof config.loadExploreConfig;
  exploreConfig: typeof runMod.exploreConfig;
  exploreDesign: typeof runMod.exploreDesign;
  executions: typeof runMod.executions;
  searchOptions: typeof runMod.searchOptions;
  exploreConfigParallel: typeof parMod.exploreConfigParallel;
  openExplorePool: typeof parMod.openExplorePool;
  ModelProgram: typeof progMod.ModelProgram;
  explore: typeof schedMod.explore;
}

const fromSources = (): Mods => ({ ...config, ...runMod, ...parMod, ...progMod, ...schedMod });

/** The explorer's modules: dist/'s when fresh, else these sources; and which. */
async function exploreModules(): Promise<{ from: string; m: Mods }> {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const dist = `${root}dist/explore/`;
  if (!existsSync(`${dist}run_parallel.js`))
    return { from: 'sources: no dist/, npm run build', m: fromSources() };
  const why = buildDist();
  if (why !== null) return { from: `sources: ${why}`, m: fromSources() };
  const load = async (f: string) => (await import(pathToFileURL(dist + f).href)) as Partial<Mods>;
  const parts = await Promise.all(
    ['config.js', 'run.js', 'run_parallel.js', 'program.js', 'scheduler.js'].map(load),
  );
  return { from: 'dist', m: Object.assign({}, ...parts) as Mods };
}

/** two-actor configurations (two-vcpus without reduction: all 924 interleavings) */
const TWO_ACTOR: [string, boolean][] = [
  ['notifier-vs-fault', false],
  ['delete-vs-fault', false],
  ['move-vs-fault', false],
  ['flags-vs-dirty-log', false],
  ['two-vcpus', true],
];
/**
 * The scale-out workload: two-vcpus with a third fault per vCPU, every interleaving (no reduction):
 * 9 + 9 steps, C(18,9) = 48,620 schedules, big enough that the workers' start-up does not dominate.
 */
function scaleWorkload(m: Mods): ExploreConfig {
  const c = load(m, 'two-vcpus');
  const more = (i: number, off: number) => ({
    ...c.actors[i]!,
    steps: [...c.actors[i]!.steps, { access: { region: 'ram', offset: off } }],
  });
  return {
    ...c,
    name: 'two-vcpus, 3 faults each',
    actors: [more(0, 0x3000), more(1, 0x7000)],
  } as ExploreConfig;
}
const TARGET_1 = 5000;
const TARGET_2 = 1.8;

function load(m: Mods, name: string): ExploreConfig {
  const r = m.loadExploreConfig(name);
  if (!r.ok) throw new Error(r.error);
  return r.config;
}

/**
 * Repeat `f` (returning schedules run) for at least `ms`: schedules per second, after repeating it
 * for `warmMs` first (at least once).
 */
function rate(ms: number, f: () => number, warmMs = 0): number {
  const w0 = performance.now();
  do f();
  while (performance.now() - w0 < warmMs);
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < ms) n += f();
  return n / ((performance.now() - t0) / 1000);
}

/** Wall time of `f` in seconds, with the CPU time the whole process (its worker threads too) used meanwhile. */
async function timed<T>(f: () => Promise<T> | T): Promise<{ s: number; cpu: number; out: T }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const out = await f();
  const s = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return { s, cpu: (c.user + c.system) / 1e6, out };
}

export async function run(): Promise<BenchLine[]> {
  const lines: BenchLine[] = [];
  const { from, m } = await exploreModules();
  const tag0 = from === 'dist' ? 'dist' : `from ${from}`;
  for (const [name, noReduction] of TWO_ACTOR) {
    const cfg = load(m, name);
    const opts = m.searchOptions(cfg, { noReduction });
    const prog = new m.ModelProgram(cfg, 'quirk');
    const steady = rate(2000, () => m.executions(m.explore(prog, opts).stats), 1500);
    const tag = `${name}${noReduction ? ' (no reduction)' : ''} [${tag0}]`;
    lines.push({
      name: `${tag}: schedules/s, 1 core, steady`,
      value: steady,
      unit: 'schedules/s',
      target: { atLeast: TARGET_1 },
    });
    const once = rate(1000, () => m.exploreDesign(cfg, 'quirk', { noReduction }).executions);
    lines.push({
      name: `${tag}: schedules/s, 1 core, one search with its build`,
      value: once,
      unit: 'schedules/s',
    });
  }
  const prog = new m.ModelProgram(load(m, 'delete-vs-fault'), 'quirk');
  m.explore(prog, { maxExecutions: 1 });
  const restores = rate(1000, () => {
    for (let i = 0; i < 100; i++) prog.reset();
    return 100;
  });
  lines.push({ name: `delete-vs-fault [${tag0}]: snapshot restores/s`, value: restores, unit: 'restores/s' });
  lines.push(...(await scaleOut(m, tag0)));
  return lines;
}

/** The workers' lines (see the header): 1 thread warm against 2 kept workers, alternating, twice. */
async function scaleOut(m: Mods, tag0: string): Promise<BenchLine[]> {
  const big = scaleWorkload(m);
  const ro = { noReduction: true, designs: ['quirk'] };
  m.exploreConfig(load(m, 'two-vcpus'), ro); // this thread's warm-up of the code
  const one = async () => {
    const r = await timed(() => m.exploreConfig(big, ro).designs[0]!.executions);
    return { ...r, n: r.out };
  };
  const two = async (pool: ReturnType<Mods['openExplorePool']>) => {
    const r = await timed(
      async () => (await m.exploreConfigParallel(big, ro, 2, pool)).designs[0]!.executions,
    );
    return { ...r, n: r.out };
  };
  const load0 = loadavg()[0]!;
  const o1 = await one();
  // the first run on new threads: their start-up (opening the pool) and warm-up included
  const first = await timed(async () => {
    const pool = m.openExplorePool(2);
    return { pool, r: await two(pool) };
  });
  const pool = first.out.pool;
  try {
    const w1 = await two(pool);
    const o2 = await one();
    const w2 = await two(pool);
    for (const r of [o2, first.out.r, w1, w2])
      if (r.n !== o1.n)
        throw new Error(`explore bench: ${o1.n} schedules in one thread, ${r.n} on two workers`);
    const oneS = o1.s + o2.s;
    const steadyS = w1.s + w2.s;
    const cores = (w1.cpu + w2.cpu) / steadyS;
    const n = o1.n;
    const w = `scale-out workload [${tag0}]`;
    return [
      { name: `${w} (${n} schedules): schedules/s, 1 thread`, value: (2 * n) / oneS, unit: 'schedules/s' },
      {
        name: `${w}: schedules/s, --workers 2, first run on new threads (start-up included)`,
        value: n / first.s,
        unit: 'schedules/s',
      },
      {
        name: `${w}: start-up and warm-up of 2 new worker threads (first run minus a steady run)`,
        value: first.s - steadyS / 2,
        unit: 's',
      },
      {
        name: `${w}: schedules/s, --workers 2, steady (threads kept from the first run)`,
        value: (2 * n) / steadyS,
        unit: 'schedules/s',
      },
      {
        name: `${w}: cores the process got in the steady 2-worker runs (load average before: ${load0.toFixed(1)})`,
        value: cores,
        unit: 'cores',
      },
      {
        name: `${w}: speed-up with --workers 2, first run (start-up included)`,
        value: oneS / 2 / first.s,
        unit: '×',
      },
      {
        name: `${w}: speed-up with --workers 2, steady`,
        value: oneS / steadyS,
        unit: '×',
        target: { atLeast: TARGET_2 },
      },
    ];
  } finally {
    await pool.close();
  }
}
