/**
 * The explorer's scheduler: stateless depth-first search over the scheduling choices of a program made
 * of actors, with sleep-set partial-order reduction, optional state hashing, step and preemption bounds,
 * and a random mode (PCT, Burckhardt et al., ASPLOS 2010).
 *
 * Stateless: every schedule is re-executed from the program's initial state (`Program.run`), and the
 * program asks the scheduler for each choice (`Controller.choose`). That inversion lets a program stop
 * an actor in the middle of a synchronous model call (inside a stepping hook) and run other actors
 * there: the program's own loop is re-entrant; the scheduler only sees a sequence of choice points.
 *
 * Sleep sets (Godefroid 1996): after exploring the choice t at a node, t goes to sleep in the later
 * siblings' subtrees as long as only steps independent of t run; an execution whose every enabled actor
 * sleeps is cut (it is equivalent to one already explored). Independence comes from the footprints the
 * steps declare (see `independent`).
 *
 * Model-only file (no kernel counterpart).
 */
import { prng } from '../scenario/prng.ts';

export { prng };

/** What a step reads and writes. Bits name resources; `lo..hi` is the range of the ranged ones. */
export interface Footprint {
  r: number;
  w: number;
  /** ranged resources touched (a subset of r|w), over [lo, hi) */
  ranged: number;
  lo: number;
  hi: number;
}

/** One schedulable step of one actor, as offered at a choice point. */
export interface Choice {
  actor: number;
  fp: Footprint;
}

/** Two steps commute if neither writes what the other touches (ranged resources only where the ranges meet). */
export function independent(a: Footprint, b: Footprint): boolean {
  const clash = (a.w & (b.r | b.w)) | (b.w & a.r);
  if (clash === 0) return true;
  // Every clashing resource must be ranged in both, with disjoint ranges.
  if ((clash & ~(a.ranged & b.ranged)) !== 0) return false;
  return a.hi <= b.lo || b.hi <= a.lo;
}

/** The program's view of the scheduler. */
export interface Controller {
  /**
   * Pick one of `enabled` (never empty); returns its index, or -1 to cut the execution here (a bound,
   * a sleep-set block or a state already explored). `current` is the actor that ran the last step (-1 at
   * the start); switching away from it while it is enabled is a preemption. `stateKey`, when given,
   * identifies the whole state (model and actors) for state hashing.
   */
  choose(enabled: readonly Choice[], current: number, stateKey?: string): number;
}

/** How one execution ended. */
export type Ending = 'complete' | 'cut' | 'violation';

/** A program the scheduler can explore: each call runs one execution from the initial state. */
export interface Program<V> {
  run(ctl: Controller): { ending: Ending; violation?: V; steps: number };
}

export interface ExploreOptions {
  /** explore without sleep sets (every interleaving) */
  noReduction?: boolean;
  /** cut an execution after this many steps (default unbounded) */
  maxSteps?: number;
  /** at most this many preemptions per execution (default unbounded) */
  maxPreemptions?: number;
  /** prune a state seen before (needs the program to pass state keys) */
  stateHashing?: boolean;
  /** stop after this many executions (the result says the bound was reached) */
  maxExecutions?: number;
  /** after a violation, keep searching for shorter ones (default true); false = stop at the first */
  shrink?: boolean;
  /** only explore executions whose first choice index ≡ shard (mod shards) (deterministic split) */
  shard?: { index: number; count: number };
  /**
   * Explore only the executions that start with these choice indexes, exactly as the whole search
   * would explore them (the choices before each prefix choice count as explored, for the sleep sets).
   * A worker's share of a partitioned search (see `split`).
   */
  prefix?: readonly number[];
  /**
   * Partition instead of explore: stop every execution at this depth and return its prefix (choice
   * indexes) in `prefixes`; the stats count only the executions that ended above it. The prefixes,
   * explored with `prefix`, add up to the whole search.
   */
  splitDepth?: number;
}

export interface ExploreStats {
  /** executions that ran to the end with every actor done (or blocked) */
  complete: number;
  /** executions cut by the sleep sets (equivalent to an explored one) */
  sleepBlocked: number;
  /** executions cut because their state was seen before */
  statePruned: number;
  /** executions cut by the step or preemption bound */
  boundCut: number;
  /** executions that ended in a violation */
  violating: number;
  /** distinct state keys seen (0 without state hashing) */
  states: number;
  /** the search space was exhausted within the bounds */
  exhausted: boolean;
  /** choices never taken because of the preemption or step bound (the guarantee is bounded) */
  boundHit: boolean;
}

export interface Found<V> {
  violation: V;
  /** the actor of every step, in order, up to and including the violating step */
  schedule: number[];
  /** the choice index of every step (the search's order: a smaller path in lexicographic order came first) */
  path: number[];
}

export interface ExploreResult<V> {
  stats: ExploreStats;
  /** the shortest violating schedule found, if any (of the shortest, the first in search order) */
  shortest: Found<V> | null;
  /** with `splitDepth`: the prefixes below it, in search order */
  prefixes?: number[][];
}

