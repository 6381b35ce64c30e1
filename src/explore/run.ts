/**
 * Exploring one configuration under one or every design: the DFS (or PCT) over the model program, the
 * shortest violating schedule replayed with its step records, and the result as plain data (what the
 * CLI prints and `--json` emits; shards' results merge). Model-only file (no kernel counterpart).
 */
import { designsFor } from '../scenario/designs.ts';
import { EXPLORE_LIBRARY_DIR, type ExploreConfig } from './config.ts';
import type { ExploreViolation, StepRecord } from './execution_types.ts';
import { ModelProgram, replaySchedule } from './program.ts';
import {
  explore,
  explorePct,
  type ExploreOptions,
  type ExploreResult,
  type ExploreStats,
} from './scheduler.ts';

export interface ExploreRunOptions {
  /** design ids (default: every design the configuration allows) */
  designs?: string[];
  /** without sleep-set reduction */
  noReduction?: boolean;
  /** prune states seen before (state hashing) */
  stateHashing?: boolean;
  /** stop at the first violation instead of looking for the shortest */
  first?: boolean;
  /** PCT random mode: this many executions */
  pct?: { runs: number; depth: number; seed: number };
  shard?: { index: number; count: number };
}

export interface DesignResult {
  design: string;
  stats: ExploreStats;
  executions: number;
  /** time spent exploring, ms (with --workers: summed over the threads) */
  ms: number;
  /** the worker threads the search was split across (absent: one thread, unsplit) */
  workers?: number;
  mode: 'dfs' | 'pct';
  bounds: { steps: number | null; preemptions: number | null };
  shard?: { index: number; count: number };
  violation: null | {
    invariant: string;
    message: string;
    gfn?: number;
    pfn?: number;
    /** the step after which it was found (-1: the final audit) */
    step: number;
    schedule: number[];
    steps: StepRecord[];
    trace: string[];
  };
}

export interface ConfigResult {
  config: string;
  /** the configuration as the replay command names it: a library name or the file */
  file: string;
  /** the bug switches the run had on */
  bugs: string[];
  actors: string[];
  skipped: { id: string; why: string }[];
  designs: DesignResult[];
}

export function executions(s: ExploreStats): number {
  return s.complete + s.sleepBlocked + s.statePruned + s.boundCut + s.violating;
}

/** The designs to explore (default: every one the configuration allows); an impossible one is a TypeError. */
export function designIds(
  cfg: ExploreConfig,
  o: ExploreRunOptions,
): { ids: string[]; skipped: { id: string; why: string }[] } {
  const { allowed, skipped } = designsFor(cfg.scenario);
  const ids = o.designs ?? allowed.map((d) => d.id);
  for (const id of ids)
    if (!allowed.some((d) => d.id === id)) {
      const why = skipped.find((s) => s.id === id)?.why ?? 'no such design';
      throw new TypeError(
        `design '${id}' cannot run ${cfg.name}: ${why} (allowed: ${allowed.map((d) => d.id).join(', ')})`,
      );
    }
  return { ids, skipped };
}

/** The result's frame: the configuration as the replay command names it, its bug switches and actors. */
export function configResult(
  cfg: ExploreConfig,
  skipped: ConfigResult['skipped'],
  designs: DesignResult[],
): ConfigResult {
  const lib = cfg.file.startsWith(EXPLORE_LIBRARY_DIR)
    ? cfg.file.slice(EXPLORE_LIBRARY_DIR.length).replace(/\.yaml$/, '')
    : cfg.file;
  const bugs = [...(cfg.scenario.host?.bugs ?? [])];
  return { config: cfg.name, file: lib, bugs, actors: cfg.actors.map((a) => a.name), skipped, designs };
}

/** Explore the configuration under each requested design. */
export function exploreConfig(cfg: ExploreConfig, o: ExploreRunOptions = {}): ConfigResult {
  const { ids, skipped } = designIds(cfg, o);
  return configResult(
    cfg,
    skipped,
    ids.map((id) => exploreDesign(cfg, id, o)),
  );
}

/** The exhaustive search's options from the configuration's bounds and the run's options. */
export function searchOptions(cfg: ExploreConfig, o: ExploreRunOptions): ExploreOptions {
  const b = cfg.bounds;
  return {
    noReduction: o.noReduction === true,
    shrink: o.first !== true,
    ...(o.stateHashing ? { stateHashing: true } : {}),
    ...(b.steps !== undefined ? { maxSteps: b.steps } : {}),
    ...(b.preemptions !== undefined ? { maxPreemptions: b.preemptions } : {}),
    ...(b.executions !== undefined ? { maxExecutions: b.executions } : {}),
    ...(o.shard ? { shard: o.shard } : {}),
  };
}

export function exploreDesign(cfg: ExploreConfig, id: string, o: ExploreRunOptions = {}): DesignResult {
  const prog = new ModelProgram(cfg, id, o.stateHashing ? { stateKeys: true } : {});
  const b = cfg.bounds;
  const t0 = performance.now();
  const res = o.pct
    ? explorePct(prog, {
        runs: o.pct.runs,
        depth: o.pct.depth,
        seed: o.pct.seed,
        steps: 12,
        ...(b.steps !== undefined ? { maxSteps: b.steps } : {}),
      })
    : explore(prog, searchOptions(cfg, o));
  return designResult(cfg, id, o, res, performance.now() - t0);
}

/** A design's result as plain data, the shortest violation replayed with its step records. */
export function designResult(
  cfg: ExploreConfig,
  id: string,
  o: ExploreRunOptions,
  res: ExploreResult<ExploreViolation>,
  ms: number,
): DesignResult {
  const b = cfg.bounds;
  const out: DesignResult = {
    design: id,
    stats: res.stats,
    executions: executions(res.stats),
    ms: Math.round(ms),
    mode: o.pct ? 'pct' : 'dfs',
    bounds: { steps: b.steps ?? null, preemptions: b.preemptions ?? null },
    violation: null,
  };
  if (o.shard) out.shard = o.shard;
  if (res.shortest !== null)
    out.violation = describeViolation(cfg, id, res.shortest.schedule, res.shortest.violation);
  return out;
}

/** Replay the schedule to get its step records (and check it reproduces). */
function describeViolation(
  cfg: ExploreConfig,
  id: string,
  schedule: number[],
  v: ExploreViolation,
): DesignResult['violation'] {
  const again = replaySchedule(cfg, id, schedule);
  if (again.ending !== 'violation' || again.violation?.id !== v.id)
    throw new Error(
      `explorer: the schedule ${schedule.join(',')} did not reproduce ${v.id} (got ${again.violation?.id ?? again.ending})`,
    );
  const out: NonNullable<DesignResult['violation']> = {
    invariant: v.id,
    message: v.message,
    step: v.step,
    schedule,
    steps: again.records,
    trace: again.violation!.trace,
  };
  if (v.gfn !== undefined) out.gfn = v.gfn;
  if (v.pfn !== undefined) out.pfn = v.pfn;
  return out;
}
