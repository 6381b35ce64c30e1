/**
 * Toy programs for the explorer's own tests (src/explore/scheduler.test.ts, partition.test.ts): threads
 * whose numbers of interleavings are known. Test helper only (not a test file, not in the build).
 */
import type { Choice, Footprint, Program } from '../../src/explore/scheduler.ts';

/** Footprint resources of the toys: one shared variable, and each thread's own range. */
export const SHARED = 1;
export const LOCAL = 2;

/** A footprint writing (and reading) `w`, over [lo, hi) for the resources in `ranged`. */
export const fp = (w: number, lo = 0, hi = 0, ranged = 0): Footprint => ({ r: w, w, ranged, lo, hi });

/**
 * n threads of k steps; each step writes the shared variable (`shared`: all steps dependent) or the
 * thread's own range (independent threads). `hash`: offer the threads' positions as the state key.
 */
export function threads(n: number, k: number, shared: boolean, hash = false): Program<string> {
  return {
    run(ctl) {
      const pc = new Array<number>(n).fill(0);
      let cur = -1;
      let steps = 0;
      for (;;) {
        const enabled: Choice[] = [];
        for (let a = 0; a < n; a++)
          if (pc[a]! < k) enabled.push({ actor: a, fp: shared ? fp(SHARED) : fp(LOCAL, a, a + 1, LOCAL) });
        if (enabled.length === 0) return { ending: 'complete', steps };
        const i = ctl.choose(enabled, cur, hash ? pc.join(',') : undefined);
        if (i < 0) return { ending: 'cut', steps };
        cur = enabled[i]!.actor;
        pc[cur]!++;
        steps++;
      }
    },
  };
}