interface Node {
  enabled: Choice[];
  sleep: Choice[];
  done: Choice[];
  /** index into enabled of the choice taken */
  cur: number;
  /** preemptions used before this node */
  pre: number;
  /** actor that ran the step before this node */
  prev: number;
}

const CUT = -1;

/** Depth-first search over every schedule of `prog` within the bounds. */
export function explore<V>(prog: Program<V>, opts: ExploreOptions = {}): ExploreResult<V> {
  const stats: ExploreStats = {
    complete: 0,
    sleepBlocked: 0,
    statePruned: 0,
    boundCut: 0,
    violating: 0,
    states: 0,
    exhausted: false,
    boundHit: false,
  };
  const reduce = opts.noReduction !== true;
  let maxSteps = opts.maxSteps ?? Infinity;
  const maxPre = opts.maxPreemptions ?? Infinity;
  const maxExec = opts.maxExecutions ?? Infinity;
  /**
   * state key → how it was explored: sleep set, preemptions used, depth. A revisit is pruned when an
   * earlier visit had a sleep set ⊆ this one, no more preemptions used and no greater depth (so it
   * explored at least everything this visit would).
   */
  const seen = new Map<string, { sleep: Choice[]; pre: number; d: number }[]>();
  const cut: { why: 'bound' | 'sleep' | 'state' | 'split' } = { why: 'bound' };
  const prefix = opts.prefix ?? [];
  const prefixes: number[][] = [];
  let stack: Node[] = [];
  let shortest: Found<V> | null = null;
  let executions = 0;

  const allowed = (n: Node, i: number): boolean => {
    const c = n.enabled[i]!;
    if (n.sleep.some((s) => s.actor === c.actor) || n.done.some((s) => s.actor === c.actor)) return false;
    if (n.pre + preempts(n, c.actor) <= maxPre) return true;
    stats.boundHit = true;
    return false;
  };
  const preempts = (n: Node, actor: number): number =>
    n.prev >= 0 && actor !== n.prev && n.enabled.some((e) => e.actor === n.prev) ? 1 : 0;

  /** A prefix node: the choices the whole search takes before the prefix's are explored already. */
  const enterPrefix = (n: Node, d: number): void => {
    const want = prefix[d]!;
    if (want >= n.enabled.length)
      throw new RangeError(
        `explore: prefix choice ${want} at depth ${d}, but only ${n.enabled.length} actors can run there`,
      );
    for (let i = 0; i < want; i++) {
      if (d === 0 && opts.shard !== undefined && i % opts.shard.count !== opts.shard.index) continue;
      if (allowed(n, i)) n.done.push(n.enabled[i]!);
    }
    if (!allowed(n, want))
      throw new RangeError(`explore: prefix choice ${want} at depth ${d} is not one the search takes`);
    n.cur = want;
  };

  const ctl = (depth: { d: number }): Controller => ({
    choose(enabled, current, key) {
      const d = depth.d;
      if (d >= maxSteps) {
        stats.boundHit = true;
        cut.why = 'bound';
        return CUT;
      }
      if (d < stack.length) {
        depth.d++;
        return stack[d]!.cur;
      }
      if (opts.splitDepth !== undefined && d >= opts.splitDepth) {
        prefixes.push(stack.map((n) => n.cur));
        cut.why = 'split';
        return CUT;
      }
      const parent = stack[d - 1];
      let sleep: Choice[] = [];
      if (reduce && parent !== undefined) {
        const t = parent.enabled[parent.cur]!;
        sleep = [...parent.sleep, ...parent.done].filter((u) => independent(u.fp, t.fp));
        // the sleeping actor's step is the one it offers now (only independent steps ran since)
        sleep = sleep.filter((u) => enabled.some((e) => e.actor === u.actor));
      }
      const pre = parent === undefined ? 0 : parent.pre + preempts(parent, parent.enabled[parent.cur]!.actor);
      if (opts.stateHashing && key !== undefined) {
        // under a preemption bound, what follows depends on who ran last too
        if (maxPre !== Infinity) key += `#${current}`;
        const prior = seen.get(key);
        const covers = (o: { sleep: Choice[]; pre: number; d: number }): boolean =>
          (maxPre === Infinity || o.pre <= pre) &&
          (maxSteps === Infinity || o.d <= d) &&
          o.sleep.every((x) => sleep.some((s) => s.actor === x.actor));
        if (prior !== undefined && prior.some(covers)) {
          cut.why = 'state';
          return CUT;
        }
        if (prior === undefined) {
          seen.set(key, [{ sleep, pre, d }]);
          stats.states++;
        } else prior.push({ sleep, pre, d });
      }
      const n: Node = { enabled: [...enabled], sleep, done: [], cur: -1, pre, prev: current };
      if (d < prefix.length) enterPrefix(n, d);
      else
        for (let i = 0; i < enabled.length; i++) {
          if (d === 0 && opts.shard !== undefined && i % opts.shard.count !== opts.shard.index) continue;
          if (allowed(n, i)) {
            n.cur = i;
            break;
          }
        }
      if (n.cur < 0) {
        // Every enabled actor sleeps (an equivalent execution was explored), or the preemption bound
        // forbids the rest.
        cut.why = enabled.some((e) => !sleep.some((s) => s.actor === e.actor)) ? 'bound' : 'sleep';
        if (cut.why === 'bound') stats.boundHit = true;
        return CUT;
      }
      stack.push(n);
      depth.d++;
      return n.cur;
    },
  });

  for (;;) {
    if (executions >= maxExec) break;
    executions++;
    const depth = { d: 0 };
    const out = prog.run(ctl(depth));
    if (out.ending === 'complete') stats.complete++;
    else if (out.ending === 'violation') {
      stats.violating++;
      const schedule = stack.slice(0, depth.d).map((n) => n.enabled[n.cur]!.actor);
      const path = stack.slice(0, depth.d).map((n) => n.cur);
      if (shortest === null || schedule.length < shortest.schedule.length)
        shortest = { violation: out.violation as V, schedule, path };
      if (opts.shrink === false) break;
      // Only shorter schedules are interesting now.
      maxSteps = Math.min(maxSteps, schedule.length - 1);
    } else if (cut.why === 'split') {
      // counted where the prefix is explored
    } else if (cut.why === 'sleep') stats.sleepBlocked++;
    else if (cut.why === 'state') stats.statePruned++;
    else stats.boundCut++;
    // Backtrack: drop the nodes below the cut, then find the deepest node with another choice.
    while (stack.length > depth.d) stack.pop();
    if (!advance(stack, allowed, opts, prefix.length)) {
      stats.exhausted = true;
      break;
    }
  }
  return opts.splitDepth === undefined ? { stats, shortest } : { stats, shortest, prefixes };
}

