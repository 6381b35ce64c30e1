/**
 * The partitioned search adds up to the whole one: on toy programs with known counts, for every split
 * depth, the merged counts equal the sequential search's (with and without sleep sets, with preemption
 * and step bounds, sharded), and a violation's verdict (the shortest schedule, the first of the
 * shortest in search order) is the same.
 */
import { describe, expect, it } from 'vitest';
import { explore, type Choice, type ExploreOptions, type Program } from './scheduler.ts';
import { explorePartitioned, mergeParts, splitSearch, itemOptions } from './partition.ts';
import { fp, threads } from '../../test/explore/toy_programs.ts';

/** Thread 0 sets a flag for one step; thread 2 fails when it sees it (the shortest schedule has 2 steps). */
function race(): Program<string> {
  return {
    run(ctl) {
      const len = [3, 2, 2];
      const pc = [0, 0, 0];
      let flag = 0;
      let cur = -1;
      let n = 0;
      for (;;) {
        const enabled: Choice[] = [];
        for (let a = 0; a < 3; a++) if (pc[a]! < len[a]!) enabled.push({ actor: a, fp: fp(1) });
        if (enabled.length === 0) return { ending: 'complete', steps: n };
        const i = ctl.choose(enabled, cur);
        if (i < 0) return { ending: 'cut', steps: n };
        cur = enabled[i]!.actor;
        n++;
        if (cur === 0) flag = pc[0] === 1 ? 1 : 0;
        if (cur === 1) flag = pc[1] === 0 ? 1 : flag;
        if (cur === 2 && flag === 1) return { ending: 'violation', violation: `seen at step ${n}`, steps: n };
        pc[cur]!++;
      }
    },
  };
}

const CASES: [string, () => Program<string>, ExploreOptions, number][] = [
  ['2×4 dependent', () => threads(2, 4, true), {}, 70],
  ['2×4 independent, no reduction', () => threads(2, 4, false), { noReduction: true }, 70],
  ['2×4 independent, sleep sets', () => threads(2, 4, false), {}, 1],
  ['3×2 independent, sleep sets', () => threads(3, 2, false), {}, 1],
  ['3×2 dependent', () => threads(3, 2, true), {}, 90],
  ['2×4 dependent, 1 preemption', () => threads(2, 4, true), { maxPreemptions: 1 }, 8],
  ['2×3 dependent, 4 steps', () => threads(2, 3, true), { maxSteps: 4 }, 0],
  ['2×3 dependent, shard 1/2', () => threads(2, 3, true), { shard: { index: 1, count: 2 } }, 10],
];

describe('partitioned search = the whole search', () => {
  for (const [name, prog, opts, complete] of CASES)
    it(`${name}: the same counts at every split depth`, () => {
      const whole = explore(prog(), opts);
      expect(whole.stats.complete).toBe(complete);
      for (const items of [1, 2, 3, 5, 8, 20, 1000]) {
        const p = explorePartitioned(prog(), opts, items);
        expect([items, p.stats]).toEqual([items, whole.stats]);
      }
    });

  it('the split yields at least the items asked for, at the shallowest depth that does', () => {
    const s = splitSearch(threads(2, 4, true), {}, 5);
    // depth 1: 2 prefixes, depth 2: 4, depth 3: 8
    expect([s.depth, s.prefixes.length]).toEqual([3, 8]);
    expect(s.prefixes.slice(0, 3)).toEqual([
      [0, 0, 0],
      [0, 0, 1],
      [0, 1, 0],
    ]);
    expect(s.head.stats.complete).toBe(0);
    const parts = [s.head, ...s.prefixes.map((p) => explore(threads(2, 4, true), itemOptions({}, p)))];
    expect(parts.slice(1).map((r) => r.stats.complete)).toEqual([5, 10, 10, 10, 10, 10, 10, 5]);
    expect(mergeParts(parts).stats.complete).toBe(70);
  });

  it('a prefix the search never takes is refused', () => {
    expect(() => explore(threads(2, 2, false), { prefix: [1, 0] })).toThrow(
      /prefix choice 0 at depth 1 is not one the search takes/,
    );
    expect(() => explore(threads(2, 2, true), { prefix: [5] })).toThrow(
      /prefix choice 5 at depth 0, but only 2 actors/,
    );
  });

  it('a violation: the same shortest schedule, and with shrink off the same first one', () => {
    const whole = explore(race());
    expect(whole.shortest?.schedule).toEqual([1, 2]);
    const first = explore(race(), { shrink: false });
    expect(first.shortest?.schedule).toEqual([0, 0, 0, 1, 1, 2]);
    for (const items of [1, 2, 4, 9, 50]) {
      const p = explorePartitioned(race(), {}, items);
      expect([items, p.shortest?.schedule, p.shortest?.path, p.shortest?.violation]).toEqual([
        items,
        whole.shortest?.schedule,
        whole.shortest?.path,
        whole.shortest?.violation,
      ]);
      const f = explorePartitioned(race(), { shrink: false }, items);
      expect([items, f.shortest?.schedule]).toEqual([items, first.shortest?.schedule]);
    }
  });
});
