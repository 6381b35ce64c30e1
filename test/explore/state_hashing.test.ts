/**
 * State hashing on model programs: at choice points where the whole state is in the object graph (no
 * actor inside a model call or between the halves of a step), the engine gives the scheduler a key
 * (src/kvm/state_hash.ts over the model, the checker and the oracle, plus each actor's position), and a
 * state seen before is pruned. Every library configuration stays exhausted and clean with it, with these
 * exact counts; every historical bug is still found with the same invariant and shortest schedule.
 */
import { describe, expect, it } from 'vitest';
import { exploreLibraryNames, loadExploreConfig, type ExploreConfig } from '../../src/explore/config.ts';
import { exploreConfig } from '../../src/explore/run.ts';
import { exploreConfigParallel } from '../../src/explore/run_parallel.ts';
import type { BugName } from '../../src/kvm/host_profile.ts';
import { stateHash } from '../../src/kvm/state_hash.ts';

function load(name: string, bug?: BugName): ExploreConfig {
  const r = loadExploreConfig(name);
  if (!r.ok) throw new Error(r.error);
  const c = r.config;
  return bug === undefined
    ? c
    : { ...c, scenario: { ...c.scenario, host: { ...c.scenario.host, bugs: [bug] } } };
}

describe('stateHash', () => {
  it('equal graphs hash equal; any value, key, order, sharing or typed-array byte changes it', () => {
    const mk = () => {
      const shared = { n: 1 };
      return { a: shared, b: shared, m: new Map([[1, 'x']]), t: new Uint8Array([1, 2, 3]), s: 'v' };
    };
    const h = stateHash([mk()]);
    expect(stateHash([mk()])).toBe(h);
    const changes: ((o: ReturnType<typeof mk>) => void)[] = [
      (o) => (o.a.n = 2),
      (o) => (o.b = { n: 1 }), // same values, no longer shared
      (o) => o.m.set(2, 'y'),
      (o) => (o.t[2] = 4),
      (o) => (o.s = 'w'),
    ];
    for (const f of changes) {
      const o = mk();
      f(o);
      expect(stateHash([o])).not.toBe(h);
    }
    // a skipped property does not count
    const o1 = mk();
    const o2 = mk();
    o2.s = 'other';
    const skip = (o: object) => ({ skip: new Map([[o, new Set(['s'])]]) });
    expect(stateHash([o1], skip(o1))).toBe(stateHash([o2], skip(o2)));
    expect(stateHash([o1])).not.toBe(stateHash([o2]));
  });
});

/**
 * config, design → [executions, complete, distinct states, pruned] with state hashing. Since a kick or
 * request IPI is a VM exit of a vCPU in the guest (memslots_updated_kick.test.ts), schedules that differ
 * only in whether the vCPU was in the guest at a kick end in different `exits` counts, so fewer states merge.
 */
const COUNTS: [string, string, [number, number, number, number]][] = [
  ['delete-vs-fault', 'quirk', [64, 57, 29, 7]],
  ['delete-vs-fault', 'quirk-off', [88, 82, 33, 6]],
  ['notifier-vs-fault', 'quirk', [10, 8, 9, 2]],
  ['flags-vs-dirty-log', 'quirk', [64, 60, 35, 4]],
  ['vfio-memtype', 'quirk', [42, 15, 17, 27]],
  ['vfio-memtype', 'quirk-off', [18, 5, 17, 13]],
];

describe('state hashing on the library', () => {
  for (const name of exploreLibraryNames())
    it(`${name}: exhausted and clean under every design with state hashing`, () => {
      const r = exploreConfig(load(name), { stateHashing: true });
      for (const d of r.designs)
        expect([d.design, d.violation, d.stats.violating, d.stats.exhausted]).toEqual([
          d.design,
          null,
          0,
          true,
        ]);
    }, 120_000);

  it('exact counts: what the pruning saved', () => {
    for (const [name, design, want] of COUNTS) {
      const d = exploreConfig(load(name), { stateHashing: true, designs: [design] }).designs[0]!;
      expect([name, design, d.executions, d.stats.complete, d.stats.states, d.stats.statePruned]).toEqual([
        name,
        design,
        ...want,
      ]);
    }
  }, 120_000);

  it('the bugs are still found: the same invariant and shortest schedule as without hashing', () => {
    const cases: [string, BugName][] = [
      ['notifier-vs-fault', 'fault-no-seq-recheck'],
      ['delete-vs-fault', 'precise-zap-no-flush'],
      ['delete-vs-fault', 'fault-ignores-invalid-slot'],
      ['gmem-flags-vs-fault', 'gmem-flag-clear-uaf'],
      ['shadow-delete-vs-access', 'shadow-2019-precise-zap'],
      ['shadow-paging-unplug-vs-access', 'shadow-leafs-only-zap'],
      ['vfio-memtype', 'vfio-2019-memtype'],
    ];
    for (const [name, bug] of cases) {
      const cfg = load(name, bug);
      const verdict = (o: { stateHashing?: boolean }) =>
        exploreConfig(cfg, o).designs.map((d) => [
          d.design,
          d.violation?.invariant ?? null,
          d.violation?.schedule.length ?? null,
        ]);
      const plain = verdict({});
      expect([name, bug, plain.some((v) => v[1] !== null)]).toEqual([name, bug, true]);
      expect([name, bug, verdict({ stateHashing: true })]).toEqual([name, bug, plain]);
    }
  }, 300_000);

  it('split across workers: the same verdict, each part pruning what it saw', async () => {
    const cfg = load('vfio-memtype');
    const r = await exploreConfigParallel(cfg, { stateHashing: true, designs: ['quirk'] }, 0);
    const d = r.designs[0]!;
    expect([d.violation, d.stats.exhausted, d.stats.statePruned > 0]).toEqual([null, true, true]);
  }, 120_000);
});
