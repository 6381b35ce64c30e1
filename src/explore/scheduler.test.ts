/**
 * The scheduler on toy programs whose numbers of interleavings are known: n threads of k steps give
 * (nk)! / (k!)^n schedules without reduction; with sleep sets, independent threads give one.
 */
import { describe, expect, it } from 'vitest';
import { explore, explorePct, independent, type Choice, type Program } from './scheduler.ts';
import { fp, LOCAL, SHARED, threads } from '../../test/explore/toy_programs.ts';

const binom = (n: number, k: number): number => (k === 0 ? 1 : (binom(n - 1, k - 1) * n) / k);

describe('explore: exact schedule counts on toy programs', () => {
  for (const k of [1, 2, 3, 4]) {
    it(`two threads of ${k} steps: C(${2 * k},${k}) = ${binom(2 * k, k)} schedules without reduction`, () => {
      const r = explore(threads(2, k, false), { noReduction: true });
      expect(r.stats.complete).toBe(binom(2 * k, k));
      expect(r.stats.exhausted).toBe(true);
      expect(r.stats.sleepBlocked).toBe(0);
    });
    it(`two independent threads of ${k} steps: 1 schedule with sleep sets`, () => {
      const r = explore(threads(2, k, false));
      expect(r.stats.complete).toBe(1);
      // the one alternative at the root (thread 1 first) finds thread 0 asleep at once
      expect(r.stats.sleepBlocked).toBe(k);
      expect(r.stats.exhausted).toBe(true);
    });
    it(`two dependent threads of ${k} steps: sleep sets keep all C(${2 * k},${k})`, () => {
      expect(explore(threads(2, k, true)).stats.complete).toBe(binom(2 * k, k));
    });
  }

  it('three threads of 2 steps: 6!/(2!)^3 = 90 without reduction, 1 with', () => {
    expect(explore(threads(3, 2, false), { noReduction: true }).stats.complete).toBe(90);
    expect(explore(threads(3, 2, false)).stats.complete).toBe(1);
    expect(explore(threads(3, 2, true)).stats.complete).toBe(90);
  });

  it('preemption bound: 0 preemptions = 2 schedules, 1 preemption = 2k for two threads of k steps', () => {
    expect(explore(threads(2, 3, true), { maxPreemptions: 0 }).stats.complete).toBe(2);
    expect(explore(threads(2, 3, true), { maxPreemptions: 1 }).stats.complete).toBe(6);
    expect(explore(threads(2, 4, true), { maxPreemptions: 1 }).stats.complete).toBe(8);
    expect(explore(threads(2, 3, true), { maxPreemptions: 1 }).stats.boundHit).toBe(true);
  });

  it('step bound: executions longer than the bound are cut and counted', () => {
    const r = explore(threads(2, 2, true), { maxSteps: 3 });
    expect(r.stats.complete).toBe(0);
    // every prefix of length 3 of the 6 schedules: AAB ABA ABB BAA BAB BBA
    expect(r.stats.boundCut).toBe(6);
    expect(r.stats.boundHit).toBe(true);
  });

  it('state hashing: two dependent threads of 3 steps 15 choice states, 10 executions', () => {
    const r = explore(threads(2, 3, true, true), { stateHashing: true });
    // every grid point but the final one is a choice point; each is explored once
    expect(r.stats.states).toBe(15);
    // 24 edges leave those states, 14 reach a new one: 10 executions, 2 of them over the final edges
    expect(r.stats.complete).toBe(2);
    expect(r.stats.statePruned).toBe(8);
  });

  it('shards split the first choice deterministically and cover the space together', () => {
    const a = explore(threads(2, 3, true), { shard: { index: 0, count: 2 } }).stats.complete;
    const b = explore(threads(2, 3, true), { shard: { index: 1, count: 2 } }).stats.complete;
    expect([a, b]).toEqual([10, 10]);
  });
});

/** A flag that is 1 between thread A's two steps; thread B fails if it sees it; C does 3 unrelated steps. */
function flagRace(): Program<string> {
  return {
    run(ctl) {
      const steps = [3, 2, 1];
      const pc = [0, 0, 0];
      let flag = 0;
      let cur = -1;
      let n = 0;
      for (;;) {
        const enabled: Choice[] = [];
        if (pc[0]! < steps[0]!) enabled.push({ actor: 0, fp: fp(LOCAL, 0, 1, LOCAL) });
        if (pc[1]! < steps[1]!) enabled.push({ actor: 1, fp: fp(SHARED) });
        if (pc[2]! < steps[2]!) enabled.push({ actor: 2, fp: fp(SHARED) });
        if (enabled.length === 0) return { ending: 'complete', steps: n };
        const i = ctl.choose(enabled, cur);
        if (i < 0) return { ending: 'cut', steps: n };
        cur = enabled[i]!.actor;
        n++;
        if (cur === 1) flag = pc[1] === 0 ? 1 : 0;
        if (cur === 2 && flag === 1) return { ending: 'violation', violation: 'B saw the flag', steps: n };
        pc[cur]!++;
      }
    },
  };
}

describe('explore: violations and shrinking', () => {
  it('finds the race and shrinks it to the 2-step schedule A,B', () => {
    const r = explore(flagRace());
    expect(r.shortest?.schedule).toEqual([1, 2]);
    expect(r.shortest?.violation).toBe('B saw the flag');
    expect(r.stats.violating).toBeGreaterThanOrEqual(2);
  });
  it('shrink: false stops at the first violation (C first, so it is longer)', () => {
    const r = explore(flagRace(), { shrink: false });
    expect(r.shortest?.schedule).toEqual([0, 0, 0, 1, 2]);
    expect(r.stats.violating).toBe(1);
  });
  it('PCT with depth 2 finds it, reproducibly from the seed', () => {
    const a = explorePct(flagRace(), { runs: 200, depth: 2, steps: 6, seed: 7 });
    const b = explorePct(flagRace(), { runs: 200, depth: 2, steps: 6, seed: 7 });
    expect(a.stats.violating).toBeGreaterThan(0);
    expect(a.stats).toEqual(b.stats);
    expect(a.shortest?.schedule.at(-1)).toBe(2);
  });
});

describe('independence', () => {
  it('ranged resources conflict only where the ranges meet', () => {
    expect(independent(fp(LOCAL, 0, 2, LOCAL), fp(LOCAL, 2, 4, LOCAL))).toBe(true);
    expect(independent(fp(LOCAL, 0, 3, LOCAL), fp(LOCAL, 2, 4, LOCAL))).toBe(false);
    expect(independent(fp(SHARED), fp(LOCAL, 0, 1, LOCAL))).toBe(true);
    expect(independent(fp(SHARED | LOCAL, 0, 1, LOCAL), fp(SHARED))).toBe(false);
    expect(
      independent({ r: SHARED, w: 0, ranged: 0, lo: 0, hi: 0 }, { r: SHARED, w: 0, ranged: 0, lo: 0, hi: 0 }),
    ).toBe(true);
  });
});
