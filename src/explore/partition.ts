/**
 * A depth-first search cut into independent work items, for worker threads (`--workers`) and batch
 * systems: the search is run down to a split depth, every execution that reaches it becomes a prefix
 * (its choice indexes), and each prefix is explored on its own (`explore(prog, { prefix })`) exactly as
 * the whole search would explore it, sleep sets included. The parts add up to the whole search:
 *   - without a violation, the merged counts (schedules, sleep-set cuts, bound cuts, pruned) are the
 *     sequential search's, exactly;
 *   - the verdict is the same: the shortest violating schedule, of the shortest the first in search
 *     order (the lexicographically smallest choice path). After a violation each part shrinks on its
 *     own, so the counts then differ from a sequential run's (each part cuts at its own best length);
 *   - with state hashing, each part prunes only the states it saw itself (more executions than one
 *     sequential search, the same verdict).
 * Model-only file (no kernel counterpart).
 */
import {
  explore,
  type ExploreOptions,
  type ExploreResult,
  type ExploreStats,
  type Found,
  type Program,
} from './scheduler.ts';

/** The deepest split tried; two-actor configurations reach enough items long before. */
const MAX_SPLIT_DEPTH = 12;

export interface Split<V> {
  /** the executions that ended above the split depth (counted here, not in any item) */
  head: ExploreResult<V>;
  depth: number;
  prefixes: number[][];
}

/**
 * Run the search down to the shallowest depth that yields at least `items` prefixes (or the deepest
 * tried). Deterministic: the same program and options give the same prefixes.
 */
export function splitSearch<V>(prog: Program<V>, opts: ExploreOptions, items: number): Split<V> {
  let last: Split<V> | null = null;
  for (let depth = 1; depth <= MAX_SPLIT_DEPTH; depth++) {
    const head = explore(prog, { ...opts, splitDepth: depth });
    const prefixes = head.prefixes ?? [];
    last = { head, depth, prefixes };
    // no prefix reached this depth: the whole search ended above it
    if (prefixes.length >= items || prefixes.length === 0) break;
  }
  return last!;
}

/** Lexicographic order of choice paths: the order the depth-first search visits executions in. */
function pathBefore(a: readonly number[], b: readonly number[]): boolean {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i]! < b[i]!;
  return a.length < b.length;
}

/**
 * The shorter violation; of equal length, the one the sequential search meets first. `first`: the
 * search stopped at its first violation (shrink off), so the one met first wins whatever its length.
 */
export function betterFound<V>(a: Found<V> | null, b: Found<V> | null, first = false): Found<V> | null {
  if (a === null) return b;
  if (b === null) return a;
  if (!first && a.schedule.length !== b.schedule.length) return a.schedule.length < b.schedule.length ? a : b;
  return pathBefore(b.path, a.path) ? b : a;
}

/** Add up parts of one search (the head and every item); `first` as in betterFound. */
export function mergeParts<V>(parts: readonly ExploreResult<V>[], first = false): ExploreResult<V> {
  const stats: ExploreStats = {
    complete: 0,
    sleepBlocked: 0,
    statePruned: 0,
    boundCut: 0,
    violating: 0,
    states: 0,
    exhausted: true,
    boundHit: false,
  };
  let shortest: Found<V> | null = null;
  for (const p of parts) {
    const s = p.stats;
    stats.complete += s.complete;
    stats.sleepBlocked += s.sleepBlocked;
    stats.statePruned += s.statePruned;
    stats.boundCut += s.boundCut;
    stats.violating += s.violating;
    stats.states += s.states;
    stats.exhausted &&= s.exhausted;
    stats.boundHit ||= s.boundHit;
    shortest = betterFound(shortest, p.shortest, first);
  }
  return { stats, shortest };
}

/**
 * Options for exploring one item: the caller's, with the prefix. With `shrink: false` (stop at the
 * first violation) a part stops at its own first; the merge keeps the first in search order.
 */
export function itemOptions(opts: ExploreOptions, prefix: readonly number[]): ExploreOptions {
  const { splitDepth: _unused, ...rest } = opts;
  return { ...rest, prefix };
}

/** The partitioned search in this thread (what the workers do, one after another): tests and --workers 0. */
export function explorePartitioned<V>(
  prog: Program<V>,
  opts: ExploreOptions,
  items: number,
): ExploreResult<V> & { depth: number; items: number } {
  const split = splitSearch(prog, opts, items);
  const parts = [split.head, ...split.prefixes.map((p) => explore(prog, itemOptions(opts, p)))];
  return { ...mergeParts(parts, opts.shrink === false), depth: split.depth, items: split.prefixes.length };
}
