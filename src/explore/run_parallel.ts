/**
 * `zaplab explore --workers N`: each design's search is split into schedule prefixes (partition.ts) in
 * this thread, the prefixes go in batches to N worker threads (the one pool, src/sweep/pool.ts), and the
 * parts are merged into the same result a single-threaded run gives: the same counts when nothing is
 * violated, the same verdict (invariant, shortest schedule) when something is. Every design's batches go
 * to one pool, so the workers start once. N = 0 runs the same batches in this thread.
 * Model-only file (no kernel counterpart).
 */
import { openPool, runPool, type KeptPool } from '../sweep/pool.ts';
import type { ExploreConfig } from './config.ts';
import type { ExploreViolation } from './execution_types.ts';
import { ModelProgram } from './program.ts';
import type { ExploreTaskInput, ExploreTaskOutput } from './explore_task.ts';
import { mergeParts, splitSearch } from './partition.ts';
import {
  configResult,
  designIds,
  designResult,
  searchOptions,
  type ConfigResult,
  type ExploreRunOptions,
} from './run.ts';
import type { ExploreResult } from './scheduler.ts';

/** Prefixes wanted per worker: enough batches for the threads to even out uneven subtrees. */
const ITEMS_PER_WORKER = 24;
/** Batches per worker (a batch reuses the worker's built model across its prefixes). */
const BATCHES_PER_WORKER = 6;

const TASK = new URL('./explore_task.ts', import.meta.url);

/** Cut `items` into at most `n` contiguous batches of near-equal size. */
export function batches<T>(items: readonly T[], n: number): T[][] {
  const k = Math.max(1, Math.min(n, items.length));
  const out: T[][] = [];
  for (let i = 0; i < k; i++)
    out.push(items.slice(Math.floor((i * items.length) / k), Math.floor(((i + 1) * items.length) / k)));
  return out.filter((b) => b.length > 0);
}

/** Worker threads for explorations, kept across runs (`exploreConfigParallel`'s `pool`). */
export function openExplorePool(workers: number): KeptPool {
  return openPool(TASK, workers);
}

/** `pool`: threads kept from earlier runs (openExplorePool; its size is `workers`) instead of new ones. */
export async function exploreConfigParallel(
  cfg: ExploreConfig,
  o: ExploreRunOptions,
  workers: number,
  pool?: KeptPool,
): Promise<ConfigResult> {
  if (o.pct) throw new TypeError('--workers splits the exhaustive search; --pct runs in one thread');
  if (cfg.bounds.executions !== undefined)
    throw new TypeError(
      `${cfg.name}: bounds.executions (${cfg.bounds.executions}) caps one search and cannot be split across --workers`,
    );
  const { ids, skipped } = designIds(cfg, o);
  const opts = searchOptions(cfg, o);
  // The heads and the work: every design's prefixes, batched, into one pool.
  const heads = new Map<string, { head: ExploreResult<ExploreViolation>; ms: number }>();
  const tasks: ExploreTaskInput[] = [];
  for (const id of ids) {
    const s0 = performance.now();
    const prog = new ModelProgram(cfg, id, opts.stateHashing ? { stateKeys: true } : {});
    const split = splitSearch(prog, opts, Math.max(1, workers) * ITEMS_PER_WORKER);
    heads.set(id, { head: split.head, ms: performance.now() - s0 });
    for (const prefixes of batches(split.prefixes, Math.max(1, workers) * BATCHES_PER_WORKER))
      tasks.push({ cfg, design: id, opts, prefixes });
  }
  const parts = new Map<string, ExploreResult<ExploreViolation>[]>(
    ids.map((id) => [id, [heads.get(id)!.head]]),
  );
  const ms = new Map<string, number>(ids.map((id) => [id, heads.get(id)!.ms]));
  for await (const r of runPool<ExploreTaskInput, ExploreTaskOutput>(TASK, tasks, {
    workers,
    ...(pool ? { pool } : {}),
  })) {
    if (!r.ok) throw new Error(`explore worker: ${r.input.design}: ${r.error}`);
    parts.get(r.input.design)!.push(r.output.result);
    ms.set(r.input.design, ms.get(r.input.design)! + r.output.ms);
  }
  const designs = ids.map((id) => {
    // completion order is arbitrary; the merge is order-free (sums, and the shortest by search order)
    const merged = mergeParts(parts.get(id)!, opts.shrink === false);
    const out = designResult(cfg, id, o, merged, ms.get(id)!);
    out.workers = workers;
    return out;
  });
  return configResult(cfg, skipped, designs);
}
