/**
 * One work item of a partitioned exploration, as a pool task (src/sweep/pool.ts): a batch of schedule
 * prefixes of one configuration under one design, each explored below its prefix as the whole search
 * would (partition.ts), merged. Deterministic: the output depends only on the input. A worker keeps the
 * model program it built for a configuration and design, so later batches only restore its snapshot.
 * Model-only file (no kernel counterpart).
 */
import type { ExploreConfig } from './config.ts';
import type { ExploreViolation } from './execution_types.ts';
import { ModelProgram } from './program.ts';
import { explore, type ExploreOptions, type ExploreResult } from './scheduler.ts';
import { itemOptions, mergeParts } from './partition.ts';

export interface ExploreTaskInput {
  cfg: ExploreConfig;
  design: string;
  /** the search's options (bounds, reduction, shrink, shard), without prefix or split depth */
  opts: ExploreOptions;
  prefixes: number[][];
}

export interface ExploreTaskOutput {
  result: ExploreResult<ExploreViolation>;
  /** time spent exploring, ms */
  ms: number;
}

const programs = new Map<string, ModelProgram>();

export function programFor(cfg: ExploreConfig, design: string, stateKeys: boolean): ModelProgram {
  const key = `${design}\u0000${stateKeys}\u0000${JSON.stringify(cfg)}`;
  let p = programs.get(key);
  if (p === undefined) {
    // one configuration at a time in practice; keep the last few
    if (programs.size >= 8) programs.delete(programs.keys().next().value!);
    programs.set(key, (p = new ModelProgram(cfg, design, stateKeys ? { stateKeys: true } : {})));
  }
  return p;
}

export default function exploreTask(input: ExploreTaskInput): ExploreTaskOutput {
  const t0 = performance.now();
  const prog = programFor(input.cfg, input.design, input.opts.stateHashing === true);
  const parts = input.prefixes.map((p) => explore(prog, itemOptions(input.opts, p)));
  return { result: mergeParts(parts, input.opts.shrink === false), ms: performance.now() - t0 };
}
