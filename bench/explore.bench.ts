/**
 * The explorer's throughput (issue 13's targets: ≥ 5,000 schedules/s on one core for the two-actor
 * library configurations, ≥ 1.8× with --workers 2).
 *   - steady state, 1 core: the model program built once (VM, setup, snapshot), then whole searches
 *     repeated, each schedule starting from a restore of the snapshot: what a long exploration runs at;
 *   - one search, 1 core: `exploreDesign` as the CLI runs it, its one build included (small spaces are
 *     dominated by it);
 *   - a snapshot restore on its own;
 *   - workers: one large search in one thread, then split on 2 worker threads (their start-up
 *     included), with the speed-up. This part runs the compiled build (dist/, what the CLI runs) when it
 *     is at least as new as every source file: its worker threads then load compiled ES modules. From
 *     sources (no build, or a stale one) the workers get tsx's CommonJS copy of the model, several times
 *     slower, and the speed-up says little; the line names which one ran.
 * Schedules are executions (complete, cut by the sleep sets or a bound, or violating).
 */
import { loadExploreConfig, type ExploreConfig } from '../src/explore/config.ts';
import { exploreConfig, exploreDesign, executions, searchOptions } from '../src/explore/run.ts';
import { exploreConfigParallel } from '../src/explore/run_parallel.ts';
import { ModelProgram } from '../src/explore/program.ts';
import { explore } from '../src/explore/scheduler.ts';
import type { BenchLine } from './report.ts';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

type ScaleOut = { exploreConfig: typeof exploreConfig; exploreConfigParallel: typeof exploreConfigParallel };

/** The explorer's modules for the scale-out lines: dist/'s when fresh, else these sources; and which. */
async function scaleOutModules(): Promise<{ from: string; mods: ScaleOut }> {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const dist = `${root}dist/explore/`;
  if (existsSync(`${dist}run_parallel.js`)) {
    const built = statSync(`${dist}run_parallel.js`).mtimeMs;
    const src = `${root}src/`;
    const newer = readdirSync(src, { recursive: true })
      .map(String)
      .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'))
      .find((f) => statSync(src + f).mtimeMs > built);
    if (newer === undefined) {
      const run = (await import(pathToFileURL(`${dist}run.js`).href)) as ScaleOut;
      const par = (await import(pathToFileURL(`${dist}run_parallel.js`).href)) as ScaleOut;
      return {
        from: 'compiled dist/',
        mods: { exploreConfig: run.exploreConfig, exploreConfigParallel: par.exploreConfigParallel },
      };
    }
    return {
      from: `sources (dist/ is older than src/${newer}: npm run build)`,
      mods: { exploreConfig, exploreConfigParallel },
    };
  }
  return { from: 'sources (no dist/: npm run build)', mods: { exploreConfig, exploreConfigParallel } };
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
function scaleWorkload(): ExploreConfig {
  const c = load('two-vcpus');
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

function load(name: string): ExploreConfig {
  const r = loadExploreConfig(name);
  if (!r.ok) throw new Error(r.error);
  return r.config;
}

/** Repeat `f` (returning schedules run) for at least `ms`: schedules per second. */
function rate(ms: number, f: () => number): number {
  f(); // warm-up
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < ms) n += f();
  return n / ((performance.now() - t0) / 1000);
}

export async function run(): Promise<BenchLine[]> {
  const lines: BenchLine[] = [];
  for (const [name, noReduction] of TWO_ACTOR) {
    const cfg = load(name);
    const opts = searchOptions(cfg, { noReduction });
    const prog = new ModelProgram(cfg, 'quirk');
    const steady = rate(2000, () => executions(explore(prog, opts).stats));
    const tag = `${name}${noReduction ? ' (no reduction)' : ''}`;
    lines.push({
      name: `${tag}: schedules/s, 1 core, steady`,
      value: steady,
      unit: 'schedules/s',
      target: { atLeast: TARGET_1 },
    });
    const once = rate(1000, () => exploreDesign(cfg, 'quirk', { noReduction }).executions);
    lines.push({
      name: `${tag}: schedules/s, 1 core, one search with its build`,
      value: once,
      unit: 'schedules/s',
    });
  }
  const prog = new ModelProgram(load('delete-vs-fault'), 'quirk');
  explore(prog, { maxExecutions: 1 });
  const restores = rate(1000, () => {
    for (let i = 0; i < 100; i++) prog.reset();
    return 100;
  });
  lines.push({ name: 'delete-vs-fault: snapshot restores/s', value: restores, unit: 'restores/s' });

  const big = scaleWorkload();
  const ro = { noReduction: true, designs: ['quirk'] };
  const { from, mods } = await scaleOutModules();
  mods.exploreConfig(load('two-vcpus'), ro); // warm-up of the module's code
  let t0 = performance.now();
  const n1 = mods.exploreConfig(big, ro).designs[0]!.executions;
  const one = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const n2 = (await mods.exploreConfigParallel(big, ro, 2)).designs[0]!.executions;
  const two = (performance.now() - t0) / 1000;
  if (n1 !== n2) throw new Error(`explore bench: ${n1} schedules in one thread, ${n2} on two workers`);
  lines.push({
    name: `scale-out workload (${n1} schedules, ${from}): schedules/s, 1 thread`,
    value: n1 / one,
    unit: 'schedules/s',
  });
  lines.push({
    name: `scale-out workload: schedules/s, --workers 2 (start-up included)`,
    value: n2 / two,
    unit: 'schedules/s',
  });
  lines.push({
    name: 'scale-out workload: speed-up with --workers 2',
    value: one / two,
    unit: '×',
    target: { atLeast: TARGET_2 },
  });
  return lines;
}