/** The next execution: the deepest node below `floor` (the prefix) with a choice left. */
function advance(
  stack: Node[],
  allowed: (n: Node, i: number) => boolean,
  opts: ExploreOptions,
  floor: number,
): boolean {
  while (stack.length > floor) {
    const n = stack[stack.length - 1]!;
    n.done.push(n.enabled[n.cur]!);
    const d = stack.length - 1;
    let next = -1;
    for (let i = 0; i < n.enabled.length; i++) {
      if (d === 0 && opts.shard !== undefined && i % opts.shard.count !== opts.shard.index) continue;
      if (allowed(n, i)) {
        next = i;
        break;
      }
    }
    if (next >= 0) {
      n.cur = next;
      return true;
    }
    stack.pop();
  }
  return false;
}

export interface PctOptions {
  /** executions to run */
  runs: number;
  /** bug depth d: d-1 priority change points per execution */
  depth: number;
  /** an estimate of the steps per execution (where the change points fall) */
  steps: number;
  seed: number;
  maxSteps?: number;
}

/**
 * PCT: each execution gives the actors random distinct priorities and always runs the highest-priority
 * enabled actor; at d-1 random steps the running actor drops below every other. Finds a bug of depth d
 * with probability ≥ 1/(n·k^(d-1)) per execution (n actors, k steps).
 */
export function explorePct<V>(prog: Program<V>, o: PctOptions): ExploreResult<V> {
  const stats: ExploreStats = {
    complete: 0,
    sleepBlocked: 0,
    statePruned: 0,
    boundCut: 0,
    violating: 0,
    states: 0,
    exhausted: false,
    boundHit: true,
  };
  const rand = prng(o.seed);
  let shortest: Found<V> | null = null;
  for (let run = 0; run < o.runs; run++) {
    const prio = new Map<number, number>();
    const changes = Array.from(
      { length: Math.max(0, o.depth - 1) },
      () => 1 + Math.floor(rand() * Math.max(1, o.steps)),
    );
    const schedule: number[] = [];
    const path: number[] = [];
    let low = 0;
    const out = prog.run({
      choose(enabled) {
        if (schedule.length >= (o.maxSteps ?? Infinity)) return CUT;
        for (const e of enabled) if (!prio.has(e.actor)) prio.set(e.actor, o.depth + rand());
        let best = 0;
        for (let i = 1; i < enabled.length; i++)
          if (prio.get(enabled[i]!.actor)! > prio.get(enabled[best]!.actor)!) best = i;
        const ci = changes.indexOf(schedule.length);
        if (ci >= 0) {
          // the change point: the actor about to run drops to priority d-1-i (below every initial one)
          prio.set(enabled[best]!.actor, low - ci);
          low -= o.depth;
          best = 0;
          for (let i = 1; i < enabled.length; i++)
            if (prio.get(enabled[i]!.actor)! > prio.get(enabled[best]!.actor)!) best = i;
        }
        schedule.push(enabled[best]!.actor);
        path.push(best);
        return best;
      },
    });
    if (out.ending === 'complete') stats.complete++;
    else if (out.ending === 'cut') stats.boundCut++;
    else {
      stats.violating++;
      if (shortest === null || schedule.length < shortest.schedule.length)
        shortest = { violation: out.violation as V, schedule: [...schedule], path: [...path] };
    }
  }
  return { stats, shortest };
}
