/**
 * The explorer's throughput: schedules (executions, each re-run from a freshly built VM) per second on
 * one core, for two-actor library configurations, under the default design. Target (issue 13): ≥ 5,000
 * schedules/s; the explorer rebuilds the VM per schedule (no typed-array snapshot yet), see the README.
 */
import { loadExploreConfig } from '../src/explore/config.ts';
import { exploreDesign } from '../src/explore/run.ts';
import type { BenchLine } from './report.ts';

const CONFIGS: [string, boolean][] = [
  ['notifier-vs-fault', false],
  ['delete-vs-fault', false],
  ['two-vcpus', true],
];

export async function run(): Promise<BenchLine[]> {
  const lines: BenchLine[] = [];
  for (const [name, noReduction] of CONFIGS) {
    const r = loadExploreConfig(name);
    if (!r.ok) throw new Error(r.error);
    exploreDesign(r.config, 'quirk', { noReduction }); // warm-up
    let execs = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < 3000) execs += exploreDesign(r.config, 'quirk', { noReduction }).executions;
    const s = (performance.now() - t0) / 1000;
    lines.push({ name: `${name}${noReduction ? ' (no reduction)' : ''}: schedules/s, 1 core`, value: execs / s, unit: 'schedules/s' });
  }
  return lines;
}
