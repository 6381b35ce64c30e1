/**
 * The explorer's library with no bug switch on: every configuration is explored to exhaustion within
 * its bounds under every design it allows, with zero violations and these exact counts (complete
 * schedules; the sleep sets cut the rest). A change in the model's steps, hooks or footprints that
 * changes the state space shows up here.
 */
import { describe, expect, it } from 'vitest';
import { exploreLibraryNames, loadExploreConfig, type ExploreConfig } from '../../src/explore/config.ts';
import { exploreConfig } from '../../src/explore/run.ts';

const ALL5 = ['quirk', 'quirk-off', 'vm-type', 'slot-flag', 'slot-flag+leafs'];
/** config → design → complete schedules (designs absent from a row are skipped by designsFor) */
const COUNTS: Record<string, Record<string, number>> = {
  // the precise zap yields inside its SPTE walk (tdp_mmu_iter_cond_resched), at the first resched point
  // after each zapped SPTE; no walk yields while nobody else can run
  'delete-vs-fault': { quirk: 64, 'quirk-off': 88, 'vm-type': 64, 'slot-flag': 64, 'slot-flag+leafs': 88 },
  'delete-vs-notifier-vs-fault': {
    quirk: 193,
    'quirk-off': 203,
    'vm-type': 193,
    'slot-flag': 193,
    'slot-flag+leafs': 203,
  },
  'flags-vs-dirty-log': Object.fromEntries(ALL5.map((d) => [d, 64])),
  'gmem-flags-vs-fault': { quirk: 4, 'vm-type': 4, 'slot-flag': 4, 'slot-flag+leafs': 4 },
  'gmem-punch-hole-vs-fault': { quirk: 5, 'vm-type': 5, 'slot-flag': 5, 'slot-flag+leafs': 5 },
  'move-vs-fault': { quirk: 80, 'quirk-off': 69, 'vm-type': 80, 'slot-flag': 80, 'slot-flag+leafs': 69 },
  'notifier-vs-fault': Object.fromEntries(ALL5.map((d) => [d, 10])),
  'shadow-delete-vs-access': { quirk: 4, 'quirk-off': 7, 'vm-type': 4, 'slot-flag': 4 },
  'shadow-paging-unplug-vs-access': { quirk: 10, 'quirk-off': 22, 'vm-type': 10, 'slot-flag': 10 },
  // a TD's slot deletion is always the precise zap: it yields inside the mirror and direct walks
  'tdx-delete-vs-accept': { quirk: 49, 'vm-type': 49, 'slot-flag+leafs': 49 },
  'two-vcpus': Object.fromEntries(ALL5.map((d) => [d, 1])),
  'vfio-memtype': { quirk: 75, 'quirk-off': 21, 'vm-type': 75, 'slot-flag': 75, 'slot-flag+leafs': 21 },
};
/** configurations whose preemption bound cut choices (their guarantee is "within 2 preemptions") */
const BOUNDED = new Set(['delete-vs-notifier-vs-fault']);

function load(name: string): ExploreConfig {
  const r = loadExploreConfig(name);
  if (!r.ok) throw new Error(r.error);
  return r.config;
}

describe('explore library, no bug switch: exhausted, clean, exact counts', () => {
  it('the table covers the whole library', () => {
    expect(exploreLibraryNames()).toEqual(Object.keys(COUNTS).sort());
  });
  for (const name of Object.keys(COUNTS)) {
    it(
      name,
      () => {
        const r = exploreConfig(load(name));
        const got = Object.fromEntries(r.designs.map((d) => [d.design, d.stats.complete]));
        expect(got).toEqual(COUNTS[name]);
        for (const d of r.designs) {
          expect([d.design, d.violation, d.stats.violating]).toEqual([d.design, null, 0]);
          expect(d.stats.exhausted).toBe(true);
          expect(d.stats.boundHit).toBe(BOUNDED.has(name));
          expect(d.stats.boundCut).toBe(0);
        }
      },
      120_000,
    );
  }

  it('two-vcpus: the two faults commute; without reduction all C(12,6) = 924 interleavings run', () => {
    const cfg = load('two-vcpus');
    const red = exploreConfig(cfg, { designs: ['quirk'] }).designs[0]!;
    expect([red.stats.complete, red.stats.sleepBlocked]).toEqual([1, 6]);
    const all = exploreConfig(cfg, { designs: ['quirk'], noReduction: true }).designs[0]!;
    expect([all.stats.complete, all.stats.sleepBlocked, all.violation]).toEqual([924, 0, null]);
  }, 120_000);

  it('shards split the space: the parts add up to the whole', () => {
    const cfg = load('delete-vs-fault');
    // the first choice is vCPU 0 (24 schedules follow) or the VMM (40): two shards, one each
    const parts = [0, 1].map(
      (i) => exploreConfig(cfg, { designs: ['quirk'], shard: { index: i, count: 2 } }).designs[0]!,
    );
    expect(parts.map((p) => p.stats.complete).reduce((a, b) => a + b, 0)).toBe(64);
    expect(parts.map((p) => p.stats.complete)).toEqual([24, 40]);
  });
});
