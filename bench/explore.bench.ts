/**
 * The explorer's throughput (issue 13's targets: ≥ 5,000 schedules/s on one core for the two-actor
 * library configurations, ≥ 1.8× with --workers 2).
 *   - steady state, 1 core: the model program built once (VM, setup, snapshot), then whole searches
 *     repeated, each schedule starting from a restore of the snapshot: what a long exploration runs at;
 *   - one search, 1 core: `exploreDesign` as the CLI runs it, its one build included (small spaces are
 *     dominated by it);
 *   - a snapshot restore on its own;
 *   - workers: a set of searches (every design of three configurations) in one thread, then split on 2
 *     worker threads (their start-up included), with the speed-up.
 * Schedules are executions (complete, cut by the sleep sets or a bound, or violating). CPU time is
 * reported next to wall time for the 1-core figures, since this machine is shared.
 */
import { loadExploreConfig, type ExploreConfig } from '../src/explore/config.ts';
import { exploreConfig, exploreDesign, executions, searchOptions } from '../src/explore/run.ts';
import { exploreConfigParallel } from '../src/explore/run_parallel.ts';
import { ModelProgram } from '../src/explore/engine.ts';
import { explore } from '../src/explore/scheduler.ts';
import type { BenchLine } from './report.ts';

/** two-actor configurations (two-vcpus without reduction: all 924 interleavings) */
const TWO_ACTOR: [string, boolean][] = [
  ['notifier-vs-fault', false],
  ['delete-vs-fault', false],
  ['move-vs-fault', false],
  ['flags-vs-dirty-log', false],
  ['two-vcpus', true],
];
/** the scale-out workload: every design of each */
const SCALE: [string, boolean][] = [
  ['vfio-memtype', false],
  ['delete-vs-notifier-vs-fault', false],
  ['two-vcpus', true],
];
const TARGET_1 = 5000;
const TARGET_2 = 1.8;

function load(name: string): ExploreConfig {
  const r = loadExploreConfig(name);
  if (!r.ok) throw new Error(r.error);
  return r.config;
}

/** Repeat `f` (returning schedules run) for at least `ms`; schedules per wall second and per CPU second. */
function rate(ms: number, f: () => number): { wall: number; cpu: number } {
  f(); // warm-up
  let n = 0;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  while (performance.now() - t0 < ms) n += f();
  const c = process.cpuUsage(c0);
  return { wall: n / ((performance.now() - t0) / 1000), cpu: n / ((c.user + c.system) / 1e6) };
}

export async function run(): Promise<BenchLine[]> {
  const lines: BenchLine[] = [];
  for (const [name, noReduction] of TWO_ACTOR) {
    const cfg = load(name);
    const opts = searchOptions(cfg, { noReduction });
    const prog = new ModelProgram(cfg, 'quirk');
    const steady = rate(2000, () => executions(explore(prog, opts).stats));
    const tag = `${name}${noReduction ? ' (no reduction)' : ''}`;
    lines.push({ name: `${tag}: schedules/s, 1 core, steady`, value: steady.wall, unit: 'schedules/s', target: { atLeast: TARGET_1 } });
    lines.push({ name: `${tag}: schedules per CPU-second, steady`, value: steady.cpu, unit: 'schedules/s', target: { atLeast: TARGET_1 } });
    const once = rate(1000, () => exploreDesign(cfg, 'quirk', { noReduction }).executions);
    lines.push({ name: `${tag}: schedules/s, 1 core, one search with its build`, value: once.wall, unit: 'schedules/s' });
  }
  const prog = new ModelProgram(load('delete-vs-fault'), 'quirk');
  explore(prog, { maxExecutions: 1 });
  const restores = rate(1000, () => {
    for (let i = 0; i < 100; i++) prog.reset();
    return 100;
  });
  lines.push({ name: 'delete-vs-fault: snapshot restores/s', value: restores.wall, unit: 'restores/s' });

  const cfgs = SCALE.map(([name, noReduction]) => [load(name), noReduction] as const);
  let t0 = performance.now();
  let n1 = 0;
  for (const [cfg, noReduction] of cfgs) n1 += exploreConfig(cfg, { noReduction }).designs.reduce((s, d) => s + d.executions, 0);
  const one = (performance.now() - t0) / 1000;
  t0 = performance.now();
  let n2 = 0;
  for (const [cfg, noReduction] of cfgs)
    n2 += (await exploreConfigParallel(cfg, { noReduction }, 2)).designs.reduce((s, d) => s + d.executions, 0);
  const two = (performance.now() - t0) / 1000;
  if (n1 !== n2) throw new Error(`explore bench: ${n1} schedules in one thread, ${n2} on two workers`);
  lines.push({ name: `scale-out workload (${n1} schedules): schedules/s, 1 thread`, value: n1 / one, unit: 'schedules/s' });
  lines.push({ name: `scale-out workload: schedules/s, --workers 2 (start-up included)`, value: n2 / two, unit: 'schedules/s' });
  lines.push({ name: 'scale-out workload: speed-up with --workers 2', value: one / two, unit: '×', target: { atLeast: TARGET_2 } });
  return lines;
}
