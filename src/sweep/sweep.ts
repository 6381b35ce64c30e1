/**
 * A sweep: a scenario over a parameter grid (grid.ts) × the designs each point's VM types allow,
 * every (point, design) a task on the worker pool (pool.ts, point_task.ts), results streamed as they
 * finish and gathered into one SweepResult (schema.ts) in a fixed order, so the same sweep gives the same
 * document whatever the worker count. Model-only file; it drives the model only through the runner.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isAbsolute, relative } from 'node:path';
import { loadScenario } from '../scenario/library.ts';
import { designsFor, kvmOptionsFor, DESIGNS } from '../scenario/designs.ts';
import { resolveHostConfig } from '../kvm/host_profile.ts';
import { DEFAULT_COSTS } from '../metrics/cost.ts';
import type { RunAudit } from '../scenario/runner.ts';
import type { Scenario } from '../scenario/schema.ts';
import { gridPoints, parseParamSpec, pointParams, GridError, type ParamAxis } from './grid.ts';
import { runPool } from './pool.ts';
import type { PointInput } from './point_task.ts';
import { SWEEP_SCHEMA, type SweepFailure, type SweepPoint, type SweepResult } from './schema.ts';

export interface SweepOptions {
  /** library name or path */
  scenario: string;
  /** the raw `-p name=values` arguments */
  params: readonly string[];
  /** restrict to these design ids (default: every design the VM types allow) */
  designs?: readonly string[];
  audit?: RunAudit;
  seed?: number;
}

export interface SweepPlan {
  opts: SweepOptions;
  file: string;
  base: Scenario;
  axes: ParamAxis[];
  tasks: PointInput[];
  skipped: SweepResult['skipped'];
}

const POINT_TASK = new URL('./point_task.ts', import.meta.url);

/** zaplab's own version, from the package.json beside src/ (or dist/). */
export function zaplabVersion(): string {
  return (
    JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  ).version;
}

/** Parses the grid, loads the scenario at every point (so a bad value fails before any run), lists the tasks. */
export function planSweep(opts: SweepOptions): SweepPlan {
  const axes = opts.params.map((p) => parseParamSpec(p));
  const points = gridPoints(axes);
  for (const id of opts.designs ?? [])
    if (!DESIGNS.some((d) => d.id === id))
      throw new GridError(`--design ${id}: unknown design (${DESIGNS.map((d) => d.id).join(', ')})`);
  const first = loadScenario(opts.scenario);
  if (!first.ok) throw new GridError(first.error);
  const file = first.file!;
  const tasks: PointInput[] = [];
  const skipped: SweepResult['skipped'] = [];
  points.forEach((params, point) => {
    const rawParams = pointParams(axes, params);
    const r = loadScenario(file, rawParams);
    if (!r.ok)
      throw new GridError(
        `-p ${Object.entries(rawParams)
          .map(([k, v]) => `${k}=${v}`)
          .join(' ')}: ${r.error}`,
      );
    const { allowed, skipped: ruled } = designsFor(r.scenario);
    for (const s of ruled)
      if (!opts.designs || opts.designs.includes(s.id)) skipped.push({ point, design: s.id, why: s.why });
    for (const d of allowed) {
      if (opts.designs && !opts.designs.includes(d.id)) continue;
      tasks.push({
        point,
        file,
        params,
        rawParams,
        design: d.id,
        audit: opts.audit ?? 'points',
        ...(opts.seed !== undefined ? { seed: opts.seed } : {}),
      });
    }
  });
  return { opts, file, base: first.scenario, axes, tasks, skipped };
}

export interface RunSweepOptions {
  workers: number;
  signal?: AbortSignal;
  /** called as each task finishes, in completion order */
  onResult?: (done: number, total: number, r: SweepPoint | SweepFailure) => void;
}

const designOrder = (id: string): number => DESIGNS.findIndex((d) => d.id === id);
const byPointDesign = (a: { point: number; design: string }, b: { point: number; design: string }): number =>
  a.point - b.point || designOrder(a.design) - designOrder(b.design);

/** Runs the plan's tasks on the pool and assembles the document. */
export async function runSweep(plan: SweepPlan, opts: RunSweepOptions): Promise<SweepResult> {
  const t0 = performance.now();
  const points: SweepPoint[] = [];
  const failures: SweepFailure[] = [];
  let done = 0;
  for await (const r of runPool<PointInput, SweepPoint>(POINT_TASK, plan.tasks, {
    workers: opts.workers,
    ...(opts.signal ? { signal: opts.signal } : {}),
  })) {
    const item = r.ok
      ? r.output
      : { point: r.input.point, params: r.input.params, design: r.input.design, error: r.error };
    if (r.ok) points.push(r.output);
    else failures.push(item as SweepFailure);
    opts.onResult?.(++done, plan.tasks.length, item);
  }
  return assemble(plan, points.sort(byPointDesign), failures.sort(byPointDesign), {
    workers: opts.workers,
    elapsedMs: Math.round(performance.now() - t0),
  });
}

/** The scenario path relative to the working directory when below it (library files: src/scenario/library/…). */
function portablePath(file: string): string {
  const r = relative(process.cwd(), file);
  return r.startsWith('..') || isAbsolute(r) ? file : r;
}

function assemble(
  plan: SweepPlan,
  points: SweepPoint[],
  failures: SweepFailure[],
  run: SweepResult['run'],
): SweepResult {
  const sc = plan.base;
  const options = kvmOptionsFor(sc) as Record<string, unknown>;
  let resolved: Record<string, unknown> = {};
  try {
    resolved = { ...resolveHostConfig(kvmOptionsFor(sc)) };
  } catch (e) {
    resolved = { error: e instanceof Error ? e.message : String(e) };
  }
  const used = new Set(plan.tasks.map((t) => t.design));
  return {
    schema: SWEEP_SCHEMA,
    zaplab: zaplabVersion(),
    scenario: {
      name: sc.name,
      description: sc.description ?? '',
      file: portablePath(plan.file),
      sha256: createHash('sha256').update(readFileSync(plan.file)).digest('hex'),
      seed: plan.opts.seed ?? sc.seed ?? 1,
    },
    host: { options, resolved },
    axes: plan.axes,
    designs: DESIGNS.filter((d) => used.has(d.id)).map((d) => d.id),
    skipped: plan.skipped,
    audit: plan.opts.audit ?? 'points',
    costModel: {
      label: 'modelled, not measured',
      doc: 'docs/cost-model.md',
      constants: { ...DEFAULT_COSTS },
    },
    points,
    failures,
    run,
  };
}
