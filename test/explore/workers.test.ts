/**
 * `--workers`: the search split into schedule prefixes and run on worker threads gives the single-thread
 * result. Every library configuration (no bug switch) under every design: the same schedules, sleep-set
 * cuts, bound cuts and flags, in this thread (workers 0: the same batches, no threads) and on 2 threads
 * for two configurations. With a bug switched on: the same verdict (invariant and shortest schedule).
 */
import { describe, expect, it } from 'vitest';
import { exploreLibraryNames, loadExploreConfig, type ExploreConfig } from '../../src/explore/config.ts';
import { exploreConfig, type ConfigResult } from '../../src/explore/run.ts';
import { batches, exploreConfigParallel } from '../../src/explore/run_parallel.ts';
import type { BugName } from '../../src/kvm/host_profile.ts';

function load(name: string, bug?: BugName): ExploreConfig {
  const r = loadExploreConfig(name);
  if (!r.ok) throw new Error(r.error);
  const c = r.config;
  return bug === undefined
    ? c
    : { ...c, scenario: { ...c.scenario, host: { ...c.scenario.host, bugs: [bug] } } };
}

const counts = (r: ConfigResult): unknown =>
  r.designs.map((d) => [d.design, d.stats, d.executions, d.violation]);
const verdicts = (r: ConfigResult): unknown =>
  r.designs.map((d) => [
    d.design,
    d.violation?.invariant ?? null,
    d.violation?.schedule ?? null,
    d.violation?.steps.map((s) => s.fn) ?? null,
  ]);

describe('--workers: the same result as one thread', () => {
  it('batches cut a list into contiguous near-equal parts', () => {
    expect(batches([1, 2, 3, 4, 5], 2)).toEqual([
      [1, 2],
      [3, 4, 5],
    ]);
    expect(batches([1, 2], 5)).toEqual([[1], [2]]);
    expect(batches([], 3)).toEqual([]);
  });

  for (const name of exploreLibraryNames())
    it(`${name}: every design, split in this thread: identical counts`, async () => {
      const cfg = load(name);
      const one = exploreConfig(cfg);
      const split = await exploreConfigParallel(cfg, {}, 0);
      expect(counts(split)).toEqual(counts(one));
      expect(split.designs.every((d) => d.workers === 0)).toBe(true);
    }, 120_000);

  it('two worker threads: identical counts (delete-vs-fault, two-vcpus without reduction)', async () => {
    for (const [name, noReduction] of [
      ['delete-vs-fault', false],
      ['two-vcpus', true],
    ] as const) {
      const cfg = load(name);
      const one = exploreConfig(cfg, { noReduction, designs: ['quirk', 'quirk-off'] });
      const two = await exploreConfigParallel(cfg, { noReduction, designs: ['quirk', 'quirk-off'] }, 2);
      expect([name, counts(two)]).toEqual([name, counts(one)]);
    }
    const tv = await exploreConfigParallel(load('two-vcpus'), { noReduction: true, designs: ['quirk'] }, 2);
    expect(tv.designs[0]!.stats.complete).toBe(924);
  }, 180_000);

  it('a bug switched on: the same invariant and shortest schedule, on threads and in this thread', async () => {
    const cases: [string, BugName][] = [
      ['delete-vs-fault', 'fault-ignores-invalid-slot'],
      ['notifier-vs-fault', 'fault-no-seq-recheck'],
    ];
    for (const [name, bug] of cases) {
      const cfg = load(name, bug);
      const one = exploreConfig(cfg);
      expect(one.designs.every((d) => d.violation !== null)).toBe(true);
      expect(verdicts(await exploreConfigParallel(cfg, {}, 0))).toEqual(verdicts(one));
      expect(verdicts(await exploreConfigParallel(cfg, {}, 2))).toEqual(verdicts(one));
      // stopping at the first violation: the first one in search order, on any number of threads
      const first = exploreConfig(cfg, { first: true });
      expect(verdicts(await exploreConfigParallel(cfg, { first: true }, 2))).toEqual(verdicts(first));
    }
  }, 180_000);

  it('refuses what cannot be split, saying why', async () => {
    const cfg = load('delete-vs-fault');
    await expect(exploreConfigParallel(cfg, { pct: { runs: 5, depth: 2, seed: 1 } }, 2)).rejects.toThrow(
      /--pct runs in one thread/,
    );
    await expect(
      exploreConfigParallel({ ...cfg, bounds: { ...cfg.bounds, executions: 10 } }, {}, 2),
    ).rejects.toThrow(/bounds.executions \(10\) caps one search and cannot be split/);
  });
});
